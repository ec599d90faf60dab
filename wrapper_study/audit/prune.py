"""Can pruning bring O_PT back? grad x weight pruning of the fine-tuned model, with controls.

Per granularity (weights, neurons): the fine-tuned model's units ranked by
grad x weight on the O_PT loss (paper Alg. 3; `analysis.pruning`), K swept over
`ks`; beside it, two controls in the same sharded search (one compiled call):
  random    K units of the same fine-tuned model drawn at random, `random_draws`
            times (does any pruning of K units restore O_PT?);
  pretrain  the pretrained model pruned by its own grad x weight ranking (what
            removing the top-K units does to a model that has O_PT).
Every candidate's curve is Acc O_PT (and Acc O_FT, if given) on the held-out sets.

Weight granularity on a 124M-parameter model has 85M units: their names are
made on demand (`_LazyNames`), never as a list.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from wrapper_study import losses
from wrapper_study.analysis import pruning
from wrapper_study.audit import measure
from wrapper_study.audit import spec as spec_lib

CANDIDATES = ('finetuned', 'random', 'pretrained')


class _LazyNames:
  """units.names for weight granularity: 'path[i, j]' made when asked for."""

  def __init__(self, paths, shapes, starts, total: int):
    self._paths, self._shapes, self._starts, self._total = paths, shapes, starts, total

  def __len__(self) -> int:
    return self._total

  def __getitem__(self, u: int) -> str:
    i = int(np.searchsorted(self._starts, u, side='right')) - 1
    return f'{self._paths[i]}{list(np.unravel_index(u - self._starts[i], self._shapes[i]))}'


def make_units(params, granularity: str, eligible: str) -> pruning.Units:
  """pruning.make_units, with weight units built without one string per scalar."""
  if granularity == 'neuron':
    return pruning.make_units(params, 'neuron', eligible)
  pred = pruning.eligible_by_name(eligible)
  leaves = [('/'.join(str(getattr(k, 'key', k)) for k in p), np.shape(v))
            for p, v in jax.tree_util.tree_flatten_with_path(params)[0]]
  ids, paths, shapes, starts, n = [], [], [], [], 0
  for path, shape in leaves:
    size = int(np.prod(shape))
    if pred(path):
      ids.append(np.arange(n, n + size, dtype=np.int32))
      paths.append(path), shapes.append(shape), starts.append(n)
      n += size
    else:
      ids.append(np.full(size, -1, np.int32))
  return pruning.Units(np.concatenate(ids), _LazyNames(paths, shapes, np.array(starts), n),
                       'weight')


def default_ks(k_max: int, k_step: int, n_units: int) -> list[int]:
  """K = 0..15 one by one, then every k_step up to k_max (the PCFG analysis' sweep)."""
  k_max = min(k_max, n_units)
  return sorted(set(range(min(15, k_max) + 1)) | set(range(0, k_max + 1, k_step)) | {k_max})


@functools.lru_cache(maxsize=8)
def _chunked_scores_fn(loss_fn, units: pruning.Units):
  """grad x weight of the whole set's weighted loss, gradients summed over row chunks."""
  def fn(params, inputs_KxCxT, targets_KxCxT, weights_KxCxT, ids):
    total_w = weights_KxCxT.sum()

    def chunk_grad(acc, chunk):
      inputs, targets, w = chunk
      batch = {'inputs': inputs, 'targets': targets, 'weights': w}
      # The chunk's share of the mean: loss_c * (its weight / all weight).
      g = jax.grad(lambda p: loss_fn(p, batch)[0] * w.sum() / total_w)(params)
      return jax.tree.map(jnp.add, acc, g), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, _ = jax.lax.scan(chunk_grad, zeros, (inputs_KxCxT, targets_KxCxT, weights_KxCxT))
    g, _ = ravel_pytree(grads)
    w, _ = ravel_pytree(params)
    contrib = jnp.where(ids >= 0, g * w, 0.0)
    return jax.ops.segment_sum(contrib, jnp.maximum(ids, 0), num_segments=units.n_units)
  return jax.jit(fn)


def scores(cfg, params, s: spec_lib.TokenSet, units: pruning.Units, chunk: int) -> jax.Array:
  """[U] grad x weight scores on the set (one batch when it fits in a chunk, as the worlds)."""
  loss_fn = losses.next_token_loss_fn(cfg)
  if s.n <= chunk:
    return pruning.scores(loss_fn, params, jax.tree.map(jnp.asarray, s.batch()), units)
  arrays = measure.set_arrays(s, chunk)
  return _chunked_scores_fn(loss_fn, units)(params, *arrays,
                                            jnp.asarray(units.unit_of_scalar))


def _eval_fn(cfg, pt_arrays, ft_arrays):
  """The search's eval_fn: Acc O_PT (and O_FT) of pruned params on the held-out sets."""
  def eval_fn(params):
    out = {'acc_pt': measure.metrics(cfg, params, pt_arrays)['acc']}
    if ft_arrays is not None:
      out['acc_ft'] = measure.metrics(cfg, params, ft_arrays)['acc']
    return out
  return eval_fn


def sweep(cfg, pre_params, ft_params, cap: spec_lib.Capability, section, seed: int,
          chunk: int, granularity: str) -> dict:
  """One granularity: {'ks', 'acc_pt' [C, K], 'acc_ft' [C, K] (if O_FT), 'candidate' [C],
  'n_units', 'top_units'}; candidates: finetuned, random x draws, pretrained."""
  units = make_units(ft_params, granularity, section.eligible)
  if granularity == 'neuron':
    ks = list(section.neuron_ks) or default_ks(section.neuron_k_max, section.neuron_k_step,
                                               units.n_units)
  else:
    ks = list(section.weight_ks) or default_ks(section.weight_k_max, section.weight_k_step,
                                               units.n_units)
  pruning.check_k(max(ks), units, f'pruning.{granularity}_ks')
  rank_ft = pruning.prune_order(scores(cfg, ft_params, cap.o_pt_train, units, chunk))
  rank_pre = pruning.prune_order(scores(cfg, pre_params, cap.o_pt_train, units, chunk))
  U = units.n_units
  randoms = []
  for d in range(section.random_draws):
    order = np.random.default_rng([seed, 77, d]).permutation(U)
    rank = np.empty(U, np.int32)
    rank[order] = np.arange(U, dtype=np.int32)
    randoms.append(rank)
  rank_CxU = np.stack([np.asarray(rank_ft, np.int32), *randoms, np.asarray(rank_pre, np.int32)])
  member_C = np.array([0] * (1 + len(randoms)) + [1], np.int32)
  params_P = jax.tree.map(lambda a, b: jnp.stack([jnp.asarray(a), jnp.asarray(b)]), ft_params,
                          pre_params)
  pt_arrays = measure.set_arrays(cap.o_pt_eval, chunk)
  ft_arrays = measure.set_arrays(cap.o_ft_eval, chunk) if cap.o_ft_eval is not None else None
  eval_fn = _eval_fn(cfg, pt_arrays, ft_arrays)
  curves = pruning.search(eval_fn, params_P, units, rank_CxU, member_C, ks,
                          chunk_size=section.chunk_size or None)
  out = {k: np.asarray(v) for k, v in curves.items()}
  out['ks'] = np.asarray(ks)
  out['candidate'] = np.array(['finetuned'] + ['random'] * len(randoms) + ['pretrained'])
  out['n_units'] = np.asarray(U)
  out['top_units'] = np.array(pruning.top_units(units, rank_ft, min(10, U)))
  return out


def curve_rows(granularity: str, out: dict) -> list[dict]:
  """One row per (candidate, draw, K): the pruning curves as a table."""
  rows, draw = [], {}
  for c, name in enumerate(out['candidate']):
    d = draw[name] = draw.get(name, -1) + 1
    for j, k in enumerate(out['ks']):
      row = dict(granularity=granularity, candidate=str(name), draw=d, k=int(k),
                 acc_o_pt=float(out['acc_pt'][c, j]))
      if 'acc_ft' in out:
        row['acc_o_ft'] = float(out['acc_ft'][c, j])
      rows.append(row)
  return rows
