"""The PCFG world's tables, figures and report pages.

Study: the layout of Tables 5-8 (one row per (prior, pretraining length, lr,
C_Tr), the paper's number beside ours). Analysis: the figures of Figs 5-9 and
App. E, the probe / weight change / learned mask / reFT tables, and the report
page of each variant.
"""

from __future__ import annotations

import numpy as np

from wrapper_study.analysis import probing
from wrapper_study.analysis import reft as reft_lib
from wrapper_study.pcfg import agreement as pcfg_agreement
from wrapper_study.pcfg import analysis as pcfg_analysis
from wrapper_study.pcfg import calibration as pcfg_calibration
from wrapper_study.pcfg import claims as pcfg_claims
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import paper
from wrapper_study.pcfg import tasks
from wrapper_study.pcfg import train as pcfg_train
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import plots
from wrapper_study.report import tables

DIVERGED = tables.DIVERGED
METRICS = ('c_te0/acc_o_pt', 'c_te1/acc_o_pt', 'c_te0/acc_o_ft', 'c_te1/acc_o_ft')
# The natural C_Te = 0 set (chance agreement allowed), beside the anti-correlated c_te0.
NATURAL_METRICS = (f'{pcfg_train.NATURAL}/acc_o_pt', f'{pcfg_train.NATURAL}/acc_o_ft')
DISTINCT = pcfg_claims.DISTINCT
FIGURES = {  # variant -> figure kind -> file stem (the paper's figure numbers).
    'main': {'acc_ft': 'fig05_acc_o_ft', 'acc_pt': 'fig06_acc_o_pt', 'probes': 'fig08_90-98_probes',
             'prune15': 'fig07_pruning_k15', 'prune100': 'fig79-89_pruning_k100',
             'mask': 'learned_mask_vs_gradxw', 'reft': 'fig09_26_reft',
             'weights': 'weight_change'},
    'mixing': {'acc_ft': 'fig18_20_mixing_acc_o_ft', 'acc_pt': 'fig19_21_mixing_acc_o_pt',
               'probes': 'fig22_23_mixing_probes', 'weights': 'weight_change_mixing'},
    'jailbreak': {'acc_ft': 'fig24_jailbreak_acc_o_ft', 'acc_pt': 'fig24_jailbreak_acc_o_pt',
                  'probes': 'fig25_jailbreak_probes', 'weights': 'weight_change_jailbreak'},
    'randft': {'acc_ft': 'fig28-30_randft_acc_o_ft', 'acc_pt': 'fig28-30_randft_acc_o_pt',
               'probes': 'fig30_randft_probes', 'reft': 'fig28_29_randft_reft',
               'weights': 'weight_change_randft'},
}


def _cells(config, members):
  """(lr, C_Tr, member indices) for every cell of the grid, in config order."""
  for lr in config.finetune.lrs:
    for c in config.finetune.c_trs:
      yield lr, c, [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]


# ------------------------------------------------------------------ study ----


def table_rows(config, prior, pt_step, members, history, pretrained) -> list[dict]:
  """Tables 5-8 layout: one row per (lr, C_Tr), metrics at each eval step.

  Also, for the claims: step 0 (before fine-tuning), each seed's value
  (`<key>_seeds`), the natural C_Te = 0 set and the distinct answers (collapse).
  """
  ref_table = paper.table(config.finetune.task, paper.table_steps(pt_step))
  terminals = pcfg_model.vocab(config).terminals
  p_a = float(tasks.resolve_prior(pcfg_model.prior_probs(config, prior), terminals)[0])
  # The paper's cell of the same role: its P(a) for a named prior, its lr of the same rank.
  paper_p_a = float(tasks.resolve_prior(prior, terminals)[0])
  lrs = sorted(config.finetune.lrs, reverse=True)
  paper_lr = dict(zip(lrs, sorted(paper.APPENDIX_C_LRS, reverse=True))) if len(lrs) == len(
      paper.APPENDIX_C_LRS) else {lr: lr for lr in lrs}
  points = (0,) + tuple(config.finetune.eval_steps)
  rows = []
  for lr, c, idx in _cells(config, members):
    row = dict(prior=pcfg_model.prior_name(prior), p_a=p_a, pt_steps=pt_step, lr=lr, c_tr=c,
               n_seeds=len(idx), pretrained_o_pt=round(pretrained[0], 1),
               pretrained_o_ft=round(pretrained[1], 1))
    ref = ref_table.get((float(f'{paper_lr.get(lr, lr):g}'), paper_p_a, float(f'{c:g}')))
    for k, metric in enumerate(METRICS):
      steps, values = history.curve(metric)
      for j, s in enumerate(config.finetune.eval_steps):
        v = values[list(steps).index(s), idx]
        row[f'{metric}@{s}'], row[f'{metric}@{s}_sd'] = _mean_sd(v)
        row[f'paper {metric}@{j}'] = '' if ref is None else ref[2 * k + j]
        row[f'n_diverged@{s}'] = int(np.isnan(v).sum())
    for metric in METRICS + NATURAL_METRICS + (DISTINCT,):
      steps, values = history.curve(metric)
      for s in points:
        if s in list(steps):
          v = values[list(steps).index(s), idx]
          row.setdefault(f'{metric}@{s}', _mean_sd(v)[0])
          row[f'{metric}@{s}_seeds'] = ' '.join(f'{x:.1f}' for x in v)
    for s in config.finetune.eval_steps:
      row[f'n_collapsed@{s}'] = sum(x <= pcfg_train.COLLAPSED_MAX
                                    for x in pcfg_claims.seeds_of(row, f'{DISTINCT}@{s}'))
    rows.append(row)
  return rows


def _mean_sd(v) -> tuple:
  """Mean and sd over the seeds that did not diverge (NaN); 'diverged' when none is left."""
  ok = v[np.isfinite(v)]
  if not ok.size:
    return DIVERGED, ''
  return round(float(ok.mean()), 1), round(float(ok.std(ddof=1)), 1) if ok.size > 1 else 0.0


def _collapse_flag(r, s) -> str:
  diverged = r.get(f'n_diverged@{s}', 0)
  return ('*' if r.get(f'n_collapsed@{s}', 0) else '') + (
      f' [{diverged}/{r["n_seeds"]} diverged]' if diverged else '')


def table_markdown(config, rows) -> str:
  """Our mean over seeds with the paper's number in parentheses, at the first two eval points.

  A cell whose models (any seed) give <= COLLAPSED_MAX distinct answers on the
  test sets is flagged: its accuracies are a constant answer's, not a capability.
  """
  steps = tuple(config.finetune.eval_steps)
  e1, e2 = steps[:2] if len(steps) > 1 else (steps[0],) * 2
  out = []
  for r in rows:
    cell = {'lr': f'{r["lr"]:g}', 'P(a)': r['p_a'], 'C_Tr': f'{r["c_tr"]:g}'}
    for metric in METRICS:
      name = metric.replace('c_te', 'C_Te=').replace('/acc_o_', ' O_').replace('_pt', '_PT')
      name = name.replace('_ft', '_FT')
      for j, s in enumerate((e1, e2)):
        ref = r.get(f'paper {metric}@{j}', '')  # One eval step: no second paper column.
        cell[f'{name} @{s}'] = f'{r.get(f"{metric}@{s}", "")} ({ref}){_collapse_flag(r, s)}'
    for metric in NATURAL_METRICS:
      which = metric.rsplit('_', 1)[-1].upper()
      cell[f'natural C_Te=0 O_{which} @{e2}'] = r.get(f'{metric}@{e2}', '')
    cell['collapsed* (seeds)'] = ', '.join(f'{r[f"n_collapsed@{s}"]}/{r["n_seeds"]} @{s}'
                                           for s in (e1, e2) if r.get(f'n_collapsed@{s}', 0))
    out.append(cell)
  return tables.markdown_table(out)


def scale_note(config, analysis: bool = False) -> str:
  """The scale of the run, stated next to the verdicts."""
  f, m = config.finetune, config.model
  paper_scale = f.steps >= paper.PAPER_REFT_STEPS
  text = (f'Scale of these verdicts: {"paper" if paper_scale else "REDUCED"} scale: {f.steps} of '
          f"the paper's {paper.PAPER_REFT_STEPS:,} fine-tuning iterations, a "
          f'{m.n_layers}x{m.d_model} model (paper 6x192), {config.pretrain.steps} pretraining '
          f'iterations, {len(f.seeds)} seed(s), C_Tr {tuple(f.c_trs)}, test sets of '
          f'{config.eval.num_samples}')
  if analysis:
    text += f'; reFT {config.analysis.reft_steps} iterations'
  return (text + '. C_Te = 0 is the anti-correlated set unless a verdict names the natural one '
          '(chance agreement with the correlation allowed). Table cells marked * collapsed: some '
          f'seeds (counted in the last column) give <= {pcfg_train.COLLAPSED_MAX} distinct '
          'answers on the test sets, a constant answer rather than a capability.')


def claims_markdown(found) -> str:
  """The legend, the tally, the verdict table (one per arm when the claims carry [prior/arm]
  tags of several arms: each sensitivity arm judged by the same claims) and the controls."""
  cols = [c for c in claims_lib.CLAIMS_COLUMNS if c not in ('world', 'metric')]
  arm = lambda r: r['claim_id'].rsplit('/', 1)[-1].rstrip(']') if '[' in r['claim_id'] else ''
  arms = list(dict.fromkeys(arm(r) for r in found))
  text = f'{claims_lib.LEGEND} This run: {claims_lib.tally(found)}.\n\n'
  if len(arms) > 1:
    text += '\n\n'.join(f'{f"Arm `{a}`" if a else "reFT (every arm)"} '
                         f'({claims_lib.tally([r for r in found if arm(r) == a])}):'
                         f'\n\n' + tables.markdown_table([r for r in found if arm(r) == a], cols)
                         for a in arms)
  else:
    text += tables.markdown_table(found, cols)
  base = lambda cid: cid.split('[', 1)[0]
  controls = dict.fromkeys(f'- `{base(r["claim_id"])}`: {paper.CLAIMS[base(r["claim_id"])].control}'
                           for r in found if base(r['claim_id']) in paper.CLAIMS)
  return text + '\n\nControls (matched: same lrs, budget and evaluation grid):\n' + '\n'.join(
      controls)


def study_sections(config, pre_rows, rows, found, timing, calibration=None,
                   calibration_figure_path: str = '') -> list[tuple[str, str]]:
  sections = [
      ('Table 5 signatures, checked', scale_note(config) + '\n\n' + pcfg_agreement.line(
          config, rows) + '\n\n' + claims_markdown(found) +
       '\n\nThresholds fixed in wrapper_study/pcfg/paper.py before any run (metrics: '
       'tables/claims.csv).'),
      ('Scale', f'model {config.model.n_layers}x{config.model.d_model}, window '
       f'{config.data.window_length}, pretraining {config.pretrain.steps} iterations (batch '
       f'{config.pretrain.batch_size}), fine-tuning {config.finetune.steps} iterations (batch '
       f'{config.finetune.batch_size}), evaluated at {tuple(config.finetune.eval_steps)}; '
       f'seeds {tuple(config.finetune.seeds)}. At CPU scale these are not the paper\'s numbers.'),
      ('Pretrained accuracy (%, answer token)', tables.markdown_table(pre_rows)),
  ]
  if calibration is not None:
    sections.insert(1, pcfg_calibration.report_section(config, calibration, pre_rows,
                                                        calibration_figure_path))
  for prior in config.pretrain.priors:
    for pt_step in config.pretrain.keep_steps:
      name = pcfg_model.prior_name(prior)
      sel = [r for r in rows if r['prior'] == name and r['pt_steps'] == pt_step]
      sections.append((f'Fine-tuning {config.finetune.task}, prior {name}, pretrained {pt_step} '
                       'iterations (mean over seeds; paper in parentheses)',
                       table_markdown(config, sel)))
  sections.append(('Time (s)', tables.markdown_table(timing)))
  return sections


# --------------------------------------------------------- analysis tables ----


def probe_rows(config, results) -> list[dict]:
  """Best block and its held-out accuracy, per (prior, arm, target, model)."""
  labels = probing.site_labels(pcfg_model.model_config(config),
                               tuple(config.analysis.probe_layers) or None)
  rows = []
  for (prior, arm), r in results.items():
    acc = r['probes']['acc']
    for t, target in enumerate(('O_PT', 'O_FT')):
      rows.append(dict(prior=prior, arm=arm.name, target=target, model='pretrained',
                       best_block=labels[int(acc[0, :, t].argmax())],
                       accuracy=round(float(acc[0, :, t].max()), 1)))
      for lr, c, idx in _cells(config, r['members']):
        member_acc = acc[1 + np.array(idx), :, t]
        ok = np.isfinite(member_acc).all(1)  # Diverged members are NaN: left out, counted.
        name = f'lr={lr:g} C_Tr={c:g}' + (f' ({(~ok).sum()}/{len(ok)} diverged)'
                                          if not ok.all() else '')
        if not ok.any():
          rows.append(dict(prior=prior, arm=arm.name, target=target, model=name,
                           best_block=DIVERGED, accuracy=DIVERGED))
          continue
        per_block = member_acc[ok].mean(0)
        rows.append(dict(prior=prior, arm=arm.name, target=target, model=name,
                         best_block=labels[int(per_block.argmax())],
                         accuracy=round(float(per_block.max()), 1)))
  return rows


def weight_rows(config, results) -> list[dict]:
  """Mean relative change of every kernel / embedding, per (prior, arm, lr, C_Tr)."""
  rows = []
  for (prior, arm), r in results.items():
    for lr, c, idx in _cells(config, r['members']):
      row = dict(prior=prior, arm=arm.name, lr=lr, c_tr=c)
      ok = [i for i in idx if np.isfinite(next(iter(r['weights'].values()))[i])]
      if not ok:  # Every seed diverged.
        rows.append({**row, 'diverged': len(idx)})
        continue
      row.update({k: float(np.mean(v[ok])) for k, v in r['weights'].items()
                  if k.endswith('kernel') or k.endswith('embedding')})
      rows.append({**row, 'diverged': len(idx) - len(ok)})
  return rows


def weight_summary(rows) -> list[dict]:
  out = []
  for r in rows:
    mats = {k: v for k, v in r.items() if k not in ('prior', 'arm', 'lr', 'c_tr', 'diverged')}
    if not mats:
      out.append(dict(prior=r['prior'], arm=r['arm'], lr=r['lr'], c_tr=r['c_tr'],
                      largest=DIVERGED, median=DIVERGED))
      continue
    top = sorted(mats, key=mats.get, reverse=True)[:3]
    out.append(dict(prior=r['prior'], arm=r['arm'], lr=r['lr'], c_tr=r['c_tr'],
                    largest=', '.join(f'{k.replace("/kernel", "")} {mats[k]:.2e}' for k in top),
                    median=f'{np.median(list(mats.values())):.2e}'))
  return out


def mask_rows(config, results) -> list[dict]:
  """Units needed to win back half the lost Acc O_PT: grad x weight vs the learned mask."""
  ks = pcfg_analysis.prune_ks(config)
  rows = []
  for (prior, arm), r in results.items():
    del arm
    if 'prune' not in r:
      continue
    p = r['prune']
    for lr, c, idx in _cells(config, r['members']):
      row = dict(prior=prior, lr=lr, c_tr=c)
      for s, name in enumerate(('gradxw', 'learned')):
        found = [DIVERGED if np.isnan(p['acc_pt'][s, i, 0]) else
                 pcfg_analysis.units_to_restore(p['acc_pt'][s, i], r['pre_acc'][0], ks)
                 for i in idx]
        row[f'{name}_units_to_restore'] = ' '.join('-' if k is None else str(k) for k in found)
      row['learned_mask_units_below_half'] = ' '.join(
          DIVERGED if np.isnan(x) else str(int(x)) for x in p['mask_n_pruned'][idx])
      rows.append(row)
  return rows


def reft_rows(config, members, history) -> list[dict]:
  """The shared revival schema (`analysis.reft.REVIVAL_COLUMNS`), one row per group."""
  steps, acc = history.curve('c_te0/acc_o_pt')
  return reft_lib.revival_rows(config.finetune.task, members, steps, acc,
                               config.analysis.revival_threshold, sort_key=str)


# ---------------------------------------------------------------- figures ----


def _tagged(results, metric_key):
  """Members of every population tagged with (prior, arm), values joined: [X, sum P]."""
  tagged, cols, x = [], [], None
  for (prior, arm), r in results.items():
    x, values = r['history'].curve(metric_key)
    tagged += [(prior, arm, m) for m in r['members']]
    cols.append(values)
  return x, np.concatenate(cols, axis=1), tagged


def accuracy_figure(config, results, which: str):
  """Acc O_PT or O_FT during fine-tuning: rows prior x arm x C_Te (x family), cols lr."""
  keys = [f'c_te{c}/acc_o_{which}' for c in (0, 1)]
  if which == 'pt':
    keys += [f'c_te0/acc_o_pt_{fam}' for fam in pcfg_model.jailbreak_families(config)]
  xs, cols, tagged = None, [], []
  for key in keys:
    xs, values, t = _tagged(results, key)
    cols.append(values)
    tagged += [(key, *tm) for tm in t]
  multi_arm = len(pcfg_train.arms(config)) > 1
  return plots.grouped_curves(
      xs, np.concatenate(cols, axis=1), tagged,
      rows=lambda t: f'{t[1]}{" " + t[2].name if multi_arm else ""} {t[0].replace("/", " ")}',
      panel=lambda t: pcfg_claims.lr_name(config, t[3].lr), group=lambda t: f'C_Tr={t[3].c_tr:g}',
      ylabel=f'Acc O_{which.upper()} (%)', xlabel='fine-tuning iteration',
      title=f'Acc O_{which.upper()} during fine-tuning')


def probes_figure(config, results):
  """Held-out probe accuracy per block; rows prior x arm x target; pretrained dashed."""
  labels = probing.site_labels(pcfg_model.model_config(config),
                               tuple(config.analysis.probe_layers) or None)
  tagged, cols, pre = [], [], {}
  target_names = (f'count {config.finetune.operand_pt} (O_PT)',
                  f'count {config.finetune.operand_ft} (O_FT)')
  multi_arm = len(pcfg_train.arms(config)) > 1
  for (prior, arm), r in results.items():
    acc = r['probes']['acc']  # [1 + P, S, 2]
    for t, tname in enumerate(target_names):
      row = f'{prior} {arm.name} {tname}' if multi_arm else f'{prior} {tname}'
      pre[row] = acc[0, :, t]
      tagged += [(row, m) for m in r['members']]
      cols.append(acc[1:, :, t].T)
  fig = plots.grouped_curves(
      np.arange(len(labels)), np.concatenate(cols, axis=1), tagged, rows=lambda t: t[0],
      panel=lambda t: pcfg_claims.lr_name(config, t[1].lr), group=lambda t: f'C_Tr={t[1].c_tr:g}',
      ylabel='probe accuracy (%)', xlabel='block', title='Linear probes (C_Te = 0)')
  row_names = sorted(pre, key=str)
  n_cols = len(fig.axes) // len(row_names)
  for i, ax in enumerate(fig.axes):
    ax.plot(np.arange(len(labels)), pre[row_names[i // n_cols]], 'k--', label='pretrained')
    ax.set_xticks(np.arange(len(labels)), labels, fontsize=plots.TICK)
  plots.figure_legend(fig)  # One legend, now with the pretrained line.
  return fig


def pruning_figure(config, results, k_show: int):
  ks = np.array(pcfg_analysis.prune_ks(config))
  n = int((ks <= k_show).sum())
  tagged, cols = [], []
  for (prior, arm), r in results.items():
    del arm
    for metric, name in (('acc_pt', 'Acc O_PT'), ('acc_ft', 'Acc O_FT')):
      tagged += [(f'{prior} {name}', m) for m in r['members']]
      cols.append(r['prune'][metric][0, :, :n].T)  # grad x weight scoring.
  return plots.grouped_curves(
      ks[:n], np.concatenate(cols, axis=1), tagged, rows=lambda t: t[0],
      panel=lambda t: pcfg_claims.lr_name(config, t[1].lr), group=lambda t: f'C_Tr={t[1].c_tr:g}',
      ylabel='accuracy (%), C_Te = 0', xlabel='neurons pruned (K)',
      title=f'grad x weight neuron pruning, K = 0..{k_show}')


def mask_figure(config, results):
  tagged, cols = [], []
  for (prior, arm), r in results.items():
    del arm
    for s, sname in enumerate(('grad x weight', 'learned mask')):
      tagged += [(prior, sname, m) for m in r['members']]
      cols.append(r['prune']['acc_pt'][s].T)
  return plots.grouped_curves(
      np.array(pcfg_analysis.prune_ks(config)), np.concatenate(cols, axis=1), tagged,
      rows=lambda t: f'{t[0]} C_Tr={t[2].c_tr:g}',
      panel=lambda t: pcfg_claims.lr_name(config, t[2].lr),
      group=lambda t: t[1], ylabel='Acc O_PT (%), C_Te = 0', xlabel='neurons pruned (K)',
      title='Which units restore O_PT: grad x weight vs a learned mask')


def reft_figure(config, members, history):
  steps, acc = history.curve('c_te0/acc_o_pt')
  thr = config.analysis.revival_threshold
  names = {pcfg_train.SCR_FT: 'Scr.+FT', pcfg_train.SCR: 'Scr.'}

  def group(m):
    return names[m.source] if m.source in names else f'reFT {m.source} C_Tr={m.c_tr:g}'
  return plots.grouped_curves(
      steps, acc, members, panel=lambda m: f'reFT lr={m.lr:g}', group=group,
      ylabel='Acc O_PT (%), C_Te = 0', xlabel='reFT iteration', logx=True,
      hline=(thr, f'revival threshold ({thr:g}%)'),
      title=f'Reverse fine-tuning (fine-tuned at lr {max(config.finetune.lrs):g})')


def weight_figure(rows):
  keys = [k for k in max(rows, key=len) if k not in ('prior', 'arm', 'lr', 'c_tr', 'diverged')]
  data = np.array([[r.get(k, np.nan) for k in keys] for r in rows])  # NaN (blank): diverged.
  fig, ax = plots.plt.subplots(figsize=(0.45 * len(keys) + 3, 0.32 * len(rows) + 2))
  im = ax.imshow(np.log10(np.maximum(data, 1e-8)), aspect='auto', cmap='viridis')
  ax.set_xticks(range(len(keys)), [k.replace('/kernel', '').replace('blocks_', 'B') for k in keys],
                rotation=90, fontsize=plots.TICK)
  ax.set_yticks(range(len(rows)), [f"{r['prior']} {r['arm']} lr={r['lr']:g} C_Tr={r['c_tr']:g}"
                                   + (f" ({r['diverged']} diverged)" if r.get('diverged') else '')
                                   for r in rows], fontsize=plots.TICK)
  fig.colorbar(im, ax=ax, label='log10 ||dW|| / ||W_PT||')
  ax.set_title('Relative weight change, pretrained -> fine-tuned (mean over seeds)',
               fontsize=plots.LABEL + 1)
  fig.tight_layout()
  return fig


def figures(config, results, reft_out, w_rows) -> dict:
  """{file stem: () -> figure} of the variant's figures (config.analysis.variant)."""
  a = config.analysis
  makers = {
      'acc_ft': lambda: accuracy_figure(config, results, 'ft'),
      'acc_pt': lambda: accuracy_figure(config, results, 'pt'),
      'probes': lambda: probes_figure(config, results),
  }
  if a.pruning:
    makers['prune15'] = lambda: pruning_figure(config, results,
                                               min(paper.PRUNE_FEW_NEURONS, a.k_max))
    makers['prune100'] = lambda: pruning_figure(config, results, a.k_max)
    makers['mask'] = lambda: mask_figure(config, results)
  if reft_out:
    makers['reft'] = lambda: reft_figure(config, *reft_out)
  makers['weights'] = lambda: weight_figure(w_rows)
  stems = FIGURES[a.variant]
  return {stems[kind]: make for kind, make in makers.items() if kind in stems}


# ----------------------------------------------------------- analysis page ----


def analysis_sections(config, found, pre_rows, p_rows, m_rows, r_rows, w_rows,
                      timing, calibration=None) -> list[tuple[str, str]]:
  """The sections of report_<variant>.md; m_rows / r_rows None when not computed."""
  a = config.analysis
  stems = FIGURES[a.variant]
  fig = lambda *kinds: ''.join(f'\n\n![{stems[k]}](figures/{stems[k]}.png)'
                               for k in kinds if k in stems)
  sections = [
      ('Claims, checked', scale_note(config, analysis=True) + '\n\n' + claims_markdown(found)
       + '\n\nThresholds are fixed in wrapper_study/pcfg/paper.py before any run (metrics: '
       f'tables/analysis_{a.variant}_claims.csv). At CPU scale these are not '
       "the paper's numbers; iteration counts scale with reft_steps / 10K."),
      ('Scale', f'model {config.model.n_layers}x{config.model.d_model}, window '
       f'{config.data.window_length}, pretraining {config.pretrain.steps} iterations, '
       f'fine-tuning {config.finetune.steps} (lrs {tuple(config.finetune.lrs)}, C_Tr '
       f'{tuple(config.finetune.c_trs)}, seeds {tuple(config.finetune.seeds)}), probes '
       f'{a.probe_method} {a.probe_steps} steps on {a.probe_train_samples} samples; '
       f'reFT {a.reft_steps} iterations.'),
      ('Pretrained accuracy (%, answer token)', tables.markdown_table(pre_rows)),
  ]
  if calibration is not None:
    sections.append(pcfg_calibration.report_section(
        config, calibration, pre_rows, f'figures/{pcfg_calibration.FIGURE}.png'))
  sections += [
      ('Accuracy during fine-tuning', fig('acc_ft', 'acc_pt').strip()),
      ('Probes: held-out accuracy of the best block (mean over seeds)',
       tables.markdown_table(p_rows) + fig('probes')),
  ]
  if m_rows is not None:
    sections.append(('Units needed to win back half the lost Acc O_PT: grad x weight vs learned '
                     f'mask (per seed; - = never within k_max, or < {paper.RESTORE_MIN_LOSS} '
                     'points lost)', tables.markdown_table(m_rows) +
                     fig('prune15', 'prune100', 'mask')))
  if r_rows is not None:
    sections.append((f'Reverse fine-tuning: iterations to Acc O_PT >= {a.revival_threshold:g}%',
                     tables.markdown_table(r_rows) + '\n\nA member whose acc_o_pt_start is '
                     'already at the threshold reads "0" here; the P4 / E.4 claims leave it out '
                     '(fine-tuning did not remove O_PT: no revival).' + fig('reft')))
  sections.append(('Where fine-tuning moved the weights (largest relative change per group)',
                   tables.markdown_table(weight_summary(w_rows)) + fig('weights')))
  sections.append(('Time (s), per phase and per figure', tables.markdown_table(timing)))
  return sections
