"""Single-step grad x weight pruning (paper App. D, Alg. 3), batched over K.

score(unit) = sum over the unit's weights of grad_w * w, where grad is of the
loss of the capability to revive (the pretraining task). To first order,
zeroing w changes that loss by -grad_w * w, so the units with the LARGEST
score are those whose removal most lowers the pretraining loss; the top K are
zeroed (signed, as Alg. 3 writes it: TopK(score), not |score|).

Units:
  'weight': every scalar of an eligible kernel (Tracr granularity).
  'neuron': an output unit of an eligible Dense layer, i.e. column j of a Flax
    kernel [in, out] (= row j of a PyTorch weight [out, in], the paper's "row
    in the weight matrix") together with its bias j.
Which matrices hold units (paper: [SILENT]) is a named eligibility set,
`make_units(params, granularity, eligible=NAME_OR_PREDICATE)`:
  'blocks'      (default) every Dense kernel inside blocks: attention
                query/key/value/out and MLP fc_in/fc_out.
  'attn'        attention query/key/value/out only.
  'mlp'         MLP fc_in and fc_out only.
  'mlp_hidden'  MLP fc_in only: its output columns are the MLP hidden units
                (with 'neuron': d_mlp units per block).
Never embeddings, nor the unembedding (for Tracr it is the fixed read-out
rebuilt from the residual labels), nor LayerNorm. A predicate on the param
path ('blocks_0/mlp/fc_in/kernel') still works; `eligible_by_name` resolves a
name and lists the valid ones when it is unknown.

A curve over K = 0..K_max is one vmapped computation: each K is a keep-mask
over the same flat parameter vector (`sweep`, one model). `search` runs the
(candidate x K) grid of a population, a candidate being (member, ranking),
sharded over every device with `jax.shard_map`.

Shapes: P population members, C candidates, U units, N scalars of one member,
J jobs (= C x len(ks), padded to a multiple of the device count).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh
from jax.sharding import PartitionSpec

GRANULARITIES = ('weight', 'neuron')


def default_eligible(path: str) -> bool:
  """Every Dense kernel inside blocks (attention q/k/v/out, MLP fc_in/fc_out)."""
  return path.startswith('blocks_') and path.endswith('/kernel')


def attn_eligible(path: str) -> bool:
  return path.startswith('blocks_') and '/attn/' in path and path.endswith('/kernel')


def mlp_eligible(path: str) -> bool:
  return path.startswith('blocks_') and path.endswith(('/mlp/fc_in/kernel', '/mlp/fc_out/kernel'))


def mlp_hidden_eligible(path: str) -> bool:
  return path.startswith('blocks_') and path.endswith('/mlp/fc_in/kernel')


ELIGIBLE: dict[str, Callable[[str], bool]] = {
    'blocks': default_eligible,
    'attn': attn_eligible,
    'mlp': mlp_eligible,
    'mlp_hidden': mlp_hidden_eligible,
}


def eligible_by_name(name: str) -> Callable[[str], bool]:
  """The eligibility predicate called `name` (a key of ELIGIBLE)."""
  if name not in ELIGIBLE:
    raise ValueError(f'pruning.eligible={name!r} is unknown; valid: {sorted(ELIGIBLE)}.')
  return ELIGIBLE[name]


def _path(p) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in p)


@dataclasses.dataclass(frozen=True, eq=False)  # Hash by identity: a jit cache key.
class Units:
  """Maps every scalar of the flat parameter vector to a prunable unit (or -1)."""
  unit_of_scalar: np.ndarray  # int32 [n_params]; -1 = never pruned.
  names: tuple[str, ...]  # Human-readable unit names, e.g. 'blocks_1/attn/value/kernel[3,7]'.
  granularity: str

  @property
  def n_units(self) -> int:
    return len(self.names)


def make_units(params, granularity: str = 'weight',
               eligible: Union[str, Callable[[str], bool]] = default_eligible) -> Units:
  """Unit bookkeeping in ravel_pytree order; eligible: a name of ELIGIBLE or a predicate."""
  if granularity not in GRANULARITIES:
    raise ValueError(f'pruning.granularity={granularity!r}; valid: {GRANULARITIES}.')
  if isinstance(eligible, str):
    eligible = eligible_by_name(eligible)
  leaves = [(_path(p), np.shape(v)) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]]
  names: list[str] = []
  first_unit: dict[str, int] = {}  # Eligible kernel path -> id of its unit 0.
  for path, shape in leaves:
    if eligible(path):
      first_unit[path] = len(names)
      if granularity == 'weight':
        names += [f'{path}{list(ix)}' for ix in np.ndindex(*shape)]
      else:
        names += [f'{path[:-len("/kernel")]}[{j}]' for j in range(shape[-1])]
  unit_ids = []
  for path, shape in leaves:
    size = int(np.prod(shape))
    # A bias belongs to the neurons of its kernel (neuron granularity only).
    kernel = path[:-len('bias')] + 'kernel' if path.endswith('/bias') else path
    if granularity == 'weight' and path in first_unit:
      ids = first_unit[path] + np.arange(size)
    elif granularity == 'neuron' and kernel in first_unit:
      n_out = shape[-1]
      ids = first_unit[kernel] + np.tile(np.arange(n_out), size // n_out)
    else:
      ids = np.full(size, -1)
    unit_ids.append(ids)
  return Units(np.concatenate(unit_ids).astype(np.int32), tuple(names), granularity)


@functools.lru_cache(maxsize=8)
def _device_ids(units: Units) -> jax.Array:
  """units.unit_of_scalar on device, transferred once per Units."""
  with jax.ensure_compile_time_eval():  # Concrete even under a trace: safe to cache.
    return jnp.asarray(units.unit_of_scalar)


@functools.lru_cache(maxsize=16)  # Keyed by identity of loss_fn and units.
def _scores_fn(loss_fn: Callable, units: Units):
  def fn(params, batch, ids):
    grads = jax.grad(lambda p: loss_fn(p, batch)[0])(params)
    g, _ = ravel_pytree(grads)
    w, _ = ravel_pytree(params)
    contrib = jnp.where(ids >= 0, g * w, 0.0)
    return jax.ops.segment_sum(contrib, jnp.maximum(ids, 0), num_segments=units.n_units)
  # One compile rather than op-by-op dispatch; inlined when called under an outer jit.
  return jax.jit(fn)


def _cached(builder, fn: Callable, *key):
  """builder(fn, *key) from its cache; built afresh when fn cannot be hashed."""
  try:
    return builder(fn, *key)
  except TypeError:  # An unhashable callable: no cache, same result.
    return builder.__wrapped__(fn, *key)


def scores(loss_fn: Callable, params, batch, units: Units) -> jax.Array:
  """[n_units] grad x weight scores of loss_fn(params, batch) (returns loss, aux)."""
  return _cached(_scores_fn, loss_fn, units)(params, batch, _device_ids(units))


def prune_order(scores_U: jax.Array) -> jax.Array:
  """rank[u] = position of unit u when sorted by descending score (0 = first pruned)."""
  order = jnp.argsort(-scores_U, stable=True)
  return jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))


def pruned_params(params, units: Units, rank_U: jax.Array, k):
  """params with the k top-ranked units zeroed (k may be traced: vmappable)."""
  flat, unravel = ravel_pytree(params)
  ids = jnp.asarray(units.unit_of_scalar)
  unit_rank = jnp.where(ids >= 0, rank_U[jnp.maximum(ids, 0)], jnp.iinfo(jnp.int32).max)
  return unravel(jnp.where(unit_rank < k, 0.0, flat))


def sweep(eval_fn: Callable, params, units: Units, rank_U: jax.Array, ks: Sequence[int]):
  """eval_fn(pruned params) for every K in ks, as one vmapped computation.

  eval_fn must be jax-traceable and return a pytree of arrays; the result has
  a leading axis over ks.
  """
  k_max = max(ks)
  if k_max > units.n_units:
    raise ValueError(f'pruning.k_max={k_max} exceeds the {units.n_units} prunable '
                     f'{units.granularity}s of this model.')
  _check_ks(ks, units)
  return jax.vmap(lambda k: eval_fn(pruned_params(params, units, rank_U, k)))(
      jnp.asarray(ks, jnp.int32))


def scores_population(loss_fn: Callable, params_P, batch, units: Units) -> jax.Array:
  """[P, U] grad x weight scores of every member of a stacked population (one jit)."""
  return jax.jit(jax.vmap(lambda p: scores(loss_fn, p, batch, units)))(params_P)


# ----------------------------------------------------------------------------- search

def _check_ks(ks, units: Units, arg: str = 'ks') -> tuple[int, ...]:
  ks = tuple(np.asarray(ks).reshape(-1).tolist()) if not isinstance(ks, (list, tuple)) else tuple(ks)
  if not ks:
    raise ValueError(f'{arg} is empty; give at least one K in 0..{units.n_units}.')
  bad = [k for k in ks if not isinstance(k, (int, np.integer)) or isinstance(k, bool)
         or not 0 <= k <= units.n_units]
  if bad:
    raise ValueError(f'{arg} holds {bad[:5]}; valid K: integers 0..{units.n_units} (the '
                     f'{units.n_units} prunable {units.granularity}s of these units).')
  return tuple(int(k) for k in ks)


def member_count(params_P) -> int:
  """P, the leading member axis shared by every leaf of a stacked population."""
  leading = {int(np.shape(x)[0]) if np.ndim(x) else None for x in jax.tree.leaves(params_P)}
  if len(leading) != 1 or None in leading:
    raise ValueError(f'params_P must stack members on a leading axis shared by every leaf; '
                     f'leading sizes found: {sorted(map(str, leading))}.')
  return leading.pop()


def _check_search_inputs(params_P, units: Units, rank_CxU, member_C, ks):
  """Validates everything search needs on the host, before any compute."""
  ks = _check_ks(ks, units)
  n_members = member_count(params_P)
  n_scalars = sum(int(np.prod(np.shape(x)[1:])) for x in jax.tree.leaves(params_P))
  if n_scalars != units.unit_of_scalar.shape[0]:
    raise ValueError(f'units were made for {units.unit_of_scalar.shape[0]} scalars but one '
                     f'member of params_P holds {n_scalars}; build units from one member.')
  member_C = np.asarray(member_C)
  if member_C.ndim != 1 or member_C.size == 0 or not np.issubdtype(member_C.dtype, np.integer):
    raise ValueError(f'member_C must be a non-empty 1-D integer array, got shape '
                     f'{member_C.shape} dtype {member_C.dtype}.')
  out = member_C[(member_C < 0) | (member_C >= n_members)]
  if out.size:
    raise ValueError(f'member_C holds {out[:5].tolist()}; valid: 0..{n_members - 1} '
                     f'(params_P has {n_members} members).')
  C, U = member_C.shape[0], units.n_units
  rank = np.asarray(rank_CxU)
  if rank.shape != (C, U):
    raise ValueError(f'rank_CxU has shape {rank.shape}; expected (C, U) = ({C}, {U}): one '
                     f'ranking of the {U} units per entry of member_C.')
  if not np.issubdtype(rank.dtype, np.integer):
    raise ValueError(f'rank_CxU must be integer (as prune_order returns), got {rank.dtype}.')
  # Ties would prune more than K units at once: each row must be a permutation.
  not_perm = np.flatnonzero((np.sort(rank, axis=1) != np.arange(U)).any(axis=1))
  if not_perm.size:
    raise ValueError(f'rank_CxU rows {not_perm[:5].tolist()} are not permutations of '
                     f'0..{U - 1}; rank[u] is the prune position of unit u (prune_order).')
  return ks, member_C.astype(np.int32), rank.astype(np.int32)


def default_mesh() -> Mesh:
  """A 1-D mesh over every device, axis 'jobs'."""
  return Mesh(np.asarray(jax.devices()), ('jobs',))


@functools.lru_cache(maxsize=8)  # Keyed by identity of eval_fn and units: reuse the compile.
def _search_fn(eval_fn: Callable, units: Units, treedef, leaf_specs, mesh: Mesh,
               chunk_size: Optional[int]):
  """jit: (ids_N, params_P, rank_CxU, member_J, cand_J, k_J) -> eval_fn pytree, leading J."""
  zeros = [np.zeros(s, d) for s, d in leaf_specs]  # Only their shapes matter to unravel.
  _, unravel = ravel_pytree(jax.tree.unflatten(treedef, zeros))
  job_axes = PartitionSpec(tuple(mesh.axis_names))  # The job axis over every mesh axis.

  def local_jobs(ids_N, flat_PxN, rank_CxU, member_J, cand_J, k_J):
    def one_job(job):
      m, c, k = job
      unit_rank_N = jnp.where(ids_N >= 0, rank_CxU[c][jnp.maximum(ids_N, 0)],
                              jnp.iinfo(jnp.int32).max)
      return eval_fn(unravel(jnp.where(unit_rank_N < k, 0.0, flat_PxN[m])))

    if chunk_size:
      return jax.lax.map(one_job, (member_J, cand_J, k_J), batch_size=chunk_size)
    return jax.vmap(one_job)((member_J, cand_J, k_J))

  sharded = jax.shard_map(local_jobs, mesh=mesh,
                          in_specs=(PartitionSpec(),) * 3 + (job_axes,) * 3,
                          out_specs=job_axes)

  def run(ids_N, params_P, rank_CxU, member_J, cand_J, k_J):
    flat_PxN = jax.vmap(lambda p: ravel_pytree(p)[0])(params_P)
    return sharded(ids_N, flat_PxN, rank_CxU, member_J, cand_J, k_J)

  return jax.jit(run)


def search(eval_fn: Callable, params_P, units: Units, rank_CxU, member_C, ks: Sequence[int], *,
           mesh: Optional[Mesh] = None, chunk_size: Optional[int] = None):
  """eval_fn(member with its K top-ranked units zeroed) for every candidate x K.

  A candidate c is a model, params_P[member_C[c]], and a ranking rank_CxU[c]
  of the units (rank[u] = prune position, 0 first; see prune_order), e.g. its
  own grad x weight scores, another seed's, or a learned mask's. The C x len(ks)
  jobs are padded to a multiple of the device count and sharded over a 1-D
  mesh (default: every device); each shard evaluates its jobs with vmap, or
  with lax.map in batches of chunk_size to bound memory.

  Args:
    eval_fn: params -> pytree of arrays, jax-traceable (close over the batch).
      Reused compiles are keyed on its identity: pass the same function object.
    params_P: a population, every leaf stacked on a leading member axis P.
    units: from make_units on one member.
    rank_CxU: int [C, U], each row a permutation of 0..U-1.
    member_C: int [C], indices into P.
    ks: the K values, each in 0..U.
    mesh: the devices to shard over (all its axes carry the job axis).
    chunk_size: jobs per vmapped batch inside a shard (None: all at once).
      On a 2-core CPU (benchmarks/pruning_sweep.py) chunk_size=1 ran a K curve
      as fast as a Python loop over K, and None ~1.7x slower: there each job
      has its own masked weights, so batching saves no FLOPs and adds memory
      traffic. The batch pays where dispatch dominates (small models on an
      accelerator) and the sharding wherever there are several devices.

  Returns:
    eval_fn's pytree with leading axes [C, len(ks)].
  """
  ks, member_C, rank_CxU = _check_search_inputs(params_P, units, rank_CxU, member_C, ks)
  if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer))
                                 or isinstance(chunk_size, bool) or chunk_size < 1):
    raise ValueError(f'chunk_size={chunk_size!r}; valid: None or an integer >= 1.')
  mesh = default_mesh() if mesh is None else mesh
  C, n_k = member_C.shape[0], len(ks)
  n_jobs = C * n_k
  n_pad = -n_jobs % mesh.size
  # Job j = (candidate j // n_k, K ks[j % n_k]); padding repeats job 0 and is dropped.
  cand_J = np.concatenate([np.repeat(np.arange(C), n_k), np.zeros(n_pad, int)]).astype(np.int32)
  k_J = np.concatenate([np.tile(np.asarray(ks), C), np.zeros(n_pad, int)]).astype(np.int32)
  member_J = member_C[cand_J]
  leaves, treedef = jax.tree.flatten(params_P)
  leaf_specs = tuple((tuple(np.shape(x)[1:]), jnp.result_type(x)) for x in leaves)  # One member.
  fn = _cached(_search_fn, eval_fn, units, treedef, leaf_specs, mesh, chunk_size)
  out = fn(_device_ids(units), params_P, rank_CxU, member_J, cand_J, k_J)
  return jax.tree.map(lambda x: x[:n_jobs].reshape(C, n_k, *x.shape[1:]), out)


def top_units(units: Units, rank_U, k: int) -> list[str]:
  rank = np.asarray(rank_U)
  return [units.names[u] for u in np.argsort(rank)[:k]]


def check_k(k_max: int, units: Optional[Units], field: str = 'pruning.k_max') -> None:
  if units is not None and k_max > units.n_units:
    raise ValueError(f'{field}={k_max} exceeds the {units.n_units} prunable '
                     f'{units.granularity}s; valid: 0..{units.n_units}.')
