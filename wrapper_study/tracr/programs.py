"""RASP programs that Tracr compiles: the paper's (Alg. 1 and 2), tracr's lib, and yours.

Imported only by `tracr.compile`; everything else reads compiled exports via
`tracr.model`, which never imports tracr.

A program is named either by a key of `PROGRAMS` or by a reference
'path/to/file.py:function' to your own builder. The contract of a builder
`function(**program_kwargs)`: it returns `(sop, vocab, max_seq_len)` or
`(sop, vocab, max_seq_len, readout_position)`, where sop is a `rasp.SOp`,
vocab the input tokens and max_seq_len the tokens after BOS (either may be
None, then the compile's arguments give them; when both are given they must
agree), and readout_position the model position of the answer (position 0 is
BOS; None: every position). Its keyword arguments, with their defaults, are the
program_kwargs it accepts; they become part of the export's cache key.

Each registry entry is a `ProgramEntry`: a builder taking JSON-able keyword
arguments, the model position where its answer is read (None: every position),
and a check of (kwargs, vocab, max_seq_len) that runs before any compile so bad
arguments fail fast with a message naming the field.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from typing import Any, Callable, Mapping, Optional, Sequence

from tracr.compiler import lib
from tracr.rasp import rasp

from wrapper_study.tracr import export
from wrapper_study.tracr import paper

PAPER_READOUT_POSITION = paper.PAPER_READOUT_POSITION


def make_counter(count_token: Any = 'a') -> rasp.SOp:
  """Paper Alg. 1: the count of `count_token`, read at RASP index 1.

  At query index 1 the selector picks every key where tokens == count_token
  (True == 1), so SelectorWidth there is the count; index 0 counts the others.
  """
  is_token = rasp.Map(lambda t: t == count_token, rasp.tokens).named('bin')
  bin_idx = rasp.Select(is_token, rasp.indices, rasp.Comparison.EQ).named('bin_idx')
  count = rasp.SelectorWidth(bin_idx).named('count')
  idx_sel = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ).named('idx_sel')
  return rasp.categorical(rasp.Aggregate(idx_sel, count))


def make_max_identifier(rank: int = 5) -> rasp.SOp:
  """Paper Alg. 2: the `rank`-th smallest token, read at RASP index 1.

  Tokens must be distinct (the paper samples without replacement): the rank
  of a token is how many tokens are smaller, so ties would share a rank.
  """
  smaller = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT).named('smaller')
  n_smaller = rasp.SelectorWidth(smaller).named('n_smaller')
  is_target = rasp.Map(lambda n: n == rank - 1, n_smaller).named('is_target')
  sel = rasp.Select(is_target, rasp.indices, rasp.Comparison.EQ).named('sel')
  return rasp.categorical(rasp.Aggregate(sel, rasp.tokens))


# make_nary_sequencemap takes a Python function, which a JSON export cannot
# record; the registry exposes a few named ones over (tokens, tokens, indices).
NARY_FNS: dict[str, Callable[..., Any]] = {
    'x+y-z': lambda x, y, z: x + y - z,
    'x*y-z': lambda x, y, z: x * y - z,
}


def _hist() -> rasp.SOp:
  return lib.make_hist()


def _sort_unique() -> rasp.SOp:
  return lib.make_sort_unique(rasp.tokens, rasp.tokens)


def _sort(max_seq_len: int, min_key: float = 1) -> rasp.SOp:
  return lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=max_seq_len, min_key=min_key)


def _sort_freq(max_seq_len: int) -> rasp.SOp:
  return lib.make_sort_freq(max_seq_len)


def _frac_prevs(token: Any = 'a') -> rasp.SOp:
  return lib.make_frac_prevs(rasp.tokens == token)


def _length() -> rasp.SOp:
  return lib.make_length()


def _reverse() -> rasp.SOp:
  return lib.make_reverse(rasp.tokens)


def _pair_balance(open_token: str = '(', close_token: str = ')') -> rasp.SOp:
  return lib.make_pair_balance(rasp.tokens, open_token, close_token)


def _shuffle_dyck(pairs: Sequence[str] = ('()', '{}')) -> rasp.SOp:
  return lib.make_shuffle_dyck(list(pairs))


def _shuffle_dyck2() -> rasp.SOp:
  return lib.make_shuffle_dyck2()


def _count(token: Any = 'a') -> rasp.SOp:
  return lib.make_count(rasp.tokens, token)


def _count_less_freq(n: int = 2) -> rasp.SOp:
  return lib.make_count_less_freq(n)


def _shift_by(offset: int = 1) -> rasp.SOp:
  return lib.shift_by(offset, rasp.tokens)


def _detect_pattern(pattern: Sequence[Any] = 'ab') -> rasp.SOp:
  return lib.detect_pattern(rasp.tokens, list(pattern))


def _nary_sequencemap(fn: str = 'x+y-z') -> rasp.SOp:
  return lib.make_nary_sequencemap(NARY_FNS[fn], rasp.tokens, rasp.tokens, rasp.indices)


# --- Checks run before compiling: (kwargs, vocab, max_seq_len) -> None. ---


def _in_vocab(field: str, value: Any, vocab: Sequence[Any]) -> None:
  if value not in vocab:
    raise ValueError(f'program_kwargs[{field!r}]={value!r} is not in vocab={list(vocab)!r}.')


def _numeric_vocab(program: str, vocab: Sequence[Any]) -> None:
  bad = [v for v in vocab if isinstance(v, bool) or not isinstance(v, numbers.Real)]
  if bad:
    raise ValueError(f'vocab for {program!r} must be numbers (the program does arithmetic '
                     f'on tokens); got non-numbers {bad!r}.')


def _comparable_vocab(program: str, vocab: Sequence[Any]) -> None:
  try:
    sorted(vocab)
  except TypeError as e:
    raise ValueError(f'vocab for {program!r} must be mutually comparable with < (all str or '
                     f'all numbers); got {list(vocab)!r}.') from e


def _min_len(program: str, max_seq_len: int, need: int, why: str) -> None:
  if max_seq_len < need:
    raise ValueError(f'max_seq_len={max_seq_len} is too small for {program!r}: need >= {need} '
                     f'({why}).')


def _positive_int(field: str, value: Any, minimum: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f'program_kwargs[{field!r}]={value!r} must be an integer >= {minimum}.')


def _check_counter(kw, vocab, max_seq_len):
  _in_vocab('count_token', kw['count_token'], vocab)
  _min_len('counter', max_seq_len, 2, 'the answer is read at RASP index 1')


def _check_max_identifier(kw, vocab, max_seq_len):
  rank = kw['rank']
  _positive_int('rank', rank)
  _comparable_vocab('max_identifier', vocab)
  _min_len('max_identifier', max_seq_len, max(2, rank),
           f'rank={rank} needs that many tokens and the answer is read at RASP index 1')
  if len(vocab) < rank:
    raise ValueError(f'vocab has {len(vocab)} tokens but max_identifier rank={rank} needs '
                     f'>= {rank} distinct tokens.')


def _check_sort(kw, vocab, max_seq_len):
  _numeric_vocab('sort', vocab)


def _check_frac_prevs(kw, vocab, max_seq_len):
  _in_vocab('token', kw['token'], vocab)


def _check_pair_balance(kw, vocab, max_seq_len):
  _in_vocab('open_token', kw['open_token'], vocab)
  _in_vocab('close_token', kw['close_token'], vocab)


def _check_shuffle_dyck(kw, vocab, max_seq_len):
  pairs = kw['pairs']
  if isinstance(pairs, str) or not pairs or any(
      not isinstance(p, str) or len(p) != 2 for p in pairs):
    raise ValueError(f"program_kwargs['pairs']={pairs!r} must be a non-empty list of "
                     "2-character strings such as ['()', '{}'].")
  for p in pairs:
    for t in p:
      _in_vocab('pairs', t, vocab)


def _check_shuffle_dyck2(kw, vocab, max_seq_len):
  _check_shuffle_dyck({'pairs': ['()', '{}']}, vocab, max_seq_len)


def _check_count(kw, vocab, max_seq_len):
  _in_vocab('token', kw['token'], vocab)


def _check_count_less_freq(kw, vocab, max_seq_len):
  _positive_int('n', kw['n'], minimum=0)


def _check_shift_by(kw, vocab, max_seq_len):
  _positive_int('offset', kw['offset'])
  _min_len('shift_by', max_seq_len, kw['offset'] + 1, 'a shift must land inside the sequence')


def _check_detect_pattern(kw, vocab, max_seq_len):
  pattern = kw['pattern']
  if not pattern:
    raise ValueError("program_kwargs['pattern'] must be a non-empty sequence of tokens.")
  for t in pattern:
    _in_vocab('pattern', t, vocab)


def _check_nary(kw, vocab, max_seq_len):
  if kw['fn'] not in NARY_FNS:
    raise ValueError(f"program_kwargs['fn']={kw['fn']!r} is unknown; valid: {sorted(NARY_FNS)}.")
  _numeric_vocab('nary_sequencemap', vocab)


def _no_check(kw, vocab, max_seq_len):
  del kw, vocab, max_seq_len


@dataclasses.dataclass(frozen=True)
class ProgramEntry:
  """A named RASP program builder plus what the export needs to know."""
  build: Callable[..., rasp.SOp]
  readout_position: Optional[int]  # Model position of the answer; None: all.
  check: Callable[[dict, Sequence[Any], int], None] = _no_check

  def __call__(self, **kwargs) -> rasp.SOp:
    return self.build(**kwargs)

  @property
  def takes_max_seq_len(self) -> bool:
    """Builders like make_sort need the compile's max_seq_len; it is injected."""
    return 'max_seq_len' in inspect.signature(self.build).parameters

  @property
  def defaults(self) -> dict[str, Any]:
    """User-settable kwargs and their defaults (max_seq_len is injected)."""
    params = inspect.signature(self.build).parameters
    return {k: p.default for k, p in params.items() if k != 'max_seq_len'}


PROGRAMS: dict[str, ProgramEntry] = {
    'counter': ProgramEntry(make_counter, PAPER_READOUT_POSITION, _check_counter),
    'max_identifier': ProgramEntry(make_max_identifier, PAPER_READOUT_POSITION,
                                   _check_max_identifier),
    'hist': ProgramEntry(_hist, None),
    'sort_unique': ProgramEntry(_sort_unique, None,
                                lambda kw, v, n: _comparable_vocab('sort_unique', v)),
    'sort': ProgramEntry(_sort, None, _check_sort),
    'sort_freq': ProgramEntry(_sort_freq, None),
    'frac_prevs': ProgramEntry(_frac_prevs, None, _check_frac_prevs),
    'length': ProgramEntry(_length, None),
    'reverse': ProgramEntry(_reverse, None),
    'pair_balance': ProgramEntry(_pair_balance, None, _check_pair_balance),
    'shuffle_dyck': ProgramEntry(_shuffle_dyck, None, _check_shuffle_dyck),
    'shuffle_dyck2': ProgramEntry(_shuffle_dyck2, None, _check_shuffle_dyck2),
    'count': ProgramEntry(_count, None, _check_count),
    'count_less_freq': ProgramEntry(_count_less_freq, None, _check_count_less_freq),
    'shift_by': ProgramEntry(_shift_by, None, _check_shift_by),
    'detect_pattern': ProgramEntry(_detect_pattern, None, _check_detect_pattern),
    'nary_sequencemap': ProgramEntry(_nary_sequencemap, None, _check_nary),
}

# (name, kwargs, vocab, max_seq_len) of every lib program, as compiled by the
# parity test. Every registry entry compiles with tracr-pypi 1.0.0; none is
# left out. Sizes are kept small so a cold compile stays at a few seconds.
LIB_CASES: tuple[tuple[str, dict, tuple, int], ...] = (
    ('hist', {}, tuple('abcd'), 6),
    ('sort_unique', {}, (1, 2, 3, 4, 5, 6), 5),
    ('sort', {}, (1, 2, 3, 4), 5),
    ('sort_freq', {}, (1, 2, 3, 4), 5),
    ('frac_prevs', {'token': 'a'}, tuple('abc'), 6),
    ('length', {}, tuple('abc'), 6),
    ('reverse', {}, tuple('abc'), 5),
    ('pair_balance', {}, tuple('ab()'), 6),
    ('shuffle_dyck', {'pairs': ['()']}, tuple('()ab'), 5),  # shuffle_dyck2 has 2 pairs.
    ('shuffle_dyck2', {}, tuple('(){}'), 5),
    ('count', {'token': 'a'}, tuple('abc'), 6),
    ('count_less_freq', {'n': 2}, tuple('abcd'), 6),
    ('shift_by', {'offset': 1}, tuple('abcd'), 5),
    ('detect_pattern', {'pattern': 'ab'}, tuple('abc'), 5),
    ('nary_sequencemap', {'fn': 'x+y-z'}, (1, 2, 3), 5),
)


FILE_FORM = "'path/to/file.py:function' returning (rasp.SOp, vocab, max_seq_len)"


def unknown_program_message(name: str) -> str:
  return (f'program={name!r} is unknown; valid: {sorted(PROGRAMS)}, or a reference '
          f'{FILE_FORM}.')


@dataclasses.dataclass(frozen=True)
class UserProgram:
  """What a 'path/to/file.py:function' builder returned, checked."""
  sop: rasp.SOp
  vocab: Optional[tuple]
  max_seq_len: Optional[int]
  readout_position: Optional[int]


def _user_builder(ref: str) -> Callable[..., Any]:
  fn = export.load_ref(ref, 'program')
  if not callable(fn):
    raise ValueError(f'program {ref!r} is not a function; give one returning '
                     '(rasp.SOp, vocab, max_seq_len).')
  return fn


def user_program(ref: str, kwargs: Mapping[str, Any]) -> UserProgram:
  """Calls the builder of a file reference and checks what it returned."""
  out = _user_builder(ref)(**dict(kwargs))
  if isinstance(out, rasp.SOp):
    out = (out, None, None)
  if not isinstance(out, tuple) or len(out) not in (3, 4) or not isinstance(out[0], rasp.SOp):
    raise ValueError(f'program {ref!r} returned {type(out).__name__}; the contract is a tuple '
                     '(rasp.SOp, vocab, max_seq_len[, readout_position]).')
  sop, vocab, max_seq_len, readout = (tuple(out) + (None,))[:4]
  return UserProgram(sop, None if vocab is None else tuple(vocab), max_seq_len, readout)


def resolve_kwargs(name: str, kwargs: Optional[Mapping[str, Any]]) -> dict[str, Any]:
  """Defaults filled in; unknown names raise ValueError listing the valid ones."""
  kwargs = dict(kwargs or {})
  if export.is_file_ref(name):
    params = inspect.signature(_user_builder(name)).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
      return kwargs
    valid = list(params)
    defaults = {k: p.default for k, p in params.items() if p.default is not p.empty}
    missing = [k for k in valid if k not in defaults and k not in kwargs]
    if missing:
      raise ValueError(f'program {name!r} needs program_kwargs {missing}.')
  elif name not in PROGRAMS:
    raise ValueError(unknown_program_message(name))
  else:
    defaults = PROGRAMS[name].defaults
    valid = list(defaults)
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f'program_kwargs {unknown} are unknown for program {name!r}; '
                     f'valid: {sorted(valid) or "none"}.')
  return {**defaults, **kwargs}


def readout_position(name: str, kwargs: Mapping[str, Any]) -> Optional[int]:
  if export.is_file_ref(name):
    return user_program(name, kwargs).readout_position
  return PROGRAMS[name].readout_position


def check(name: str, kwargs: Mapping[str, Any], vocab: Sequence[Any], max_seq_len: int) -> None:
  """Program-specific argument checks (kwargs already resolved)."""
  if export.is_file_ref(name):
    return
  PROGRAMS[name].check(dict(kwargs), list(vocab), max_seq_len)


def _canonicalize_ids(program: rasp.RASPExpr) -> None:
  """Numbers the DAG's expressions 1..N in DFS order from the output.

  Tracr labels an SOp f'{name}_{unique_id}' with the id drawn lazily from a
  process-global counter, and residual dimensions are sorted by label; without
  this, the labels (and even the residual order) of one program would depend
  on whatever was built earlier in the process.
  """
  seen: set[int] = set()
  order: list[rasp.RASPExpr] = []
  stack = [program]
  while stack:
    expr = stack.pop()
    if id(expr) in seen:
      continue
    seen.add(id(expr))
    order.append(expr)
    stack.extend(reversed(list(expr.children)))
  for i, expr in enumerate(order, start=1):
    # unique_id is a functools.cached_property: the instance dict wins.
    expr.__dict__['unique_id'] = i


def build(name: str, kwargs: Mapping[str, Any], max_seq_len: int) -> rasp.SOp:
  """The program named `name`, its output named after it, with stable labels."""
  if export.is_file_ref(name):
    program, label = user_program(name, kwargs).sop, export.split_ref(name)[1]
  else:
    entry = PROGRAMS[name]
    kwargs = dict(kwargs)
    if entry.takes_max_seq_len:
      kwargs['max_seq_len'] = max_seq_len
    program, label = entry(**kwargs), name
  # Naming the output after the registry key (or the function) makes the
  # output label f'{label}_1' whatever the builder called it.
  program = program.named(label)
  _canonicalize_ids(program)
  return program
