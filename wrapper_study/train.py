"""The one train core every experiment uses.

`train_step` is a pure function of (state, batch); `make_train_step` jits it
with the state donated, optionally mapped over a population of states (e.g. a
grid of learning rates x data x seeds, see optim.set_learning_rate): all members
in one vmap, or in chunks under lax.map (`over_members`; on CPU one member at a
time is the faster of the two unless members are tiny on one device: default_member_chunk).
`train_loop` adds resume, periodic evals, checkpoints, metrics (fetched one step
late so dispatch stays asynchronous) and a NaN/Inf stop.

Steps are counted in completed updates: metrics, evals and checkpoints labelled
step n describe the state after n updates.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping, Optional, Union

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wrapper_study import optim
from wrapper_study.metrics import ProgressLogger

PyTree = Any
LossFn = Callable[[PyTree, PyTree], tuple[jax.Array, dict]]
# name -> (every_n_steps or explicit steps, fn(params, step) -> {scalar: value}).
Evaluators = Mapping[str, tuple[Union[int, Iterable[int]],
                                Callable[[PyTree, int], Mapping[str, Any]]]]

# Metrics that must be finite for the state the step returns to be usable.
FINITE_KEYS = ('loss', 'grad_norm', 'param_norm')


@flax.struct.dataclass
class TrainState:
  """A plain pytree, so it checkpoints and vmaps (no apply_fn / tx fields)."""
  step: jax.Array  # int32 [], or [P] for a population.
  params: PyTree
  opt_state: PyTree


def create_state(params: PyTree, tx: optax.GradientTransformation) -> TrainState:
  """Step 0 state. For a population: jax.vmap(create_state, (0, None))(params_P, tx)."""
  return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                    opt_state=tx.init(params))


def create_population(params_P: PyTree, tx: optax.GradientTransformation,
                      lr_P: Optional[jax.Array] = None) -> TrainState:
  """Stacked states (leading axis P) from stacked params, with per-member peak lrs."""
  state = jax.vmap(create_state, in_axes=(0, None))(params_P, tx)
  if lr_P is not None:
    state = state.replace(opt_state=optim.set_learning_rate(state.opt_state, lr_P))
  return state


def stack(trees: list[PyTree]) -> PyTree:
  """List of same-structure pytrees -> one pytree with a leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: PyTree) -> list[PyTree]:
  """Inverse of stack."""
  n = jax.tree.leaves(tree)[0].shape[0]
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def train_step(state: TrainState, batch: PyTree, *, loss_fn: LossFn,
               tx: optax.GradientTransformation) -> tuple[TrainState, dict]:
  """One update. loss_fn(params, batch) -> (loss, metrics dict).

  Metrics: loss_fn's metrics plus loss, grad_norm (before clipping),
  update_norm, param_norm (of the updated params, so finite metrics certify the
  returned state) and lr (effective lr of this update, if tx is from optim).
  """
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
  return apply_gradients(state, grads, loss, aux, tx=tx)


def population_train_step(state_P: TrainState, batch_P: PyTree, *, loss_fn: LossFn,
                          tx: optax.GradientTransformation, member_chunk: Optional[int] = None,
                          devices: int = 1) -> tuple[TrainState, dict]:
  """train_step for every member of a population (leading axis P everywhere).

  The gradients are mapped with over_members (member_chunk; devices: how many devices the
  population is spread over, which the default mapping depends on); the optimizer
  update, a few hundred small elementwise ops, is one vmap over all members,
  where a per-member loop would pay each op's dispatch P times. Each member's
  result is its own train_step's.
  """
  grad_fn = over_members(jax.value_and_grad(loss_fn, has_aux=True), member_chunk,
                         member_flops(state_P.params, batch_P), devices)
  (loss_P, aux_P), grads_P = grad_fn(state_P.params, batch_P)
  return jax.vmap(functools.partial(apply_gradients, tx=tx))(state_P, grads_P, loss_P, aux_P)


def apply_gradients(state: TrainState, grads: PyTree, loss: jax.Array, aux: Mapping,
                    *, tx: optax.GradientTransformation) -> tuple[TrainState, dict]:
  """The update of train_step from its gradients: (new state, metrics)."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(aux)
  metrics.update(loss=loss, grad_norm=optax.tree.norm(grads),
                 update_norm=optax.tree.norm(updates),
                 param_norm=optax.tree.norm(params))
  if optim.has_learning_rate(opt_state):
    metrics['lr'] = optim.effective_learning_rate(opt_state)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


# Per-member training FLOPs (6 x params x tokens, member_flops) where the CPU mapping changes,
# and the chunk between them. Measured on a 2-core AMD EPYC, idle, ms/step of the whole grid,
# vmap | lax.map chunks of 1 / 10 / 20 / 35 (the members mapped as in benchmarks/tracr_grid.py):
#   Tracr Counter, default (1.6e7 FLOPs/member, 140 members): 54.8 | 62.2 / 69.7 / 68.3 / 59.0
#   Tracr Max-identifier, default (4.5e7, 140): 146.2 | 109.7 / 100.3 / 96.8 / 103.2
# and vmap / one at a time: PCFG CPU population (~8e8) 1.24x, paper-scale Tracr (2.7e8-5e9)
# 1.32-1.48x (benchmarks/pcfg_population.py, tracr_grid.py --config=paper).
# Those are one device. Spread over two CPU devices (member_mesh, 70 members a device), one
# member at a time won at every size: ms/step of the grid in two paired runs (steps of each
# mapping interleaved, one fixed batch), vmap | chunks of 1 / 20: Counter 53.7, 44.9 | 40.2,
# 34.5 / 47.0, 40.6; Max-identifier 112.9, 87.2 | 78.8, 58.4 / 96.8, 74.8 (chunks of 2 as 1,
# 5 and 10 between). A device then runs its ops on one core beside the other device, and the
# batched matmuls of a vmap, which would spread over both cores, only contend.
# benchmarks/tracr_grid.py prints the run's mapping beside one vmap a device.
TINY_MEMBER_FLOPS = 2.5e7
SMALL_MEMBER_FLOPS = 1e8
SMALL_MEMBER_CHUNK = 20


def default_member_chunk(flops_per_member: Optional[float] = None, devices: int = 1) -> int:
  """Members per chunk when a population is mapped: 0 = one vmap over all, 1 = one at a time.

  Accelerators want the one wide vmap. On CPU, XLA's batched matmuls of many
  per-member matrices run slower than the same matmuls one by one under lax.map
  once a member's step is more than small (SMALL_MEMBER_FLOPS); on one device tiny
  members (TINY_MEMBER_FLOPS: the default-scale Tracr Counter) run fastest in the vmap,
  where each op's dispatch is paid once for all members, and the sizes between in chunks
  of SMALL_MEMBER_CHUNK. Spread over `devices` >= 2 CPU devices (member_mesh): one at a
  time whatever the size. Unknown size: one at a time.
  """
  if jax.default_backend() != 'cpu':
    return 0
  if devices > 1 or flops_per_member is None or flops_per_member >= SMALL_MEMBER_FLOPS:
    return 1
  return 0 if flops_per_member < TINY_MEMBER_FLOPS else SMALL_MEMBER_CHUNK


def member_flops(params: PyTree, batch: PyTree) -> float:
  """6 x parameters x tokens of ONE member's step (leading axis P stripped from both).

  Tokens: the largest integer leaf of the member's batch (token ids).
  """
  n_params = sum(int(np.prod(x.shape[1:])) for x in jax.tree.leaves(params))
  ints = [int(np.prod(x.shape[1:])) for x in jax.tree.leaves(batch)
          if jnp.issubdtype(x.dtype, jnp.integer)]
  return 6.0 * n_params * max(ints, default=1)


def over_members(fn: Callable, member_chunk: Optional[int] = None,
                 flops_per_member: Optional[float] = None, devices: int = 1) -> Callable:
  """fn mapped over the leading (member) axis of every argument and output.

  member_chunk: 0 = one jax.vmap over all members; k >= 1 = lax.map over
  chunks of k members (k = 1: one member at a time, no vmap); None or -1 =
  default_member_chunk(flops_per_member, devices). Each member's arithmetic is the same
  per-example program either way; only the batching of matmuls differs, so
  results agree to float rounding.
  """
  if member_chunk is None or member_chunk == -1:
    chunk = default_member_chunk(flops_per_member, devices)
  else:
    chunk = int(member_chunk)
  if chunk < 0:
    raise ValueError(f'member_chunk={chunk} must be >= -1 (-1: the default, 0: one vmap).')
  if chunk == 0:
    return jax.vmap(fn)
  return lambda *args: jax.lax.map(lambda a: fn(*a), args, batch_size=chunk if chunk > 1 else None)


@functools.lru_cache(maxsize=16)
def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    vmap: bool = False, mesh: Optional[Mesh] = None,
                    member_chunk: Optional[int] = None
                    ) -> Callable[[TrainState, PyTree], tuple[TrainState, dict]]:
  """jit(train_step) with the state donated; vmap=True maps over a population
  (over_members: member_chunk members at a time, None = the backend's default).

  mesh, one model: data parallelism (sharded jit): every batch leaf is split along its
  leading axis over all the mesh's devices, the state is replicated, and XLA
  inserts the gradient all-reduce. The same step runs on 1 or N devices.
  mesh, a population (vmap=True): the members are spread over the mesh's devices
  (jax.shard_map; state and batch split along the member axis, see member_mesh), and each
  device maps its own members as above. Members never talk, so nothing is communicated.

  Cached on (loss_fn, tx, vmap, mesh, member_chunk), so a relaunched loop in the same process
  (an eval, a resumed run, a test) reuses the compiled step.
  """
  if vmap:
    step = functools.partial(population_train_step, loss_fn=loss_fn, tx=tx,
                             member_chunk=member_chunk, devices=1 if mesh is None else mesh.size)
  else:
    step = functools.partial(train_step, loss_fn=loss_fn, tx=tx)
  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  replicated, split = data_shardings(mesh)
  if vmap:
    return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=split.spec, out_specs=split.spec),
                   donate_argnums=0)
  return jax.jit(step, donate_argnums=0, in_shardings=(replicated, split),
                 out_shardings=(replicated, replicated))


# A population that the devices do not divide is padded with copies of its last member up to
# a multiple of them (train_loop strips them from all it returns, writes, evaluates, saves),
# when the copies are at most this fraction of it: 27 PCFG members as 28 over two CPU devices
# stepped 229 vs 320 ms on one (paired); 6 members as 8 over four would waste a third.
MAX_PADDING_FRACTION = 0.1


def member_mesh(n_members: int, devices=None) -> Optional[Mesh]:
  """A 1-D mesh 'member' over `devices` (default: every device) for a population of
  n_members, or None (one device) when there is one device or the members would need more
  padding copies (member_padding) than MAX_PADDING_FRACTION of them.

  On CPU the launcher makes two host devices where two cores may be used (host_devices):
  one device already spreads each large op over every core (intra-op threads), but a
  population of small members is made of ops too small to spread, and two devices run two
  members' ops at once. Measured on 2 cores, idle (benchmarks/population_devices.py, each
  side mapped its default way): the default-scale Tracr grid steps 1.80x (Counter) and 1.83x
  (Max-identifier) faster on two. Each member computes what it would on one device up to
  float order (XLA compiles the smaller per-device batch with other thread partitions).
  """
  devices = jax.devices() if devices is None else list(devices)
  n_pad = member_padding(n_members, len(devices))
  if len(devices) < 2 or n_pad > MAX_PADDING_FRACTION * n_members:
    return None
  return Mesh(np.array(devices), ('member',))


def member_padding(n_members: int, n_devices: int) -> int:
  """Copies of the last member that make n_members a multiple of n_devices."""
  return -n_members % n_devices


def pad_members(tree: PyTree, n_pad: int) -> PyTree:
  """Every leaf with n_pad copies of its last member appended (numpy stays numpy)."""
  if not n_pad:
    return tree
  def pad(x):
    xp = np if isinstance(x, np.ndarray) else jnp
    return xp.concatenate([x, xp.repeat(x[-1:], n_pad, axis=0)])
  return jax.tree.map(pad, tree)


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: every device)."""
  return Mesh(np.array(devices if devices is not None else jax.devices()), ('data',))


def batch_mesh(batch_size: int, devices=None) -> Optional[Mesh]:
  """data_mesh for data-parallel training of one model on batches of batch_size, or None
  (one device) when there is one device or they do not divide the batch.

  With the launcher's two CPU devices (host_devices), measured idle on 2 cores: the
  paper-shape PCFG step (96 x 259) 1.05-1.18x faster split over both than on one (two
  paired runs), the CPU TinyStories step 1.24x. The gradient is summed in another order
  (float rounding).
  """
  devices = jax.devices() if devices is None else list(devices)
  if len(devices) < 2 or batch_size % len(devices):
    return None
  return data_mesh(devices)


def place_on_mesh(state: PyTree, batch_fn: Callable, mesh: Mesh, vmap: bool
                  ) -> tuple[PyTree, Callable]:
  """(state, batch_fn) placed as make_train_step(mesh=mesh) expects: a population's
  members split over the devices (vmap; padded with copies of the last member to a multiple
  of them, member_padding), one model's state replicated; batches split (and padded alike)."""
  replicated, split = data_shardings(mesh)
  if not vmap:
    return jax.device_put(state, replicated), lambda step: shard_batch(batch_fn(step), mesh)
  n_pad = member_padding(jax.tree.leaves(state)[0].shape[0], mesh.size)
  state = jax.device_put(pad_members(state, n_pad), split)
  return state, lambda step: shard_batch(pad_members(batch_fn(step), n_pad), mesh)


def data_shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
  """(replicated, split along the leading axis over every mesh axis)."""
  return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(mesh.axis_names))


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
  """Places a host batch split along its leading axis (examples, or a population's members)
  over the mesh; it must divide evenly."""
  n = mesh.size
  for path, x in jax.tree_util.tree_flatten_with_path(batch)[0]:
    if np.shape(x)[0] % n:
      raise ValueError(f'batch leaf {jax.tree_util.keystr(path)} has leading size '
                       f'{np.shape(x)[0]}, not divisible by the {n} devices of the mesh; '
                       f'use a batch size that is a multiple of {n}.')
  return jax.device_put(batch, data_shardings(mesh)[1])


def _nonfinite(metrics: Mapping[str, np.ndarray], vmap: bool) -> dict[str, Any]:
  """The FINITE_KEYS metrics that are bad (all members bad, for a population)."""
  bad = {}
  for k in FINITE_KEYS:
    if k in metrics:
      ok = np.isfinite(np.asarray(metrics[k]))
      if (vmap and not ok.any()) or (not vmap and not ok.all()):
        bad[k] = metrics[k]
  return bad


def _due(when: Union[int, Iterable[int]], step: int, total_steps: int) -> bool:
  """An int runs at its multiples and at the end; a collection at those steps."""
  if isinstance(when, int):
    return step % when == 0 or step == total_steps
  return step in when


def _scalars(prefix: str, metrics: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """prefix/name -> value; a population's [P] metric stays an array (the writer splits it)."""
  return {f'{prefix}/{k}': np.asarray(v) for k, v in metrics.items()}


def train_loop(*, state: TrainState, tx: optax.GradientTransformation,
               loss_fn: LossFn, batch_fn: Callable[[int], PyTree],
               total_steps: int, workdir: Optional[str] = None, writer=None,
               checkpointer=None, log_every: int = 100,
               evaluators: Optional[Evaluators] = None, nan_check: bool = True,
               vmap: bool = False, mesh: Optional[Mesh] = None,
               member_chunk: Optional[int] = None,
               clip_norm: Optional[float] = None) -> TrainState:
  """Trains to total_steps, resuming from the checkpointer's latest step.

  A run killed at any moment and relaunched with the same arguments ends with
  bitwise the same params as an uninterrupted one, provided `batch_fn(step)` is
  a deterministic function of the step: derive its rng from (seed, step), e.g.
  `jax.random.fold_in(jax.random.key(seed), step)`, never from a stateful
  iterator. `state` is donated: do not use it after the call.

  Args:
    state: initial state (also the shape template for restoring).
    tx, loss_fn: as in train_step.
    batch_fn: step -> batch (a stacked population batch when vmap=True).
    total_steps: number of updates in the whole run.
    workdir: for log messages only; writer and checkpointer own their paths.
    writer: a metrics writer (MetricWriter, one of its runs, a PopulationWriter;
      or None): train/* every log_every steps. A population's [P] metrics are
      passed as arrays: a PopulationWriter gives each member its own run.
    checkpointer: a checkpoint.Checkpointer (or None); saves at its interval
      and at the end.
    log_every: steps between train scalars / progress lines.
    evaluators: name -> (when, fn(params, step) -> scalars), written as
      name/*. when: an int runs at its multiples and at the end; a collection
      of ints runs at exactly those steps.
    nan_check: raise FloatingPointError on a non-finite loss, grad or param
      norm (for a population: only when every member is non-finite).
    vmap: state and batches are populations (leading axis P).
    member_chunk: with vmap, members per chunk (over_members; None = default).
    clip_norm: the optimizer's global-norm clip, if any: train/clip_fraction is then written
      with the other train scalars, the fraction of the steps since the last write whose
      gradient norm (before clipping) exceeded it, per member (issue 28).
    mesh: train data-parallel over this mesh (see make_train_step, data_mesh), or with
      vmap spread the members over it (member_mesh; members the devices do not divide are
      padded with copies of the last, which nothing outside this loop sees: place_on_mesh).

  Returns:
    The final state.
  """
  start = 0
  if checkpointer is not None:
    restored = checkpointer.restore_latest(state)
    if restored is not None:
      start, state = restored
      logging.info('Resumed %s at step %d of %d.', workdir or '', start, total_steps)
  if start > total_steps:
    raise ValueError(f'Checkpoint step {start} is past total_steps={total_steps}; '
                     'use another --workdir or a larger total_steps.')
  step_fn = make_train_step(loss_fn, tx, vmap=vmap, mesh=mesh, member_chunk=member_chunk)
  n_members = jax.tree.leaves(state)[0].shape[0] if vmap else 0
  if mesh is not None:
    state, get_batch = place_on_mesh(state, batch_fn, mesh, vmap)
  else:
    # One device. A state cut from a population spread over several (an odd number of its
    # members) comes back replicated on all of them, and jit would then compute every step
    # on each: the reFT population of 55 members stepped 55.4 vs 45.4 ms on 2 CPU devices.
    # Through the host it is uncommitted again, as a fresh state is: one device steps it.
    if any(len(x.sharding.device_set) > 1 for x in jax.tree.leaves(state)
           if isinstance(x, jax.Array)):
      state = jax.device_get(state)
    get_batch = batch_fn
  n_pad = jax.tree.leaves(state)[0].shape[0] - n_members if vmap else 0
  if vmap:
    copies = f', with {n_pad} padding cop{"y" if n_pad == 1 else "ies"} of the last'
    logging.info('%s: %d members on %d device(s)%s.', workdir or 'population', n_members,
                 1 if mesh is None else mesh.size, copies if n_pad else '')

  def own(tree, host: bool = False):
    """The caller's members of a population pytree: place_on_mesh's padding copies cut off,
    through the host (a slice of the spread arrays would be replicated on every device);
    host: leave them there (metrics)."""
    if not n_pad:
      return tree
    cut = jax.tree.map(lambda x: np.asarray(x)[:n_members], jax.device_get(tree))
    return cut if host else jax.device_put(cut)

  progress = ProgressLogger(total_steps, log_every, start_step=start)
  evaluators = {k: (w if isinstance(w, int) else frozenset(w), fn)
                for k, (w, fn) in (evaluators or {}).items()}

  clipped = {'n': 0, 'steps': 0}  # Steps whose gradient was clipped, since the last write.

  def finish(step: int, metrics_dev) -> None:
    """Fetch, check and write the metrics of the update that made step `step`."""
    metrics = own(jax.device_get(metrics_dev), host=True)
    if clip_norm and 'grad_norm' in metrics:  # Every step passes here, not only logged ones.
      clipped['n'] = clipped['n'] + (np.asarray(metrics['grad_norm']) > clip_norm)
      clipped['steps'] += 1
    bad = _nonfinite(metrics, vmap) if nan_check else {}
    if bad:
      if checkpointer is not None:
        checkpointer.wait()  # Pending saves are of good states; let them land.
      last = checkpointer.latest_step() if checkpointer is not None else None
      if writer is not None:
        writer.flush()
      msg = (f'Non-finite {sorted(bad)} at step {step} ({workdir or ""}): '
             f'{ {k: np.asarray(v).tolist() for k, v in bad.items()} }. The bad state '
             f'was not saved; last good checkpoint: step {last}.')
      logging.error(msg)
      raise FloatingPointError(msg)
    due = step % log_every == 0 or step == total_steps
    if due and clipped['steps']:
      metrics['clip_fraction'] = np.asarray(clipped['n'] / clipped['steps'], np.float32)
      clipped.update(n=0, steps=0)
    if due and writer is not None:
      writer.write_scalars(step, _scalars('train', metrics))
    if due or step == start + 1:  # The first step's line says how long compiling took.
      loss = np.asarray(metrics.get('loss', np.nan))
      progress.update(step, {'loss': np.nanmean(loss) if loss.ndim else loss})

  pending = None  # (step, device metrics) not fetched yet.
  try:
    for s in range(start, total_steps):
      state, metrics = step_fn(state, get_batch(s))
      # Fetch the previous step's metrics while this one runs.
      if pending is not None:
        finish(*pending)
      n = s + 1
      pending = (n, metrics)
      due_evals = [k for k, (when, _) in evaluators.items()
                   if _due(when, n, total_steps)]
      due_save = checkpointer is not None and (
          checkpointer.should_save(n) or n == total_steps)
      if due_evals or due_save:
        # Certify this state as finite before it is evaluated or saved; the
        # next step donates its buffers, so it has to happen now.
        finish(*pending)
        pending = None
      for k in due_evals:
        scalars = evaluators[k][1](own(state.params), n)
        if writer is not None and scalars:
          writer.write_scalars(n, _scalars(k, jax.device_get(scalars)))
      if due_save:
        checkpointer.save(n, own(state), force=n == total_steps)
    if pending is not None:
      finish(*pending)
  finally:
    # Also on KeyboardInterrupt / NaN / a bug: saves already started are of
    # certified states, so let them land. Nothing new is saved.
    if checkpointer is not None:
      checkpointer.wait()
    if writer is not None:
      writer.flush()
  return own(state)
