"""The decoding state of the shared transformer: a KV cache and the positions of padded rows.

`model.forward_with_kv_cache` runs new tokens against a `KVCache` of the keys
and values seen so far (an explicit pytree, jit-able, no params);
`model.init_kv_cache` makes an empty one for a config. Both names are
re-exported by `wrapper_study.model`.

Shapes: B batch, T tokens, L layers, S cache slots, H heads, K d_head.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


def positions_from_pad_mask(pad_mask_BxT: jax.Array) -> jax.Array:
  """Position of each token counting real tokens only: left padding shifts nothing.

  Pad slots before the first real token get 0 (their value never matters: no
  real token attends to them).
  """
  return jnp.maximum(jnp.cumsum(pad_mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for the tokens decoded so far.

  Slot s of every row holds the token fed at step s of that batch (left padding
  included, so all rows write the same slot at once). valid_BxS marks the slots
  holding real tokens; padding and not-yet-written slots are never attended to.
  Keys are stored after RoPE, so a slot never needs its position again.
  """
  k_LxBxSxHxK: jax.Array
  v_LxBxSxHxK: jax.Array
  valid_BxS: jax.Array  # bool
  index: jax.Array  # int32 []: the next slot to write.

  @property
  def length(self) -> int:
    return self.valid_BxS.shape[1]

  def write(self, layer: int, k_BxTxHxK: jax.Array, v_BxTxHxK: jax.Array) -> 'KVCache':
    """Stores one layer's keys/values of a chunk at slots [index, index + T)."""
    start = (layer, 0, self.index, 0, 0)
    k = jax.lax.dynamic_update_slice(self.k_LxBxSxHxK,
                                     k_BxTxHxK[None].astype(self.k_LxBxSxHxK.dtype), start)
    v = jax.lax.dynamic_update_slice(self.v_LxBxSxHxK,
                                     v_BxTxHxK[None].astype(self.v_LxBxSxHxK.dtype), start)
    return self.replace(k_LxBxSxHxK=k, v_LxBxSxHxK=v)
