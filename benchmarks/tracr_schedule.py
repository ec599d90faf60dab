r"""One fine-tuning schedule of the Tracr grid against the paper's Table 3 (issue 28).

  python benchmarks/tracr_schedule.py --workdir=/tmp/sched --steps=1500 --batch=32 \
      --warmup=300 --clip=1 --c_trs=0,1 --seeds=0,1,2 [--task=counter] [--noise=3e-4]

Trains only the fine-tuning grid (lrs x C_Tr x seeds, one jit, as the study
does; its TensorBoard traces under <workdir>/tb), then prints its
Table 3 rows beside the paper's, the agreement (report/agreement.py: entries
within 10 points, cells collapsed where the paper's are not), the wall time,
and per lr the fraction of logged steps whose gradient norm (before clipping)
exceeded the clip. Nothing is asserted; it reports, and writes
<workdir>/schedule.json.
"""

import json
import os
import pathlib
import sys
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from configs import tracr_study as tracr_config  # pylint: disable=g-import-not-at-top
from wrapper_study import metrics  # pylint: disable=g-import-not-at-top
from wrapper_study import population  # pylint: disable=g-import-not-at-top
from wrapper_study import tb_events  # pylint: disable=g-import-not-at-top
from wrapper_study.analysis import pruning  # pylint: disable=g-import-not-at-top
from wrapper_study.tracr import tasks  # pylint: disable=g-import-not-at-top
from wrapper_study.tracr import analysis  # pylint: disable=g-import-not-at-top
from wrapper_study.tracr import report  # pylint: disable=g-import-not-at-top
from wrapper_study.tracr import train as ft  # pylint: disable=g-import-not-at-top

_WORKDIR = flags.DEFINE_string('workdir', '/tmp/tracr_schedule', 'Output folder.')
_TASK = flags.DEFINE_string('task', 'counter', 'Task.')
_STEPS = flags.DEFINE_integer('steps', 500, 'Fine-tuning iterations.')
_BATCH = flags.DEFINE_integer('batch', 16, 'Batch size.')
_WARMUP = flags.DEFINE_integer('warmup', 100, 'Warmup iterations.')
_CLIP = flags.DEFINE_float('clip', 1.0, 'Global-norm clip (0: off).')
_NOISE = flags.DEFINE_float('noise', 3e-4, 'Weight-noise std.')
_C_TRS = flags.DEFINE_list('c_trs', ['0', '1'], 'C_Tr values.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds.')
_LOG_EVERY = flags.DEFINE_integer('log_every', 10, 'TensorBoard interval (steps).')
_PRUNE_K = flags.DEFINE_integer('prune_k', 0, 'If > 0: weight pruning of the grid (K = 0..this) '
                                'with its controls; prints gain_k1 and gain_fig55 per cell.')


def main(_):
  config = tracr_config.get_config()
  config.tasks = (_TASK.value,)
  f = config.finetune
  f.steps, f.batch_size, f.warmup_steps = _STEPS.value, _BATCH.value, _WARMUP.value
  f.grad_clip_norm, f.noise_std = _CLIP.value, _NOISE.value
  f.c_trs = tuple(float(c) for c in _C_TRS.value)
  f.seeds = tuple(int(s) for s in _SEEDS.value)
  f.log_every, f.save_every = _LOG_EVERY.value, max(_STEPS.value // 2, 1)
  workdir = pathlib.Path(_WORKDIR.value)
  spec = tasks.from_config(config, _TASK.value)
  tm = ft.compile_model(spec, cache_dir=config.cache_dir)
  data = ft.TaskData(spec, tm)
  test_sets = ft.make_test_sets(data, config.eval.num_samples, config.seed,
                                c_te0_set=config.eval.c_te0_set)
  t0 = time.time()
  with metrics.MetricWriter(workdir) as writer:
    members, params_P, history = ft.finetune_grid(config, data, test_sets, workdir, writer)
  wall = time.time() - t0
  finite = population.finite_members(params_P)
  final = {m: c[-1] for m in report.METRICS + report.NATURAL_METRICS
           if (c := history.curve(m)[1]).size}
  distinct = analysis.n_distinct(tm, data.position, params_P, test_sets)
  t3 = report.table3_rows(config, spec.task, members, final, finite, distinct)
  a = report.table3_agreement(t3)
  clip = {}
  run = f'{spec.task}/finetune'
  for lr in f.lrs:
    norms = []
    for m in members:
      if m.lr == lr:
        ev = tb_events.read_scalars(str(workdir / metrics.TB_SUBDIR / run / m.run_name))
        norms += [v for _, v in ev.get('train/grad_norm', [])]
    clip[f'{lr:g}'] = round(float(np.mean(np.array(norms) > f.grad_clip_norm)), 3) if (
        norms and f.grad_clip_norm) else ''
  for r in t3:
    print(f"lr={r['lr']:g} C_Tr={r['c_tr']:g}: " + ' '.join(
        f"{r[m]:.1f}({r.get('paper_' + m, '')})" for m in report.METRICS) +
          f" disagree-set O_PT/O_FT={r.get('c_te0_disagree/acc_o_pt')}/"
          f"{r.get('c_te0_disagree/acc_o_ft')} anti={r.get('c_te0_anti/acc_o_pt')}/"
          f"{r.get('c_te0_anti/acc_o_ft')} n_distinct={r['n_distinct']} "
          f"within={r.get('paper_within_10')}")
  print(f'{_TASK.value} steps={f.steps} batch={f.batch_size} warmup={f.warmup_steps} '
        f'clip={f.grad_clip_norm:g}: {a.line()}; wall {wall:.0f} s; '
        f'fraction of logged steps clipped per lr: {clip}')
  prows = []
  if _PRUNE_K.value:  # Rerunning a finished schedule resumes at its end: only this runs.
    config.pruning.k_max, config.pruning.c_trs = _PRUNE_K.value, f.c_trs
    units = {'weight': pruning.make_units(tm.params, 'weight')}
    singles = {}
    curves, top, pruned, n_main, pfinite = analysis.prune_population(
        config, data, members, params_P, test_sets, units, cache_dir=workdir / 'results',
        singles=singles)
    prows = report.pruning_rows(config, spec.task, pruned, curves, top, n_main, pfinite, singles)
    for r in prows:
      print(f"prune lr={r['lr']:g} C_Tr={r['c_tr']:g}: K=0 {r['acc_o_pt_k0']} gain_k1 "
            f"{r['gain_k1']} (controls {r['control_noised_gain_k1']}, "
            f"{r['control_c_tr0_gain_k1']}) gain_fig55 {r['gain_fig55']} (controls "
            f"{r['control_noised_gain_fig55']}, {r['control_c_tr0_gain_fig55']})")
  (workdir / 'schedule.json').write_text(json.dumps(dict(pruning=prows,
      steps=f.steps, batch=f.batch_size, warmup=f.warmup_steps, clip=f.grad_clip_norm,
      wall_s=wall, agreement=a.summary(), clip_fraction=clip, table3=t3), default=str))


if __name__ == '__main__':
  app.run(main)
