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
Eligible by default: the Dense layers inside blocks (attention q/k/v/out, MLP
fc_in/fc_out); not embeddings, nor the unembedding (for Tracr it is the fixed
read-out rebuilt from the residual labels). Pass `eligible` to change that.

A curve over K = 0..K_max is one vmapped computation: each K is a keep-mask
over the same flat parameter vector.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

GRANULARITIES = ('weight', 'neuron')


def default_eligible(path: str) -> bool:
  return path.startswith('blocks_') and path.endswith('/kernel')


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
               eligible: Callable[[str], bool] = default_eligible) -> Units:
  """Unit bookkeeping in ravel_pytree order."""
  if granularity not in GRANULARITIES:
    raise ValueError(f'pruning.granularity={granularity!r}; valid: {GRANULARITIES}.')
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


def scores(loss_fn: Callable, params, batch, units: Units) -> jax.Array:
  """[n_units] grad x weight scores of loss_fn(params, batch) (returns loss, aux)."""
  grads = jax.grad(lambda p: loss_fn(p, batch)[0])(params)
  g, _ = ravel_pytree(grads)
  w, _ = ravel_pytree(params)
  ids = jnp.asarray(units.unit_of_scalar)
  contrib = jnp.where(ids >= 0, g * w, 0.0)
  return jax.ops.segment_sum(contrib, jnp.maximum(ids, 0), num_segments=units.n_units)


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
  return jax.vmap(lambda k: eval_fn(pruned_params(params, units, rank_U, k)))(
      jnp.asarray(ks, jnp.int32))


def top_units(units: Units, rank_U, k: int) -> list[str]:
  rank = np.asarray(rank_U)
  return [units.names[u] for u in np.argsort(rank)[:k]]


def check_k(k_max: int, units: Optional[Units], field: str = 'pruning.k_max') -> None:
  if units is not None and k_max > units.n_units:
    raise ValueError(f'{field}={k_max} exceeds the {units.n_units} prunable '
                     f'{units.granularity}s; valid: 0..{units.n_units}.')
