"""Autoregressive sampling from the shared transformer, with a KV cache.

`generate` is one jit-compiled program: a single forward over the (left-padded)
prompt fills the KV cache, then a `lax.while_loop` feeds one token per step
against the cache. `generate_uncached` re-runs the full forward over the whole
sequence each step, no cache; it is the slow reference the tests compare with.

Both draw token t with `jax.random.fold_in(rng, t)`, so for the same rng they
sample the same tokens whenever their logits agree.

Shapes: B batch, T prompt length, N new tokens, O output vocab.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import model as model_lib


def sample_next(logits_BxO: jax.Array, rng: jax.Array, temperature,
                top_k: Optional[int]) -> jax.Array:
  """One token per row: argmax when temperature == 0, else a softmax sample.

  temperature may be traced (one compile serves greedy and sampling); top_k is static.
  """
  logits_BxO = logits_BxO.astype(jnp.float32)
  greedy_B = jnp.argmax(logits_BxO, axis=-1)
  scaled_BxO = logits_BxO / jnp.where(temperature == 0, 1.0, temperature)
  if top_k is not None:
    kth_Bx1 = jax.lax.top_k(scaled_BxO, top_k)[0][:, -1:]
    scaled_BxO = jnp.where(scaled_BxO < kth_Bx1, -jnp.inf, scaled_BxO)
  sampled_B = jax.random.categorical(rng, scaled_BxO, axis=-1)
  return jnp.where(temperature == 0, greedy_B, sampled_B).astype(jnp.int32)


def _check(cfg: model_lib.TransformerConfig, prompt_tokens_BxT, prompt_mask_BxT,
           max_new_tokens: int, temperature: float, top_k: Optional[int],
           eos_id: Optional[int]) -> None:
  """Fails fast, before any compile, on inputs that cannot be generated from."""
  cfg.validate()
  if not cfg.causal:
    raise ValueError('Sampling needs model.causal=True.')
  if cfg.n_outputs != cfg.vocab_size:
    raise ValueError(f'Sampled tokens are fed back as inputs, so model.d_vocab_out must be None '
                     f'or model.vocab_size={cfg.vocab_size}, got {cfg.d_vocab_out}.')
  if prompt_tokens_BxT.ndim != 2 or prompt_mask_BxT.shape != prompt_tokens_BxT.shape:
    raise ValueError(f'prompt_tokens_BxT must be [B, T] and prompt_mask_BxT the same shape; '
                     f'got {prompt_tokens_BxT.shape} and {prompt_mask_BxT.shape}.')
  T = prompt_tokens_BxT.shape[1]
  if T < 1:
    raise ValueError('prompt length must be >= 1 (start prompts with BOS).')
  if T > cfg.max_len:
    raise ValueError(f'prompt length {T} is longer than the context model.max_len={cfg.max_len}.')
  if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be a positive integer, got {max_new_tokens!r}.')
  # The last sampled token is never fed back, so T + N - 1 tokens go through the model.
  if T + max_new_tokens - 1 > cfg.max_len:
    raise ValueError(f'prompt length {T} + max_new_tokens {max_new_tokens} - 1 exceeds the '
                     f'context model.max_len={cfg.max_len}; shorten one of them.')
  if isinstance(temperature, (int, float)) and not temperature >= 0:  # May be traced.
    raise ValueError(f'temperature must be >= 0 (0 = greedy), got {temperature!r}.')
  if top_k is not None and not 1 <= top_k <= cfg.n_outputs:
    raise ValueError(f'top_k must be None or in 1..{cfg.n_outputs}, got {top_k!r}.')
  if eos_id is not None and not 0 <= eos_id < cfg.vocab_size:
    raise ValueError(f'eos_id must be None or in 0..{cfg.vocab_size - 1}, got {eos_id!r}.')
  try:
    mask = np.asarray(prompt_mask_BxT, bool)
  except jax.errors.TracerArrayConversionError:
    return  # Traced by an outer jit: the padding layout cannot be checked here.
  if not mask[:, -1].all():
    raise ValueError('prompt_mask_BxT: every row needs a real last token (prompts are '
                     f'left-padded); rows {np.flatnonzero(~mask[:, -1]).tolist()} end in padding.')
  if (mask[:, 1:] < mask[:, :-1]).any():
    raise ValueError('prompt_mask_BxT must be left padding: False...False True...True per row.')


def generate(cfg: model_lib.TransformerConfig, params, prompt_tokens_BxT, prompt_mask_BxT,
             max_new_tokens: int, rng: jax.Array, temperature: float = 1.0,
             top_k: Optional[int] = None, eos_id: Optional[int] = None) -> jax.Array:
  """Samples max_new_tokens after left-padded prompts: tokens [B, N] (int32).

  After a row emits eos_id, the rest of that row is eos_id; the loop stops
  early once every row has. temperature == 0 is greedy.
  """
  prompt_tokens_BxT = jnp.asarray(prompt_tokens_BxT, jnp.int32)
  prompt_mask_BxT = jnp.asarray(prompt_mask_BxT, bool)
  _check(cfg, prompt_tokens_BxT, prompt_mask_BxT, max_new_tokens, temperature, top_k, eos_id)
  return _generate_jit(cfg, params, prompt_tokens_BxT, prompt_mask_BxT, rng,
                       jnp.asarray(temperature, jnp.float32), max_new_tokens=max_new_tokens,
                       top_k=top_k, eos_id=eos_id)


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=('max_new_tokens', 'top_k', 'eos_id'))
def _generate_jit(cfg, params, prompt_tokens_BxT, prompt_mask_BxT, rng, temperature, *,
                  max_new_tokens, top_k, eos_id):
  B, T = prompt_tokens_BxT.shape
  N = max_new_tokens
  # Slots for the prompt and every fed-back token; the cache's dtype follows the params.
  dtype = jax.tree_util.tree_leaves(params)[0].dtype
  kv_cache = model_lib.init_kv_cache(cfg, B, length=T + N - 1, dtype=dtype)
  positions_BxT = model_lib.positions_from_pad_mask(prompt_mask_BxT)
  logits_BxTxO, kv_cache = model_lib.forward_with_kv_cache(
      cfg, params, prompt_tokens_BxT, kv_cache, pad_mask_BxT=prompt_mask_BxT,
      positions_BxT=positions_BxT)
  next_pos_B = positions_BxT[:, -1] + 1
  fill = 0 if eos_id is None else eos_id

  def emit(t, logits_BxO, tokens_BxN, done_B):
    token_B = sample_next(logits_BxO, jax.random.fold_in(rng, t), temperature, top_k)
    token_B = jnp.where(done_B, fill, token_B)
    if eos_id is not None:
      done_B = done_B | (token_B == eos_id)
    return token_B, tokens_BxN.at[:, t].set(token_B), done_B

  tokens_BxN = jnp.full((B, N), fill, jnp.int32)
  token_B, tokens_BxN, done_B = emit(0, logits_BxTxO[:, -1], tokens_BxN, jnp.zeros(B, bool))

  def body(carry):
    t, token_B, tokens_BxN, done_B, kv_cache = carry
    # Feed token t-1 (slot T + t - 1), read the logits of token t.
    logits_Bx1xO, kv_cache = model_lib.forward_with_kv_cache(
        cfg, params, token_B[:, None], kv_cache, positions_BxT=(next_pos_B + t - 1)[:, None])
    token_B, tokens_BxN, done_B = emit(t, logits_Bx1xO[:, 0], tokens_BxN, done_B)
    return t + 1, token_B, tokens_BxN, done_B, kv_cache

  def cond(carry):
    t, _, _, done_B, _ = carry
    return (t < N) & ~jnp.all(done_B)

  carry = (jnp.ones((), jnp.int32), token_B, tokens_BxN, done_B, kv_cache)
  return jax.lax.while_loop(cond, body, carry)[2]


def generate_uncached(cfg: model_lib.TransformerConfig, params, prompt_tokens_BxT,
                      prompt_mask_BxT, max_new_tokens: int, rng: jax.Array,
                      temperature: float = 1.0, top_k: Optional[int] = None,
                      eos_id: Optional[int] = None) -> jax.Array:
  """Reference for `generate`: the full forward over the whole sequence each step.

  The sequence lives in a [B, T + N - 1] buffer whose unwritten slots are
  masked out as keys, so every step is the same program (one compile) and no
  step relies on the causal mask to hide them. Slow; meant for tests.
  """
  tokens_BxT = jnp.asarray(prompt_tokens_BxT, jnp.int32)
  mask_BxT = jnp.asarray(prompt_mask_BxT, bool)
  _check(cfg, tokens_BxT, mask_BxT, max_new_tokens, temperature, top_k, eos_id)
  B, T = tokens_BxT.shape
  forward = _uncached_forward(cfg)
  unwritten = jnp.zeros((B, max_new_tokens - 1), bool)
  seq_BxS = jnp.concatenate([tokens_BxT, jnp.zeros((B, max_new_tokens - 1), jnp.int32)], axis=1)
  mask_BxS = jnp.concatenate([mask_BxT, unwritten], axis=1)
  done_B = jnp.zeros(B, bool)
  out = []
  for t in range(max_new_tokens):
    logits_BxO = forward(params, seq_BxS, mask_BxS)[:, T - 1 + t]
    token_B = sample_next(logits_BxO, jax.random.fold_in(rng, t), temperature, top_k)
    if eos_id is not None:
      token_B = jnp.where(done_B, eos_id, token_B)
      done_B = done_B | (token_B == eos_id)
    out.append(token_B)
    if t < max_new_tokens - 1:
      seq_BxS = seq_BxS.at[:, T + t].set(token_B)
      mask_BxS = mask_BxS.at[:, T + t].set(True)
  return jnp.stack(out, axis=1)


@functools.lru_cache(maxsize=16)
def _uncached_forward(cfg: model_lib.TransformerConfig):
  """Jitted full forward of padded rows (kept per config so compiles are reused).

  Positions count real tokens only; the unwritten slots at the end get
  positions past the last real one, which nothing reads.
  """
  return jax.jit(lambda params, tokens_BxS, mask_BxS: model_lib.run_with_cache(
      cfg, params, tokens_BxS, pad_mask_BxT=mask_BxS,
      positions_BxT=model_lib.positions_from_pad_mask(mask_BxS))[0])
