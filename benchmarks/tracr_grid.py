r"""The full Table 3 grid batched in one jit vs one configuration at a time.

  python benchmarks/tracr_grid.py [--config=paper|default] [--timed_steps=10]

For each program: the median seconds per step of the whole grid (lrs x C_Tr x
seeds as one population in one jit, data generation included) against a
population of one (the same step, one configuration), and the extrapolation to
the full run: grid = steps x t_grid, one at a time = P x steps x t_one. The
grid is timed both ways a population can be mapped (train.over_members): one
vmap over all members (member_chunk=0) and lax.map one member at a time
(member_chunk=1), side by side in one run, plus the library's default chunk
when it is neither; the default for this backend is marked; and the grid with
the other q/k/v form (model.qkv); and the grid as a run steps it: like the
launcher, the script splits the CPU into host devices (wrapper_study/host_devices.py)
and the members spread over them (train.member_mesh), timed interleaved with one
configuration, the ratio also per round (median and quartiles). Prints the machine.
Nothing here is asserted; it reports.
"""

import dataclasses
import os
import sys

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import machine  # benchmarks/machine.py  # pylint: disable=g-import-not-at-top
from configs import tracr_study as tracr_config  # pylint: disable=g-import-not-at-top
from wrapper_study import host_devices  # pylint: disable=g-import-not-at-top
from wrapper_study import losses  # pylint: disable=g-import-not-at-top
from wrapper_study import optim  # pylint: disable=g-import-not-at-top
from wrapper_study import population  # pylint: disable=g-import-not-at-top
from wrapper_study import train  # pylint: disable=g-import-not-at-top
from wrapper_study.tracr import tasks  # pylint: disable=g-import-not-at-top
from wrapper_study.tracr import train as ft  # pylint: disable=g-import-not-at-top

_CONFIG = flags.DEFINE_enum('config', 'paper', ['paper', 'default'], 'Which scale to time.')
_TIMED = flags.DEFINE_integer('timed_steps', 10, 'Steps timed after warm-up (median).')


def _prepare(config, tm, data, members, member_chunk=None, mesh=None):
  """(step, state, batch_fn, FLOPs per step, the library's default member_chunk for these
  members on this mesh) of the population's train step; with a mesh, the members spread over
  its devices as train.train_loop places them (train.member_mesh)."""
  f = config.finetune
  opt_cfg = ft.sgd_config(config, f.warmup_steps)
  tx = optim.make_optimizer(opt_cfg, f.steps)
  # noise_std -1 (calibrated in a study) as no noise: the step's speed does not depend on it.
  params = ft.noisy_params(tm.params, members, 0, max(f.noise_std, 0.0), ft.FROZEN)
  state = train.create_population(params, tx, np.array([m.lr for m in members], np.float32))
  step = train.make_train_step(losses.answer_loss_fn(tm.config, data.position), tx, vmap=True,
                               member_chunk=member_chunk, mesh=mesh)
  batch_fn = ft.make_batch_fn(data, members, f.batch_size, 0, data.spec.operand_ft)
  default = train.default_member_chunk(train.member_flops(state.params, batch_fn(0)),
                                       1 if mesh is None else mesh.size)
  if mesh is not None:
    state, batch_fn = train.place_on_mesh(state, batch_fn, mesh, vmap=True)
  flops = machine.step_flops(step, state, batch_fn(0))
  return step, state, batch_fn, flops, default


def _seconds_per_step(config, tm, data, members, member_chunk=None, mesh=None
                      ) -> tuple[float, float, float, int]:
  """(median s/step, first-call s incl. compile, FLOPs per step, default member_chunk)."""
  step, state, batch_fn, flops, default = _prepare(config, tm, data, members, member_chunk, mesh)
  median, first = machine.time_train_steps(step, state, batch_fn, _TIMED.value)
  return median, first, flops, default


def main(_):
  config = tracr_config.get_config('paper' if _CONFIG.value == 'paper' else '')
  f = config.finetune
  print('\n'.join(machine.describe()))
  peak = machine.matmul_flops_per_s()
  print(f'peak fp32 matmul (2048^3, best of 5): {peak / 1e9:.1f} GFLOP/s')
  print(f'scale: {_CONFIG.value}: {f.steps} steps, batch {f.batch_size}, {len(f.lrs)} lrs x '
        f'{len(f.c_trs)} C_Tr x {len(f.seeds)} seeds')
  total_grid = total_one = run_grid = run_one = 0.0
  for program in config.tasks:
    spec = tasks.from_config(config, program)
    tm = ft.compile_model(spec, cache_dir=config.cache_dir)
    data = ft.TaskData(spec, tm)
    members = population.grid(f.lrs, f.c_trs, f.seeds)
    # FLOPs from the vmap (XLA's cost analysis counts a lax.map body once, not P times).
    t_vmap, c_vmap, f_grid, default = _seconds_per_step(config, tm, data, members, member_chunk=0)
    t_map, c_map, _, _ = _seconds_per_step(config, tm, data, members, member_chunk=1)
    timed = {0: (t_vmap, c_vmap), 1: (t_map, c_map)}
    if default not in timed:  # Chunks of `default` members under lax.map.
      timed[default] = _seconds_per_step(config, tm, data, members, member_chunk=default)[:2]
    t_grid, c_grid = timed[default]
    t_one, c_one, f_one, _ = _seconds_per_step(config, tm, data, members[:1], member_chunk=0)
    # The grid as a run steps it (members over the launcher's host devices, train.member_mesh)
    # paired with one config, their steps interleaved (each round P // 4 one-config steps, then
    # one grid step), so that the machine's drifting speed (a dispatch-bound one-config step
    # swung 0.7-2.4 ms between runs here) falls on both alike.
    mesh = train.member_mesh(len(members))
    runs = {'one': (*_prepare(config, tm, data, members[:1], 0)[:3], max(1, len(members) // 4))}
    step, state, batch_fn, _, default_run = _prepare(config, tm, data, members, None, mesh)
    runs['run'] = (step, state, batch_fn, 1)
    if default_run != 0:  # Side by side: the same mesh, one vmap over each device's members.
      runs['run, one vmap'] = (*_prepare(config, tm, data, members, 0, mesh)[:3], 1)
    by_round = machine.time_interleaved_rounds(runs, _TIMED.value)
    paired = machine.medians(by_round)
    t_run = paired['run']
    # The q/k/v form (model.qkv): the other one, same grid mapping, side by side.
    other = 'three_matmuls' if tm.config.qkv == 'one_matmul' else 'one_matmul'
    tm_other = dataclasses.replace(tm, config=dataclasses.replace(tm.config, qkv=other))
    t_other = _seconds_per_step(config, tm_other, data, members, member_chunk=default)[0]
    grid_min = f.steps * t_grid / 60
    one_min = len(members) * f.steps * t_one / 60
    total_grid += grid_min
    total_one += one_min
    print(f'{program:15s} seq_len={spec.seq_len:3d} P={len(members)}: grid {t_grid * 1e3:8.1f} '
          f'ms/step (first call {c_grid:.1f}s) | one config {t_one * 1e3:7.2f} ms/step '
          f'(first call {c_one:.1f}s) | full run: grid {grid_min:8.1f} min vs one at a time '
          f'{one_min:8.1f} min = {one_min / grid_min:5.1f}x')
    print('  ' + machine.floor_line(f'grid of {len(members)}', f_grid, t_grid, peak))
    print('  ' + machine.floor_line('one config', f_one, t_one, peak))
    mark = lambda chunk: ' (default here)' if chunk == default else ''
    chunked = (f'; lax.map over chunks of {default}{mark(default)}: '
               f'{t_grid * 1e3:.1f} ms/step' if default not in (0, 1) else '')
    print(f'  grid mapped as one vmap{mark(0)}: {t_vmap * 1e3:.1f} ms/step; lax.map one member at '
          f'a time{mark(1)}: {t_map * 1e3:.1f} ms/step{chunked}; vmap / lax.map: '
          f'{t_vmap / t_map:.2f}x')
    print(f'  one at a time x{len(members)}: {t_one * len(members) * 1e3:.1f} ms vs grid '
          f'{t_grid * 1e3:.1f} ms: batching buys {t_one * len(members) / t_grid:.2f}x')
    print(f'  grid with q/k/v as {tm.config.qkv} (default): {t_grid * 1e3:.1f} ms/step; as '
          f'{other}: {t_other * 1e3:.1f} ms/step; ratio {t_other / t_grid:.2f}x')
    devices = mesh.size if mesh is not None else 1
    vmapped = (f" (one vmap over a device's members: {paired['run, one vmap'] * 1e3:.1f} "
               f"ms/step)" if 'run, one vmap' in paired else '')
    print(f'  as a run steps it, members over {devices} device(s) ({host_devices.ENV}='
          f"{os.environ.get(host_devices.ENV, 'auto')}), each mapped in chunks of {default_run} "
          f"(the default there){vmapped}, timed interleaved with one config over "
          f"{_TIMED.value} rounds: grid {t_run * 1e3:.1f} ms/step, one config "
          f"{paired['one'] * 1e3:.2f} ms/step; one at a time x{len(members)} / grid: "
          f"{paired['one'] * len(members) / t_run:.2f}x (per round: "
          f"{machine.ratio_by_round(by_round['one'], by_round['run'], len(members))}); "
          + machine.floor_line('', f_grid, t_run, peak).split(', ', 1)[1])
    run_grid += f.steps * t_run / 60
    run_one += len(members) * f.steps * paired['one'] / 60
  print(f'all tasks: grid {total_grid:.1f} min vs one at a time {total_one:.1f} min '
        f'= {total_one / total_grid:.1f}x; as a run steps them (paired): grid {run_grid:.1f} '
        f'min vs one at a time {run_one:.1f} min = {run_one / run_grid:.1f}x')


if __name__ == '__main__':
  machine.ensure_fast_allocator()  # The launcher's allocator: same speed as a run.
  app.run(main)
