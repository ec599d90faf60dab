"""The Tracr study's tables, figures, claims and report sections.

Table 3 beside the paper (`paper.TABLE3`), accuracy curves, attention and MLP
maps, pruning curves, reverse fine-tuning rows in the shared schema
(`analysis.reft.REVIVAL_COLUMNS`) and the paper's claims, each judged against
the thresholds of `paper`. Claims are keyed by task: a task is judged by the
task-specific claims named by its `paper_claims` (and by the general ones);
the other tasks' claims are listed as skipped for it, never judged.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from wrapper_study import population
from wrapper_study.analysis import reft
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import plots
from wrapper_study.report import tables
from wrapper_study.tracr import analysis
from wrapper_study.tracr import paper

METRICS = paper.TABLE3_COLUMNS
PRUNING_COLUMNS = ('granularity', 'lr', 'c_tr', 'acc_o_pt_k0', 'acc_o_pt_k1', 'best_k',
                   'acc_o_pt_best', 'gain_o_pt', 'acc_o_ft_k0', 'acc_o_ft_at_best', 'classes_k0',
                   'classes_at_best', 'first_pruned_seed0')


def _mean_sd(values) -> tuple[float, float]:
  v = np.asarray(values, float)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


# ----------------------------------------------------------------- Table 3 ----


def table3_rows(config, task: str, members, final_acc, finite) -> list[dict]:
  """Mean and sd over the seeds that did not diverge (diverged ones are counted)."""
  rows = []
  ref = paper.TABLE3.get(task, {})
  for lr in config.finetune.lrs:
    for c in config.finetune.c_trs:
      cell = [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
      idx = [i for i in cell if finite[i]]
      row = dict(program=task, lr=lr, c_tr=c, n_seeds=len(cell), diverged=len(cell) - len(idx))
      for k, metric in enumerate(METRICS):
        mean, sd = _mean_sd(final_acc[metric][idx]) if idx else (float('nan'), float('nan'))
        row[metric] = round(mean, 1)
        row[f'{metric}_sd'] = round(sd, 1)
        p = ref.get((float(f'{lr:g}'), float(f'{c:g}')))
        row[f'paper_{metric}'] = '' if p is None else p[k]
      rows.append(row)
  return rows


def table3_markdown(rows) -> str:
  out = []
  for r in rows:
    cells = [f'{r["lr"]:g}', f'{r["c_tr"]:g}' + (f' ({r["diverged"]} diverged)' if r['diverged'] else '')]
    for metric in METRICS:
      cells.append(f'{r[metric]:.1f} ± {r[metric + "_sd"]:.1f} ({r["paper_" + metric]})')
    out.append(dict(zip(['lr', 'C_Tr', 'C_Te=1 O_PT', 'C_Te=1 O_FT', 'C_Te=0 O_PT',
                         'C_Te=0 O_FT'], cells)))
  return (tables.markdown_table(out) + '\n\nEach cell: our mean ± sd over seeds (the paper\'s '
          'number in parentheses, blank for a task the paper has no Table 3 for). Accuracies in %.')


def curves_figure(members, history, metric_pairs, title, logx=False,
                  group: Callable = lambda m: f'C_Tr={m.c_tr:g}',
                  panel: Callable = lambda m: f'lr={m.lr:g}'):
  """Panels (one per `panel` value) x rows (metrics); one line per `group`; seed bands."""
  figs = [(*history.curve(key), ylabel) for key, ylabel in metric_pairs]
  # One row per metric: members repeated with the metric as their row key.
  rows_members = [(k, m) for k in range(len(figs)) for m in members]
  values = np.concatenate([v for _, v, _ in figs], axis=1)
  return plots.grouped_curves(
      figs[0][0], values, rows_members, panel=lambda km: panel(km[1]),
      group=lambda km: group(km[1]), rows=lambda km: f'({km[0] + 1}) {figs[km[0]][2]}',
      ylabel='accuracy (%)', xlabel='iteration', title=title, logx=logx)


def finetune_figure(task, members, history):
  return curves_figure(members, history,
                       [('c_te0/acc_o_ft', 'Acc O_FT, C_Te=0 (%)'),
                        ('c_te1/acc_o_ft', 'Acc O_FT, C_Te=1 (%)'),
                        ('c_te0/acc_o_pt', 'Acc O_PT, C_Te=0 (%)')],
                       f'{task}: accuracy during fine-tuning')


def reft_figure(task, reft_members, history):
  return curves_figure(reft_members, history, [('c_te0/acc_o_pt', 'Acc O_PT, C_Te=0 (%)')],
                       f'{task}: reverse fine-tuning vs Scr.+FT (Figs 27, 39)', logx=True,
                       group=lambda m: m.source, panel=lambda m: f'reFT lr={m.lr:g}')


# -------------------------------------------------------------------- maps ----


def map_figures(config, data, members, params_P, test_sets, workdir, writer) -> list:
  """Attention maps per block (Figs 10, 40-45) and first-MLP maps (Figs 46, 53)."""
  n, tm, task = config.figures.num_inputs, data.tm, data.spec.task
  if not n:
    return []
  inputs = test_sets['c_te0'].inputs[:n]
  seed0 = config.finetune.seeds[0]
  shown = [('compiled', tm.params)]
  for lr in config.finetune.lrs:
    for c in config.figures.c_trs:
      i = next(i for i, m in enumerate(members) if (m.lr, m.c_tr, m.seed) == (lr, c, seed0))
      shown.append((f'lr={lr:g} C_Tr={c:g}', population.member_params(params_P, i)))
  names = [f'blocks.{l}.attn.hook_pattern' for l in range(tm.config.n_layers)]
  written = []
  labels = analysis.token_labels(tm, inputs)
  for j in range(n):
    pats = np.stack([np.stack([analysis.activations(tm, p, inputs[j:j + 1], names)[nm][0, 0]
                               for nm in names]) for _, p in shown])
    fig = plots.attention_maps(pats, [labels[j]] * len(shown), [s for s, _ in shown],
                               title=f'{task}: attention per block, input {j} '
                                     f'(O_PT={data.spec.operand_pt})')
    writer.write_images(0, {f'{task}/attention/input{j}': fig})
    written.append(plots.save(fig, workdir / 'figures' / f'attention_{task}_input{j}.png'))
  mlp = 'blocks.0.mlp.hook_post'
  acts = np.stack([analysis.activations(tm, p, inputs[:1], [mlp])[mlp][0] for _, p in shown])
  fig = plots.activation_map(acts, [labels[0]] * len(shown), [s for s, _ in shown],
                             title=f'{task}: first MLP activations (input 0)')
  written.append(plots.save(fig, workdir / 'figures' / f'mlp_{task}.png'))
  return written


# ----------------------------------------------------------------- pruning ----


def pruning_rows(config, task, members, curves, top) -> list[dict]:
  rows = []
  for gran, c_MxKx3 in curves.items():
    for lr in config.finetune.lrs:
      for c in config.pruning.c_trs:
        idx = [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
        pt, ftc = c_MxKx3[idx, :, 0].mean(0), c_MxKx3[idx, :, 1].mean(0)
        distinct = c_MxKx3[idx, :, 2].mean(0)
        best = int(pt.argmax())
        rows.append(dict(program=task, granularity=gran, lr=lr, c_tr=c,
                         acc_o_pt_k0=round(float(pt[0]), 1), best_k=best,
                         acc_o_pt_best=round(float(pt[best]), 1),
                         gain_o_pt=round(float(pt[best] - pt[0]), 1),
                         acc_o_ft_k0=round(float(ftc[0]), 1),
                         acc_o_ft_at_best=round(float(ftc[best]), 1),
                         acc_o_pt_k1=round(float(pt[min(1, len(pt) - 1)]), 1),
                         classes_k0=round(float(distinct[0]), 1),
                         classes_at_best=round(float(distinct[best]), 1),
                         first_pruned_seed0=top[gran][idx[0]][0]))
  return rows


def pruning_figure(config, task, gran, members, curves):
  ks = np.arange(config.pruning.k_max + 1)
  lrs = config.finetune.lrs
  fig, axes = plots.plt.subplots(2, len(lrs), figsize=(3.3 * len(lrs), 5.4), squeeze=False)
  for col, lr in enumerate(lrs):
    for row, (j, name) in enumerate([(0, 'Acc O_PT'), (1, 'Acc O_FT')]):
      ax = axes[row, col]
      for c in config.pruning.c_trs:
        idx = [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
        mean, (lo, hi) = plots.seed_band(curves[idx, :, j])
        line, = ax.plot(ks, mean, label=f'C_Tr={c:g}')
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
      ax.set_ylim(-3, 103)
      ax.set_title(f'lr={lr:g}', fontsize=8)
      ax.set_xlabel(f'pruned {gran}s (K)', fontsize=8)
      ax.set_ylabel(f'{name} (C_Te=0)', fontsize=8)
      ax.grid(alpha=0.3)
  axes[0, -1].legend(fontsize=6)
  fig.suptitle(f'{task}: {gran} pruning by grad x weight of the O_PT loss '
               '(Figs 55-58 style; band 95% over seeds)', fontsize=10)
  fig.tight_layout()
  return fig


# -------------------------------------------------------------------- reFT ----


def reft_rows(task, reft_members, history, threshold) -> list[dict]:
  """Revival rows in the shared schema; the fine-tuned sources first, Scr.+FT last."""
  steps, acc_SxP = history.curve('c_te0/acc_o_pt')
  return reft.revival_rows(task, reft_members, steps, acc_SxP, threshold,
                           sort_key=lambda g: (g[0] == paper.SCRATCH, g[0], g[2]))


# ------------------------------------------------------------------ claims ----


def _counter_claims(get, prune_rows) -> list[tuple[Optional[bool], str]]:
  text = paper.CLAIM_TEXT['counter']
  out = []
  r = get(paper.LR_M, 1.0)
  out.append((None if r is None else r['c_te1/acc_o_ft'] >= paper.HIGH
              and r['c_te0/acc_o_ft'] <= paper.LOW,
              '' if r is None else f"{r['c_te1/acc_o_ft']:.1f} / {r['c_te0/acc_o_ft']:.1f}"))
  r = get(paper.LR_S, 0.0)
  out.append((None if r is None else r['c_te0/acc_o_ft'] < paper.CANNOT_LEARN,
              '' if r is None else f"{r['c_te0/acc_o_ft']:.1f}"))
  r = get(paper.LR_L, 0.0)
  out.append((None if r is None else r['c_te0/acc_o_ft'] >= paper.HIGH,
              '' if r is None else f"{r['c_te0/acc_o_ft']:.1f}"))
  pr = [p for p in prune_rows if p['granularity'] == 'weight' and p['c_tr'] == 1.0
        and p['lr'] in (paper.LR_M, paper.LR_S)]
  out.append((None if not pr else all(p['gain_o_pt'] > paper.PRUNING_GAIN for p in pr),
              '; '.join(f"lr {p['lr']:g}: +{p['gain_o_pt']:.1f} at K={p['best_k']}" for p in pr)))
  return list(zip(text, out))


def _max_identifier_claims(get, prune_rows) -> list:
  del prune_rows
  text = paper.CLAIM_TEXT['max_identifier']
  r, r0 = get(paper.LR_VS, 1.0), get(paper.LR_VS, 0.0)
  first = (None if r0 is None else r0['c_te0/acc_o_ft'] >= paper.HIGH,
           '' if r0 is None else f"C_Tr=0: {r0['c_te0/acc_o_ft']:.1f}" +
           ('' if r is None else f", C_Tr=1: {r['c_te0/acc_o_ft']:.1f}"))
  r = get(paper.LR_M, 0.0)
  second = (None if r is None else r['c_te0/acc_o_ft'] < paper.DISTORTED,
            '' if r is None else f"{r['c_te0/acc_o_ft']:.1f}")
  return list(zip(text, [first, second]))


_TASK_CLAIMS = {'counter': _counter_claims, 'max_identifier': _max_identifier_claims}


def _general_claims(reft_rows_) -> list:
  fast = [x for x in reft_rows_ if x['source'].startswith(f'FT lr={paper.LR_M:g}')]
  slow = [x for x in reft_rows_ if x['source'] == paper.SCRATCH]
  big = [x for x in reft_rows_ if x['source'].startswith(f'FT lr={paper.LR_L:g} ')]
  out = []
  if fast and slow:
    median = lambda rows: min((x['iters_to_revival_median'] for x in rows
                               if x['iters_to_revival_median'] != ''), default=None)
    best_ft, best_scr = median(fast), median(slow)
    best_ft = None if best_ft is None else int(best_ft)
    best_scr = None if best_scr is None else int(best_scr)
    out.append((paper.GENERAL_CLAIMS[0], (
        None if best_ft is None and best_scr is None else
        best_ft is not None and (best_scr is None or best_ft < best_scr),
        f'fastest median iterations: reFT {best_ft}, Scr.+FT {best_scr}')))
  if big:
    out.append((paper.GENERAL_CLAIMS[1], (
        all(x['revived'].startswith('0/') for x in big),
        '; '.join(f"{x['source']} reFT lr {x['reft_lr']:g}: {x['revived']}" for x in big))))
  return out


def claims(task: str, paper_claims: Optional[str], t3, prune_rows, reft_rows_
           ) -> tuple[list[dict], list[dict]]:
  """(judged claims, skipped claims) of one task.

  Judged: the task-specific claims of `paper_claims` (a key of
  paper.CLAIM_TEXT) and the general ones. Skipped: every other task's
  specific claims, which say nothing about this task.
  """
  get = lambda lr, c: next((r for r in t3 if r['lr'] == lr and r['c_tr'] == c), None)
  checks = _TASK_CLAIMS[paper_claims](get, prune_rows) if paper_claims else []
  checks += _general_claims(reft_rows_)
  judged = [dict(program=task, claim=claim, measured=measured,
                 verdict=claims_lib.verdict([ok], reason=paper.NOT_MEASURED_REASON))
            for claim, (ok, measured) in checks]
  skipped = [dict(program=task, claim=claim, only_for=owner)
             for owner, texts in paper.CLAIM_TEXT.items() if owner != paper_claims
             for claim in texts]
  return judged, skipped


# ----------------------------------------------------------------- report ----


def task_sections(config, task, t3, prows, rrows, units, workdir) -> list[tuple[str, str]]:
  """The report sections of one task."""
  sections = [(f'{task}: Table 3 (after {config.finetune.steps} iterations)',
               table3_markdown(t3) + f'\n\n![curves](figures/finetune_curves_{task}.png)')]
  if prows:
    sections.append((f'{task}: pruning (C_Te=0, mean over seeds)',
                     tables.markdown_table(prows, PRUNING_COLUMNS) + '\n\nclasses_*: distinct '
                     'answers predicted on the test set (a gain with ~1 class is a collapse to '
                     'the most frequent count, not a revived capability).\n\n' + '\n'.join(
                         f'![{g}](figures/pruning_{g}_{task}.png)' for g in units)))
  sections.append((f'{task}: reverse fine-tuning (revived: Acc O_PT >= '
                   f'{config.reft.revival_threshold:g}%)',
                   tables.markdown_table(rrows, ['source', 'reft_lr', 'acc_o_pt_start',
                                                 'acc_o_pt_end', 'revived',
                                                 'iters_to_revival_median',
                                                 'iters_to_revival_each']) +
                   f'\n\n![reft](figures/reft_{task}.png)'))
  maps = sorted(p.name for p in (workdir / 'figures').glob(f'*_{task}*.png')
                if p.name.startswith(('attention', 'mlp')))
  sections.append((f'{task}: attention and MLP maps',
                   '\n'.join(f'![{m}](figures/{m})' for m in maps)))
  return sections


def head_sections(config, results, descriptions: dict) -> list[tuple[str, str]]:
  """Claims (judged and skipped), scale, tasks, compiled models and time."""
  skipped = results['skipped_claims']
  skipped_md = ('\n\nSkipped (a claim about one task is not judged on another):\n\n' +
                tables.markdown_table(skipped, ['program', 'claim', 'only_for'])) if skipped else ''
  return [
      ('Claims of the paper, checked', tables.markdown_table(
          results['claims'], ['program', 'claim', 'measured', 'verdict']) +
       '\n\nThresholds fixed before any run, in wrapper_study/tracr/paper.py.' + skipped_md),
      ('Tasks', tables.markdown_table([dict(task=t, about=d) for t, d in descriptions.items()])),
      ('Scale', f'fine-tuning {config.finetune.steps} iterations (paper 10K), batch '
       f'{config.finetune.batch_size} (paper 96), seeds {tuple(config.finetune.seeds)}, '
       f'reFT {config.reft.steps} iterations; test sets of {config.eval.num_samples}.'),
      ('Compiled models (no training)', tables.markdown_table(results['compiled']) +
       '\n\nThe Flax port runs tracr\'s weights unchanged, so Acc O_PT is 100. '
       '"noised" columns: the same models after the N(0, noise_std) weight noise that '
       'starts fine-tuning (mean over seeds), before any update.'),
      ('Time (s)', tables.markdown_table(results['timing']))]
