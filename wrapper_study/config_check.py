"""Config validation that runs before any compute.

Every error names the dotted field (as typed on the command line, e.g.
`--config.train.lr`) and says what would be valid.
"""

from __future__ import annotations

import math
from typing import Any, Iterable


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and the fix."""


def get(config, path: str) -> Any:
  node = config
  for part in path.split('.'):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      raise ConfigError(f'config.{path} is missing (needed by this experiment).') from None
  return node


def fail(path: str, value: Any, valid: str) -> None:
  raise ConfigError(f'config.{path}={value!r} is invalid: {valid}. '
                    f'Fix it in the config file or with --config.{path}=...')


def positive(config, *paths: str, integer: bool = False) -> None:
  for p in paths:
    v = get(config, p)
    # `not v > 0` (never `v <= 0`): NaN compares False both ways and must fail.
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf or (
        integer and not isinstance(v, int)):
      fail(p, v, 'must be a positive, finite ' + ('integer' if integer else 'number'))


def non_negative_int(config, *paths: str) -> None:
  for p in paths:
    v = get(config, p)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
      fail(p, v, 'must be an integer >= 0')


def seeds(config, path: str) -> None:
  """A non-empty tuple of distinct integers >= 0 (replicates: a repeated seed adds nothing)."""
  v = get(config, path)
  if (not isinstance(v, (tuple, list)) or not v or len(set(v)) != len(v)
      or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in v)):
    fail(path, v, 'must be a non-empty tuple of distinct integers >= 0, e.g. (0, 1, 2)')


def member_chunk(config, path: str = 'member_chunk') -> None:
  """How populations are mapped (train.over_members): -1 default, 0 one vmap, k >= 1 chunks."""
  v = get(config, path)
  if isinstance(v, bool) or not isinstance(v, int) or v < -1:
    fail(path, v, 'must be -1 (the backend default), 0 (one vmap over all members) or k >= 1 '
         '(lax.map over chunks of k members)')


def one_of(config, path: str, choices: Iterable) -> None:
  choices = list(choices)
  v = get(config, path)
  if v not in choices:
    fail(path, v, f'valid values are {choices}')


def subset_of(config, path: str, choices: Iterable, allow_empty: bool = False) -> None:
  choices = list(choices)
  v = get(config, path)
  if isinstance(v, str):
    v = (v,)
  unknown = [x for x in v if x not in choices]
  if unknown or (not v and not allow_empty):
    fail(path, v, f'each entry must be one of {choices}' + ('' if allow_empty else ', at least one'))


def fractions(config, path: str) -> None:
  v = get(config, path)
  vs = v if isinstance(v, (tuple, list)) else (v,)
  if not vs:
    fail(path, v, 'must not be empty')
  for x in vs:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
      fail(path, v, 'every value must lie in [0, 1]')


def positive_list(config, path: str) -> None:
  v = get(config, path)
  vs = v if isinstance(v, (tuple, list)) else (v,)
  if not vs:
    fail(path, v, 'must not be empty')
  for x in vs:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < math.inf:
      fail(path, v, 'every value must be finite and > 0')


def _leaves(node, prefix: str = ''):
  """(dotted path, value) of every leaf of a ConfigDict/dict, tuples element by element."""
  items = node.items() if hasattr(node, 'items') else ()
  for key, value in items:
    path = f'{prefix}{key}'
    if hasattr(value, 'items'):
      yield from _leaves(value, path + '.')
    elif isinstance(value, (tuple, list)):
      for i, x in enumerate(value):
        yield f'{path}[{i}]', x
    else:
      yield path, value


def all_finite(config) -> None:
  """No field anywhere holds NaN or +-inf (1e999 parses as inf): checked before any compute."""
  for path, value in _leaves(config):
    if isinstance(value, float) and not math.isfinite(value):
      field = path.split('[')[0]
      raise ConfigError(f'config.{path}={value!r} is not a finite number; give a finite value '
                        f'with --config.{field}=... or in the config file.')
