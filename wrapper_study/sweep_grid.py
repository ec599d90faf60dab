"""Sweep specs: config files by path or name, grid expansion, run names, flag literals.

The pure part of `wrapper_study.sweep`: nothing here starts a process.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import itertools
import pathlib
import re
from typing import Any, Mapping, Sequence

import ml_collections

import configs  # A packaged config may be named instead of given as a path.

_MAX_NAME = 100  # Longer run names are cut and end with a hash.
_SAFE = re.compile(r'[^A-Za-z0-9._,=+-]')


class SweepError(ValueError):
  """A sweep that cannot work; raised before any run starts."""


def load_spec(spec: str, function: str = 'get_config') -> Any:
  """'path.py[:arg]' -> path.py's function(arg), as ml_collections' config flag does."""
  path, *arg = configs.resolve(spec, 'sweeps' if function == 'get_sweep' else '').split(':', 1)
  file = pathlib.Path(path)
  if not file.is_file():
    raise SweepError(f'{spec!r}: no file {file.resolve()}.')
  module_spec = importlib.util.spec_from_file_location(f'_sweep_{file.stem}', file)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    if not hasattr(module, function):
      raise SweepError(f'{file} has no {function}().')
    return getattr(module, function)(*arg)
  except SweepError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'Loading {spec!r} failed: {type(e).__name__}: {e}') from e


def absolute_spec(spec: str) -> str:
  # Runs start in REPO, so a path relative to the caller's cwd must not stay relative.
  path, sep, arg = configs.resolve(spec).partition(':')
  return str(pathlib.Path(path).resolve()) + sep + arg


def leaf_fields(config, prefix: str = '') -> list[str]:
  fields = []
  for key, value in config.items():
    path = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      fields += leaf_fields(value, path + '.')
    else:
      fields.append(path)
  return fields


def parent_of(config, field: str):
  """The ConfigDict holding a dotted field, and the field's last name; SweepError if absent."""
  node, parts = config, field.split('.')
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      close = difflib.get_close_matches(field, leaf_fields(config), n=3, cutoff=0.5)
      hint = f' Did you mean {" or ".join(close)}?' if close else ''
      # Only the level where the path broke: the full list runs to dozens.
      where = '.'.join(parts[:i])
      if not isinstance(node, ml_collections.ConfigDict):
        raise SweepError(f'Unknown config field {field!r}: {where} is a '
                         f'{type(node).__name__}, not a section.{hint}')
      valid = ', '.join(f'{where}.{k}' if where else k for k in node)
      raise SweepError(f'Unknown config field {field!r}.{hint} '
                       f'Valid fields{" in " + where if where else ""}: {valid}.')
    if i < len(parts) - 1:
      node = node[part]
  return node, parts[-1]


# --- Grid, names and commands. ---


def expand(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """Grid -> one override dict per run: the cartesian product, last field fastest."""
  for field, values in grid.items():
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
      raise SweepError(f'grid[{field!r}]={values!r} must be a list or tuple of values.')
    if not values:
      raise SweepError(f'grid[{field!r}] is empty: give it at least one value.')
  fields = list(grid)
  return [dict(zip(fields, combo)) for combo in itertools.product(*grid.values())]


def _compact(value) -> str:
  """Python literal without spaces: (0.1,0.01), ('a',), {'k':1}."""
  if isinstance(value, (tuple, list)):
    inner = ','.join(_compact(v) for v in value)
    return f'({inner},)' if len(value) == 1 else f'({inner})'
  if isinstance(value, Mapping):
    return '{' + ','.join(f'{_compact(k)}:{_compact(v)}' for k, v in value.items()) + '}'
  return repr(value)


def display(value) -> str:
  """A grid value as it appears in run names and gathered tables."""
  return value if isinstance(value, str) else _compact(value)


def run_name(overrides: Mapping[str, Any]) -> str:
  """Readable, deterministic, filesystem-safe: 'finetune.steps=6,seed=1'."""
  if not overrides:
    return 'default'
  raw = ','.join(f'{k}={display(v)}' for k, v in overrides.items())
  name = _SAFE.sub('_', raw)
  if name != raw or len(name) > _MAX_NAME:
    # Replaced characters could make two runs collide; the hash keeps them apart.
    digest = hashlib.sha1(repr(list(overrides.items())).encode()).hexdigest()[:8]
    name = f'{name[:_MAX_NAME - 9]}-{digest}'
  return name


def flag_literal(value, field_type: type | None = None) -> str:
  """The text after '--config.field=' that ml_collections parses back to `value`."""
  if field_type is str and isinstance(value, str):
    return value  # absl's plain string parser would keep quotes.
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, (int, float)):
    return repr(value)
  return _compact(value)  # Tuples, dicts, None, and str for untyped fields: literal_eval.
