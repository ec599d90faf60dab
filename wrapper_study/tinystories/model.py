"""The TinyStories model: the config's `model` section through the one shared factory.

`model.flavour='llama'` gives `model_lib.llama_config` (RMSNorm, RoPE, SwiGLU,
tied embeddings), the paper's architecture; checkpoint metadata compares this
TransformerConfig before any restore.
"""

from __future__ import annotations

import functools
import math

import jax

from wrapper_study import model as model_lib
from wrapper_study import model_factory


def model_config(config) -> model_lib.TransformerConfig:
  """The TransformerConfig of every model of the study."""
  return model_factory.from_config(config.model)


@functools.lru_cache(maxsize=None)
def _init_shapes(cfg: model_lib.TransformerConfig):
  return jax.eval_shape(lambda: model_lib.init_params(cfg, jax.random.key(0)))


def init_shapes(config):
  """The parameter tree's shapes, without allocating it (cached per architecture)."""
  return _init_shapes(model_config(config))


def n_params(config) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(init_shapes(config)))
