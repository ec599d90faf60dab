"""What the Tracr study measures beyond accuracy: controls, activations for maps, pruning.

Controls: the compiled model must answer O_PT perfectly before any training,
and the weight noise that starts fine-tuning must not already destroy it.
Pruning: grad x weight scores of the O_PT loss rank the units of each chosen
fine-tuned member; `analysis.pruning.search` evaluates every (member, K) on
the C_Te=0 test set, sharded over all devices.

Shapes: P population members, M pruned members, K pruning levels, N test inputs.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import model as model_lib
from wrapper_study import losses
from wrapper_study.analysis import pruning
from wrapper_study.analysis import readout
from wrapper_study.tracr import tasks
from wrapper_study.tracr import train as tracr_train


def compiled_row(data: tracr_train.TaskData, test_sets) -> tuple[dict, dict]:
  """(row of the compiled-models table, {metric: accuracy}) of the compiled model, unnoised."""
  tm, spec = data.tm, data.spec
  single = jax.tree.map(lambda x: x[None], tm.params)
  acc = tracr_train.accuracies(tm.config, data.position, single, test_sets)
  row = dict(program=spec.task, seq_len=spec.seq_len, d_model=tm.config.d_model,
             n_layers=tm.config.n_layers, d_mlp=tm.config.d_mlp,
             n_params=sum(int(np.size(x)) for x in jax.tree.leaves(tm.params)),
             **{k: round(float(v[0]), 1) for k, v in acc.items()})
  return row, {k: float(v[0]) for k, v in acc.items()}


def noised_columns(history, metrics: Sequence[str]) -> dict:
  """Step-0 accuracies of the fine-tuning population (compiled + noise), mean over members."""
  return {f'noised {m}': round(float(history.curve(m)[1][0].mean()), 1) for m in metrics}


@functools.lru_cache(maxsize=None)
def _cache_fn(config: model_lib.TransformerConfig, names: tuple[str, ...]):
  """One jitted cached forward per (architecture, names): compiled once, reused."""
  return jax.jit(lambda params, tokens: model_lib.run_with_cache(config, params, tokens,
                                                                 names=names)[1])


def activations(tm, params, inputs_BxT, names) -> dict[str, np.ndarray]:
  return jax.device_get(_cache_fn(tm.config, tuple(names))(params, inputs_BxT))


def token_labels(tm, inputs_BxT) -> list[list[str]]:
  inv = {i: str(v) for v, i in tm.input_encoding.items()}
  return [[inv[int(t)] for t in row] for row in inputs_BxT]


def prune_population(config, data: tracr_train.TaskData, members, params_P, test_sets,
                     units_by_gran: Mapping[str, pruning.Units]):
  """Pruning curves of the members with C_Tr in pruning.c_trs.

  Returns ({granularity: [M, K+1, 3] on C_Te=0}, {granularity: top units per
  member}, the M members). Per member and K: Acc O_PT (%), Acc O_FT (%) and the
  number of distinct classes predicted (Fig. 59's check that a pruned model has
  not collapsed to a constant answer).
  """
  tm, spec, position = data.tm, data.spec, data.position
  idx = [i for i, m in enumerate(members) if m.c_tr in config.pruning.c_trs]
  chosen = [members[i] for i in idx]
  params_M = jax.tree.map(lambda x: x[np.asarray(idx)], params_P)
  rng = np.random.default_rng([config.seed, 11])
  grad_toks = tasks.sample(spec, rng, config.pruning.num_grad_samples, None)
  grad_batch = {'tokens': jnp.asarray(data.inputs(grad_toks)),
                'labels': jnp.asarray(data.labels(grad_toks, spec.operand_pt))}
  loss_fn = losses.answer_loss_fn(tm.config, position)
  ks = tuple(range(config.pruning.k_max + 1))
  ts = test_sets['c_te0']
  inputs, label_pt, label_ft = (jnp.asarray(x) for x in (ts.inputs, ts.label_pt, ts.label_ft))

  def evaluate(params):
    logits_NxTxO, _ = model_lib.Transformer(tm.config).apply({'params': params}, inputs)
    pred_N = logits_NxTxO[:, position].argmax(-1)
    return jnp.stack([(pred_N == label_pt).mean() * 100, (pred_N == label_ft).mean() * 100,
                      readout.n_distinct(pred_N, tm.config.n_outputs).astype(jnp.float32)])

  curves, top = {}, {}
  for gran, units in units_by_gran.items():
    ranks_MxU = jax.vmap(pruning.prune_order)(
        pruning.scores_population(loss_fn, params_M, grad_batch, units))
    curves[gran] = np.asarray(pruning.search(
        evaluate, params_M, units, ranks_MxU, np.arange(len(idx)), ks,
        chunk_size=config.pruning.chunk_size or None))
    top[gran] = [pruning.top_units(units, ranks_MxU[i], 3) for i in range(len(idx))]
  return curves, top, chosen
