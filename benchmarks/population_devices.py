r"""A population's step on one device vs its members spread over every host device.

  python benchmarks/population_devices.py [--config=default|paper] [--timed_steps=7]

The devices are the launcher's (wrapper_study/host_devices.py: 2 on a machine
with 2 or more cores; WRAPPER_STUDY_CPU_DEVICES=N for another count).

The Tracr grid (lrs x C_Tr x seeds as one vmapped population) is timed twice in
one run, side by side: on device 0 alone (XLA's intra-op threads use every
core), and with the member axis sharded over all devices (sharded jit: each
device steps its members). Prints the machine, the median ms/step of each, and
their ratio. Nothing is asserted; it reports.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import machine  # benchmarks/machine.py  # pylint: disable=g-import-not-at-top
from configs import tracr_study as tracr_config  # pylint: disable=g-import-not-at-top
from wrapper_study import losses  # pylint: disable=g-import-not-at-top
from wrapper_study import optim  # pylint: disable=g-import-not-at-top
from wrapper_study import population  # pylint: disable=g-import-not-at-top
from wrapper_study import train  # pylint: disable=g-import-not-at-top
from wrapper_study.tracr import tasks  # pylint: disable=g-import-not-at-top
from wrapper_study.tracr import train as ft  # pylint: disable=g-import-not-at-top

_CONFIG = flags.DEFINE_enum('config', 'default', ['paper', 'default'], 'Which scale to time.')
_TIMED = flags.DEFINE_integer('timed_steps', 7, 'Steps timed after warm-up (median).')


def _median_step(step, state, batch_fn, put) -> float:
  state, metrics = step(state, put(batch_fn(0)))  # Compiles.
  jax.block_until_ready(metrics)
  times = []
  for s in range(1, _TIMED.value + 1):
    t0 = time.perf_counter()
    state, metrics = step(state, put(batch_fn(s)))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(_):
  print('\n'.join(machine.describe()))
  config = tracr_config.get_config('paper' if _CONFIG.value == 'paper' else '')
  f = config.finetune
  mesh = Mesh(np.array(jax.devices()), ('member',))
  if mesh.size == 1:
    print('one device only: set WRAPPER_STUDY_CPU_DEVICES=<n> (n >= 2)')
  for task in config.tasks:
    spec = tasks.from_config(config, task)
    tm = ft.compile_model(spec, cache_dir=config.cache_dir)
    data = ft.TaskData(spec, tm)
    members = population.grid(f.lrs, f.c_trs, f.seeds)
    tx = optim.make_optimizer(ft.sgd_config(config, f.warmup_steps), f.steps)
    # noise_std -1 (calibrated in a study) as no noise: the step's speed does not depend on it.
    params = ft.noisy_params(tm.params, members, 0, max(f.noise_std, 0.0), ft.FROZEN)
    lr_P = np.array([m.lr for m in members], np.float32)
    # One vmap (member_chunk=0) on both sides: the member axis is what gets sharded.
    step = train.make_train_step(losses.answer_loss_fn(tm.config, data.position), tx, vmap=True,
                                 member_chunk=0)
    batch_fn = ft.make_batch_fn(data, members, f.batch_size, 0, spec.operand_ft)

    def spread(x):  # Member-axis leaves over the devices, the rest replicated.
      per_member = getattr(x, 'ndim', 0) and x.shape[0] == len(members)
      return jax.device_put(x, NamedSharding(
          mesh, PartitionSpec('member') if per_member else PartitionSpec()))

    fresh = lambda: train.create_population(jax.tree.map(jnp.array, params), tx, lr_P)
    one = _median_step(step, fresh(), batch_fn, lambda b: b)
    if len(members) % mesh.size:
      print(f'{task}: {len(members)} members do not split over {mesh.size} devices; skipped')
      continue
    many = _median_step(step, jax.tree.map(spread, fresh()), batch_fn,
                        lambda b: jax.tree.map(spread, b))
    print(f'{task:15s} P={len(members)}: one device {one * 1e3:8.1f} ms/step | members over '
          f'{mesh.size} devices {many * 1e3:8.1f} ms/step | ratio one / spread {one / many:.2f}x')


if __name__ == '__main__':
  machine.ensure_fast_allocator()  # The launcher's allocator: same speed as a run.
  app.run(main)
