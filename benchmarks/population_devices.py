r"""A population's step on one device vs its members spread over every host device.

  python benchmarks/population_devices.py [--config=default|paper] [--timed_steps=7]

The devices are the launcher's (wrapper_study/host_devices.py: 2 on a machine
with 2 or more cores; WRAPPER_STUDY_CPU_DEVICES=N for another count).

The Tracr grid (lrs x C_Tr x seeds as one population) is timed twice in one
run, its steps interleaved round by round (machine.time_interleaved): on one
device (XLA's intra-op threads use every core), and with its members spread over
all devices as a run spreads them (train.member_mesh, shard_map: each device
steps its members). Each side maps its members the library's default way there
(train.default_member_chunk: on one device by member size, spread one member at
a time). Prints the machine, the median ms/step of each, and their ratio.
Nothing is asserted; it reports.
"""

import os
import sys

from absl import app
from absl import flags
import jax
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


def main(_):
  print('\n'.join(machine.describe()))
  config = tracr_config.get_config('paper' if _CONFIG.value == 'paper' else '')
  f = config.finetune
  for task in config.tasks:
    spec = tasks.from_config(config, task)
    tm = ft.compile_model(spec, cache_dir=config.cache_dir)
    data = ft.TaskData(spec, tm)
    members = population.grid(f.lrs, f.c_trs, f.seeds)
    mesh = train.member_mesh(len(members))
    if mesh is None:
      print(f'{task}: {len(members)} members on {jax.device_count()} device(s): no mesh '
            '(set WRAPPER_STUDY_CPU_DEVICES=<n>, n >= 2); skipped')
      continue
    tx = optim.make_optimizer(ft.sgd_config(config, f.warmup_steps), f.steps)
    # noise_std -1 (calibrated in a study) as no noise: the step's speed does not depend on it.
    params = ft.noisy_params(tm.params, members, 0, max(f.noise_std, 0.0), ft.FROZEN)
    lr_P = np.array([m.lr for m in members], np.float32)
    loss_fn = losses.answer_loss_fn(tm.config, data.position)
    batch_fn = ft.make_batch_fn(data, members, f.batch_size, 0, spec.operand_ft)
    fresh = lambda: train.create_population(jax.tree.map(jnp.array, params), tx, lr_P)
    flops = train.member_flops(params, batch_fn(0))
    spread_state, spread_batch_fn = train.place_on_mesh(fresh(), batch_fn, mesh, vmap=True)
    times = machine.time_interleaved({
        'one': (train.make_train_step(loss_fn, tx, vmap=True), fresh(), batch_fn, 1),
        'spread': (train.make_train_step(loss_fn, tx, vmap=True, mesh=mesh), spread_state,
                   spread_batch_fn, 1)}, _TIMED.value)
    one, many = times['one'], times['spread']
    print(f'{task:15s} P={len(members)}: one device (chunks of '
          f'{train.default_member_chunk(flops)}) {one * 1e3:8.1f} ms/step | members over '
          f'{mesh.size} devices (chunks of {train.default_member_chunk(flops, mesh.size)}) '
          f'{many * 1e3:8.1f} ms/step | ratio one / spread {one / many:.2f}x')


if __name__ == '__main__':
  machine.ensure_fast_allocator()  # The launcher's allocator: same speed as a run.
  app.run(main)
