"""Tracr-compiled programs as weights of the shared Flax transformer; weight noise.

Reads an export written by `tracr.compile` (params.npz + meta.json, format in
`tracr.export`) and never imports tracr or haiku, so training and analysis code
stay free of them; only a missing export triggers a (lazy) compile.

Tracr facts this relies on (see shared/reference/tracr_notes.md):
  * position 0 is BOS and has no index embedding; RASP index i is at model
    position i + 1 (the paper's answers are at model position 2);
  * attention divides by sqrt(padded key_size), which `model.Attention` does
    with d_head = key_size;
  * the unembedding is not a parameter: tracr projects the residual stream on
    the output SOp's directions, so W_U is rebuilt here from residual_labels.

Shapes: B batch, T sequence (BOS included), D residual, O output classes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import model
from wrapper_study.tracr import export
from wrapper_study.tracr.export import DEFAULT_BOS, DEFAULT_PAD, is_complete_export

# --- The model. ---


@dataclasses.dataclass
class TracrModel:
  """A compiled program: Flax config + params and its token codecs."""
  name: str
  program_kwargs: dict
  config: model.TransformerConfig
  params: dict  # Flax param tree of float32 numpy arrays.
  vocab: tuple  # Input tokens, BOS and PAD excluded, in input-id order.
  input_encoding: dict  # token (BOS and PAD included) -> input id.
  output_values: Optional[tuple]  # Class id -> value; None when numerical.
  residual_labels: tuple
  readout_position: Optional[int]  # Model position of the answer; None: all.
  bos: str
  pad: str
  max_seq_len: int  # Tokens after BOS.
  output_label: str = ''

  @property
  def numerical(self) -> bool:
    return self.output_values is None

  @property
  def bos_id(self) -> int:
    return self.input_encoding[self.bos]

  @property
  def pad_id(self) -> int:
    return self.input_encoding[self.pad]

  def encode(self, seqs: Iterable[Sequence[Any]]) -> np.ndarray:
    """Token sequences (without BOS) -> int32 ids [B, T], BOS prepended.

    Shorter sequences are right-padded with PAD. Tracr does not mask PAD, so
    programs reading the length see it; pass `pad_mask(tokens)` to the model
    or encode equal-length batches for tracr's exact semantics.
    """
    if isinstance(seqs, str):
      raise ValueError(f'seqs must be a list of sequences, e.g. [{seqs!r}], not a str.')
    seqs = [list(s) for s in seqs]
    known = set(self.vocab)
    for b, seq in enumerate(seqs):
      if len(seq) > self.max_seq_len:
        raise ValueError(f'sequence {b} has length {len(seq)} > max_seq_len={self.max_seq_len} '
                         f'of the compiled {self.name!r} (BOS not counted).')
      for t, tok in enumerate(seq):
        if tok not in known:
          hint = ' (encode prepends BOS itself)' if tok == self.bos else ''
          raise ValueError(f'token {tok!r} at position {t} of sequence {b} is not in the '
                           f'vocabulary {list(self.vocab)!r}{hint}.')
    T = 1 + max((len(s) for s in seqs), default=0)
    tokens_BxT = np.full((len(seqs), T), self.pad_id, np.int32)
    tokens_BxT[:, 0] = self.bos_id
    for b, seq in enumerate(seqs):
      tokens_BxT[b, 1:1 + len(seq)] = [self.input_encoding[tok] for tok in seq]
    return tokens_BxT

  def pad_mask(self, tokens_BxT) -> np.ndarray:
    """True where a key may be attended to (not PAD), for `pad_mask_BxT`."""
    return np.asarray(tokens_BxT) != self.pad_id

  def decode(self, logits_BxTxO) -> list[list[Any]]:
    """Output values per position; position 0 is BOS, as in tracr's apply."""
    logits_BxTxO = np.asarray(logits_BxTxO)
    if self.numerical:
      rows = [[float(x) for x in row] for row in logits_BxTxO[..., 0]]
    else:
      ids_BxT = logits_BxTxO.argmax(-1)
      rows = [[self.output_values[i] for i in row] for row in ids_BxT]
    for row in rows:
      if row:
        row[0] = self.bos
    return rows

  def answers(self, logits_BxTxO) -> np.ndarray:
    """Class ids [B] at readout_position ([B, T] when it is None)."""
    if self.numerical:
      raise ValueError(f'{self.name!r} has a numerical output; read logits[..., 0] instead.')
    ids_BxT = np.asarray(logits_BxTxO).argmax(-1)
    return ids_BxT if self.readout_position is None else ids_BxT[:, self.readout_position]

  def apply(self, tokens_BxT, **kwargs):
    """(logits_BxTxO, cache) of the Flax model; kwargs go to run_with_cache."""
    return model.run_with_cache(self.config, self.params, tokens_BxT, **kwargs)


def _unembedding(residual_labels: Sequence[str], output_label: str,
                 output_values: Optional[Sequence[Any]]) -> np.ndarray:
  """W_U [D, O]: tracr's projection of the residual onto the output SOp.

  Categorical: direction f'{label}:{value}' -> class id (tracr's str of a
  BasisDirection); numerical: the single direction named `label`.
  """
  index = {l: i for i, l in enumerate(residual_labels)}
  wanted = [output_label] if output_values is None else [
      f'{output_label}:{v}' for v in output_values]
  missing = [w for w in wanted if w not in index]
  if missing:
    near = [l for l in residual_labels if l.startswith(output_label)]
    raise ValueError(f'output directions {missing} are not in residual_labels '
                     f'(labels starting with {output_label!r}: {near}).')
  w_DxO = np.zeros((len(residual_labels), len(wanted)), np.float32)
  for o, w in enumerate(wanted):
    w_DxO[index[w], o] = 1.0
  return w_DxO


def _flax_params(hk_params: Mapping[str, np.ndarray], n_layers: int,
                 w_unembed_DxO: np.ndarray) -> dict:
  """Renames tracr's haiku params to `model.Transformer`'s tree."""
  f32 = lambda k: np.asarray(hk_params[k], np.float32)
  dense = lambda prefix: {'kernel': f32(f'{prefix}/w'), 'bias': f32(f'{prefix}/b')}
  params = {
      'embed': {'embedding': f32('token_embed/embeddings')},
      'pos_embed': {'embedding': f32('pos_embed/embeddings')},
      'unembed': {'kernel': w_unembed_DxO},
  }
  for l in range(n_layers):
    p = f'transformer/layer_{l}'
    params[f'blocks_{l}'] = {
        'attn': {'query': dense(f'{p}/attn/query'), 'key': dense(f'{p}/attn/key'),
                 'value': dense(f'{p}/attn/value'), 'out': dense(f'{p}/attn/linear')},
        'mlp': {'fc_in': dense(f'{p}/mlp/linear_1'), 'fc_out': dense(f'{p}/mlp/linear_2')},
    }
  return params


def load(path: Union[str, os.PathLike]) -> TracrModel:
  """Reads an export directory written by `compile.compile_and_export`."""
  path = pathlib.Path(path)
  if not is_complete_export(path):
    raise ValueError(f'{path} is not a tracr export (needs {export.META_FILE} and '
                     f'{export.PARAMS_FILE}).')
  meta = json.loads((path / export.META_FILE).read_text())
  if meta.get('format_version') != export.FORMAT_VERSION:
    raise ValueError(f'{path}: format_version={meta.get("format_version")} but this code reads '
                     f'{export.FORMAT_VERSION}; delete the export to recompile.')
  mc = meta['model_config']
  if mc['layer_norm']:
    raise ValueError(f'{path}: layer_norm=True exports are not supported (tracr never emits them).')
  with np.load(path / export.PARAMS_FILE) as npz:
    hk_params = {k: npz[k] for k in npz.files}
  input_encoding = export.pairs_to_map(meta['input_encoding'])
  out = meta['output']
  output_values = None
  if out['encoding'] == 'categorical':
    by_id = sorted(export.pairs_to_map(out['values']).items(), key=lambda kv: kv[1])
    output_values = tuple(v for v, _ in by_id)
  labels = tuple(meta['residual_labels'])
  w_DxO = _unembedding(labels, out['label'], output_values)
  params = _flax_params(hk_params, mc['num_layers'], w_DxO)
  d_model = params['embed']['embedding'].shape[1]
  if d_model != len(labels):
    raise ValueError(f'{path}: token_embed has D={d_model} but {len(labels)} residual_labels.')
  config = model.TransformerConfig(
      vocab_size=len(input_encoding), max_len=meta['max_seq_len'] + 1, d_model=d_model,
      n_layers=mc['num_layers'], n_heads=mc['num_heads'], d_head=mc['key_size'],
      d_mlp=mc['mlp_hidden_size'], d_vocab_out=w_DxO.shape[1], activation='relu',
      layer_norm=False, causal=mc['causal'], use_bias=True)
  config.validate()
  return TracrModel(
      name=meta['program'], program_kwargs={k: export.from_json_value(v)
                                            for k, v in meta['program_kwargs'].items()},
      config=config, params=params,
      vocab=tuple(export.from_json_value(v) for v, _ in meta['vocab']),
      input_encoding=input_encoding, output_values=output_values, residual_labels=labels,
      readout_position=meta['readout_position'], bos=meta['bos'], pad=meta['pad'],
      max_seq_len=meta['max_seq_len'], output_label=out['label'])


def get_compiled(program: str, vocab: Optional[Iterable[Any]] = None,
                 max_seq_len: Optional[int] = None,
                 program_kwargs: Optional[Mapping[str, Any]] = None,
                 cache_dir: Union[None, str, os.PathLike] = None,
                 bos: str = DEFAULT_BOS, pad: str = DEFAULT_PAD,
                 causal: bool = False) -> TracrModel:
  """The compiled program, from the export cache or compiled on a miss.

  program: a registered name (`programs.PROGRAMS`; vocab and max_seq_len
  required) or 'path/to/file.py:function' (see `programs` for the contract; it
  may return its own vocab and max_seq_len). causal=True compiles with tracr's
  causal mask, a separate export.
  """
  path = None
  if vocab is not None and max_seq_len is not None:
    path = export.export_dir(program, vocab, max_seq_len, program_kwargs, cache_dir, bos, pad,
                             causal)
  if path is None or not is_complete_export(path):
    # Deferred so that a warm cache never imports tracr or haiku.
    from wrapper_study.tracr import compile as compile_lib  # pylint: disable=g-import-not-at-top
    path = compile_lib.compile_and_export(program, vocab, max_seq_len, program_kwargs,
                                          cache_dir=cache_dir, compiler_bos=bos,
                                          compiler_pad=pad, causal=causal)
  return load(path)


def add_weight_noise(params, rng, std: float, *, skip: Sequence[str] = ()):
  """params + N(0, std^2) on every weight (paper App. C.1's w_noise).

  `std` is a STANDARD DEVIATION (the paper's "N(0, 0.001)" does not say which;
  pass sqrt(0.001) to read it as a variance). `rng` is a jax PRNGKey or a
  numpy Generator; top-level modules named in `skip` (e.g. 'unembed', which
  is rebuilt from labels rather than compiled) are left as they are. Returns
  numpy arrays for a Generator, jax arrays for a key.
  """
  if std < 0:
    raise ValueError(f'std must be >= 0 (a standard deviation), got {std}.')
  top = lambda path: str(getattr(path[0], 'key', path[0]))
  if isinstance(rng, np.random.Generator):
    def noise(path, x):
      x = np.asarray(x)
      if top(path) in skip:
        return x
      return (x + std * rng.standard_normal(x.shape)).astype(x.dtype)
    return jax.tree_util.tree_map_with_path(noise, params)
  return _jax_weight_noise(params, rng, std, tuple(skip))


@functools.partial(jax.jit, static_argnames='skip')
def _jax_weight_noise(params, rng, std, skip):
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  sizes = [int(np.prod(jnp.shape(x))) for _, x in leaves]
  # One draw sliced per leaf: a draw per leaf makes XLA compile one threefry
  # kernel per parameter (seconds on CPU).
  flat = jax.random.normal(rng, (sum(sizes),), jnp.float32)
  offsets = np.cumsum([0] + sizes)
  noisy = []
  for (path, x), lo, hi in zip(leaves, offsets[:-1], offsets[1:]):
    if str(getattr(path[0], 'key', path[0])) in skip:
      noisy.append(x)
    else:
      noise = flat[lo:hi].reshape(jnp.shape(x)).astype(jnp.result_type(x))
      noisy.append(x + std * noise)
  return jax.tree_util.tree_unflatten(treedef, noisy)
