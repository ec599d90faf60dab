"""The capability an audit asks about, written by a user in one file, checked before compute.

Two ways to write it:

  my_capability.json    {"name": "count_a",
                         "o_pt": "o_pt.jsonl",           # required: rows showing the capability
                         "o_ft": "o_ft.jsonl",           # optional: the fine-tuning behaviour
                         "probe": "probe.jsonl",         # optional: rows with probe labels
                         "eval_fraction": 0.5,           # held-out share of each JSONL set
                         "seed": 0}                      # the split's shuffle
  my_capability.py:fn   fn() returns a `Capability` (or a dict of its fields); a JSON
                        spec may also say {"data": "my_capability.py:fn"}.

A JSONL row is {"prompt": [token ids], "answer": [token ids]} (the answer: the
token(s) that show the capability, scored teacher-forced after the prompt; an
int is one token) and, in a probe file, "labels": {"target": int class}. Paths
are relative to the spec file. Token ids, not text: the audit runs no tokenizer
(tokenise with the model's own, once, when writing the file).

Every set is held as next-token arrays (`TokenSet`: inputs, targets, weights;
logits at position t are scored against targets[t] where weights > 0), the
batch format every world's loss already takes, so a Tracr task (answers at the
model's own positions, no shift) and a PCFG task (the answer after the ART
token) are both expressible (`audit/worlds.py`). Rows are right-padded with 0,
which a causal model never sees before the answer.

Every error is one line naming the field (`SpecError`, a ConfigError: the
launcher prints it as FATAL and exits 2).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
from typing import Mapping, Optional

import numpy as np

from wrapper_study.config_check import ConfigError

SPEC_KEYS = ('name', 'o_pt', 'o_ft', 'probe', 'data', 'eval_fraction', 'seed', 'description')


class SpecError(ConfigError):
  """A capability spec that cannot be audited; the message names the field."""


@dataclasses.dataclass(frozen=True)
class TokenSet:
  """Rows scored at the positions where weights > 0: logits[t] against targets[t]."""
  inputs: np.ndarray  # int [N, T]
  targets: np.ndarray  # int [N, T]
  weights: np.ndarray  # float [N, T]

  @property
  def n(self) -> int:
    return int(self.inputs.shape[0])

  def batch(self) -> dict:
    return {'inputs': self.inputs, 'targets': self.targets, 'weights': self.weights}

  def take(self, rows) -> 'TokenSet':
    return TokenSet(self.inputs[rows], self.targets[rows], self.weights[rows])


@dataclasses.dataclass(frozen=True)
class ProbeSet:
  """Probe inputs (activations read at `positions`) and integer labels per target."""
  inputs: np.ndarray  # int [N, T]
  positions: np.ndarray  # int [N]
  labels: Mapping[str, np.ndarray]  # target name -> int [N] in 0..n_classes-1
  n_classes: int

  def labels_TxN(self, targets) -> np.ndarray:
    return np.stack([np.asarray(self.labels[t]) for t in targets]).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Capability:
  """What the audit measures. `*_train` sets feed pruning scores and reFT; `*_eval` sets are
  held out and give every accuracy, loss and pruning curve."""
  name: str
  o_pt_train: TokenSet
  o_pt_eval: TokenSet
  o_ft_train: Optional[TokenSet] = None
  o_ft_eval: Optional[TokenSet] = None
  probe_train: Optional[ProbeSet] = None
  probe_test: Optional[ProbeSet] = None

  @property
  def probe_targets(self) -> tuple[str, ...]:
    return tuple(self.probe_train.labels) if self.probe_train is not None else ()


# ---------------------------------------------------------------- building sets ----

def token_set(prompts, answers, field: str = 'o_pt') -> TokenSet:
  """Right-padded next-token arrays for prompt -> answer rows (answers teacher-forced)."""
  if len(prompts) != len(answers) or not prompts:
    raise SpecError(f'{field}: needs at least one row and one answer per prompt '
                    f'(got {len(prompts)} prompts, {len(answers)} answers).')
  rows = [list(p) + list(a) for p, a in zip(prompts, answers)]
  T = max(len(r) for r in rows) - 1
  inputs = np.zeros((len(rows), T), np.int32)
  targets = np.zeros((len(rows), T), np.int32)
  weights = np.zeros((len(rows), T), np.float32)
  for i, (p, r) in enumerate(zip(prompts, rows)):
    inputs[i, :len(r) - 1] = r[:-1]
    targets[i, :len(r) - 1] = r[1:]
    weights[i, len(p) - 1:len(r) - 1] = 1.0
  return TokenSet(inputs, targets, weights)


def _ids(value, field: str, row: int, allow_empty: bool = False) -> list[int]:
  value = [value] if isinstance(value, int) and not isinstance(value, bool) else value
  if (not isinstance(value, list) or (not value and not allow_empty)
      or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value)):
    raise SpecError(f'{field} row {row}: must be a non-empty list of token ids (integers '
                    f'>= 0), got {str(value)[:60]!r}.')
  return value


def read_jsonl(path: pathlib.Path, field: str, probe: bool = False) -> list[dict]:
  """Rows of a JSONL file, each checked: prompt, answer (and labels for a probe file)."""
  if not path.is_file():
    raise SpecError(f'{field}: no such file {path}.')
  rows = []
  for i, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise SpecError(f'{field}: {path} line {i} is not JSON ({e.msg}).') from None
    if not isinstance(row, dict) or 'prompt' not in row:
      raise SpecError(f'{field}: {path} line {i} needs a "prompt" (a list of token ids).')
    out = {'prompt': _ids(row['prompt'], f'{field}.prompt', i)}
    if probe:
      labels = row.get('labels')
      if not isinstance(labels, dict) or not labels or any(
          isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in labels.values()):
        raise SpecError(f'{field}: {path} line {i} needs "labels": {{target: class id >= 0}}.')
      out['labels'] = labels
    else:
      if 'answer' not in row:
        raise SpecError(f'{field}: {path} line {i} needs an "answer" (the token id(s) that '
                        f'show the capability).')
      out['answer'] = _ids(row['answer'], f'{field}.answer', i)
    rows.append(out)
  if not rows:
    raise SpecError(f'{field}: {path} holds no rows.')
  return rows


def _split(n: int, eval_fraction: float, seed: int, field: str):
  if n < 2:
    raise SpecError(f'{field}: needs at least 2 rows (one to fit or score on, one held out); '
                    f'got {n}.')
  order = np.random.default_rng(seed).permutation(n)
  n_eval = min(max(1, int(round(n * eval_fraction))), n - 1)
  return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def probe_set(rows: list[dict], field: str = 'probe') -> ProbeSet:
  targets = list(rows[0]['labels'])
  bad = [i for i, r in enumerate(rows, 1) if list(r['labels']) != targets]
  if bad:
    raise SpecError(f'{field}: row {bad[0]} has labels {list(rows[bad[0] - 1]["labels"])}; '
                    f'every row needs the same targets {targets}.')
  prompts = [r['prompt'] for r in rows]
  T = max(len(p) for p in prompts)
  inputs = np.zeros((len(rows), T), np.int32)
  for i, p in enumerate(prompts):
    inputs[i, :len(p)] = p
  labels = {t: np.array([r['labels'][t] for r in rows], np.int32) for t in targets}
  n_classes = int(max(v.max() for v in labels.values())) + 1
  return ProbeSet(inputs, np.array([len(p) - 1 for p in prompts], np.int32), labels,
                  max(n_classes, 2))


def default_probe(rows: list[dict], field: str = 'o_pt') -> list[dict]:
  """Probe rows when the spec names no target: the first O_PT answer token, as a class."""
  firsts = sorted({r['answer'][0] for r in rows})
  index = {tok: i for i, tok in enumerate(firsts)}
  return [{'prompt': r['prompt'], 'labels': {f'{field}_answer': index[r['answer'][0]]}}
          for r in rows]


# ---------------------------------------------------------------- loading ----

def load_function(spec: str, field: str = 'data'):
  """The callable `path/file.py:function` names (one-line errors)."""
  path, sep, name = spec.rpartition(':')
  if not sep or not path.endswith('.py') or not name:
    raise SpecError(f'{field}={spec!r}: give path/to/file.py:function.')
  if not pathlib.Path(path).is_file():
    raise SpecError(f'{field}={spec!r}: no such file {path}.')
  try:
    module_spec = importlib.util.spec_from_file_location(f'_capability_{pathlib.Path(path).stem}',
                                                         path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  # The user's file: any error, one line.
    raise SpecError(f'{field}={spec!r}: importing {path} failed: {type(e).__name__}: {e}') from None
  fn = getattr(module, name, None)
  if not callable(fn):
    raise SpecError(f'{field}={spec!r}: {path} has no function {name!r}.')
  return fn


def from_function(spec: str, field: str = 'capability') -> Capability:
  fn = load_function(spec, field)
  try:
    cap = fn()
  except SpecError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise SpecError(f'{field}={spec!r}: calling it failed: {type(e).__name__}: {e}') from None
  if isinstance(cap, Mapping):
    unknown = set(cap) - {f.name for f in dataclasses.fields(Capability)}
    if unknown:
      raise SpecError(f'{field}={spec!r} returned unknown keys {sorted(unknown)}; valid: '
                      f'{[f.name for f in dataclasses.fields(Capability)]}.')
    cap = Capability(**{'name': pathlib.Path(spec.rpartition(':')[0]).stem, **cap})
  if not isinstance(cap, Capability):
    raise SpecError(f'{field}={spec!r} returned {type(cap).__name__}; it must return a '
                    f'wrapper_study.audit.spec.Capability or a dict of its fields.')
  return cap


def from_json(path: pathlib.Path) -> Capability:
  try:
    spec = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise SpecError(f'capability={path}: not JSON ({e.msg}, line {e.lineno}).') from None
  if not isinstance(spec, dict):
    raise SpecError(f'capability={path}: must hold a JSON object with keys {SPEC_KEYS}.')
  unknown = sorted(set(spec) - set(SPEC_KEYS))
  if unknown:
    raise SpecError(f'capability.{unknown[0]} is unknown; valid keys: {SPEC_KEYS}.')
  where = lambda p: str(p if pathlib.Path(p).is_absolute() else path.parent / p)
  if 'data' in spec:
    if not isinstance(spec['data'], str):
      raise SpecError('capability.data must be a string path/to/file.py:function.')
    file, _, fn = spec['data'].rpartition(':')
    return from_function(f'{where(file)}:{fn}', 'capability.data')
  if not isinstance(spec.get('o_pt'), str):
    raise SpecError('capability.o_pt is missing: give a JSONL file of {"prompt": [...], '
                    '"answer": [...]} rows (or "data": "file.py:function").')
  frac = spec.get('eval_fraction', 0.5)
  if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
    raise SpecError(f'capability.eval_fraction={frac!r} must be a number in (0, 1).')
  seed = spec.get('seed', 0)
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise SpecError(f'capability.seed={seed!r} must be an integer >= 0.')
  for key in ('o_ft', 'probe', 'name'):
    if key in spec and not isinstance(spec[key], str):
      raise SpecError(f'capability.{key} must be a string (a JSONL path; name: a label).')
  sets = {}
  for key in ('o_pt', 'o_ft'):
    if key not in spec:
      continue
    rows = read_jsonl(pathlib.Path(where(spec[key])), f'capability.{key}')
    train, test = _split(len(rows), frac, seed, f'capability.{key}')
    whole = token_set([r['prompt'] for r in rows], [r['answer'] for r in rows],
                      f'capability.{key}')
    sets[f'{key}_train'], sets[f'{key}_eval'] = whole.take(train), whole.take(test)
    if key == 'o_pt':
      o_pt_rows = rows
  probe_rows = (read_jsonl(pathlib.Path(where(spec['probe'])), 'capability.probe', probe=True)
                if 'probe' in spec else default_probe(o_pt_rows))
  train, test = _split(len(probe_rows), frac, seed, 'capability.probe')
  whole = probe_set(probe_rows, 'capability.probe')
  take = lambda rows: ProbeSet(whole.inputs[rows], whole.positions[rows],
                               {t: v[rows] for t, v in whole.labels.items()}, whole.n_classes)
  return Capability(name=spec.get('name', path.stem), probe_train=take(train),
                    probe_test=take(test), **sets)


def load(spec: str) -> Capability:
  """A capability from a JSON spec file or `path/file.py:function`; checked (`validate`)."""
  if not spec:
    raise SpecError('capability is empty: give --capability=spec.json or path/file.py:function.')
  path = pathlib.Path(spec)
  if path.suffix == '.json' or path.is_file():
    if not path.is_file():
      raise SpecError(f'capability={spec}: no such file.')
    return from_json(path)
  return from_function(spec)


def files_of(spec: str) -> list[pathlib.Path]:
  """The files a spec reads (the spec, its JSONL or .py files), for a digest; never raises."""
  path = pathlib.Path(spec)
  if not path.is_file():
    return [pathlib.Path(spec.rpartition(':')[0])]
  try:
    named = json.loads(path.read_text())
    named = [v.rpartition(':')[0] if k == 'data' else v for k, v in named.items()
             if k in ('o_pt', 'o_ft', 'probe', 'data') and isinstance(v, str)]
  except (ValueError, AttributeError):
    named = []
  return [path] + [p if pathlib.Path(p).is_absolute() else path.parent / p for p in named]


# ---------------------------------------------------------------- validation ----

def _check_token_set(s, field: str, vocab_size: int, n_outputs: int, max_len: int) -> None:
  if not isinstance(s, TokenSet):
    raise SpecError(f'capability.{field} must be a TokenSet, got {type(s).__name__}.')
  shapes = {np.shape(s.inputs), np.shape(s.targets), np.shape(s.weights)}
  if len(shapes) != 1 or len(np.shape(s.inputs)) != 2 or s.n == 0:
    raise SpecError(f'capability.{field}: inputs, targets and weights must be one [N, T] shape '
                    f'with N >= 1; got {sorted(shapes)}.')
  if np.shape(s.inputs)[1] > max_len:
    raise SpecError(f'capability.{field}: rows of {np.shape(s.inputs)[1]} tokens exceed the '
                    f"model's context of {max_len}.")
  for name, arr, top in (('inputs', s.inputs, vocab_size), ('targets', s.targets, n_outputs)):
    arr = np.asarray(arr)
    if arr.dtype.kind not in 'iu' or arr.min() < 0 or arr.max() >= top:
      raise SpecError(f'capability.{field}.{name}: token ids must be integers in 0..{top - 1} '
                      f'(the model\'s vocabulary); got {arr.min()}..{arr.max()} ({arr.dtype}).')
  w = np.asarray(s.weights, float)
  if not np.isfinite(w).all() or (w < 0).any() or (w.sum(1) <= 0).any():
    raise SpecError(f'capability.{field}.weights: every row needs a scored position (weights '
                    f'> 0) and all weights finite and >= 0.')


def _check_probe_set(p, field: str, vocab_size: int, max_len: int) -> None:
  if not isinstance(p, ProbeSet):
    raise SpecError(f'capability.{field} must be a ProbeSet, got {type(p).__name__}.')
  inputs, pos = np.asarray(p.inputs), np.asarray(p.positions)
  if inputs.ndim != 2 or not len(inputs) or pos.shape != (len(inputs),):
    raise SpecError(f'capability.{field}: inputs [N, T] and positions [N] with N >= 1 needed; '
                    f'got {inputs.shape} and {pos.shape}.')
  if inputs.shape[1] > max_len or inputs.min() < 0 or inputs.max() >= vocab_size:
    raise SpecError(f'capability.{field}.inputs: token ids in 0..{vocab_size - 1}, at most '
                    f'{max_len} positions; got {inputs.min()}..{inputs.max()}, {inputs.shape[1]}.')
  if pos.min() < 0 or pos.max() >= inputs.shape[1]:
    raise SpecError(f'capability.{field}.positions must lie in 0..{inputs.shape[1] - 1}.')
  if not p.labels:
    raise SpecError(f'capability.{field}.labels is empty: give at least one probe target.')
  for t, y in p.labels.items():
    y = np.asarray(y)
    if y.shape != (len(inputs),) or y.min() < 0 or y.max() >= p.n_classes:
      raise SpecError(f'capability.{field}.labels[{t!r}]: [N] class ids in '
                      f'0..{p.n_classes - 1} needed.')


def validate(cap: Capability, vocab_size: int, n_outputs: int, max_len: int) -> Capability:
  """Raises SpecError (one line, naming the field) when the capability cannot be audited on a
  model of this vocabulary and context; returns it unchanged otherwise."""
  for field in ('o_pt_train', 'o_pt_eval'):
    _check_token_set(getattr(cap, field), field, vocab_size, n_outputs, max_len)
  if (cap.o_ft_train is None) != (cap.o_ft_eval is None):
    raise SpecError('capability.o_ft_train and o_ft_eval come together (or neither).')
  for field in ('o_ft_train', 'o_ft_eval'):
    if getattr(cap, field) is not None:
      _check_token_set(getattr(cap, field), field, vocab_size, n_outputs, max_len)
  if (cap.probe_train is None) != (cap.probe_test is None):
    raise SpecError('capability.probe_train and probe_test come together (or neither).')
  if cap.probe_train is not None:
    _check_probe_set(cap.probe_train, 'probe_train', vocab_size, max_len)
    _check_probe_set(cap.probe_test, 'probe_test', vocab_size, max_len)
    if set(cap.probe_train.labels) != set(cap.probe_test.labels) or (
        cap.probe_train.n_classes != cap.probe_test.n_classes):
      raise SpecError('capability.probe_test must have the targets and n_classes of probe_train.')
  return cap
