"""The TinyStories study's report: Table 1 beside the paper, losses, probes, claims, figures.

Writes tables/*.csv, figures/*.png and report.md from the runs' logs
(metrics.RunLog) and the probe accuracies. The claims rows come from
`tinystories.claims` (one CLAIMS_COLUMNS row each); the paper's numbers from `paper.py`.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Optional, Sequence

import numpy as np

from wrapper_study import metrics
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import paper_agreement
from wrapper_study.report import plots
from wrapper_study.report import tables
from wrapper_study.tinystories import agreement as ts_agreement
from wrapper_study.tinystories import analysis
from wrapper_study.tinystories import claims as ts_claims
from wrapper_study.tinystories import model as ts_model
from wrapper_study.tinystories import paper
from wrapper_study.tinystories import train
from wrapper_study.tinystories.paper import NOT_IN_PT, PRESENT


def row_label(protocol: str, lr_name: str, lr: float) -> str:
  return f'{protocol.replace("+", " + ")} ({lr_name}={lr:g})'


def _labels(config) -> dict:
  """Run name -> display name, for every deleted model."""
  return {train.deletion_name(p, lr): row_label(p, n, lr)
          for p, lr, n in train.deletion_runs(config)}


def n_generations(config, seeds: int = 0) -> int:
  """Generations behind one rate of `seeds` replicates (0: all of config.model_seeds), pooled."""
  return config.eval.num_generations * (seeds or len(config.model_seeds))


def table1_rows(config, logs: dict, seed: Optional[int] = None) -> list[dict]:
  """Table 1's layout: twist % at reFT points 0 and reft.score_steps, ours beside the paper.

  logs: the mean over every replicate (95% Wilson intervals over their pooled generations),
  or one replicate's (`seed` given: a column says which, the interval is over its own).
  """
  points = (0,) + tuple(config.reft.score_steps)
  n = n_generations(config, 1 if seed is not None else 0)
  rows = []
  entries = [(row_label(p, name, lr), train.deletion_name(p, lr), (p, name))
             for p, lr, name in train.deletion_runs(config)] + [('Not in PT', NOT_IN_PT, NOT_IN_PT)]
  for label, model, key in entries:
    ours = logs['reft_' + model].series('twist_fraction', points)
    row_paper = paper.PAPER_TABLE1.get(key)
    row = ({} if seed is None else {'seed': seed}) | {'deletion type': label, 'model': model}
    for j, (s, ps) in enumerate(zip(points, paper.PAPER_TABLE1_POINTS)):
      row[f'ours @{s}'] = round(ours[j], 1)
      _, low, high = ts_claims.rate(ours[j], n)
      row[f'ours @{s} 95% low'], row[f'ours @{s} 95% high'] = round(low, 1), round(high, 1)
      row[f'paper @{ps}'] = '' if row_paper is None else row_paper[j]
    rows.append(row)
  return rows


def table1_markdown(config, rows) -> str:
  points = (0,) + tuple(config.reft.score_steps)
  cells = []
  for r in rows:
    cell = {'Deletion type': r['deletion type']}
    for s, ps in zip(points, paper.PAPER_TABLE1_POINTS):
      cell[f'it {s} (paper it {ps})'] = (f"{r[f'ours @{s}']:.0f} [{r[f'ours @{s} 95% low']:.0f}, "
                                         f"{r[f'ours @{s} 95% high']:.0f}] ({r[f'paper @{ps}']})")
    cells.append(cell)
  return tables.markdown_table(cells)


def probe_table(config, probes: dict, world) -> str:
  sites = [f'B{l}' for l in range(config.model.n_layers + 1)]
  rows = []
  y = world.probe_test.labels_NxF
  for j, f in enumerate(world.probe_test.feature_names):
    base = 100 * max(y[:, j].mean(), 1 - y[:, j].mean())
    for m, accs in probes.items():
      rows.append({'feature': f, 'model': m, **{s: round(a, 1) for s, a in zip(sites, accs[f])},
                   'mean B1..': round(analysis.mean_over_blocks(accs[f]), 1),
                   'majority baseline': round(base, 1)})
  return tables.markdown_table(rows)


def summary_scalars(config, rows: list[dict], probes: dict, clf_scores: dict) -> dict:
  """The headline numbers as TensorBoard scalars (NaN: not measured, left out)."""
  summary = {'classifier/accuracy': clf_scores['accuracy']}
  for row in rows:
    for s in (0,) + tuple(config.reft.score_steps):
      summary[f'table1/{row["model"]}/it{s}'] = row[f'ours @{s}']
  for m, by_feature in probes.items():
    for f, accs in by_feature.items():
      summary.update({f'probe/{f}/{m}/B{l}': a for l, a in enumerate(accs)})
  return {k: v for k, v in summary.items() if not np.isnan(v)}


def figures(config, logs: dict, probes: dict, workdir) -> None:
  """Figs 11, 31, 33-38; a rerun draws one again only if its data or the plotting code changed."""
  fig_dir = pathlib.Path(workdir) / 'figures'
  key = metrics.digest(str(config), probes, {k: log.data for k, log in logs.items()})
  save = lambda make, path: plots.save_once(make, path, key, sys.modules[__name__])
  label = _labels(config)
  label[NOT_IN_PT] = 'Not in PT'
  label[PRESENT] = 'Present'
  d_steps = (0,) + tuple(config.deletion.loss_steps)
  save(lambda: plots.curves(
      d_steps, {label[m]: logs[m].series('twist_loss', d_steps) for m in label
                if m.startswith('delete_')},
      'deletion iteration', 'loss on Twist stories',
      'Fig. 31: Twist-story loss during deletion'), fig_dir / 'deletion_twist_loss.png')
  r_steps = (0,) + tuple(config.reft.loss_steps)
  models = [m for m in label if m != PRESENT]
  save(lambda: plots.curves(
      r_steps, {label[m]: logs['reft_' + m].series('twist_loss', r_steps) for m in models},
      'reFT iteration', 'loss on Twist stories', 'Figs 11 right, 33: reFT Twist-story loss',
      logx=True), fig_dir / 'reft_twist_loss.png')
  s_steps = (0,) + tuple(config.reft.score_steps)
  fractions = {label[m]: logs['reft_' + m].series('twist_fraction', s_steps) for m in models}
  n = n_generations(config)
  wilson = {name: tuple(np.array([ts_claims.rate(v, n)[k] for v in ys]) for k in (1, 2))
            for name, ys in fractions.items()}  # 95% Wilson band of each rate.
  save(lambda: plots.curves(
      s_steps, fractions, 'reFT iteration', '% generations with a twist (95% Wilson band)',
      'Table 1 / Fig. 34: reFT twist fraction', logx=True, ylim=(-3, 103), bands=wilson),
      fig_dir / 'reft_twist_fraction.png')
  sites = list(range(config.model.n_layers + 1))
  for f in next(iter(probes.values())):
    save(lambda: plots.curves(
        sites, {label[m]: probes[m][f] for m in probes}, 'block (B0 = embeddings)',
        f'{f} probe accuracy (%)', f'Figs 11 left, 35-38: {f} probe'),
        fig_dir / f'probe_{f}.png')


def _loss_rows(config, logs: dict) -> tuple[list[dict], list[dict]]:
  """Twist-story loss during deletion (per run) and during reFT (per model), 3 decimals."""
  runs = train.deletion_runs(config)
  d_steps = (0,) + tuple(config.deletion.loss_steps)
  del_rows = [{'run': row_label(p, n, lr),
               **{f'@{s}': f'{v:.3f}' for s, v in zip(
                   d_steps, logs[train.deletion_name(p, lr)].series('twist_loss', d_steps))}}
              for p, lr, n in runs]
  r_steps = (0,) + tuple(config.reft.loss_steps)
  reft_rows = [{'model': m, **{f'@{s}': f'{v:.3f}' for s, v in zip(
      r_steps, logs['reft_' + m].series('twist_loss', r_steps))}}
               for m in [train.deletion_name(p, lr) for p, lr, _ in runs] + [NOT_IN_PT]]
  return del_rows, reft_rows


def write_tables(config, workdir, world, logs: dict, rows, found, probes,
                 seed_rows: Sequence[list] = ()) -> tuple[list, list]:
  """tables/*.csv but timing.csv; returns the loss rows (deletion, reFT) for report.md.

  seed_rows: each replicate's table1_rows, written to table1_seeds.csv when there are several.
  """
  tables_dir = pathlib.Path(workdir) / 'tables'
  tables.write_csv(tables_dir / 'table1.csv', rows)
  tables.write_csv(tables_dir / paper_agreement.CSV, ts_agreement.summary_rows(config, rows))
  if len(seed_rows) > 1:
    tables.write_csv(tables_dir / 'table1_seeds.csv', [r for rs in seed_rows for r in rs])
  tables.write_csv(tables_dir / 'claims.csv', found, claims_lib.CLAIMS_COLUMNS)
  del_rows, reft_rows = _loss_rows(config, logs)
  tables.write_csv(tables_dir / 'deletion_twist_loss.csv', del_rows)
  tables.write_csv(tables_dir / 'reft_twist_loss.csv', reft_rows)
  probe_rows = [{'model': m, 'feature': f, **{f'B{l}': a for l, a in enumerate(accs)}}
                for m, by_f in probes.items() for f, accs in by_f.items()]
  tables.write_csv(tables_dir / 'probes.csv', probe_rows)
  tables.write_csv(tables_dir / 'classifier.csv', [world.clf_scores])
  return del_rows, reft_rows


def _scale(config, world) -> str:
  synthetic_data = not config.data.path
  p, m = config.pretrain, config.model
  if synthetic_data:
    data = ("the SYNTHETIC stand-in (wrapper_study/tinystories/synthetic.py), NOT the paper's "
            "data: every number below is toy-scale and not comparable to the paper's")
  else:
    data = f'TinyStories-Instruct from {config.data.path}'
  return (f'Data: {data} ({len(world.splits.test)} test / {len(world.splits.pretrain)} '
          f'pretrain / {len(world.splits.finetune)} fine-tune examples, {config.data.n_shards} '
          f'shards). Model: {m.n_layers} layers x {m.d_model} ({ts_model.n_params(config):,} '
          f'parameters), context {m.max_len}, vocab {m.vocab_size}. Pretraining {p.steps} steps x '
          f'{p.batch_size} sequences (lr {p.lr:g}); deletion {config.deletion.steps} steps x '
          f'{config.deletion.batch_size} (lrs {tuple(config.deletion.lrs)}); reFT '
          f'{config.reft.steps} steps x {config.reft.batch_size} (lr {config.reft.lr:g}; '
          f'{train.lr_budget_ratio(config):.2g} of pretraining\'s lr budget, the paper\'s '
          f'reFT {paper.REFT_BUDGET_RATIO:.2g}); '
          f'{config.eval.num_generations} generations of <= {config.eval.max_new_tokens} tokens '
          f'per point. {paper.PAPER_SCALE}')


def claims_scale(config) -> str:
  """The scale of the run, stated next to the verdicts."""
  c, paper_scale = config, (config.reft.steps >= paper.PAPER_REFT_STEPS and config.data.path)
  data = 'TinyStories-Instruct' if c.data.path else 'SYNTHETIC data (not the paper\'s)'
  return (f'Scale of these verdicts: {"paper" if paper_scale else "REDUCED"} scale: '
          f'{c.reft.steps} of the paper\'s {paper.PAPER_REFT_STEPS} reFT iterations, '
          f'{c.deletion.steps} of its 4000 deletion and {c.pretrain.steps} of its 30K pretraining '
          f'steps, {data}, {c.eval.num_generations} generations per rate (paper '
          f'{paper.PAPER_GENERATIONS}), {_seeds_rule(config)}')


def _seeds_rule(config) -> str:
  seeds = tuple(config.model_seeds)
  if len(seeds) == 1:
    return (f'one seed ({seeds[0]}; n_seeds 1: intervals are over generations or probe test '
            f'stories, or a +-{paper.LOSS_MARGIN:g} nats band on losses).')
  return (f'{len(seeds)} replicates (model_seeds {seeds}: each its own init, batch order and '
          'samples): every value is the mean over replicates with its 95% t-interval over '
          'them; the manipulation checks read the replicates\' mean (rates pooled over '
          f'{n_generations(config)} generations).')


def _cells(config) -> str:
  n, seeds = config.eval.num_generations, len(config.model_seeds)
  if seeds == 1:
    return f'{n} generations per cell'
  return (f'Each cell is the mean of {seeds} replicates, {n} generations each, with the 95% '
          f'Wilson interval of the pooled {n * seeds} (between-replicate spread: '
          'tables/table1_seeds.csv and the claims\' t-intervals)')


def _rate_cell(percent: Optional[float], n: int) -> str:
  """'68% [61, 74]': a generation rate of n samples with its 95% Wilson interval."""
  return 'n/a' if percent is None else '{:.0f}% [{:.0f}, {:.0f}]'.format(
      *ts_claims.rate(percent, n))


def calibration(config, logs_S: Sequence[dict]) -> str:
  """The starting point and the lr budgets: each replicate's pretrained models, then the
  anchors the CPU scale was chosen by (report section 'Calibration, the starting point')."""
  pt, n = config.pretrain.steps, config.eval.num_generations
  frac = lambda log: log.get('twist_fraction', pt)
  loss = lambda log: 'n/a' if log.get('twist_loss', pt) is None else (
      f"{log.get('twist_loss', pt):.3f}")
  rows = [{'replicate (seed)': s, 'Present twist fraction': _rate_cell(frac(l[PRESENT]), n),
           'Not-in-PT twist fraction': _rate_cell(frac(l[NOT_IN_PT]), n),
           'Present Twist-story loss': loss(l[PRESENT]),
           'Not-in-PT Twist-story loss': loss(l[NOT_IN_PT])}
          for s, l in zip(config.model_seeds, logs_S)]
  if len(logs_S) > 1:
    mean = analysis.mean_logs(logs_S)
    rows.append({'replicate (seed)': 'all (pooled)',
                 'Present twist fraction': _rate_cell(frac(mean[PRESENT]), n * len(logs_S)),
                 'Not-in-PT twist fraction': _rate_cell(frac(mean[NOT_IN_PT]), n * len(logs_S)),
                 'Present Twist-story loss': loss(mean[PRESENT]),
                 'Not-in-PT Twist-story loss': loss(mean[NOT_IN_PT])})
  return (f'After {pt} pretraining steps, each replicate (twist fraction: % of {n} generations '
          'asked for a Twist that the classifier calls one, 95% Wilson interval):\n\n'
          + tables.markdown_table(rows) + '\n\n'
          f'Anchors. The paper\'s Present follows the Twist instruction in >= '
          f'{paper.PAPER_PRESENT_AT_LEAST:g}% of generations (its F at eta_S still does after '
          'deletion, Table 1); Present above is the starting point to compare with it. '
          f'Movement, by the lr budget (lr x steps over Sum_t pretraining lr_t, the AdamW '
          f'bound on how far parameters move): reFT {train.lr_budget_ratio(config):.2g} '
          f'(paper {paper.REFT_BUDGET_RATIO:.2g}), deletion at the larger lr '
          f'{train.lr_budget_ratio(config, "deletion"):.2g} (paper '
          f'{paper.DELETION_BUDGET_RATIO:.2g}). Deletion lrs are the pretraining lr / 10 and '
          '/ 100 (the main text\'s eta_M and eta_S). Why each value was chosen: '
          'configs/tinystories_study.py.')


def write_report(config, workdir, world, logs: dict, rows, found, probes, loss_rows,
                 timing, logs_S: Sequence[dict] = ()) -> None:
  """tables/timing.csv and report.md: scale, claims, Table 1, classifier, losses, probes, time."""
  tables.write_csv(pathlib.Path(workdir) / 'tables' / 'timing.csv', timing.rows)
  p, present, clf = config.pretrain, logs[PRESENT], world.clf_scores
  fmt = lambda v, spec: 'n/a' if v is None else format(v, spec)

  frac = lambda log: _rate_cell(log.get('twist_fraction', p.steps), n_generations(config))
  ref = (f'Present after pretraining: Twist-story loss '
         f'{fmt(present.get("twist_loss", p.steps), ".3f")}, twist fraction '
         f'{frac(present)} (not in the paper\'s table). '
         f'Not in PT after pretraining: {fmt(logs[NOT_IN_PT].get("twist_loss", p.steps), ".3f")}, '
         f'{frac(logs[NOT_IN_PT])}. Brackets: 95% Wilson intervals over the generations.')
  points = (0,) + tuple(config.reft.score_steps)
  del_rows, reft_rows = loss_rows
  fig = lambda *stems: ''.join(f'\n\n![{s}](figures/{s}.png)' for s in stems
                               if (pathlib.Path(workdir) / 'figures' / f'{s}.png').exists())
  controls = '\n'.join(f'- `{c.claim_id}`: {c.control}' for c in paper.CLAIMS.values())
  sections = [
      ('Claims, checked', claims_scale(config) + '\n\n' + ts_agreement.line(config, rows)
       + '\n\n' + claims_lib.LEGEND + ' This run: '
       + claims_lib.tally(found) + '.\n\n' + tables.markdown_table(
           found, [c for c in claims_lib.CLAIMS_COLUMNS if c not in ('world', 'metric')])
       + '\n\nControls (matched: same lrs, budget and evaluation grid):\n' + controls
       + '\n\nThresholds, margins and decision rules fixed in '
       'wrapper_study/tinystories/paper.py before any run (metrics: tables/claims.csv). '
       'No sensitivity arm in this world: every deletion protocol and lr is in the main grid.'),
      ('Scale and data', _scale(config, world)),
      ('Calibration, the starting point', calibration(config, logs_S or [logs])),
      ('Table 1: % of generations with a twist during reFT (ours, paper in parentheses)',
       table1_markdown(config, rows) + f'\n\nOur reFT iterations {points} stand for the '
       f'paper\'s {paper.PAPER_TABLE1_POINTS} (reFT {config.reft.steps} vs '
       f'{paper.PAPER_REFT_STEPS} iterations). {_cells(config)} (paper '
       f'{paper.PAPER_GENERATIONS}). ' + ref + fig('reft_twist_fraction')),
      ('Twist classifier (scores the generations)',
       f'Held-out accuracy on the test split: {clf["accuracy"]:.1f}% (balanced '
       f'{clf["balanced_accuracy"]:.1f}%, majority baseline {clf["majority_baseline"]:.1f}%; '
       f'{clf["n_train"]} training / {clf["n_test"]} test stories). Paper (GPT-3.5 fine-tuned): '
       f'{paper.PAPER_CLASSIFIER_ACCURACY:g}%.'),
      ('Loss on Twist stories during deletion (Fig. 31; step 0 = Present)',
       tables.markdown_table(del_rows) + fig('deletion_twist_loss')),
      ('Loss on Twist stories during reFT (Figs 11 right, 33; step 0 = before reFT)',
       tables.markdown_table(reft_rows) + fig('reft_twist_loss')),
      (f'Probe accuracy (%) on {len(world.probe_test.labels_NxF)} test stories, '
       f'{len(world.probe_train.labels_NxF)} training stories (Figs 11 left, 35-38)',
       probe_table(config, probes, world) + '\n\nB0 averages token embeddings over the final 10 '
       'story tokens, so a feature whose signature words fall there (on the synthetic data: the '
       'moral and the ending sentences) is decodable at B0 already.' +
       fig(*[f'probe_{f}' for f in next(iter(probes.values()), {})])),
      ('Time (s)', tables.markdown_table(timing.rows) + '\n\n' + timing.note()),
  ]
  title = 'TinyStories study' + (' (TOY SCALE, SYNTHETIC DATA)' if not config.data.path else '')
  tables.write_report(pathlib.Path(workdir) / 'report.md', title, sections)
