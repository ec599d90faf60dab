r"""The PCFG fine-tuning population (lrs x C_Tr x seeds) in one jit vs one member at a time.

  python benchmarks/pcfg_population.py [--config=cpu|paper] [--timed_steps=10]

The population of `configs/pcfg_study.py` (CPU scale by default) on a freshly
initialised model of its shape (speed does not depend on the weights): the median
seconds per step of the whole grid, with its members mapped both ways
(train.over_members: one vmap over all, member_chunk=0; lax.map one member at a time,
member_chunk=1), against a population of one, with data generation included as in a run,
and each as a fraction of the FLOP floor (the machine's measured fp32 matmul rate); then
the grid as a run steps it (its members spread over the launcher's host devices, padded
with a copy of the last when the devices do not divide them: train.member_mesh,
train.place_on_mesh; each device mapping its members the library's default way), its
steps interleaved with the one-member step's (machine.time_interleaved_rounds), the
ratio also per round (its median and quartiles: how far the machine's drift moves it
within the run), and that ratio split into the cores, one member's compute against the
grid's per member and core (both stepped on a fixed batch), and the data draws. With
calibrated learning rates (finetune.lrs=()) the grid has three placeholder lrs, as many
as calibration picks (speed does not depend on their values). Prints the machine.
Nothing here is asserted.
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
from configs import pcfg_study as pcfg_config  # pylint: disable=g-import-not-at-top
from wrapper_study import host_devices  # pylint: disable=g-import-not-at-top
from wrapper_study import losses  # pylint: disable=g-import-not-at-top
from wrapper_study import model as model_lib  # pylint: disable=g-import-not-at-top
from wrapper_study import optim  # pylint: disable=g-import-not-at-top
from wrapper_study import population  # pylint: disable=g-import-not-at-top
from wrapper_study import train  # pylint: disable=g-import-not-at-top
from wrapper_study.pcfg import model as pcfg_model  # pylint: disable=g-import-not-at-top
from wrapper_study.pcfg import train as pcfg_train  # pylint: disable=g-import-not-at-top

_CONFIG = flags.DEFINE_enum('config', 'cpu', ['cpu', 'paper'], 'Which scale to time.')
_TIMED = flags.DEFINE_integer('timed_steps', 10, 'Steps timed after warm-up (median).')


def _prepare(config, members, member_chunk, mesh=None):
  """(step, state, batch_fn, the library's default member_chunk there) of the population's
  train step, data included; with a mesh, placed as train.train_loop places it."""
  f = config.finetune
  cfg = pcfg_model.model_config(config)
  params = model_lib.init_params(cfg, jax.random.PRNGKey(0))
  params_P = jax.tree.map(lambda x: jnp.stack([x] * len(members)), params)
  tx = optim.make_optimizer(pcfg_train._adamw(1.0, config.pretrain.weight_decay,  # pylint: disable=protected-access
                                              f.warmup_fraction), f.steps)
  state = train.create_population(params_P, tx, np.array([m.lr for m in members], np.float32))
  step = train.make_train_step(losses.next_token_loss_fn(cfg), tx, vmap=True,
                               member_chunk=member_chunk, mesh=mesh)
  batch_fn = pcfg_train.finetune_batch_fn(config, config.pretrain.priors[0], members, 0)
  default = train.default_member_chunk(train.member_flops(state.params, batch_fn(0)),
                                       1 if mesh is None else mesh.size)
  if mesh is not None:
    state, batch_fn = train.place_on_mesh(state, batch_fn, mesh, vmap=True)
  return step, state, batch_fn, default


def _seconds_per_step(config, members, member_chunk) -> tuple[float, float, int]:
  """(median s/step, FLOPs per step, the library's default member_chunk) of the
  population's train step on one device, data included."""
  step, state, batch_fn, default = _prepare(config, members, member_chunk)
  flops = machine.step_flops(step, state, batch_fn(0)) if member_chunk == 0 else float('nan')
  median, _ = machine.time_train_steps(step, state, batch_fn, _TIMED.value)
  return median, flops, default


def main(_):
  config = pcfg_config.get_config('paper' if _CONFIG.value == 'paper' else '')
  f = config.finetune
  print('\n'.join(machine.describe()))
  peak = machine.matmul_flops_per_s()
  print(f'peak fp32 matmul (2048^3, best of 5): {peak / 1e9:.1f} GFLOP/s')
  m = config.model
  print(f'scale: {_CONFIG.value}: model {m.n_layers} x {m.d_model}, batch {f.batch_size}, '
        f'window {config.data.window_length}; '
        f"{len(f.lrs) if f.lrs else '3 placeholder'} lrs x {len(f.c_trs)} C_Tr x "
        f'{len(f.seeds)} seeds')
  members = population.grid(f.lrs or (1e-3, 1e-4, 1e-5), f.c_trs, f.seeds)
  t_vmap, flops, default = _seconds_per_step(config, members, 0)
  t_map, _, _ = _seconds_per_step(config, members, 1)
  t_one, flops_one, _ = _seconds_per_step(config, members[:1], 0)
  mark = lambda chunk: ' (default here)' if chunk == default else ''
  p = len(members)
  print(f'P={p}: one vmap{mark(0)} {t_vmap * 1e3:.1f} ms/step | lax.map one member at a '
        f'time{mark(1)} {t_map * 1e3:.1f} ms/step | one member {t_one * 1e3:.2f} ms/step')
  print('  ' + machine.floor_line(f'grid of {p} (vmap)', flops, t_vmap, peak))
  print('  ' + machine.floor_line(f'grid of {p} (lax.map)', flops, t_map, peak))
  print('  ' + machine.floor_line('one member', flops_one, t_one, peak))
  t_grid = t_map if default == 1 else t_vmap
  print(f'  vmap / lax.map: {t_vmap / t_map:.2f}x; one at a time x{p}: {t_one * p * 1e3:.1f} ms '
        f'vs grid {t_grid * 1e3:.1f} ms: batching buys {t_one * p / t_grid:.2f}x')
  mesh = train.member_mesh(p)
  if mesh is None:
    print(f'  as a run steps it: on one device ({jax.device_count()} device(s), {p} members)')
    return
  # The grid as a run steps it, paired with one member, their steps interleaved; beside them
  # the same two steps on one fixed batch (compute only), so that the ratio splits into
  # P x one / grid = cores x (one member's compute / the grid's per member and core),
  # then the data draws (timed apart).
  runs, draw, chunk = {}, {}, None
  for name, members_here, member_chunk, per_round in (
      ('one', members[:1], 0, max(1, p // 4)), ('run', members, None, 1)):
    step, state, batch_fn, default = _prepare(config, members_here, member_chunk,
                                              None if name == 'one' else mesh)
    runs[name] = (step, state, batch_fn, per_round)
    # The same compiled step on a copy of the state (each run donates its own buffers).
    runs[f'{name}, fixed batch'] = (step, jax.tree.map(jnp.copy, state),
                                    lambda _, b=batch_fn(0): b, per_round)
    draw[name] = machine.time_draws(batch_fn, _TIMED.value)
    if name == 'run':
      chunk = default
  by_round = machine.time_interleaved_rounds(runs, _TIMED.value)
  paired = machine.medians(by_round)
  n_pad = train.member_padding(p, mesh.size)
  print(f'  as a run steps it, members over {mesh.size} devices ({host_devices.ENV}='
        f"{os.environ.get(host_devices.ENV, 'auto')}; {n_pad} padding copies), chunks of "
        f"{chunk}, interleaved with one member over {_TIMED.value} rounds: grid "
        f"{paired['run'] * 1e3:.1f} ms/step, one member {paired['one'] * 1e3:.2f} ms/step; one "
        f"at a time x{p} / grid: {paired['one'] * p / paired['run']:.2f}x (per round: "
        f"{machine.ratio_by_round(by_round['one'], by_round['run'], p)}); "
        + machine.floor_line('', flops, paired['run'], peak).split(', ', 1)[1])
  one, grid = paired['one, fixed batch'], paired['run, fixed batch']
  # More devices than cores share them: count the cores the grid can keep busy.
  cores = min(mesh.size, machine.usable_cores())
  per_member = cores * grid / p
  print(f'  split, the same rounds on a fixed batch (compute only): one member {one * 1e3:.2f} '
        f'ms, grid {grid * 1e3:.1f} ms = {per_member * 1e3:.2f} ms per member on each of '
        f'{cores} cores ({mesh.size} devices); x{p} / grid = {cores} cores x '
        f'{one / per_member:.2f} (one member alone / per member in the grid) = '
        f"{p * one / grid:.2f}x; data draws apart: one member {draw['one'] * 1e3:.2f} ms, grid "
        f"{draw['run'] * 1e3:.1f} ms (a run draws the next batch while a step computes: "
        'train.train_loop)')


if __name__ == '__main__':
  machine.ensure_fast_allocator()  # The launcher's allocator: same speed as a run.
  app.run(main)
