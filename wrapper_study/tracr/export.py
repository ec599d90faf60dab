"""The export format shared by `compile` (writer) and `model` (reader), and its cache key.

Knows neither tracr nor Flax, so both sides import it and not each other.

An export is a directory holding
  params.npz  tracr's haiku params, flattened to 'module/param' keys;
  meta.json   program + kwargs, vocab and codecs (values with their JSON
              types; maps stored as [value, id] pairs since JSON keys are
              strings), output label and encoding, residual_labels, model
              config (causal included), max_seq_len, bos, pad, readout
              position, tracr version.

A program is named by a registry key ('counter') or by a reference
'path/to/file.py:function' to a user's own builder (see `programs`). A
reference is keyed by its function name and the SHA-256 of the file's bytes,
so editing the file recompiles and moving it does not.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pathlib
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

# Bump when the export layout or meaning changes; part of the cache key.
FORMAT_VERSION = 1
DEFAULT_BOS = '$'
DEFAULT_PAD = '#'
PARAMS_FILE = 'params.npz'
META_FILE = 'meta.json'

_TUPLE_TAG = '__tuple__'


# --- References to a user's file: 'path/to/file.py:function'. ---


def is_file_ref(name: Any) -> bool:
  """True for 'path/to/file.py:function' (the bring-your-own form)."""
  if not isinstance(name, str) or ':' not in name:
    return False
  path, _, fn = name.rpartition(':')
  return path.endswith('.py') and fn.isidentifier()


def split_ref(ref: str) -> tuple[pathlib.Path, str]:
  path, _, fn = ref.rpartition(':')
  return pathlib.Path(path).expanduser().resolve(), fn


_MODULES: dict[str, Any] = {}


def load_ref(ref: str, what: str = 'object') -> Any:
  """The attribute `function` of the file in 'path.py:function' (each file imported once)."""
  path, fn = split_ref(ref)
  if not path.is_file():
    raise ValueError(f'{what} {ref!r}: file {str(path)!r} does not exist.')
  key = str(path)
  if key not in _MODULES:
    name = f'_wrapper_study_user_{hashlib.sha256(key.encode()).hexdigest()[:12]}'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _MODULES[key] = module
  if not hasattr(_MODULES[key], fn):
    public = sorted(n for n in vars(_MODULES[key]) if not n.startswith('_'))
    raise ValueError(f'{what} {ref!r}: {path.name} defines no {fn!r}; it defines {public}.')
  return getattr(_MODULES[key], fn)


def program_identity(program: str) -> dict:
  """What names a program in the cache key: its registry key, or function + file hash."""
  if not is_file_ref(program):
    return {'program': program}
  path, fn = split_ref(program)
  if not path.is_file():
    raise ValueError(f'program {program!r}: file {str(path)!r} does not exist.')
  return {'program': fn, 'source_sha256': hashlib.sha256(path.read_bytes()).hexdigest()}


# --- JSON values: tracr tokens may be str/int/float/bool (or tuples). ---


def to_json_value(v: Any) -> Any:
  """A JSON-able form that `from_json_value` turns back into the same type."""
  if isinstance(v, tuple):
    # JSON has no tuples; tag them so they do not come back as lists.
    return {_TUPLE_TAG: [to_json_value(x) for x in v]}
  if isinstance(v, np.generic):
    return v.item()
  return v


def from_json_value(v: Any) -> Any:
  if isinstance(v, dict) and _TUPLE_TAG in v:
    return tuple(from_json_value(x) for x in v[_TUPLE_TAG])
  return v


def pairs_to_map(pairs: Iterable[Sequence[Any]]) -> dict[Any, int]:
  return {from_json_value(v): int(i) for v, i in pairs}


def map_to_pairs(mapping: Mapping[Any, int]) -> list[list[Any]]:
  return [[to_json_value(v), int(i)] for v, i in sorted(mapping.items(), key=lambda kv: kv[1])]


# --- Cache location and key. ---


def default_cache_dir() -> pathlib.Path:
  env = os.environ.get('WRAPPER_STUDY_CACHE')
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path('~/.cache/wrapper_study/tracr').expanduser()


def normalize_vocab(vocab: Iterable[Any]) -> list[Any]:
  """The vocab as a list; a str is split into its characters."""
  if vocab is None:
    raise ValueError('vocab must be a non-empty collection of tokens, got None.')
  return list(vocab)


def _canonical_json(obj: Any) -> str:
  # default=repr: odd values still hash here; compiling then rejects them.
  return json.dumps(obj, sort_keys=True, separators=(',', ':'), default=repr)


def export_key(program: str, vocab: Iterable[Any], max_seq_len: int,
               program_kwargs: Optional[Mapping[str, Any]] = None,
               bos: str = DEFAULT_BOS, pad: str = DEFAULT_PAD, causal: bool = False) -> str:
  """Hash naming an export; the vocab is sorted so its order does not matter.

  Kwargs count as given: {} and the explicit defaults are separate (identical)
  exports, because resolving defaults needs the tracr-importing registry.
  `causal` joins the key only when set, so non-causal keys are those written
  before it existed (warm caches stay warm).
  """
  vocab_json = sorted((to_json_value(v) for v in normalize_vocab(vocab)), key=_canonical_json)
  kwargs_json = {k: to_json_value(v) for k, v in (program_kwargs or {}).items()}
  blob = {**program_identity(program), 'kwargs': kwargs_json, 'vocab': vocab_json,
          'max_seq_len': max_seq_len, 'bos': bos, 'pad': pad, 'format': FORMAT_VERSION}
  if causal:
    blob['causal'] = True
  return hashlib.sha256(_canonical_json(blob).encode()).hexdigest()[:20]


def export_dir(program: str, vocab: Iterable[Any], max_seq_len: int,
               program_kwargs: Optional[Mapping[str, Any]] = None,
               cache_dir: Union[None, str, os.PathLike] = None,
               bos: str = DEFAULT_BOS, pad: str = DEFAULT_PAD,
               causal: bool = False) -> pathlib.Path:
  root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  stem = program_identity(program)['program']
  safe = ''.join(c if c.isalnum() or c in '-_' else '_' for c in str(stem))
  key = export_key(program, vocab, max_seq_len, program_kwargs, bos, pad, causal)
  return root / f'{safe}-{key}'


def is_complete_export(path: Union[str, os.PathLike]) -> bool:
  path = pathlib.Path(path)
  return (path / META_FILE).is_file() and (path / PARAMS_FILE).is_file()
