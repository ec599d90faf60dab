"""Where fine-tuning moved the weights: ||theta_FT - theta_PT|| / ||theta_PT|| per matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def path_name(path) -> str:
  """'blocks_0/mlp/fc_out/kernel' for a jax tree path."""
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def weight_change(pre_params, params_P) -> dict[str, np.ndarray]:
  """{matrix path: [P] ||theta_FT - theta_PT|| / ||theta_PT||} per parameter array."""
  pre = dict(jax.tree_util.tree_flatten_with_path(pre_params)[0])
  out = {}
  for path, x_P in jax.tree_util.tree_flatten_with_path(params_P)[0]:
    p0 = jnp.asarray(pre[path])
    delta = jnp.sqrt(((x_P - p0[None]) ** 2).reshape(x_P.shape[0], -1).sum(1))
    out[path_name(path)] = np.asarray(delta / jnp.maximum(jnp.linalg.norm(p0.ravel()), 1e-12))
  return out
