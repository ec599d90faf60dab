"""The Tracr study's tables, figures, claims and report sections.

Table 3 beside the paper (`paper.TABLE3`), accuracy curves, attention and MLP
maps, pruning curves (K=1 beside its controls), reverse fine-tuning rows in
the shared schema (`analysis.reft.REVIVAL_COLUMNS`, plus diverged), the
per-member rows the claims read (judged in `tracr.claims`), and the claims
table with the run's scale beside the verdicts. A diverged member (non-finite
parameters) is counted as diverged in every table and left out of every mean
and figure, never shown as 0% accuracy.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from wrapper_study.analysis import reft
from wrapper_study.report import agreement
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import plots
from wrapper_study.report import tables
from wrapper_study.tracr import paper

METRICS = paper.TABLE3_COLUMNS
# Every named C_Te=0 set beside the paper's columns (whose 'c_te0' is one of them).
NAMED_C_TE0 = ('natural', 'anti', 'disagree')
NATURAL_METRICS = tuple(f'{paper.c_te0_key(n)}/{m}' for n in NAMED_C_TE0
                        for m in ('acc_o_pt', 'acc_o_ft'))
COLUMN_NAMES = ('C_Te=1 O_PT', 'C_Te=1 O_FT', 'C_Te=0 O_PT', 'C_Te=0 O_FT') + tuple(
    f'{n} C_Te=0 {m}' for n in NAMED_C_TE0 for m in ('O_PT', 'O_FT'))
PRUNING_COLUMNS = ('granularity', 'lr', 'c_tr', 'n_seeds', 'diverged', 'acc_o_pt_k0',
                   'acc_o_pt_k1', 'gain_k1', 'control_noised_gain_k1', 'control_c_tr0_gain_k1',
                   'gain_fig55', 'control_noised_gain_fig55', 'control_c_tr0_gain_fig55',
                   'best_k', 'acc_o_pt_best', 'gain_o_pt', 'acc_o_ft_k0', 'acc_o_ft_at_best',
                   'classes_k0', 'classes_at_best', 'first_pruned_seed0')


def _mean_sd(values) -> tuple[float, float]:
  v = np.asarray(values, float)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


# ----------------------------------------------------------------- Table 3 ----


def table3_rows(config, task: str, members, final_acc, finite, distinct=None) -> list[dict]:
  """Mean and sd over the seeds that did not diverge (diverged ones are counted).

  Also every named C_Te=0 set's columns (NAMED_C_TE0), n_distinct: the fewest
  distinct answers any seed's model gives (collapsed: <= paper.COLLAPSED), and
  paper_within_10 / paper_entries: the cell's agreement with the paper's.
  """
  rows = []
  ref = paper.TABLE3.get(task, {})
  for lr in config.finetune.lrs:
    for c in config.finetune.c_trs:
      cell = [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
      idx = [i for i in cell if finite[i]]
      row = dict(program=task, lr=lr, c_tr=c, n_seeds=len(cell), diverged=len(cell) - len(idx))
      for k, metric in enumerate(METRICS + NATURAL_METRICS):
        if metric not in final_acc:
          continue
        mean, sd = _mean_sd(final_acc[metric][idx]) if idx else ('diverged', 'diverged')
        row[metric] = round(mean, 1) if idx else mean
        row[f'{metric}_sd'] = round(sd, 1) if idx else sd
        if k < len(METRICS):
          p = ref.get((float(f'{lr:g}'), float(f'{c:g}')))
          row[f'paper_{metric}'] = '' if p is None else p[k]
      n = min((int(distinct[i]) for i in idx), default=None) if distinct is not None else None
      row['n_distinct'] = '' if n is None else n
      row['collapsed'] = n is not None and n <= paper.COLLAPSED
      a = table3_agreement([row])
      if a.total_entries:  # Entries within agreement.TOLERANCE of the paper's, of this cell.
        row['paper_within_10'], row['paper_entries'] = a.total_within, a.total_entries
      rows.append(row)
  return rows


def table3_agreement(rows) -> agreement.Agreement:
  """Table 3 against the paper's: entries within 10 points, cells collapsed where the
  paper's are not (issue 28)."""
  return agreement.from_rows(rows, ('lr', 'c_tr'), METRICS, distinct_field='n_distinct')


def agreement_line(rows) -> str:
  """The report's line for one Table 3 (blank for a task the paper has no Table 3 for)."""
  a = table3_agreement(rows)
  return f'**Agreement with the paper\'s Table 3:** {a.line()}.' if a.total_entries else ''


def cells_not_run(config, task) -> str:
  """A line naming the paper's Table 3 C_Tr this grid did not train (blank when it has them all):
  `:claims` trains only the claim cells, and its agreement is over those."""
  missing = sorted({c for _, c in paper.TABLE3.get(task, {})} - set(config.finetune.c_trs))
  if not missing:
    return ''
  return (f'This grid trains C_Tr {", ".join(f"{c:g}" for c in config.finetune.c_trs)} only, so '
          'the agreement above is over those cells; the paper\'s C_Tr '
          f'{", ".join(f"{c:g}" for c in missing)} are in the default run\'s Table 3 '
          '(`configs/tracr_study.py`, a shorter schedule).')


def agreement_row(task, arm, rows) -> dict:
  """A row of tables/table3_agreement.csv."""
  return dict(program=task, grid=arm or 'main', **table3_agreement(rows).summary())


def table3_markdown(rows) -> str:
  out = []
  for r in rows:
    div = r['diverged'] == r['n_seeds']
    cells = {'lr': f'{r["lr"]:g}', 'C_Tr': f'{r["c_tr"]:g}' + (
        f' ({r["diverged"]}/{r["n_seeds"]} diverged, left out)' if r['diverged'] else '')}
    for metric, name in zip(METRICS + NATURAL_METRICS, COLUMN_NAMES):
      if metric not in r:
        continue
      paper_v = r.get('paper_' + metric)
      cells[name] = 'diverged' if div else f'{r[metric]:.1f} ± {r[metric + "_sd"]:.1f}' + (
          '' if paper_v is None else f' ({paper_v})')
    cells['n_distinct'] = ('diverged' if div else f'{r["n_distinct"]}' +
                           (' COLLAPSED' if r.get('collapsed') else ''))
    out.append(cells)
  return (tables.markdown_table(out) + '\n\nEach cell: our mean ± sd over the seeds that did '
          'not diverge (the paper\'s number in parentheses, blank for a task the paper has no '
          'Table 3 for). Accuracies in %. C_Te=0 (the paper\'s columns): the set eval.c_te0_set '
          'names; each named set beside it: disagree (no row obeys the correlation and '
          'r(x, O_PT) != r(x, O_FT): a perfect O_FT model scores 0 on O_PT, as in the paper\'s '
          'Table 3), anti (no row obeys the correlation; equal answers allowed), natural (plain '
          f'inputs, chance agreement allowed). n_distinct: the fewest distinct answers a seed\'s model gives; COLLAPSED '
          f'(<= {paper.COLLAPSED}): its accuracies measure a constant answer, not a capability.')


def curves_figure(members, history, metric_pairs, title, logx=False,
                  group: Callable = lambda m: f'C_Tr={m.c_tr:g}',
                  panel: Callable = lambda m: f'lr={m.lr:g}', finite=None, hline=None):
  """Panels (one per `panel` value) x rows (metrics); one line per `group`; seed bands.

  finite: [P] bool; diverged members are left out of the means (never drawn as 0%).
  """
  keep = np.ones(len(members), bool) if finite is None else np.asarray(finite, bool)
  members = [m for m, k in zip(members, keep) if k]
  figs = [(s, v[:, keep], ylabel) for s, v, ylabel in
          ((*history.curve(key), ylabel) for key, ylabel in metric_pairs)]
  # One row per metric: members repeated with the metric as their row key.
  rows_members = [(k, m) for k in range(len(figs)) for m in members]
  values = np.concatenate([v for _, v, _ in figs], axis=1)
  return plots.grouped_curves(
      figs[0][0], values, rows_members, panel=lambda km: panel(km[1]),
      group=lambda km: group(km[1]), rows=lambda km: f'({km[0] + 1}) {figs[km[0]][2]}',
      ylabel='accuracy (%)', xlabel='iteration', title=title, logx=logx, hline=hline)


def finetune_figure(task, members, history, finite=None):
  pairs = [('c_te0/acc_o_ft', 'Acc O_FT, C_Te=0 (%)'),
           ('c_te1/acc_o_ft', 'Acc O_FT, C_Te=1 (%)'),
           ('c_te0/acc_o_pt', 'Acc O_PT, C_Te=0 (%)')]
  if history.curve(NATURAL_METRICS[1])[0].size:
    pairs.append((NATURAL_METRICS[1], 'Acc O_FT, natural C_Te=0 (%)'))
  return curves_figure(members, history, pairs, f'{task}: accuracy during fine-tuning',
                       finite=finite)


def reft_figure(task, reft_members, history, finite=None, threshold=None):
  return curves_figure(reft_members, history, [('c_te0/acc_o_pt', 'Acc O_PT, C_Te=0 (%)')],
                       f'{task}: reverse fine-tuning vs Scr.+FT (Figs 27, 39)', logx=True,
                       group=lambda m: m.source, panel=lambda m: f'reFT lr={m.lr:g}',
                       finite=finite, hline=None if threshold is None else (
                           threshold, f'revival threshold ({threshold:g}%)'))


# ----------------------------------------------------------------- pruning ----


def _gain_k1(c_MxKx3, idx) -> float:
  """Mean Acc O_PT gain from K=0 to K=paper.PRUNING_K over the members idx (NaN if none)."""
  k = min(paper.PRUNING_K, c_MxKx3.shape[1] - 1)
  return float((c_MxKx3[idx, k, 0] - c_MxKx3[idx, 0, 0]).mean()) if idx else float('nan')


def _gain_fig55(singles, c_MxKx3, idx) -> float:
  """Mean over members idx of the best Acc O_PT gain of one of the top units pruned alone
  (Fig. 55: W1..W4 each pruned alone, the best shown against Base); NaN if none."""
  if singles is None or not idx:
    return float('nan')
  return float((singles[idx, :, 0].max(1) - c_MxKx3[idx, 0, 0]).mean())


def pruning_rows(config, task, pruned, curves, top, n_main, finite, singles=None) -> list[dict]:
  """One row per (granularity, lr, C_Tr) of pruning.c_trs: means over non-diverged seeds.

  gain_k1 is the paper's single weight (K=1); control_*_gain_k1 the same gain
  of the seed-matched controls (noised-only; C_Tr=0 at the same lr). best_k is
  kept for the curves, never judged.
  """
  rows = []
  base = [i for i, m in enumerate(pruned) if m.source == paper.NOISED and finite[i]]
  for gran, c_MxKx3 in curves.items():
    for lr in config.finetune.lrs:
      for c in config.pruning.c_trs:
        cell = [i for i, m in enumerate(pruned[:n_main]) if m.lr == lr and m.c_tr == c]
        idx = [i for i in cell if finite[i]]
        c0 = [i for i, m in enumerate(pruned) if m.source != paper.NOISED and m.lr == lr
              and m.c_tr == 0.0 and finite[i]]
        row = dict(program=task, granularity=gran, lr=lr, c_tr=c, n_seeds=len(cell),
                   diverged=len(cell) - len(idx),
                   control_noised_gain_k1=_r(_gain_k1(c_MxKx3, base)),
                   control_c_tr0_gain_k1=_r(_gain_k1(c_MxKx3, c0)))
        if singles is not None:
          sg = singles.get(gran)
          row.update(gain_fig55=_r(_gain_fig55(sg, c_MxKx3, idx)),
                     control_noised_gain_fig55=_r(_gain_fig55(sg, c_MxKx3, base)),
                     control_c_tr0_gain_fig55=_r(_gain_fig55(sg, c_MxKx3, c0)))
        if not idx:
          rows.append({**row, **{k: 'diverged' for k in PRUNING_COLUMNS if k not in row}})
          continue
        pt, ftc = c_MxKx3[idx, :, 0].mean(0), c_MxKx3[idx, :, 1].mean(0)
        distinct = c_MxKx3[idx, :, 2].mean(0)
        best = int(pt.argmax())
        rows.append(dict(**row, acc_o_pt_k0=round(float(pt[0]), 1), best_k=best,
                         acc_o_pt_best=round(float(pt[best]), 1),
                         gain_o_pt=round(float(pt[best] - pt[0]), 1),
                         acc_o_ft_k0=round(float(ftc[0]), 1),
                         acc_o_ft_at_best=round(float(ftc[best]), 1),
                         acc_o_pt_k1=round(float(pt[min(1, len(pt) - 1)]), 1),
                         gain_k1=_r(_gain_k1(c_MxKx3, idx)),
                         classes_k0=round(float(distinct[0]), 1),
                         classes_at_best=round(float(distinct[best]), 1),
                         first_pruned_seed0=top[gran][cell[0]][0]))
  return rows


def _r(x: float):
  return round(x, 1) if math.isfinite(x) else ''


def pruning_member_rows(task, pruned, curves, finite, singles=None) -> list[dict]:
  """Per pruned member (controls included): Acc O_PT at K=0 and K=paper.PRUNING_K (the claims);
  with singles, acc_o_pt_fig55: the best of the top units pruned alone (Fig. 55's setup)."""
  rows = []
  for gran, c_MxKx3 in curves.items():
    k = min(paper.PRUNING_K, c_MxKx3.shape[1] - 1)
    for i, m in enumerate(pruned):
      kind = paper.NOISED if m.source == paper.NOISED else 'fine-tuned'
      ok = bool(finite[i])
      rows.append(dict(program=task, kind=kind, granularity=gran,
                       lr='' if kind == paper.NOISED else m.lr,
                       c_tr='' if kind == paper.NOISED else m.c_tr, seed=m.seed, diverged=not ok,
                       acc_o_pt_k0=round(float(c_MxKx3[i, 0, 0]), 2) if ok else '',
                       acc_o_pt_k1=round(float(c_MxKx3[i, k, 0]), 2) if ok else '',
                       acc_o_ft_k1=round(float(c_MxKx3[i, k, 1]), 2) if ok else '',
                       classes_k1=int(c_MxKx3[i, k, 2]) if ok else ''))
      if singles is not None and gran in singles:
        rows[-1]['acc_o_pt_fig55'] = round(float(singles[gran][i, :, 0].max()), 2) if ok else ''
  return rows


def pruning_figure(config, task, gran, members, curves, finite=None):
  ks = np.arange(config.pruning.k_max + 1)
  lrs = sorted(config.finetune.lrs)  # Ascending, as in every figure.
  fig, axes = plots.plt.subplots(2, len(lrs), figsize=(3.4 * len(lrs) + 0.5, 6.4),
                                 squeeze=False, layout='constrained')
  for col, lr in enumerate(lrs):
    for row, (j, name) in enumerate([(0, 'Acc O_PT'), (1, 'Acc O_FT')]):
      ax = axes[row, col]
      for c in config.pruning.c_trs:
        idx = [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c
               and m.source != paper.NOISED and (finite is None or finite[i])]
        if not idx:
          continue
        mean, (lo, hi) = plots.seed_band(curves[idx, :, j])
        line, = ax.plot(ks, mean, label=f'C_Tr={c:g}')
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
      base = [i for i, m in enumerate(members) if m.source == paper.NOISED]
      if base:  # The control: the same pruning of models never fine-tuned.
        ax.plot(ks, curves[base, :, j].mean(0), 'k--', lw=1, label=paper.NOISED)
      ax.set_ylim(-3, 103)
      ax.set_title(f'lr={lr:g}', fontsize=plots.LABEL)
      ax.set_xlabel(f'pruned {gran}s (K)', fontsize=plots.LABEL)
      ax.set_ylabel(f'{name} (C_Te=0)', fontsize=plots.LABEL)
      ax.tick_params(labelsize=plots.TICK)
      ax.grid(alpha=0.3)
  plots.figure_legend(fig)
  fig.suptitle(f'{task}: {gran} pruning by grad x weight of the O_PT loss '
               '(Figs 55-58 style; band 95% over seeds)', fontsize=plots.TITLE)
  return fig


# -------------------------------------------------------------------- reFT ----


def median_iterations(revived) -> float | str:
  """Median over ALL seeds, a non-revived seed counting as never (+inf): 'never' if so.

  Issue 11: the median over revived seeds only read 1 of 3 revived at 20 as 20.
  """
  its = [math.inf if r is None else r for r in revived]
  if not its:
    return ''
  m = float(np.median(its))
  return 'never' if not math.isfinite(m) else m


def reft_rows(task, reft_members, history, threshold, finite=None) -> list[dict]:
  """Revival rows in the shared schema (+ diverged); fine-tuned sources first, Scr.+FT last."""
  steps, acc_SxP = history.curve('c_te0/acc_o_pt')
  finite = np.ones(len(reft_members), bool) if finite is None else np.asarray(finite, bool)
  key = lambda m: (m.source, '' if m.c_tr is None else m.c_tr, m.lr)
  groups = sorted({key(m) for m in reft_members},
                  key=lambda g: (g[0] == paper.SCRATCH, g[0], g[2]))
  rows = []
  for g in groups:
    cell = [i for i, m in enumerate(reft_members) if key(m) == g]
    idx = [i for i in cell if finite[i]]
    revived = [reft.revival_step(steps, acc_SxP[:, i], threshold) for i in idx]
    mean = lambda x: round(float(x.mean()), 1) if idx else 'diverged'
    rows.append(dict(task=task, source=g[0], c_tr=g[1], reft_lr=g[2], n_seeds=len(cell),
                     acc_o_pt_start=mean(acc_SxP[0, idx]), acc_o_pt_end=mean(acc_SxP[-1, idx]),
                     revived=f'{sum(r is not None for r in revived)}/{len(idx)}',
                     iters_to_revival_median=median_iterations(revived) if idx else 'diverged',
                     iters_to_revival_each=' '.join(
                         'diverged' if not finite[i] else '-' if r is None else str(r)
                         for i, r in zip(cell, _spread(cell, idx, revived))),
                     diverged=len(cell) - len(idx)))
  return rows


def _spread(cell, idx, values):
  """values (one per idx) placed at cell positions; None elsewhere."""
  at = dict(zip(idx, values))
  return [at.get(i) for i in cell]


def reft_member_rows(task, reft_members, history, threshold, finite) -> list[dict]:
  """Per reFT member: what the revival claims read (start, highest, first revived step)."""
  steps, acc_SxP = history.curve('c_te0/acc_o_pt')
  rows = []
  for i, m in enumerate(reft_members):
    src_lr, src_c = '', ''
    if m.source != paper.SCRATCH:  # 'FT lr=0.01 C_Tr=1'
      parts = dict(p.split('=') for p in m.source.split()[1:])
      src_lr, src_c = float(parts['lr']), float(parts['C_Tr'])
    ok = bool(finite[i])
    r = reft.revival_step(steps, acc_SxP[:, i], threshold) if ok else None
    rows.append(dict(task=task, source=m.source, source_lr=src_lr, source_c_tr=src_c,
                     reft_lr=m.lr, seed=m.seed, diverged=not ok,
                     acc_o_pt_start=round(float(acc_SxP[0, i]), 2) if ok else '',
                     acc_o_pt_max=round(float(acc_SxP[:, i].max()), 2) if ok else '',
                     revived_at='' if r is None else r))
  return rows


# ----------------------------------------------------------------- report ----


def with_line(line: str) -> str:
  return line + '\n\n' if line else ''


def task_sections(config, task, t3, prows, rrows, units, workdir) -> list[tuple[str, str]]:
  """The report sections of one task."""
  sections = [(f'{task}: Table 3 (after {config.finetune.steps} iterations)',
               with_line(agreement_line(t3)) + with_line(cells_not_run(config, task)) +
               table3_markdown(t3) +
               f'\n\n![{task}: accuracy during fine-tuning](figures/finetune_curves_{task}.png)')]
  if prows:
    sections.append((f'{task}: pruning (C_Te=0, mean over seeds)',
                     tables.markdown_table(prows, PRUNING_COLUMNS) + '\n\ngain_k1: Acc O_PT '
                     'gain from pruning the single top-ranked unit (the paper\'s single weight; '
                     'the claim reads it); control_*: the same gain of the noised-only models '
                     '(never fine-tuned) and of C_Tr=0 models at the same lr. best_k (<= '
                     'k_max) is shown for the curves only. classes_*: distinct answers predicted '
                     'on the test set (a gain with ~1 class is a collapse to the most frequent '
                     'count, not a revived capability). gain_fig55 (and its controls): '
                     f'the setup of the paper\'s Fig. 55, each of the top {paper.FIG55_UNITS} '
                     'units pruned ALONE and the best of them read against K=0, where gain_k1 '
                     'prunes only the top-ranked one; the same scores (grad x weight of the '
                     'O_PT loss on plain inputs), candidates (every kernel in the blocks) and '
                     'test set (C_Te=0, the paper\'s columns). Where gain_fig55 clears the '
                     'paper\'s 60 points and gain_k1 does not, the difference is the setup; '
                     'where neither does, it is the result.\n\n' + '\n'.join(
                         f'![{task}: {g} pruning curves](figures/pruning_{g}_{task}.png)'
                         for g in units)))
  sections.append((f'{task}: reverse fine-tuning (revived: Acc O_PT >= '
                   f'{config.reft.revival_threshold:g}%)',
                   tables.markdown_table(rrows, ['source', 'reft_lr', 'acc_o_pt_start',
                                                 'acc_o_pt_end', 'revived',
                                                 'iters_to_revival_median',
                                                 'iters_to_revival_each', 'diverged']) +
                   '\n\nMedian over all seeds, a seed that never revived counting as never.' +
                   f'\n\n![{task}: reverse fine-tuning](figures/reft_{task}.png)'))
  maps = sorted(p.name for p in (workdir / 'figures').glob(f'*_{task}*.png')
                if p.name.startswith(('attention', 'mlp')))
  sections.append((f'{task}: attention and MLP maps',
                   '\n'.join(f'![{m}](figures/{m})' for m in maps)))
  return sections


def scale_line(config) -> str:
  """The scale of the run, stated next to the verdicts."""
  f = config.finetune
  n_counter = config.counter.seq_len if 'counter' in tuple(config.tasks) else None
  paper_scale = f.steps >= 10_000 and (n_counter is None or n_counter >= 45)
  what = 'paper scale' if paper_scale else 'reduced scale'
  counter = '' if n_counter is None else f', Counter over {n_counter} of 45 tokens'
  return (f'{what}: {f.steps} of the paper\'s 10K iterations{counter}, {len(f.seeds)} seeds, '
          f'batch {f.batch_size} (paper 96), reFT {config.reft.steps} iterations, test sets of '
          f'{config.eval.num_samples}')


def arm_claims_md(results) -> str:
  """One verdict table per sensitivity arm (the same claims on that arm's grid), if judged."""
  arms = results.get('arm_claims') or {}
  return ''.join(f'\n\nSensitivity arm {arm} (the same claims on its grid; '
                 f'{claims_lib.tally(rows)}):\n\n' + tables.markdown_table(rows, ARM_CLAIM_TABLE)
                 for arm, rows in arms.items())


ARM_CLAIM_TABLE = ('claim_id', 'verdict', 'value', 'ci_low', 'ci_high', 'n_seeds', 'threshold')
CLAIM_TABLE = ('claim_id', 'verdict', 'value', 'ci_low', 'ci_high', 'n_seeds', 'threshold',
               'control_value', 'manipulation_check', 'reason')


def head_sections(config, results, descriptions: dict) -> list[tuple[str, str]]:
  """Claims (judged and skipped), scale, tasks, compiled models and time."""
  skipped = results['skipped_claims']
  skipped_md = ('\n\nSkipped (a claim about one task is not judged on another):\n\n' +
                tables.markdown_table(skipped, ['program', 'claim', 'only_for'])) if skipped else ''
  control = lambda cid: paper.CLAIMS[cid.split('/', 1)[-1]].control
  statements = '\n'.join(f'- `{r["claim_id"]}`: {r["statement"]} [metric: {r["metric"]}] '
                         f'[control: {control(r["claim_id"]) or "none"}]'
                         for r in results['claims'])
  return [
      ('Claims of the paper, checked', f'**Scale: {scale_line(config)}.** Verdicts at this '
       'scale say what this run measured, not what the paper\'s scale would give.\n\n' +
       claims_lib.LEGEND + f' This run: {claims_lib.tally(results["claims"])}.\n\n' +
       tables.markdown_table(results['claims'], CLAIM_TABLE) + '\n\n' + statements +
       '\n\nThresholds are fixed before any run, in wrapper_study/tracr/paper.py.' +
       arm_claims_md(results) + skipped_md),
      ('Tasks', tables.markdown_table([dict(task=t, about=d) for t, d in descriptions.items()])),
      ('Scale', scale_line(config) + '.'),
      ('Compiled models (no training)', tables.markdown_table(results['compiled']) +
       '\n\nThe Flax port runs tracr\'s weights unchanged, so Acc O_PT is 100. '
       '"noised" columns: the same models after the N(0, noise_std) weight noise that '
       'starts fine-tuning (mean over seeds), before any update.'),
      ('Time (s)', tables.markdown_table(results['timing']))]
