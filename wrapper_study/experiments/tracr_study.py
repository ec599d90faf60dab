"""The Tracr study: compiled RASP programs fine-tuned on their tasks, then audited.

Per task (Counter, Max-identifier, or any registered or 'file.py:function'
task; see wrapper_study/tracr/tasks.py): compile (cached) -> load into Flax ->
controls on the compiled model -> fine-tune the lr x C_Tr x seed grid as one
population -> Table 3 beside the paper -> accuracy curves -> attention and MLP
maps -> weight and neuron pruning -> reverse fine-tuning against Scr.+FT ->
claims -> report.md. This module only validates the config and sequences the
phases of wrapper_study/tracr/. Config: configs/tracr_study.py (its docstring
lists every choice the paper leaves open).
"""

from __future__ import annotations

from absl import logging

from wrapper_study import checkpoint
from wrapper_study import config_check as cc
from wrapper_study import metrics
from wrapper_study import model as model_lib
from wrapper_study import population
from wrapper_study.analysis import pruning
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import plots
from wrapper_study.report import tables
from wrapper_study.tracr import analysis
from wrapper_study.tracr import anchors
from wrapper_study.tracr import calibration
from wrapper_study.tracr import claims as tracr_claims
from wrapper_study.tracr import maps
from wrapper_study.tracr import paper
from wrapper_study.tracr import report
from wrapper_study.tracr import tasks
from wrapper_study.tracr import train


def task_spec(config, name: str) -> tasks.TaskSpec:
  """The task's registered defaults, overridden by its config section."""
  return tasks.from_config(config, name)


def task_names(config) -> list[str]:
  return [tasks.get(t).name for t in config.tasks]


def validate(config) -> None:
  """Everything that can be checked without compute; raises ConfigError."""
  if isinstance(config.tasks, str) or not config.tasks:
    cc.fail('tasks', config.tasks, 'must be a non-empty tuple of task names')
  for t in config.tasks:
    try:
      tasks.get(t)
    except ValueError as e:
      cc.fail('tasks', tuple(config.tasks), str(e).rstrip('.'))
  if len(set(task_names(config))) != len(config.tasks):
    cc.fail('tasks', tuple(config.tasks), 'names a task twice')
  cc.non_negative_int(config, 'seed', 'figures.num_inputs', 'pruning.k_max',
                      'pruning.chunk_size')
  cc.positive(config, 'eval.num_samples', 'eval.batch_size', 'finetune.steps',
              'finetune.batch_size', 'finetune.num_evals', 'finetune.save_every',
              'finetune.log_every', 'pruning.num_grad_samples', 'reft.steps', integer=True)
  cc.non_negative_int(config, 'finetune.warmup_steps', 'reft.warmup_steps')
  for phase in ('finetune', 'reft'):
    if config[phase].warmup_steps >= config[phase].steps:
      cc.fail(f'{phase}.warmup_steps', config[phase].warmup_steps,
              f'must be below {phase}.steps={config[phase].steps}')
  for path in ('finetune.lrs', 'reft.lrs', 'reft.scratch_lrs'):
    cc.positive_list(config, path)
  cc.fractions(config, 'finetune.c_trs')
  if not config.finetune.seeds or any(not isinstance(s, int) or s < 0 for s in config.finetune.seeds):
    cc.fail('finetune.seeds', config.finetune.seeds, 'must be a non-empty tuple of integers >= 0')
  if not 0 <= config.finetune.momentum < 1:
    cc.fail('finetune.momentum', config.finetune.momentum, 'must lie in [0, 1)')
  if config.finetune.grad_clip_norm < 0:
    cc.fail('finetune.grad_clip_norm', config.finetune.grad_clip_norm, 'must be >= 0 (0: off)')
  if config.finetune.noise_std < 0 and config.finetune.noise_std != -1:
    cc.fail('finetune.noise_std', config.finetune.noise_std,
            'must be >= 0 (a standard deviation) or -1 (the calibration\'s choice)')
  cc.positive_list(config, 'calibration.noise_grid')
  for arm in config.calibration.arms:
    try:
      train.parse_arm(arm)
    except ValueError as e:
      cc.fail('calibration.arms', tuple(config.calibration.arms), str(e))
  if config.calibration.arm_seeds:
    cc.seeds(config, 'calibration.arm_seeds')
  if not 0 < config.calibration.anchor_pct <= 100:
    cc.fail('calibration.anchor_pct', config.calibration.anchor_pct, 'must lie in (0, 100]')
  cc.subset_of(config, 'pruning.granularities', pruning.GRANULARITIES, allow_empty=True)
  cc.one_of(config, 'precision', model_lib.PRECISIONS)
  cc.one_of(config, 'eval.c_te0_set', paper.C_TE0_SETS)
  cc.one_of(config, 'qkv', model_lib.QKV_FORMS)
  cc.member_chunk(config)
  for path in ('reft.source_c_trs', 'figures.c_trs', 'pruning.c_trs'):
    cc.subset_of(config, path, config.finetune.c_trs, allow_empty=True)
  cc.subset_of(config, 'reft.source_lrs', config.finetune.lrs, allow_empty=True)
  if not 0 < config.reft.revival_threshold <= 100:
    cc.fail('reft.revival_threshold', config.reft.revival_threshold, 'must lie in (0, 100]')
  for src in config.reft.source_lrs:
    if any(lr >= src for lr in config.reft.lrs):
      cc.fail('reft.lrs', config.reft.lrs,
              f'the paper forces reFT lrs below the fine-tuning lr; source lr {src:g} is not above all')
  for name in task_names(config):
    try:
      task_spec(config, name).validate(prefix=name)
      train.check_program(task_spec(config, name))
    except ValueError as e:
      raise cc.ConfigError(f'config.{e}') from None
  _check_k_max(config)


def _check_k_max(config) -> None:
  """pruning.k_max against the prunable units, from the compiled shapes (cached, no training)."""
  if not config.pruning.granularities or not config.pruning.k_max:
    return
  for name in task_names(config):
    try:
      tm = train.compile_model(task_spec(config, name), cache_dir=config.cache_dir)
    except ValueError as e:  # What only tracr's compiler finds (e.g. a program's vocabulary).
      raise cc.ConfigError(f'config.{name}: {e}') from None
    for gran in config.pruning.granularities:
      n = analysis.n_prunable(tm.params, gran)
      if config.pruning.k_max > n:
        raise cc.ConfigError(
            f'config.pruning.k_max={config.pruning.k_max} exceeds the {n} prunable {gran}s of '
            f'{name}; valid: 0..{n}. Fix it with --config.pruning.k_max=...')


def plan(config):
  """The training phases as shapes, for `--dry_run` (wrapper_study/dry_run.py)."""
  return train.dry_run_phases(config)


def sensitivity_rows(config, data, test_sets, workdir, writer,
                     arm_claims: dict = None) -> list[dict]:
  """Table 3 of the grid rerun under each of calibration.arms (how much the start decides it);
  arm_claims (arm -> rows) gets the task's claims judged on each arm's grid (issue 29)."""
  rows = []
  for arm in config.calibration.arms:
    acfg = train.arm_config(config, arm)
    members, params_P, history = train.finetune_grid(acfg, data, test_sets, workdir, writer,
                                                     arm=arm)
    final = {m: c[-1] for m in report.METRICS + report.NATURAL_METRICS
             if (c := history.curve(m)[1]).size}
    distinct = analysis.n_distinct(data.tm, data.position, params_P, test_sets)
    finite = population.finite_members(params_P)
    rows += [{'arm': arm, **r} for r in report.table3_rows(
        acfg, data.spec.task, members, final, finite, distinct)]
    if arm_claims is not None and data.spec.impl.paper_claims:
      mrows = analysis.member_rows(acfg, data, members, params_P, history, test_sets, finite)
      arm_claims.setdefault(arm, []).extend(tracr_claims.task_claims(
          data.spec.task, data.spec.impl.paper_claims, tracr_claims.Evidence(mrows)))
  tables.write_csv(workdir / 'tables' / f'table3_arms_{data.spec.task}.csv', rows)
  return rows


def agreement_rows(name, t3, arm_rows) -> list[dict]:
  """Table 3's agreement with the paper's, the main grid and each arm (table3_agreement.csv)."""
  arms = dict.fromkeys(r['arm'] for r in arm_rows)
  return [report.agreement_row(name, '', t3)] + [
      report.agreement_row(name, a, [r for r in arm_rows if r['arm'] == a]) for a in arms]


def run_task(config, spec, workdir, writer, times, results) -> list[tuple[str, str]]:
  """Every phase of one task; appends to results, returns its report sections."""
  name = spec.task
  with times.timed(f'{name}/compile'):  ######## Compile, load, check before compute ########
    tm, ft_tm = train.compile_pair(spec, config.cache_dir, config.precision, config.qkv)
    units = {g: pruning.make_units(tm.params, g) for g in config.pruning.granularities}
    for u in units.values():  # Also checked in validate, before any compute.
      pruning.check_k(config.pruning.k_max, u)
    logging.info('%s: compiled and loaded: %s', name, tm.config)
    with checkpoint.Checkpointer(workdir / 'checkpoints' / f'{name}_compiled',
                                 meta=checkpoint.make_meta(f'tracr/{name}', tm.config, tm.params),
                                 save_every=1, max_to_keep=1) as ckpt:
      ckpt.save(0, {'params': tm.params}, force=True)
    data = train.TaskData(spec, tm)
    test_sets = train.make_test_sets(data, config.eval.num_samples, config.seed,
                                     c_te0_set=config.eval.c_te0_set)
    row, acc0 = analysis.compiled_row(data, test_sets)
    results['compiled'].append(row)
    # Under the grid's tags, at its first and last step: a flat reference line in the charts of
    # the fine-tuned members (one point under tags of its own made charts no grid run fills).
    for step in (0, config.finetune.steps):
      writer.run(f'{name}/compiled').write_scalars(step, {f'eval/{k}': v for k, v in acc0.items()})
    # The starting point before any training: each seed's noised-only model per noise level.
    crows = analysis.calibration_rows(config, data, test_sets, acc0['c_te0/acc_o_pt'])
    results['calibration'] += crows
    noise, why = analysis.start_noise(config, crows)
    config = train.with_noise(config, noise)

  with times.timed(f'{name}/finetune'):  ######## Fine-tuning grid (one jit) ########
    members, params_P, history = train.finetune_grid(config, data, test_sets, workdir, writer)
    finite = population.finite_members(params_P)
    row.update(analysis.noised_columns(history, report.METRICS))
    accs = {m: history.curve(m)[1] for m in report.METRICS + report.NATURAL_METRICS}
    # A run resumed from before the natural C_Te=0 set existed has no curve for it.
    final = {m: c[-1] for m, c in accs.items() if c.size}
    key = metrics.digest(params_P, [t.inputs for t in test_sets.values()], str(config.finetune),
                         config.seed, str(tm.config))
    mrows = metrics.cached_json(
        workdir / 'results' / f'members_{name}_{key}.json',
        lambda: analysis.member_rows(config, data, members, params_P, history, test_sets, finite))
    tables.write_csv(workdir / 'tables' / f'members_{name}.csv', mrows)
    distinct = [r['n_distinct'] for r in mrows if r['kind'] == 'fine-tuned']
    t3 = report.table3_rows(config, name, members, final, finite, distinct)
    tables.write_csv(workdir / 'tables' / f'table3_{name}.csv', t3)
    plots.save_once(lambda: report.finetune_figure(name, members, history, finite),
                    workdir / 'figures' / f'finetune_curves_{name}.png',
                    metrics.digest(history.curve(report.METRICS[0])[0], accs, str(members),
                                   finite), report)

    traces = calibration.read_traces(workdir, f'{name}/finetune', members)
    plots.save_once(lambda: calibration.traces_figure(name, members, traces, config.figures.c_trs),
                    workdir / 'figures' / f'traces_{name}.png',
                    metrics.digest([v for _, v in traces.values()], str(members),
                                   config.figures.c_trs), calibration)
    traces_text = calibration.traces_paragraph(
        name, config, calibration.traces_summary(config, members, traces, t3))

  arm_rows = []
  if config.calibration.arms:
    with times.timed(f'{name}/sensitivity'):  ######## The same grid under other starts ########
      arm_rows = sensitivity_rows(config, data, test_sets, workdir, writer,
                                  results.setdefault('arm_claims', {}))

  with times.timed(f'{name}/maps'):  ######## Attention and MLP maps ########
    maps.map_figures(config, data, members, params_P, test_sets, workdir,
                       writer.run(f'{name}/maps'))

  prows, pmembers = [], []
  with times.timed(f'{name}/pruning'):  ######## Pruning, with its controls ########
    if units:
      singles = {}
      curves, top, pruned, n_main, pfinite = analysis.prune_population(
          config, data, members, params_P, test_sets, units, cache_dir=workdir / 'results',
          singles=singles)
      prows = report.pruning_rows(config, name, pruned, curves, top, n_main, pfinite, singles)
      pmembers = report.pruning_member_rows(name, pruned, curves, pfinite, singles)
      for gran, c in curves.items():
        plots.save_once(lambda: report.pruning_figure(config, name, gran, pruned, c, pfinite),
                        workdir / 'figures' / f'pruning_{gran}_{name}.png',
                        metrics.digest(c, str(pruned), pfinite, str(config.pruning),
                                       config.finetune.lrs), report)
      tables.write_csv(workdir / 'tables' / f'pruning_{name}.csv', prows)
      tables.write_csv(workdir / 'tables' / f'pruning_members_{name}.csv', pmembers)

  with times.timed(f'{name}/reft'):  ######## Reverse fine-tuning vs Scr.+FT ########
    reft_members, reft_history, rfinite = train.reft_population(
        config, data, ft_tm, members, params_P, test_sets, workdir, writer)
    thr = config.reft.revival_threshold
    rrows = report.reft_rows(name, reft_members, reft_history, thr, rfinite)
    rmembers = report.reft_member_rows(name, reft_members, reft_history, thr, rfinite)
    tables.write_csv(workdir / 'tables' / f'reft_{name}.csv', rrows)
    tables.write_csv(workdir / 'tables' / f'reft_members_{name}.csv', rmembers)
    plots.save_once(lambda: report.reft_figure(name, reft_members, reft_history, rfinite, thr),
                    workdir / 'figures' / f'reft_{name}.png',
                    metrics.digest(reft_history.curve('c_te0/acc_o_pt'), str(reft_members),
                                   rfinite, thr), report)

  evidence = tracr_claims.Evidence(mrows, pmembers, rmembers, config.reft.steps, thr)
  judged, skipped = tracr_claims.claims(name, spec.impl.paper_claims, evidence)
  results['claims'] += judged
  results['skipped_claims'] += skipped
  results['table3'] += t3
  results['agreement'] += agreement_rows(name, t3, arm_rows)
  results['pruning'] += prows
  results['reft'] += rrows
  arows = anchors.check(spec.impl.paper_claims, mrows)
  results['anchors'] += [dict(program=name, **r) for r in arows]
  return ([calibration.calibration_section(config, name, crows, why, arows, traces_text)] +
          report.task_sections(config, name, t3, prows, rrows, units, workdir) +
          calibration.arm_sections(config, name, arm_rows))


def run(config, workdir) -> dict:
  validate(config)
  workdir = tables.make_workdir(workdir)
  results = {k: [] for k in ('compiled', 'calibration', 'table3', 'agreement', 'anchors',
                             'pruning', 'reft', 'claims', 'skipped_claims')}
  specs = [task_spec(config, name) for name in task_names(config)]
  sections, times = [], metrics.PhaseTimes(workdir, 'timing', plan=[
      f'{s.task}/{p}' for s in specs for p in ('compile', 'finetune', 'sensitivity', 'maps',
                                                 'pruning', 'reft')
      if p != 'sensitivity' or config.calibration.arms])
  with metrics.MetricWriter(workdir) as writer:
    for spec in specs:
      sections += run_task(config, spec, workdir, writer, times, results)
  times.add_total()
  results['timing'] = times.rows
  tables.write_csv(workdir / 'tables' / 'compiled_accuracy.csv', results['compiled'])
  tables.write_csv(workdir / 'tables' / 'calibration.csv', results['calibration'])
  tables.write_csv(workdir / 'tables' / 'table3_agreement.csv', results['agreement'])
  tables.write_csv(workdir / 'tables' / 'lr_anchors.csv', results['anchors'])
  tables.write_csv(workdir / 'tables' / 'claims.csv', results['claims'], claims_lib.CLAIMS_COLUMNS)
  tables.write_csv(workdir / 'tables' / 'claims_arms.csv',
                   [{**r, 'claim_id': f'{arm}:{r["claim_id"]}'}
                    for arm, rows in results.get('arm_claims', {}).items() for r in rows],
                   claims_lib.CLAIMS_COLUMNS)
  tables.write_csv(workdir / 'tables' / 'timing.csv', results['timing'])
  about = {s.task: s.impl.description or s.program_name for s in specs}
  tables.write_report(workdir / 'report.md', 'Tracr study',
                      report.head_sections(config, results, about) + sections)
  metrics.write_report(workdir, workdir / 'report.md')  # Text and figures in TensorBoard.
  return results
