r"""The dry run's projection against measurement, on this machine.

  python benchmarks/dry_run_check.py [--configs=tracr_study:smoke,tracr_study,...] [--timed=5]

For each config, every training phase of its `--dry_run` plan (wrapper_study/dry_run.py) is
compiled exactly as the plan compiles it, then RUN: the same executable on arrays of the
planned shapes (parameters and batch of zeros: speed does not depend on the values; a
fixed batch, so no data draw is timed), its median step over --timed steps. The projection
is the plan's at this machine's measured fp32 matmul peak (benchmarks/machine.py
matmul_flops_per_s, measured again right after each phase's steps: a loaded machine drifts)
and MFU 1: XLA's FLOPs of the step over that peak, the step's FLOP
floor. Printed per phase: projected and measured ms/step and their factor measured /
projected (= 1 / the utilisation reached), and the machine. The dry run's time at a
given --dry_run_mfu is right on this machine when that MFU is 1 / this factor.

One host device (WRAPPER_STUDY_CPU_DEVICES=1 unless set): the peak is measured on one
device, and the plan is of one chip. Populations are the plan's one vmap over members (on
CPU a run maps them one at a time when they are larger than tiny: train.default_member_chunk).
Nothing here is asserted.
"""

import os
import sys

os.environ.setdefault('WRAPPER_STUDY_CPU_DEVICES', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import machine  # benchmarks/machine.py  # pylint: disable=g-import-not-at-top
import configs  # pylint: disable=g-import-not-at-top
from wrapper_study import dry_run  # pylint: disable=g-import-not-at-top
from wrapper_study.pcfg import train as pcfg_train  # pylint: disable=g-import-not-at-top
from wrapper_study.tinystories import train as tinystories_train  # pylint: disable=g-import-not-at-top
from wrapper_study.tracr import train as tracr_train  # pylint: disable=g-import-not-at-top

# Each experiment's plan(config), read from the worlds' train modules: a benchmark imports no
# experiment (tests/test_layout.py).
_PLANS = {'tracr_study': tracr_train.dry_run_phases,
          'pcfg_study': pcfg_train.dry_run_phases,
          'pcfg_analysis': lambda c: pcfg_train.dry_run_phases(c, analysis=True),
          'tinystories_study': tinystories_train.dry_run_phases}

_CONFIGS = flags.DEFINE_list(
    'configs', ['tracr_study:smoke', 'tracr_study', 'pcfg_study:smoke', 'pcfg_study',
                'tinystories_study:smoke', 'tinystories_study'],
    'Packaged configs name[:arg] whose phases are checked.')
_TIMED = flags.DEFINE_integer('timed', 5, 'Steps timed per phase after one untimed call.')


def _load(spec: str):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = configs.resolve(spec).partition(':')
  module_spec = importlib.util.spec_from_file_location('_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(*([arg] if arg else []))


def _zeros(tree):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)


def main(argv):
  del argv
  peak = machine.matmul_flops_per_s()
  print('\n'.join(machine.describe()))
  print(f'measured fp32 matmul peak: {peak / 1e9:.0f} GFLOP/s (2048^2, best of 5)')
  print('| config | phase | GFLOP/step | peak GFLOP/s (after) | projected ms/step (MFU 1) | '
        'measured ms/step | measured / projected |')
  print('|---|---|---|---|---|---|---|')
  factors = []
  for spec in _CONFIGS.value:
    config = _load(spec)
    for phase in _PLANS[config.experiment](config):
      compiled, n_dev, state, batch = dry_run.compile_phase(phase)
      measured, _ = machine.time_train_steps(compiled, _zeros(state), lambda _, b=_zeros(batch): b,
                                             _TIMED.value)
      # The peak measured right after the phase's steps: a loaded machine's speed drifts.
      peak_now = machine.matmul_flops_per_s(repeats=3)
      row = dry_run.row_of(phase, compiled, n_dev)
      projected = row.step_seconds(peak_now / 1e12, 1.0)
      factors.append(measured / projected)
      print(f'| {spec} | {phase.name} | {row.gflop_per_step:.4g} | {peak_now / 1e9:.0f} | '
            f'{projected * 1e3:.3g} | {measured * 1e3:.3g} | {measured / projected:.2f}x |',
            flush=True)
  print(f'factor measured / projected: {min(factors):.2f}x .. {max(factors):.2f}x over '
        f'{len(factors)} phases')
  print('load average after (1/5/15 min): %.2f %.2f %.2f' % os.getloadavg())


if __name__ == '__main__':
  machine.ensure_fast_allocator()
  app.run(main)
