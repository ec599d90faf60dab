"""Compiles RASP programs with tracr and exports them for `tracr.model`.

The only module that imports the tracr compiler and haiku, and it does so
lazily: a call whose export is already cached imports neither. The export
format and its cache key live in `tracr.export`. `causal=True` compiles a
causally masked model (tracr's own option); it is part of the cache key.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import numbers
import os
import pathlib
import shutil
import tempfile
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from wrapper_study.tracr import export

_VOCAB_TYPES = (str, numbers.Real)  # bool is a Real too.


def _programs():
  # Deferred: the registry imports tracr.rasp (the compiler only when compiling).
  from wrapper_study.tracr import programs  # pylint: disable=g-import-not-at-top
  return programs


def _from_user(program, kwargs, vocab, max_seq_len):
  """A file program's own vocab and length where the caller gave none; they must agree."""
  if not export.is_file_ref(program):
    if vocab is None or max_seq_len is None:
      raise ValueError(f'program {program!r} is registered: give vocab= and max_seq_len=.')
    return vocab, max_seq_len
  user = _programs().user_program(program, kwargs)
  for field, given, own in (('vocab', vocab, user.vocab), ('max_seq_len', max_seq_len,
                                                            user.max_seq_len)):
    if given is None and own is None:
      raise ValueError(f'program {program!r} returned {field}=None and none was given; '
                       f'return it or pass {field}=.')
    same = (set(given) == set(own)) if field == 'vocab' and given is not None and own is not None \
        else given == own
    if given is not None and own is not None and not same:
      raise ValueError(f'{field}={given!r} differs from the {field}={own!r} that program '
                       f'{program!r} returned.')
  return (user.vocab if vocab is None else vocab,
          user.max_seq_len if max_seq_len is None else max_seq_len)


def resolve(program: str, vocab: Optional[Iterable[Any]], max_seq_len: Optional[int],
            program_kwargs: Optional[Mapping[str, Any]] = None) -> tuple[list, int]:
  """(vocab, max_seq_len) of a compile, a file program's own filling in what is None."""
  kwargs = _programs().resolve_kwargs(program, program_kwargs)
  vocab, max_seq_len = _from_user(program, kwargs, vocab, max_seq_len)
  return list(vocab), max_seq_len


def _validate(program: str, vocab: Iterable[Any], max_seq_len: int,
              program_kwargs: Optional[Mapping[str, Any]], bos: str, pad: str
              ) -> tuple[dict, list]:
  """Checks every argument before any compile; returns (kwargs, vocab)."""
  kwargs = _programs().resolve_kwargs(program, program_kwargs)  # Names program/kwargs.
  vocab = export.normalize_vocab(vocab)
  if not vocab:
    raise ValueError(f'vocab is empty; give the input tokens, e.g. vocab=list("abc"), '
                     f'for program {program!r}.')
  bad = [v for v in vocab if not isinstance(v, _VOCAB_TYPES)]
  if bad:
    raise ValueError(f'vocab entries must be str, int, float or bool; got {bad!r}.')
  if len(set(vocab)) != len(vocab):
    seen, dups = set(), []
    for v in vocab:
      if v in seen:
        dups.append(v)
      seen.add(v)
    raise ValueError(f'vocab has duplicate entries {dups!r} (note True == 1 and 1.0 == 1); '
                     'every token must be distinct.')
  for field, special in (('compiler_bos', bos), ('compiler_pad', pad)):
    if special in vocab:
      raise ValueError(f'vocab contains the {field} token {special!r}; choose another '
                       f'{field} or drop it from vocab.')
  if bos == pad:
    raise ValueError(f'compiler_bos and compiler_pad are both {bos!r}; they must differ.')
  if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 1:
    raise ValueError(f'max_seq_len={max_seq_len!r} must be an integer >= 1 '
                     '(tokens after BOS).')
  _programs().check(program, kwargs, vocab, max_seq_len)
  return kwargs, vocab


@functools.lru_cache(maxsize=64)
def _compile_assembled(program: str, kwargs_json: str, vocab_json: str, max_seq_len: int,
                       bos: str, pad: str, causal: bool = False):
  """(tracr's AssembledTransformerModel, output label), once per process.

  Arguments arrive as JSON strings so they are hashable; validated already.
  The output label names the output's residual directions.
  """
  # Deferred: importing the compiler pulls in haiku and costs seconds.
  from tracr.compiler import compiling  # pylint: disable=g-import-not-at-top
  kwargs = {k: export.from_json_value(v) for k, v in json.loads(kwargs_json).items()}
  vocab = [export.from_json_value(v) for v in json.loads(vocab_json)]
  try:
    rasp_program = _programs().build(program, kwargs, max_seq_len)
    assembled = compiling.compile_rasp_to_model(
        rasp_program, vocab=set(vocab), max_seq_len=max_seq_len, causal=causal,
        compiler_bos=bos, compiler_pad=pad)
  except Exception as e:  # Tracr raises NotImplementedError, KeyError, ...
    raise ValueError(f'tracr failed to compile program={program!r} (kwargs={kwargs}) with '
                     f'vocab={vocab!r}, max_seq_len={max_seq_len}: '
                     f'{type(e).__name__}: {e}') from e
  return assembled, rasp_program.label


def _assembled(program, vocab, max_seq_len, program_kwargs, bos, pad, causal=False):
  kwargs, vocab = _validate(program, vocab, max_seq_len, program_kwargs, bos, pad)
  kwargs_json = json.dumps({k: export.to_json_value(v) for k, v in kwargs.items()},
                           sort_keys=True)
  vocab_json = json.dumps(sorted((export.to_json_value(v) for v in vocab),
                                 key=json.dumps))
  args = (program, kwargs_json, vocab_json, max_seq_len, bos, pad)
  # Non-causal calls keep their old arity (tests patch _compile_assembled).
  assembled, label = _compile_assembled(*args, causal=True) if causal else _compile_assembled(*args)
  return assembled, label, kwargs


def _tracr_version() -> str:
  for dist in ('tracr-pypi', 'tracr'):
    try:
      return f'{dist}=={importlib.metadata.version(dist)}'
    except importlib.metadata.PackageNotFoundError:
      continue
  return 'unknown'


def _meta(program: str, kwargs: dict, max_seq_len: int, bos: str, pad: str,
          assembled, output_label: str) -> dict:
  in_map = assembled.input_encoder.encoding_map
  out_enc = assembled.output_encoder
  categorical = hasattr(out_enc, 'encoding_map')
  cfg = assembled.model_config
  return {
      'format_version': export.FORMAT_VERSION,
      'program': program,
      'program_kwargs': {k: export.to_json_value(v) for k, v in kwargs.items()},
      'vocab': [[export.to_json_value(v), i] for v, i in
                sorted(in_map.items(), key=lambda kv: kv[1]) if v not in (bos, pad)],
      'input_encoding': export.map_to_pairs(in_map),
      'output': {
          'label': output_label,
          'encoding': 'categorical' if categorical else 'numerical',
          'values': export.map_to_pairs(out_enc.encoding_map) if categorical else None,
      },
      'residual_labels': list(assembled.residual_labels),
      'model_config': {
          'num_heads': cfg.num_heads, 'key_size': cfg.key_size,
          'mlp_hidden_size': cfg.mlp_hidden_size, 'num_layers': cfg.num_layers,
          'layer_norm': bool(cfg.layer_norm), 'causal': bool(cfg.causal),
      },
      'max_seq_len': max_seq_len,
      'bos': bos,
      'pad': pad,
      'readout_position': _programs().readout_position(program, kwargs),
      'tracr_version': _tracr_version(),
  }


def compile_and_export(program: str, vocab: Optional[Iterable[Any]], max_seq_len: Optional[int],
                       program_kwargs: Optional[Mapping[str, Any]] = None,
                       cache_dir: Union[None, str, os.PathLike] = None,
                       compiler_bos: str = export.DEFAULT_BOS,
                       compiler_pad: str = export.DEFAULT_PAD,
                       causal: bool = False) -> pathlib.Path:
  """Compiles `program` (a `programs.PROGRAMS` key or 'file.py:function') unless cached.

  Returns the export directory. Arguments are validated first; a cached
  export is returned without importing the tracr compiler. The export is
  written to a temporary sibling and renamed, so a killed compile leaves no
  half export behind. vocab / max_seq_len may be None for a file program that
  returns its own.
  """
  vocab, max_seq_len = resolve(program, vocab, max_seq_len, program_kwargs)
  _validate(program, vocab, max_seq_len, program_kwargs, compiler_bos, compiler_pad)
  final = export.export_dir(program, vocab, max_seq_len, program_kwargs, cache_dir,
                            compiler_bos, compiler_pad, causal)
  if export.is_complete_export(final):
    return final
  assembled, label, kwargs = _assembled(program, vocab, max_seq_len, program_kwargs,
                                        compiler_bos, compiler_pad, causal)
  meta = _meta(program, kwargs, max_seq_len, compiler_bos, compiler_pad, assembled, label)
  final.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{final.name}.tmp-', dir=final.parent))
  try:
    flat = {f'{module}/{name}': np.asarray(value)
            for module, sub in assembled.params.items() for name, value in sub.items()}
    np.savez(tmp / export.PARAMS_FILE, **flat)
    (tmp / export.META_FILE).write_text(json.dumps(meta, indent=1))
    try:
      os.rename(tmp, final)
    except OSError:
      # Another process finished the same export first; keep theirs.
      if not export.is_complete_export(final):
        raise
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  return final


def tracr_model(program: str, vocab: Optional[Iterable[Any]], max_seq_len: Optional[int],
                program_kwargs: Optional[Mapping[str, Any]] = None,
                compiler_bos: str = export.DEFAULT_BOS,
                compiler_pad: str = export.DEFAULT_PAD, causal: bool = False):
  """Tracr's own AssembledTransformerModel (compiled once per process).

  Its residual_labels equal those of the export of the same arguments, also
  one written by another process, since `programs.build` fixes labels.
  """
  vocab, max_seq_len = resolve(program, vocab, max_seq_len, program_kwargs)
  return _assembled(program, vocab, max_seq_len, program_kwargs, compiler_bos, compiler_pad,
                    causal)[0]


def reference_forward(program: str, vocab: Iterable[Any], max_seq_len: int,
                      program_kwargs: Optional[Mapping[str, Any]],
                      inputs: Sequence[Sequence[Any]],
                      compiler_bos: str = export.DEFAULT_BOS,
                      compiler_pad: str = export.DEFAULT_PAD, causal: bool = False) -> dict:
  """Tracr's own `assembled_model.apply` on each input (without BOS).

  For tests and benchmarks. Inputs must share one length so the results
  stack. Returns {'residuals': list (2 per layer: after attention, after MLP)
  of float32 [B, T, D], 'decoded': B lists of T values (position 0 is BOS)}.
  """
  assembled = tracr_model(program, vocab, max_seq_len, program_kwargs, compiler_bos,
                          compiler_pad, causal)
  lengths = sorted({len(x) for x in inputs})
  if len(lengths) != 1:
    raise ValueError(f'inputs must share one length to stack; got lengths {lengths}.')
  outs = [assembled.apply([compiler_bos] + list(x)) for x in inputs]
  residuals = [np.concatenate([np.asarray(o.residuals[i]) for o in outs])
               for i in range(len(outs[0].residuals))]
  return {'residuals': residuals, 'decoded': [list(o.decoded) for o in outs]}
