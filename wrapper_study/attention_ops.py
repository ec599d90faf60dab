"""Attention without hooks: the forms `model.attention='fused'` picks by platform.

The explicit form in `model.Attention` materialises scores and pattern for every (query, key)
pair so that hooks can read them. When nobody asks for them:

- on GPU/TPU, `jax.nn.dot_product_attention` (cuDNN's flash kernel on GPU for bf16 inputs);
- on CPU, XLA's version of that function materialises the same [B, H, T, S] tensors and was
  1.7x slower than the explicit form for the paper's PCFG shape (fwd+bwd of one layer, 96 x
  259, 6 heads: 271 vs 157 ms, `benchmarks/pcfg_train_throughput.py --jax-attention`), so a
  causal model attends in query blocks instead: the block of queries [a, b) reads keys [0, b)
  only, which skips most of the masked upper triangle (for 259 tokens in blocks of 64, 62% of
  the pairs) and keeps each block's scores small (measured 0.6-0.7x the explicit form's time),
  with heads leading ([B, H, T, K]) and the q/k/v/out projections written as per-head einsums
  (`qkv(heads_major=True)` for q/k/v, `heads_major_dot` for the output and for
  `model.qkv='three_matmuls'`) so that XLA chooses no transposes between them (a further 0.75x
  for the whole attention layer, fwd+bwd).

`qkv` also serves every other form: q, k and v in one matmul from the params three nn.Dense
would make (`model.qkv='one_matmul'`, the default).

Every form computes the same function as the explicit one up to float rounding, except on
rows whose keys are all masked (padding queries, which no loss reads): there the explicit
form averages all S values and a block form averages the first b.
"""

from __future__ import annotations

from typing import Optional

from flax import linen as nn
import jax
import jax.numpy as jnp

# Tracr masks with -1e30 rather than -inf (finite: a fully masked row gives a uniform
# pattern, not NaN); model.MASK_VALUE is this value, so both forms agree with tracr.
MASK_VALUE = -1e30
CAUSAL_BLOCK = 64  # Queries per block on CPU; 48-96 measured alike, 32 and 128 slower.


def softmax_attend(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxTxS, scale):
  """softmax(q k^T * scale, masked) v, softmax in fp32; the explicit form without hooks."""
  heads_first = lambda y: y.transpose(0, 2, 1, 3)
  z_BxHxTxK = _attend_heads_major(heads_first(q_BxTxHxK), heads_first(k_BxSxHxK),
                                  heads_first(v_BxSxHxK), mask_BxTxS, scale)
  return heads_first(z_BxHxTxK)


def _attend_heads_major(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, mask_BxTxS, scale):
  scores_BxHxTxS = jnp.einsum('bhtk,bhsk->bhts', q_BxHxTxK, k_BxHxSxK) * scale
  scores_BxHxTxS = jnp.where(mask_BxTxS[:, None], scores_BxHxTxS, MASK_VALUE)
  pattern_BxHxTxS = jax.nn.softmax(scores_BxHxTxS.astype(jnp.float32), axis=-1)
  return jnp.einsum('bhts,bhsk->bhtk', pattern_BxHxTxS.astype(v_BxHxSxK.dtype), v_BxHxSxK)


def causal_blocks(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, mask_BxTxT, scale,
                  block: Optional[int] = None):
  """Causal attention by query blocks (default CAUSAL_BLOCK queries); mask_BxTxT must
  already hold the causal mask."""
  T = q_BxTxHxK.shape[1]
  block = CAUSAL_BLOCK if block is None else block
  # To heads-major; with `heads_major_dot` projections XLA cancels these transposes.
  q, k, v = (y.transpose(0, 2, 1, 3) for y in (q_BxTxHxK, k_BxTxHxK, v_BxTxHxK))
  outs_BxHxtxK = []
  for a in range(0, T, block):  # Static: T is known at trace time.
    b = min(a + block, T)
    outs_BxHxtxK.append(_attend_heads_major(q[:, :, a:b], k[:, :, :b], v[:, :, :b],
                                            mask_BxTxT[:, a:b, :b], scale))
  return jnp.concatenate(outs_BxHxtxK, axis=2).transpose(0, 2, 1, 3)


def heads_major_dot(n_heads: int, into_heads: bool):
  """A `dot_general` for flax's Dense on [B, T, F] inputs, computing the same x @ W as one
  einsum per head: into_heads for q/k/v (W [D, H*K]), else for the output (W [H*K, D]).
  The result keeps Dense's [B, T, features] shape; only XLA's layout choice changes."""
  def dot(x_BxTxF, kernel, dimension_numbers, precision=None, **kwargs):
    del dimension_numbers, kwargs  # Dense contracts the last axis of x with W's first.
    B, T, F = x_BxTxF.shape
    if into_heads:
      w_DxHxK = kernel.reshape(F, n_heads, -1)
      y_BxHxTxK = jnp.einsum('btd,dhk->bhtk', x_BxTxF, w_DxHxK, precision=precision)
      return y_BxHxTxK.transpose(0, 2, 1, 3).reshape(B, T, -1)
    x_BxHxTxK = x_BxTxF.reshape(B, T, n_heads, -1).transpose(0, 2, 1, 3)
    w_HxKxD = kernel.reshape(n_heads, -1, kernel.shape[-1])
    return jnp.einsum('bhtk,hkd->btd', x_BxHxTxK, w_HxKxD, precision=precision)
  return dot


class DenseParams(nn.Module):
  """nn.Dense's parameters (same names, shapes, initialisers and dtype), not applied."""
  features: int
  init_std: float
  use_bias: bool

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param('kernel', nn.initializers.normal(self.init_std),
                        (in_features, self.features), jnp.float32)
    bias = (self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
            if self.use_bias else None)
    return kernel, bias


def qkv(x_BxTxD, n_heads: int, d_head: int, *, init_std: float, use_bias: bool, dtype,
        heads_major: bool, n_kv_heads: Optional[int] = None):
  """q, k, v ([B, T, H, K] each) as one matmul with the three kernels side by side.

  Called inside a module's compact method: its params 'query', 'key', 'value' sit in that
  module's scope, exactly as three nn.Dense(H K) would make them (same tree, same init).
  One [D, 3 H K] product replaces three [D, H K] ones in the forward and in both backward
  products; small matmuls pay per call more than per FLOP: measured on CPU (jax 0.10, 140
  vmapped Tracr members of [176, 47] x [47, 12], fwd+bwd), 4.7-6.0 ms as three products,
  2.9 ms as one. heads_major: one einsum per head into [3, B, H, T, K], so that the causal
  blocks need no transposes (see heads_major_dot). n_kv_heads (grouped-query attention, fewer
  key/value heads than query heads): k and v come back with n_kv_heads heads, from the same
  one matmul; heads_major is then ignored (the result is the same either way).
  """
  B, T, D = x_BxTxD.shape
  F = n_heads * d_head
  if n_kv_heads is not None and n_kv_heads != n_heads:
    sizes = (F, n_kv_heads * d_head, n_kv_heads * d_head)
    params = [DenseParams(f, init_std, use_bias, name=name)(D)
              for f, name in zip(sizes, ('query', 'key', 'value'))]
    kernel_DxG = jnp.concatenate([kernel for kernel, _ in params], axis=1)
    bias_G = jnp.concatenate([bias for _, bias in params]) if use_bias else None
    x_BxTxD, kernel_DxG, bias_G = nn.dtypes.promote_dtype(x_BxTxD, kernel_DxG, bias_G, dtype=dtype)
    y_BxTxG = jnp.einsum('btd,dg->btg', x_BxTxD, kernel_DxG)
    if bias_G is not None:
      y_BxTxG += bias_G
    q_BxTxF, k_BxTxE, v_BxTxE = jnp.split(y_BxTxG, (F, F + sizes[1]), axis=-1)
    return (q_BxTxF.reshape(B, T, n_heads, d_head), k_BxTxE.reshape(B, T, n_kv_heads, d_head),
            v_BxTxE.reshape(B, T, n_kv_heads, d_head))
  params = [DenseParams(F, init_std, use_bias, name=name)(D) for name in ('query', 'key', 'value')]
  kernel_Dx3F = jnp.concatenate([kernel for kernel, _ in params], axis=1)
  bias_3F = jnp.concatenate([bias for _, bias in params]) if use_bias else None
  x_BxTxD, kernel_Dx3F, bias_3F = nn.dtypes.promote_dtype(x_BxTxD, kernel_Dx3F, bias_3F,
                                                          dtype=dtype)
  if heads_major:
    y_3xBxHxTxK = jnp.einsum('btd,dchk->cbhtk', x_BxTxD, kernel_Dx3F.reshape(D, 3, n_heads, d_head))
    if bias_3F is not None:
      y_3xBxHxTxK += bias_3F.reshape(3, 1, n_heads, 1, d_head)
    return tuple(y_BxHxTxK.transpose(0, 2, 1, 3) for y_BxHxTxK in y_3xBxHxTxK)
  y_BxTx3F = jnp.einsum('btd,df->btf', x_BxTxD, kernel_Dx3F)
  if bias_3F is not None:
    y_BxTx3F += bias_3F
  return tuple(y_BxTxF.reshape(B, T, n_heads, d_head)
               for y_BxTxF in jnp.split(y_BxTx3F, 3, axis=-1))


def apply_rope(x_BxTxHxK: jax.Array, positions_BxT: jax.Array, base: float) -> jax.Array:
  """Rotary position embedding of q or k, in llama2.c's pairing convention.

  Dimensions (2i, 2i+1) form pair i (a complex number) and turn by angle
  position * base**(-2i/K). This is llama2.c's / Meta LLaMA's interleaved
  layout, not the half-split (i, i + K/2) layout of GPT-NeoX / HF, so
  llama2.c checkpoints load without permuting q/k weights. Computed in float32
  as llama2.c does. positions_BxT may have batch 1 (broadcast).
  """
  K = x_BxTxHxK.shape[-1]
  inv_freq_J = 1.0 / (base ** (jnp.arange(0, K, 2, dtype=jnp.float32) / K))  # J = K/2 pairs.
  angle_BxTx1xJ = positions_BxT.astype(jnp.float32)[:, :, None, None] * inv_freq_J
  cos, sin = jnp.cos(angle_BxTx1xJ), jnp.sin(angle_BxTx1xJ)
  x = x_BxTxHxK.astype(jnp.float32)
  re_BxTxHxJ, im_BxTxHxJ = x[..., 0::2], x[..., 1::2]
  out_BxTxHxJx2 = jnp.stack([re_BxTxHxJ * cos - im_BxTxHxJ * sin,
                             re_BxTxHxJ * sin + im_BxTxHxJ * cos], axis=-1)
  return out_BxTxHxJx2.reshape(x_BxTxHxK.shape).astype(x_BxTxHxK.dtype)


def fused(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxTxS, scale, causal_self: bool,
          platform: Optional[str] = None):
  """The fastest form on `platform` (default: JAX's backend). causal_self: causal
  self-attention over the same T tokens (no KV cache), so key blocks after a query block are
  all masked."""
  if (platform or jax.default_backend()) != 'cpu':
    return jax.nn.dot_product_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK,
                                        mask=mask_BxTxS[:, None], scale=scale)
  if causal_self:
    return causal_blocks(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxTxS, scale)
  return softmax_attend(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxTxS, scale)
