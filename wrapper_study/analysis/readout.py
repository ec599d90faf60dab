"""The answer read out at one position: predictions and accuracy, for every world.

Tracr reads the answer at a fixed model position of a non-causal model; the
PCFG models predict the answer token after the ART token of a causal model.
Both are "argmax of the logits at position t of these inputs", so one jitted
function serves both, compiled once per (architecture, position, population).
Callers give the inputs the model should see: the PCFG world cuts the sequence
just before the answer (`inputs = tokens[:, :answer_index]`, position
`answer_index - 1`), Tracr passes its whole input.

Shapes: P population members, N examples, T positions.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import model as model_lib

DEFAULT_CHUNK = 512  # Examples per forward: bounds activation memory.


@functools.lru_cache(maxsize=None)
def predict_fn(cfg: model_lib.TransformerConfig, position: int, population: bool = False):
  """jit: (params, inputs [N, T]) -> [N] argmax at `position` ([P, N] for a population)."""
  def predict(params, inputs_NxT):
    logits_NxTxO, _ = model_lib.Transformer(cfg).apply({'params': params}, inputs_NxT)
    return logits_NxTxO[:, position].argmax(-1)
  return jax.jit(jax.vmap(predict, in_axes=(0, None)) if population else predict)


def predict(cfg: model_lib.TransformerConfig, params, inputs_NxT, position: int, *,
            population: bool = False, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
  """Predicted class ids, [N] (or [P, N]), in chunks of the examples to bound memory."""
  fn = predict_fn(cfg, position, population)
  inputs_NxT = np.asarray(inputs_NxT)
  parts = [np.asarray(fn(params, inputs_NxT[i:i + chunk]))
           for i in range(0, len(inputs_NxT), chunk)]
  return np.concatenate(parts, axis=-1)


def accuracy(cfg: model_lib.TransformerConfig, params, inputs_NxT, labels_N, position: int, *,
             population: bool = False, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
  """Accuracy in percent: a float (or [P] for a population)."""
  pred = predict(cfg, params, inputs_NxT, position, population=population, chunk=chunk)
  return (pred == np.asarray(labels_N)).mean(-1) * 100


def n_distinct(pred_N, n_classes: int):
  """How many different answers a model gives (1: collapsed to a constant); jit-friendly."""
  return (jnp.zeros(n_classes, jnp.int32).at[pred_N].add(1) > 0).sum()
