"""The one transformer every world shares, with TransformerLens-style hook points.

A pure-functional Flax linen module. Tracr-compiled weights load into it as they
are (no LayerNorm, ReLU MLPs, biases, attention scaled by 1/sqrt(d_head)); the
PCFG and TinyStories models are the same module with other config values.

A forward pass can return a cache of named activations. Only the names asked
for are kept, so memory stays small when a probe needs one layer. Hooks with the
same names can also rewrite an activation in flight (ablation, patching).

Shapes: B batch, T sequence, D d_model, H heads, K d_head, M d_mlp, V vocab,
O output vocab.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable, Mapping, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

# Tracr masks with -1e30 rather than -inf; keep its value so a masked row that
# is all-masked behaves the same in both implementations.
MASK_VALUE = -1e30

ACTIVATIONS = {
    'relu': jax.nn.relu,
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
    'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'silu': jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and flavour of the shared transformer."""
  vocab_size: int  # V: input tokens.
  max_len: int  # Rows of the learned position embedding.
  d_model: int = 64  # D
  n_layers: int = 2  # Blocks, each attention then MLP.
  n_heads: int = 4  # H
  d_head: int = 16  # K; also the value size, as in tracr.
  d_mlp: int = 256  # M
  d_vocab_out: Optional[int] = None  # O; None means vocab_size.
  activation: str = 'relu'  # One of ACTIVATIONS.
  layer_norm: bool = False  # Pre-LN blocks plus a final LN (minGPT style).
  causal: bool = False
  use_bias: bool = True  # Biases on every Dense (tracr has them, all zero).
  init_std: float = 0.02  # Normal init of learned weights.

  @property
  def n_outputs(self) -> int:
    return self.d_vocab_out or self.vocab_size

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

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping) -> 'TransformerConfig':
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - fields
    if unknown:
      raise ValueError(f'Unknown model config fields {sorted(unknown)}; valid: {sorted(fields)}.')
    return cls(**d)


def hook_names(config: TransformerConfig) -> list[str]:
  """Every hook point of a model with this config, in forward order."""
  names = ['hook_embed', 'hook_pos_embed']
  for l in range(config.n_layers):
    b = f'blocks.{l}'
    names += [f'{b}.hook_resid_pre']
    if config.layer_norm:
      names += [f'{b}.ln1.hook_normalized']
    names += [f'{b}.attn.hook_q', f'{b}.attn.hook_k', f'{b}.attn.hook_v',
              f'{b}.attn.hook_attn_scores', f'{b}.attn.hook_pattern',
              f'{b}.attn.hook_z', f'{b}.hook_attn_out', f'{b}.hook_resid_mid']
    if config.layer_norm:
      names += [f'{b}.ln2.hook_normalized']
    names += [f'{b}.mlp.hook_pre', f'{b}.mlp.hook_post', f'{b}.hook_mlp_out',
              f'{b}.hook_resid_post']
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

  def __call__(self, name: str, x: jax.Array) -> jax.Array:
    if name in self.hooks:
      x = self.hooks[name](x)
    if name in self.names:
      self.cache[name] = x
    return x


def _dense(features: int, config: TransformerConfig, name: str) -> nn.Dense:
  return nn.Dense(features, use_bias=config.use_bias, name=name,
                  kernel_init=nn.initializers.normal(config.init_std))


def _layer_norm(config: TransformerConfig, name: str) -> Optional[nn.LayerNorm]:
  return nn.LayerNorm(epsilon=1e-5, name=name) if config.layer_norm else None


class Attention(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BxTxD, mask_BxTxT, rec: _Recorder, prefix: str):
    c = self.config
    B, T, _ = x_BxTxD.shape
    split = lambda y: y.reshape(B, T, c.n_heads, c.d_head)
    q_BxTxHxK = rec(f'{prefix}.hook_q', split(_dense(c.n_heads * c.d_head, c, 'query')(x_BxTxD)))
    k_BxTxHxK = rec(f'{prefix}.hook_k', split(_dense(c.n_heads * c.d_head, c, 'key')(x_BxTxD)))
    v_BxTxHxK = rec(f'{prefix}.hook_v', split(_dense(c.n_heads * c.d_head, c, 'value')(x_BxTxD)))
    scores_BxHxTxT = jnp.einsum('bthk,bshk->bhts', q_BxTxHxK, k_BxTxHxK)
    scores_BxHxTxT = scores_BxHxTxT / jnp.sqrt(jnp.asarray(c.d_head, x_BxTxD.dtype))
    scores_BxHxTxT = jnp.where(mask_BxTxT[:, None], scores_BxHxTxT, MASK_VALUE)
    scores_BxHxTxT = rec(f'{prefix}.hook_attn_scores', scores_BxHxTxT)
    pattern_BxHxTxT = rec(f'{prefix}.hook_pattern', jax.nn.softmax(scores_BxHxTxT, axis=-1))
    z_BxTxHxK = rec(f'{prefix}.hook_z',
                    jnp.einsum('bhts,bshk->bthk', pattern_BxHxTxT, v_BxTxHxK))
    return _dense(c.d_model, c, 'out')(z_BxTxHxK.reshape(B, T, c.n_heads * c.d_head))


class MLP(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BxTxD, rec: _Recorder, prefix: str):
    c = self.config
    pre_BxTxM = rec(f'{prefix}.hook_pre', _dense(c.d_mlp, c, 'fc_in')(x_BxTxD))
    post_BxTxM = rec(f'{prefix}.hook_post', ACTIVATIONS[c.activation](pre_BxTxM))
    return _dense(c.d_model, c, 'fc_out')(post_BxTxM)


class Block(nn.Module):
  config: TransformerConfig
  index: int

  @nn.compact
  def __call__(self, x_BxTxD, mask_BxTxT, rec: _Recorder):
    c, b = self.config, f'blocks.{self.index}'
    x_BxTxD = rec(f'{b}.hook_resid_pre', x_BxTxD)
    h = x_BxTxD
    if c.layer_norm:
      h = rec(f'{b}.ln1.hook_normalized', _layer_norm(c, 'ln1')(h))
    attn_out = rec(f'{b}.hook_attn_out', Attention(c, name='attn')(h, mask_BxTxT, rec, f'{b}.attn'))
    x_BxTxD = rec(f'{b}.hook_resid_mid', x_BxTxD + attn_out)
    h = x_BxTxD
    if c.layer_norm:
      h = rec(f'{b}.ln2.hook_normalized', _layer_norm(c, 'ln2')(h))
    mlp_out = rec(f'{b}.hook_mlp_out', MLP(c, name='mlp')(h, rec, f'{b}.mlp'))
    return rec(f'{b}.hook_resid_post', x_BxTxD + mlp_out)


class Transformer(nn.Module):
  """tokens [B, T] -> logits [B, T, O] (+ a cache of named activations)."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens_BxT: jax.Array, *, pad_mask_BxT: Optional[jax.Array] = None,
               cache_names: Iterable[str] = (),
               hooks: Optional[Mapping[str, Callable]] = None):
    """Runs the model.

    Args:
      tokens_BxT: integer token ids.
      pad_mask_BxT: True where a key position may be attended to. None: all.
      cache_names: hook names whose activations are returned (already resolved;
        use `resolve_names` for filters).
      hooks: name -> fn(activation) -> activation, applied in the forward pass.

    Returns:
      (logits_BxTxO, cache) where cache maps each requested name to its array.
    """
    c = self.config
    rec = _Recorder(cache_names, hooks)
    B, T = tokens_BxT.shape
    tok = nn.Embed(c.vocab_size, c.d_model, name='embed',
                   embedding_init=nn.initializers.normal(c.init_std))
    pos = nn.Embed(c.max_len, c.d_model, name='pos_embed',
                   embedding_init=nn.initializers.normal(c.init_std))
    x_BxTxD = rec('hook_embed', tok(tokens_BxT))
    x_BxTxD = x_BxTxD + rec('hook_pos_embed', pos(jnp.arange(T))[None])
    mask_BxTxT = jnp.ones((B, T, T), bool)
    if pad_mask_BxT is not None:
      mask_BxTxT = mask_BxTxT & pad_mask_BxT[:, None, :].astype(bool)
    if c.causal:
      mask_BxTxT = mask_BxTxT & jnp.tril(jnp.ones((T, T), bool))[None]
    for l in range(c.n_layers):
      x_BxTxD = Block(c, l, name=f'blocks_{l}')(x_BxTxD, mask_BxTxT, rec)
    if c.layer_norm:
      x_BxTxD = rec('ln_final.hook_normalized', _layer_norm(c, 'ln_final')(x_BxTxD))
    logits_BxTxO = nn.Dense(c.n_outputs, use_bias=False, name='unembed',
                            kernel_init=nn.initializers.normal(c.init_std))(x_BxTxD)
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
  """
  return Transformer(config).apply({'params': params}, tokens_BxT,
                                   cache_names=resolve_names(config, names), **kwargs)


def param_shapes(params) -> dict[str, tuple[int, ...]]:
  """Flat 'a/b/c' -> shape map, used to compare architectures."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(v.shape) for path, v in flat}


_BLOCK_RE = re.compile(r'blocks\.(\d+)\.')


def layer_of(name: str) -> Optional[int]:
  """The block index in a hook name, or None for embed/final hooks."""
  m = _BLOCK_RE.match(name)
  return int(m.group(1)) if m else None
