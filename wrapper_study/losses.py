"""Weighted token losses, and the two model losses every world trains with.

The weights pick the positions that count: the answer position for Tracr/PCFG
fine-tuning, every real token for pretraining. `next_token_loss_fn` (PCFG and
TinyStories language modelling) and `answer_loss_fn` (Tracr: the answer at a
read-out position) are built once per architecture, so a train step compiles
once.

Shapes: B batch, T sequence, O output vocab.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from wrapper_study import model as model_lib


def _weights(targets_BxT: jax.Array, weights_BxT: Optional[jax.Array]) -> jax.Array:
  if weights_BxT is None:
    return jnp.ones(targets_BxT.shape, jnp.float32)
  if weights_BxT.shape != targets_BxT.shape:
    raise ValueError(f'weights shape {weights_BxT.shape} != targets shape '
                     f'{targets_BxT.shape}.')
  return weights_BxT.astype(jnp.float32)


def _safe_div(num, den):
  # An all-zero weight batch gives 0 rather than NaN, so it cannot trip the
  # NaN check of the train loop.
  return num / jnp.maximum(den, 1e-8)


def argmax(x: jax.Array) -> jax.Array:
  """jnp.argmax over the last axis, the same index everywhere (the first maximum; the first
  NaN if any), computed as max, then min of the indices that reach it.

  Why: XLA:CPU lowers jnp.argmax to one (value, index) reduction that it does not vectorize;
  two plain reductions are 2.2-3.3x faster on CPU (PCFG CPU batch 16 x 58 x 268: 0.29 vs
  0.69 ms; paper 96 x 259 x 268: 5.9 vs 16.1 ms; Tracr 176 x 26: 0.03 vs 0.08 ms), and the
  argmax of the train metrics was the costliest op of a PCFG population member's step.
  """
  idx = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  top = (x == jnp.max(x, axis=-1, keepdims=True)) | jnp.isnan(x)
  return jnp.min(jnp.where(top, idx, x.shape[-1]), axis=-1)


def accuracy(logits_BxTxO: jax.Array, targets_BxT: jax.Array,
             weights_BxT: Optional[jax.Array] = None) -> jax.Array:
  """Weighted mean of argmax == target."""
  w_BxT = _weights(targets_BxT, weights_BxT)
  correct_BxT = (argmax(logits_BxTxO) == targets_BxT).astype(jnp.float32)
  return _safe_div(jnp.sum(correct_BxT * w_BxT), jnp.sum(w_BxT))


def weighted_cross_entropy(
    logits_BxTxO: jax.Array, targets_BxT: jax.Array,
    weights_BxT: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
  """Mean cross-entropy over the weighted positions.

  Returns:
    (loss, metrics) with metrics = dict(loss, accuracy, denominator). loss and
    accuracy are weighted means; combine batches weighting by `denominator`.
  """
  w_BxT = _weights(targets_BxT, weights_BxT)
  # float32 softmax even for bf16 logits: the loss is a sum of many small terms.
  logp_BxTxO = jax.nn.log_softmax(logits_BxTxO.astype(jnp.float32), axis=-1)
  nll_BxT = -jnp.take_along_axis(logp_BxTxO, targets_BxT[..., None], axis=-1)[..., 0]
  denominator = jnp.sum(w_BxT)
  loss = _safe_div(jnp.sum(nll_BxT * w_BxT), denominator)
  metrics = dict(loss=loss, accuracy=accuracy(logits_BxTxO, targets_BxT, w_BxT),
                 denominator=denominator)
  return loss, metrics


@functools.lru_cache(maxsize=None)
def next_token_loss_fn(cfg: model_lib.TransformerConfig):
  """(params, batch) -> (loss, {'accuracy'}) for next-token prediction.

  batch: {'inputs' [B, T], 'targets' [B, T], 'weights' [B, T] (optional)}, or
  an array of windows [B, T + 1] (every position counts).
  """
  def loss_fn(params, batch):
    if isinstance(batch, dict):
      inputs_BxT, targets_BxT, weights_BxT = batch['inputs'], batch['targets'], batch.get('weights')
    else:
      inputs_BxT, targets_BxT, weights_BxT = batch[:, :-1], batch[:, 1:], None
    logits_BxTxO, _ = model_lib.Transformer(cfg).apply({'params': params}, inputs_BxT)
    loss, m = weighted_cross_entropy(logits_BxTxO, targets_BxT, weights_BxT)
    return loss, {'accuracy': m['accuracy']}
  return loss_fn


@functools.lru_cache(maxsize=None)
def answer_loss_fn(cfg: model_lib.TransformerConfig, position: int):
  """(params, {'tokens' [B, T], 'labels' [B]}) -> cross-entropy of the answer at `position`."""
  def loss_fn(params, batch):
    logits_BxTxO, _ = model_lib.Transformer(cfg).apply({'params': params}, batch['tokens'])
    logits_Bx1xO = logits_BxTxO[:, position:position + 1]
    loss, m = weighted_cross_entropy(logits_Bx1xO, batch['labels'][:, None])
    return loss, {'accuracy': m['accuracy']}
  return loss_fn
