"""The one transformer every world shares, with TransformerLens-style hook points.

A pure-functional Flax linen module. Tracr-compiled weights load into it as they
are (no LayerNorm, ReLU MLPs, biases, attention scaled by 1/sqrt(d_head)); the
PCFG and TinyStories models are the same module with other config values. The
LLaMA-style flavour of the TinyStories world (the authors' llama2.c fork) is
`norm='rms'`, `pos_embedding='rope'`, `mlp='swiglu'`, `tied_embeddings=True`,
`use_bias=False`; see `llama_config`. Grouped-query attention (`n_kv_heads`)
and `norm_eps` serve the Hugging Face checkpoints of `wrapper_study/hf`. Every
new field defaults to the old behaviour, so older configs give the same
parameter tree and outputs.
`precision` (fp32 / tf32 / bf16 compute) never changes the fp32 params;
`attention` ('explicit' / 'fused') changes how attention is computed, not what.

A forward pass can return a cache of named activations. Only the names asked
for are kept, so memory stays small when a probe needs one layer. Hooks with the
same names can also rewrite an activation in flight (ablation, patching).

For decoding, `forward_with_kv_cache` runs new tokens against a `KVCache` of
the keys and values seen so far (an explicit pytree, jit-able, no params).

Shapes: B batch, T sequence, D d_model, H heads, K d_head, M d_mlp, V vocab,
O output vocab, L layers, S cache slots.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

# Rotary embedding and decoding state, in their own modules; model.apply_rope, model.KVCache and
# model.positions_from_pad_mask stay valid.
from wrapper_study import attention_ops
from wrapper_study.attention_ops import apply_rope  # pylint: disable=unused-import
from wrapper_study.kv_cache import KVCache, positions_from_pad_mask  # pylint: disable=unused-import

MASK_VALUE = attention_ops.MASK_VALUE  # Tracr's -1e30, see there.

ACTIVATIONS = {
    'relu': jax.nn.relu,
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
    'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'silu': jax.nn.silu,
}
NORMS = ('layer', 'rms')
POS_EMBEDDINGS = ('learned', 'rope', 'none')
MLPS = ('standard', 'swiglu')
# Attention, the same function up to float rounding: 'explicit' scores -> softmax -> pattern
# (the float order compiled Tracr models need: their logits tie exactly), or 'fused', the
# platform's fastest form that shows no pattern (`attention_ops.fused`: cuDNN flash on GPU,
# causal query blocks on CPU); a hook or cache asking for the scores or pattern gets 'explicit'.
ATTENTIONS = ('explicit', 'fused')
# q/k/v projections: one matmul with the three kernels side by side, or three (the form every
# smoke record was made with; equal to float rounding: attention_ops.qkv).
QKV_FORMS = ('one_matmul', 'three_matmuls')
# precision -> (compute dtype, jax matmul precision). Params stay fp32 always.
PRECISIONS = {'fp32': (jnp.float32, 'float32'), 'tf32': (jnp.float32, 'tensorfloat32'),
              'bf16': (jnp.bfloat16, 'bfloat16')}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and flavour of the shared transformer."""
  vocab_size: int  # V: input tokens.
  max_len: int  # Context: longest sequence (rows of the learned position embedding).
  d_model: int = 64  # D
  n_layers: int = 2  # Blocks, each attention then MLP.
  n_heads: int = 4  # H
  n_kv_heads: Optional[int] = None  # Key/value heads (grouped-query attention); None: n_heads.
  d_head: int = 16  # K; also the value size, as in tracr.
  d_mlp: int = 256  # M
  d_vocab_out: Optional[int] = None  # O; None means vocab_size.
  activation: str = 'relu'  # One of ACTIVATIONS.
  layer_norm: bool = False  # Pre-norm blocks plus a final norm (minGPT style).
  causal: bool = False
  use_bias: bool = True  # Biases on every Dense (tracr has them, all zero).
  init_std: float = 0.02  # Normal init of learned weights.
  norm: str = 'layer'  # NORMS, used when layer_norm: LayerNorm, or RMSNorm (scale only).
  pos_embedding: str = 'learned'  # POS_EMBEDDINGS: added table, rotary on q/k, or none.
  rope_base: float = 10000.0  # theta of the rotary frequencies.
  norm_eps: float = 1e-5  # epsilon of LayerNorm / RMSNorm (minGPT, llama2.c, GPT-2: 1e-5).
  mlp: str = 'standard'  # MLPS: fc_out(act(fc_in x)), or fc_out(act(fc_gate x) * fc_in x).
  tied_embeddings: bool = False  # Logits = x @ embed.T; no `unembed` param.
  precision: str = 'fp32'  # PRECISIONS; not architecture (checkpoints ignore it). tf32: GPU/TPU.
  attention: str = 'explicit'  # ATTENTIONS; not architecture (checkpoints ignore it).
  qkv: str = 'one_matmul'  # QKV_FORMS; not architecture (checkpoints ignore it).

  @property
  def n_outputs(self) -> int:
    return self.d_vocab_out or self.vocab_size

  @property
  def kv_heads(self) -> int:
    return self.n_kv_heads or self.n_heads

  def validate(self) -> None:
    """Raises ValueError naming the field when a value cannot work."""
    for name in ('vocab_size', 'max_len', 'd_model', 'n_layers', 'n_heads',
                 'd_head', 'd_mlp'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'model.{name} must be a positive integer, got {value!r}.')
    if self.d_vocab_out is not None and self.d_vocab_out < 1:
      raise ValueError(f'model.d_vocab_out must be None or >= 1, got {self.d_vocab_out}.')
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'model.activation={self.activation!r} is unknown; '
                       f'valid: {sorted(ACTIVATIONS)}.')
    self.validate_flavour()

  def validate_flavour(self) -> None:
    """The architecture-choice fields only (cheap; checked on every forward)."""
    for name, valid in (('norm', NORMS), ('pos_embedding', POS_EMBEDDINGS), ('mlp', MLPS),
                        ('precision', tuple(PRECISIONS)), ('attention', ATTENTIONS),
                        ('qkv', QKV_FORMS)):
      if getattr(self, name) not in valid:
        raise ValueError(f'model.{name}={getattr(self, name)!r} is unknown; valid: {valid}.')
    if self.pos_embedding == 'rope':
      if self.d_head % 2:
        raise ValueError(f"model.d_head={self.d_head} must be even for model.pos_embedding='rope' "
                         '(rotary turns pairs of dimensions).')
      if not self.rope_base > 1:
        raise ValueError(f'model.rope_base must be > 1, got {self.rope_base!r}.')
    if self.mlp == 'swiglu' and self.activation != 'silu':
      raise ValueError(f"model.mlp='swiglu' gates with silu; set model.activation='silu' "
                       f'(got {self.activation!r}).')
    if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
      raise ValueError(f'model.n_kv_heads={self.n_kv_heads} must divide model.n_heads='
                       f'{self.n_heads} (each key/value head serves a group of query heads).')
    if self.tied_embeddings and self.n_outputs != self.vocab_size:
      raise ValueError(f'model.tied_embeddings reads logits off the input embedding, so model.'
                       f'd_vocab_out must be None or {self.vocab_size}, got {self.d_vocab_out}.')

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping) -> 'TransformerConfig':
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - fields
    if unknown:
      raise ValueError(f'Unknown model config fields {sorted(unknown)}; valid: {sorted(fields)}.')
    return cls(**d)


def llama_mlp_width(d_model: int, multiple_of: int = 64) -> int:
  """SwiGLU hidden width of llama2.c: 2/3 of 4*d_model, rounded up to multiple_of.

  Integer arithmetic as llama2.c writes it; equal to multiple_of*ceil(8d/3 /
  multiple_of) for every d, since 8d is never 1 or 2 above a multiple of 192.
  """
  hidden = (8 * d_model) // 3
  return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def llama_config(vocab_size: int, max_len: int, d_model: int, n_layers: int, n_heads: int,
                 multiple_of: int = 64, **overrides) -> TransformerConfig:
  """The LLaMA-2 flavour of llama2.c: RMSNorm, RoPE, SwiGLU, tied, no biases, causal."""
  if d_model % n_heads:
    raise ValueError(f'model.d_model={d_model} must be divisible by model.n_heads={n_heads}.')
  fields = dict(vocab_size=vocab_size, max_len=max_len, d_model=d_model, n_layers=n_layers,
                n_heads=n_heads, d_head=d_model // n_heads,
                d_mlp=llama_mlp_width(d_model, multiple_of), activation='silu',
                layer_norm=True, norm='rms', pos_embedding='rope', mlp='swiglu',
                tied_embeddings=True, use_bias=False, causal=True)
  return TransformerConfig(**{**fields, **overrides})


def hook_names(config: TransformerConfig) -> list[str]:
  """Every hook point of a model with this config, in forward order."""
  names = ['hook_embed'] + (['hook_pos_embed'] if config.pos_embedding == 'learned' else [])
  for l in range(config.n_layers):
    b = f'blocks.{l}'
    names += [f'{b}.hook_resid_pre'] + ([f'{b}.ln1.hook_normalized'] if config.layer_norm else [])
    names += [f'{b}.attn.hook_q', f'{b}.attn.hook_k', f'{b}.attn.hook_v']
    if config.pos_embedding == 'rope':  # TransformerLens names for q, k after rotation.
      names += [f'{b}.attn.hook_rot_q', f'{b}.attn.hook_rot_k']
    names += [f'{b}.attn.hook_attn_scores', f'{b}.attn.hook_pattern',
              f'{b}.attn.hook_z', f'{b}.hook_attn_out', f'{b}.hook_resid_mid']
    names += [f'{b}.ln2.hook_normalized'] if config.layer_norm else []
    names += [f'{b}.mlp.hook_pre']
    if config.mlp == 'swiglu':
      names += [f'{b}.mlp.hook_pre_linear']
    names += [f'{b}.mlp.hook_post', f'{b}.hook_mlp_out', f'{b}.hook_resid_post']
  if config.layer_norm:
    names += ['ln_final.hook_normalized']
  return names


NamesFilter = Union[None, str, Iterable[str], Callable[[str], bool]]


def resolve_names(config: TransformerConfig, names: NamesFilter) -> tuple[str, ...]:
  """Turns a name, a list of names, a regex-free predicate or None into names.

  Unknown names fail here, before any compute, with the valid ones listed.
  """
  valid = hook_names(config)
  if names is None:
    return ()
  if callable(names):
    return tuple(n for n in valid if names(n))
  if isinstance(names, str):
    names = [names]
  names = tuple(names)
  unknown = [n for n in names if n not in valid]
  if unknown:
    example = ', '.join(valid[:3] + valid[-3:])
    raise ValueError(
        f'Unknown hook name(s) {unknown}. A {config.n_layers}-layer model has '
        f'{len(valid)} hook points, e.g. {example} (see model.hook_names).')
  return names


class _Recorder:
  """Collects the requested activations and applies hooks during one trace."""

  def __init__(self, names: Iterable[str], hooks: Optional[Mapping[str, Callable]]):
    self.names = frozenset(names)
    self.hooks = dict(hooks or {})
    self.cache: dict[str, jax.Array] = {}

  def wants(self, *names: str) -> bool:
    """Whether any of these activations is cached or hooked (else it need not exist)."""
    return any(n in self.names or n in self.hooks for n in names)

  def __call__(self, name: str, x: jax.Array) -> jax.Array:
    if name in self.hooks:
      x = self.hooks[name](x)
    if name in self.names:
      self.cache[name] = x
    return x


def _dense(features: int, config: TransformerConfig, name: str, dot_general=None) -> nn.Dense:
  return nn.Dense(features, use_bias=config.use_bias, name=name, dtype=_dtype(config),
                  kernel_init=nn.initializers.normal(config.init_std), dot_general=dot_general)


def _dtype(config: TransformerConfig):
  return PRECISIONS[config.precision][0]


def _norm(config: TransformerConfig, name: str) -> nn.Module:
  eps = config.norm_eps
  if config.norm == 'rms':
    return nn.RMSNorm(epsilon=eps, name=name, dtype=_dtype(config))  # x*rsqrt(mean(x^2)+eps)*scale.
  return nn.LayerNorm(epsilon=eps, name=name, dtype=_dtype(config))


def init_kv_cache(config: TransformerConfig, batch_size: int, length: Optional[int] = None,
                  dtype=jnp.float32) -> KVCache:
  """An empty cache of `length` slots (default model.max_len) for a causal model."""
  config.validate()
  if not config.causal:
    raise ValueError('A KV cache needs model.causal=True: without a causal mask earlier '
                     'tokens attend to later ones, so their keys/values are not final.')
  length = config.max_len if length is None else length
  if not 1 <= length <= config.max_len:
    raise ValueError(f'KV cache length={length} must be in 1..model.max_len={config.max_len}.')
  shape = (config.n_layers, batch_size, length, config.kv_heads, config.d_head)
  return KVCache(k_LxBxSxHxK=jnp.zeros(shape, dtype), v_LxBxSxHxK=jnp.zeros(shape, dtype),
                 valid_BxS=jnp.zeros((batch_size, length), bool),
                 index=jnp.zeros((), jnp.int32))


class Attention(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BxTxD, mask_BxTxS, positions_BxT, rec: _Recorder, prefix: str,
               kv: Optional[tuple[KVCache, int]] = None):
    """Self-attention; with kv=(cache, layer) it writes this chunk into the cache
    and attends over all S cache slots. Returns (out_BxTxD, updated cache or None)."""
    c = self.config
    B, T, _ = x_BxTxD.shape
    fused = c.attention == 'fused' and not rec.wants(f'{prefix}.hook_attn_scores',
                                                     f'{prefix}.hook_pattern')
    # Fused on CPU: per-head einsums let XLA keep [B, H, T, K] between projections and blocks.
    blocks = fused and kv is None and c.causal and jax.default_backend() == 'cpu'
    if c.qkv == 'one_matmul':
      q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = attention_ops.qkv(
          x_BxTxD, c.n_heads, c.d_head, init_std=c.init_std, use_bias=c.use_bias,
          dtype=_dtype(c), heads_major=blocks, n_kv_heads=c.n_kv_heads)
    else:  # k, v with kv_heads heads (fewer under grouped-query attention); dot per head.
      q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = (
          _dense(h * c.d_head, c, name, attention_ops.heads_major_dot(h, into_heads=True)
                 if blocks else None)(x_BxTxD).reshape(B, T, h, c.d_head)
          for h, name in ((c.n_heads, 'query'), (c.kv_heads, 'key'), (c.kv_heads, 'value')))
    q_BxTxHxK = rec(f'{prefix}.hook_q', q_BxTxHxK)
    k_BxTxHxK = rec(f'{prefix}.hook_k', k_BxTxHxK)
    v_BxTxHxK = rec(f'{prefix}.hook_v', v_BxTxHxK)
    if c.pos_embedding == 'rope':
      q_BxTxHxK = rec(f'{prefix}.hook_rot_q', apply_rope(q_BxTxHxK, positions_BxT, c.rope_base))
      k_BxTxHxK = rec(f'{prefix}.hook_rot_k', apply_rope(k_BxTxHxK, positions_BxT, c.rope_base))
    kv_cache = None
    k_BxSxHxK, v_BxSxHxK = k_BxTxHxK, v_BxTxHxK
    if kv is not None:
      kv_cache, layer = kv
      kv_cache = kv_cache.write(layer, k_BxTxHxK, v_BxTxHxK)
      k_BxSxHxK, v_BxSxHxK = kv_cache.k_LxBxSxHxK[layer], kv_cache.v_LxBxSxHxK[layer]
    if c.kv_heads != c.n_heads:  # Query head h reads key/value head h // group (HF repeat_kv).
      k_BxSxHxK, v_BxSxHxK = (jnp.repeat(y, c.n_heads // c.kv_heads, axis=2)
                              for y in (k_BxSxHxK, v_BxSxHxK))
    if fused:
      z_BxTxHxK = attention_ops.fused(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxTxS,
                                      scale=1.0 / float(c.d_head) ** 0.5,
                                      causal_self=c.causal and kv is None)
    else:
      scores_BxHxTxS = jnp.einsum('bthk,bshk->bhts', q_BxTxHxK, k_BxSxHxK)
      scores_BxHxTxS = scores_BxHxTxS / jnp.sqrt(jnp.asarray(c.d_head, x_BxTxD.dtype))
      scores_BxHxTxS = jnp.where(mask_BxTxS[:, None], scores_BxHxTxS, MASK_VALUE)
      scores_BxHxTxS = rec(f'{prefix}.hook_attn_scores', scores_BxHxTxS)
      pattern_BxHxTxS = rec(f'{prefix}.hook_pattern',  # Softmax in fp32 also under bf16.
                            jax.nn.softmax(scores_BxHxTxS.astype(jnp.float32), axis=-1))
      z_BxTxHxK = jnp.einsum('bhts,bshk->bthk', pattern_BxHxTxS.astype(v_BxSxHxK.dtype),
                             v_BxSxHxK)
    z_BxTxHxK = rec(f'{prefix}.hook_z', z_BxTxHxK)
    out_dot = attention_ops.heads_major_dot(c.n_heads, into_heads=False) if blocks else None
    out_BxTxD = _dense(c.d_model, c, 'out', out_dot)(
        z_BxTxHxK.reshape(B, T, c.n_heads * c.d_head))
    return out_BxTxD, kv_cache


class MLP(nn.Module):
  """'standard': hook_pre = fc_in(x), hook_post = act(hook_pre).

  'swiglu' (llama2.c w1/w3/w2 = fc_gate/fc_in/fc_out; TransformerLens names):
  hook_pre = fc_gate(x), the gate before its activation; hook_pre_linear =
  fc_in(x); hook_post = silu(hook_pre) * hook_pre_linear. In both, hook_post is
  what fc_out reads: the M 'neurons'.
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BxTxD, rec: _Recorder, prefix: str):
    c = self.config
    act = ACTIVATIONS[c.activation]
    if c.mlp == 'swiglu':
      gate_BxTxM = rec(f'{prefix}.hook_pre', _dense(c.d_mlp, c, 'fc_gate')(x_BxTxD))
      linear_BxTxM = rec(f'{prefix}.hook_pre_linear', _dense(c.d_mlp, c, 'fc_in')(x_BxTxD))
      post_BxTxM = rec(f'{prefix}.hook_post', act(gate_BxTxM) * linear_BxTxM)
    else:
      pre_BxTxM = rec(f'{prefix}.hook_pre', _dense(c.d_mlp, c, 'fc_in')(x_BxTxD))
      post_BxTxM = rec(f'{prefix}.hook_post', act(pre_BxTxM))
    return _dense(c.d_model, c, 'fc_out')(post_BxTxM)


class Block(nn.Module):
  config: TransformerConfig
  index: int

  @nn.compact
  def __call__(self, x_BxTxD, mask_BxTxS, positions_BxT, rec: _Recorder,
               kv_cache: Optional[KVCache] = None):
    c, b = self.config, f'blocks.{self.index}'
    x_BxTxD = rec(f'{b}.hook_resid_pre', x_BxTxD)
    h = x_BxTxD
    if c.layer_norm:
      h = rec(f'{b}.ln1.hook_normalized', _norm(c, 'ln1')(h))
    kv = None if kv_cache is None else (kv_cache, self.index)
    attn_out, kv_cache = Attention(c, name='attn')(h, mask_BxTxS, positions_BxT, rec,
                                                   f'{b}.attn', kv)
    attn_out = rec(f'{b}.hook_attn_out', attn_out)
    x_BxTxD = rec(f'{b}.hook_resid_mid', x_BxTxD + attn_out)
    h = x_BxTxD
    if c.layer_norm:
      h = rec(f'{b}.ln2.hook_normalized', _norm(c, 'ln2')(h))
    mlp_out = rec(f'{b}.hook_mlp_out', MLP(c, name='mlp')(h, rec, f'{b}.mlp'))
    return rec(f'{b}.hook_resid_post', x_BxTxD + mlp_out), kv_cache


class Transformer(nn.Module):
  """tokens [B, T] -> logits [B, T, O] (+ a cache of named activations)."""
  config: TransformerConfig

  def __call__(self, *args, **kwargs):
    with jax.default_matmul_precision(PRECISIONS[self.config.precision][1]):
      return self._forward(*args, **kwargs)

  @nn.compact
  def _forward(self, tokens_BxT: jax.Array, *, pad_mask_BxT: Optional[jax.Array] = None,
               positions_BxT: Optional[jax.Array] = None,
               kv_cache: Optional[KVCache] = None,
               cache_names: Iterable[str] = (),
               hooks: Optional[Mapping[str, Callable]] = None):
    """Runs the model.

    Args:
      tokens_BxT: integer token ids.
      pad_mask_BxT: True where a key position may be attended to. None: all.
      positions_BxT: position of each token for the position embedding (learned
        or rope); None: 0..T-1 (after the cached slots with kv_cache). For
        left-padded rows use `positions_from_pad_mask`.
      kv_cache: decode mode (needs model.causal): the T tokens fill cache slots
        [index, index + T) and attend to every valid earlier slot. pad_mask_BxT
        then marks which of the T new tokens are real.
      cache_names: hook names whose activations are returned (already resolved;
        use `resolve_names` for filters).
      hooks: name -> fn(activation) -> activation, applied in the forward pass.

    Returns:
      (logits_BxTxO, cache) where cache maps each requested name to its array;
      with kv_cache, (logits_BxTxO, cache, updated kv_cache).
    """
    c = self.config
    c.validate_flavour()
    rec = _Recorder(cache_names, hooks)
    B, T = tokens_BxT.shape
    if kv_cache is not None and not c.causal:
      raise ValueError('kv_cache needs model.causal=True.')
    limit, limit_name = ((c.max_len, 'model.max_len') if kv_cache is None
                         else (kv_cache.length, 'the KV cache length'))
    if T > limit:
      raise ValueError(f'Sequence length {T} exceeds {limit_name}={limit}.')
    tok = nn.Embed(c.vocab_size, c.d_model, name='embed', dtype=_dtype(c),
                   embedding_init=nn.initializers.normal(c.init_std))
    x_BxTxD = rec('hook_embed', tok(tokens_BxT))
    if positions_BxT is None and kv_cache is not None:
      positions_BxT = kv_cache.index + jnp.arange(T)[None]
    if c.pos_embedding == 'learned':
      pos = nn.Embed(c.max_len, c.d_model, name='pos_embed', dtype=_dtype(c),
                     embedding_init=nn.initializers.normal(c.init_std))
      pos_xTxD = pos(jnp.arange(T))[None] if positions_BxT is None else pos(positions_BxT)
      x_BxTxD = x_BxTxD + rec('hook_pos_embed', pos_xTxD)
    if positions_BxT is None:
      positions_BxT = jnp.arange(T)[None]  # Batch 1, broadcast (rope only reads it).
    if kv_cache is None:
      mask_BxTxS = jnp.ones((B, T, T), bool)
      if pad_mask_BxT is not None:
        mask_BxTxS = mask_BxTxS & pad_mask_BxT[:, None, :].astype(bool)
      if c.causal:
        mask_BxTxS = mask_BxTxS & jnp.tril(jnp.ones((T, T), bool))[None]
    else:
      new_valid_BxT = (jnp.ones((B, T), bool) if pad_mask_BxT is None
                       else pad_mask_BxT.astype(bool))
      kv_cache = kv_cache.replace(valid_BxS=jax.lax.dynamic_update_slice(
          kv_cache.valid_BxS, new_valid_BxT, (0, kv_cache.index)))
      slot_S = jnp.arange(kv_cache.length)
      query_slot_T = kv_cache.index + jnp.arange(T)
      causal_TxS = slot_S[None, :] <= query_slot_T[:, None]
      mask_BxTxS = kv_cache.valid_BxS[:, None, :] & causal_TxS[None]
    for l in range(c.n_layers):
      x_BxTxD, kv_cache = Block(c, l, name=f'blocks_{l}')(x_BxTxD, mask_BxTxS, positions_BxT,
                                                          rec, kv_cache)
    if c.layer_norm:
      x_BxTxD = rec('ln_final.hook_normalized', _norm(c, 'ln_final')(x_BxTxD))
    if c.tied_embeddings:
      logits_BxTxO = tok.attend(x_BxTxD)  # x @ embed.T, as llama2.c ties them.
    else:
      logits_BxTxO = nn.Dense(c.n_outputs, use_bias=False, name='unembed', dtype=_dtype(c),
                              kernel_init=nn.initializers.normal(c.init_std))(x_BxTxD)
    logits_BxTxO = logits_BxTxO.astype(jnp.float32)  # Callers get fp32 under every precision.
    if kv_cache is not None:
      return logits_BxTxO, rec.cache, kv_cache.replace(index=kv_cache.index + T)
    return logits_BxTxO, rec.cache


def init_params(config: TransformerConfig, rng: jax.Array) -> dict:
  """Random parameters of the right shapes."""
  config.validate()
  tokens = jnp.zeros((1, min(config.max_len, 8)), jnp.int32)
  return Transformer(config).init(rng, tokens)['params']


def run_with_cache(config: TransformerConfig, params, tokens_BxT, names: NamesFilter = None,
                   **kwargs):
  """TransformerLens-style helper: (logits, cache) with only the named activations.

  Jit-able when `names` is static (wrap in functools.partial before jax.jit).
  kwargs go to `Transformer.__call__` (pad_mask_BxT, positions_BxT, hooks).
  """
  return Transformer(config).apply({'params': params}, tokens_BxT,
                                   cache_names=resolve_names(config, names), **kwargs)


def forward_with_kv_cache(config: TransformerConfig, params, tokens_BxT, kv_cache: KVCache,
                          **kwargs) -> tuple[jax.Array, KVCache]:
  """Decode step(s): (logits_BxTxO, kv_cache advanced by T slots). Jit-able.

  kwargs go to `Transformer.__call__` (pad_mask_BxT, positions_BxT, hooks).
  """
  logits_BxTxO, _, kv_cache = Transformer(config).apply({'params': params}, tokens_BxT,
                                                        kv_cache=kv_cache, **kwargs)
  return logits_BxTxO, kv_cache


def param_shapes(params) -> dict[str, tuple[int, ...]]:
  """Flat 'a/b/c' -> shape map, used to compare architectures."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(v.shape) for path, v in flat}

