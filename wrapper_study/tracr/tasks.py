"""Tracr fine-tuning tasks: a registry of task specs (paper Sec. 4, App. B.1), and their data.

A `Task` says everything the study needs about a fine-tuning task: which RASP
program is compiled (and which of its kwargs takes the operand), how inputs
are sampled, r(x, O) (the label for operand O, as an index into the compiled
program's output values), how the spurious correlation is imposed, and its
default settings. A `TaskSpec` is one run's settings of a task (the config
section): vocab, seq_len, O_PT, O_FT and q.

Registered: Counter (tokens drawn uniformly WITH replacement from a-i;
r(x, O) = count of O) and Max-identifier (tokens drawn WITHOUT replacement
from a-z; r(x, O) = the O-th smallest token; the paper orders "a > b > ...",
so its 5th "largest" is our 5th smallest: `bdafhmxpqn` -> 'h').

Bring your own: `register(Task(...))`, or name 'path/to/file.py:function' where
the function takes no arguments and returns a `Task` (it is registered under
its name on first use). The task's `program` may itself be such a reference
(see `tracr.programs` for that contract).

A spurious correlation r(x, O_FT) - r(x, O_PT) = q holds in an EXACT fraction
C_Tr of a fine-tuning set: round(C_Tr * n) samples are built to obey it (the
task's `impose`, by default rejection sampling) and the others are resampled
until they do not (at seq_len 20 that conditioning moves the Counter's mean
count of `a` from 2.22 to about 2.36, since accidental correlates are rows
with few a's). Labels are always recomputed from the final tokens, never
assumed from the construction.

Everything is numpy and seeded by the caller's np.random.Generator; nothing
here imports tracr.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from wrapper_study.tracr import export
from wrapper_study.tracr import paper

PAPER_READOUT_POSITION = paper.PAPER_READOUT_POSITION


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One run's settings of a registered task (a config section)."""
  task: str  # A registered task's name (`TASKS`).
  vocab: Any  # Input alphabet: a str (one character per token) or a tuple of tokens.
  seq_len: int  # Tokens after BOS.
  operand_pt: Any  # Counter: token counted in pretraining; Max-id: rank (1-based).
  operand_ft: Any  # The fine-tuning operand.
  q: int  # The spurious offset r(x, O_FT) - r(x, O_PT).
  program: str = ''  # '' = the task's program; else a registered one or 'file.py:function'.

  @property
  def impl(self) -> 'Task':
    return get(self.task)

  @property
  def program_name(self) -> str:
    return self.program or self.impl.program

  def validate(self, prefix: str = 'task') -> None:
    """Checks shared by every task, then the task's own; raises ValueError naming the field."""
    if self.task not in TASKS:
      raise ValueError(f'{prefix}.task={self.task!r} is unknown; registered: {sorted(TASKS)}.')
    if not self.vocab or len(set(self.vocab)) != len(self.vocab):
      raise ValueError(f'{prefix}.vocab={self.vocab!r} must be a non-empty string of distinct '
                       'tokens.')
    pos = self.impl.readout_position
    if self.seq_len < pos:
      raise ValueError(f'{prefix}.seq_len={self.seq_len} must be >= {pos}: the answer is read at '
                       f'the token at model position {pos}.')
    if self.operand_pt == self.operand_ft:
      raise ValueError(f'{prefix}.operand_ft equals {prefix}.operand_pt ({self.operand_pt!r}): '
                       'fine-tuning must change the operand.')
    self.impl.check(self, prefix)


def _check_counter(spec: TaskSpec, prefix: str) -> None:
  for f in ('operand_pt', 'operand_ft'):
    if getattr(spec, f) not in spec.vocab:
      raise ValueError(f'{prefix}.{f}={getattr(spec, f)!r} is not in '
                       f'{prefix}.vocab={spec.vocab!r}.')
  # count(ft) = count(pt) + q needs some n_pt >= 0 with n_pt + (n_pt + q) <= seq_len.
  if abs(spec.q) > spec.seq_len:
    raise ValueError(f'{prefix}.q={spec.q} is impossible for seq_len={spec.seq_len}: '
                     'need |q| <= seq_len.')
  if spec.q == 0:
    raise ValueError(f'{prefix}.q must be non-zero: with q=0 the correlated samples have '
                     'equal counts and the two tasks cannot be told apart.')


def _check_max_identifier(spec: TaskSpec, prefix: str) -> None:
  if spec.seq_len > len(spec.vocab):
    raise ValueError(f'{prefix}.seq_len={spec.seq_len} exceeds the {len(spec.vocab)} tokens of '
                     f'{prefix}.vocab: max-identifier samples without replacement.')
  for f in ('operand_pt', 'operand_ft'):
    r = getattr(spec, f)
    if not isinstance(r, int) or not 1 <= r <= spec.seq_len:
      raise ValueError(f'{prefix}.{f}={r!r} must be a rank in 1..seq_len={spec.seq_len}.')
  lo, hi = sorted((spec.operand_pt, spec.operand_ft))
  # The two ranked tokens differ by at least (hi - lo) letters.
  sign = 1 if spec.operand_ft > spec.operand_pt else -1
  if spec.q * sign < hi - lo or abs(spec.q) > len(spec.vocab) - 1:
    raise ValueError(
        f'{prefix}.q={spec.q} is impossible: the {spec.operand_ft}-th and {spec.operand_pt}-th '
        f'smallest of distinct letters differ by at least {sign * (hi - lo)} (same sign).')


def _counter_result(spec: TaskSpec, tokens_NxL: np.ndarray, operand) -> np.ndarray:
  return (tokens_NxL == list(spec.vocab).index(operand)).sum(axis=1)


def _max_identifier_result(spec: TaskSpec, tokens_NxL: np.ndarray, operand) -> np.ndarray:
  # The rank-th smallest token id (ids follow the alphabet order).
  return np.sort(tokens_NxL, axis=1)[:, operand - 1]


def sample_with_replacement(spec: TaskSpec, rng: np.random.Generator, n: int) -> np.ndarray:
  return rng.integers(0, len(spec.vocab), size=(n, spec.seq_len))


def sample_without_replacement(spec: TaskSpec, rng: np.random.Generator, n: int) -> np.ndarray:
  # Vectorized: argsort of uniform noise picks a random subset.
  return np.argsort(rng.random((n, len(spec.vocab))), axis=1)[:, :spec.seq_len]


def result(spec: TaskSpec, tokens_NxL: np.ndarray, operand) -> np.ndarray:
  """r(x, O) for each row of token ids (indices into spec.vocab), as label indices."""
  return spec.impl.result(spec, tokens_NxL, operand)


def obeys_correlation(spec: TaskSpec, tokens_NxL: np.ndarray) -> np.ndarray:
  return result(spec, tokens_NxL, spec.operand_ft) - result(spec, tokens_NxL, spec.operand_pt) == spec.q


def _sample_plain(spec: TaskSpec, rng: np.random.Generator, n: int) -> np.ndarray:
  return spec.impl.sample_plain(spec, rng, n)


def _random_pick(rng: np.random.Generator, eligible_NxL: np.ndarray, k_N: np.ndarray):
  """Boolean [N, L]: k_N[i] positions chosen uniformly among eligible_NxL[i]."""
  keys = np.where(eligible_NxL, rng.random(eligible_NxL.shape), np.inf)
  rank = np.argsort(np.argsort(keys, axis=1), axis=1)
  return eligible_NxL & (rank < k_N[:, None])


def _impose_counter(spec: TaskSpec, rng: np.random.Generator, tokens_NxL: np.ndarray) -> np.ndarray:
  """Rewrites O_FT tokens so that count(O_FT) = count(O_PT) + q, all rows at once.

  count(O_PT) is left as sampled (so the pretraining label keeps its natural
  distribution); O_FT tokens are added at, or removed from, random positions
  (removed ones become a random third token). Rows where that cannot fit are
  redrawn first.
  """
  V, L = len(spec.vocab), spec.seq_len
  pt, ft = list(spec.vocab).index(spec.operand_pt), list(spec.vocab).index(spec.operand_ft)
  others = np.array([i for i in range(V) if i not in (pt, ft)])
  out = tokens_NxL.copy()

  def infeasible(x):
    n_pt = (x == pt).sum(1)
    return (n_pt + spec.q < 0) | (2 * n_pt + spec.q > L)

  bad = np.flatnonzero(infeasible(out))
  while len(bad):
    out[bad] = rng.integers(0, V, size=(len(bad), L))
    bad = bad[infeasible(out[bad])]
  target = (out == pt).sum(1) + spec.q
  is_ft = out == ft
  delta = target - is_ft.sum(1)
  add = _random_pick(rng, (out != pt) & ~is_ft, np.maximum(delta, 0))
  out[add] = ft
  drop = _random_pick(rng, is_ft, np.maximum(-delta, 0))
  if drop.any():
    if len(others) == 0:
      raise ValueError('task.vocab needs a third token to remove surplus O_FT tokens.')
    out[drop] = rng.choice(others, int(drop.sum()))
  return out


def impose_by_rejection(spec: TaskSpec, rng: np.random.Generator, tokens_NxL: np.ndarray):
  """Redraws the rows that do not obey the correlation until they do (any task's default).

  Vectorized rejection: for Max-identifier the acceptance rate is about 1 in 3
  for consecutive ranks and q=1, so a few rounds suffice.
  """
  out = tokens_NxL.copy()
  todo = ~obeys_correlation(spec, out)
  while todo.any():
    out[todo] = _sample_plain(spec, rng, int(todo.sum()))
    todo = ~obeys_correlation(spec, out)
  return out


def sample(spec: TaskSpec, rng: np.random.Generator, n: int, c_tr) -> np.ndarray:
  """n token-id rows [n, seq_len]; exactly round(c_tr * n) obey the correlation.

  c_tr=None draws plain inputs (the pretraining distribution, no control).
  """
  if c_tr is None:
    return _sample_plain(spec, rng, n)
  if not 0.0 <= c_tr <= 1.0:
    raise ValueError(f'C_Tr={c_tr} must lie in [0, 1].')
  n_corr = int(round(c_tr * n))
  tokens = _sample_plain(spec, rng, n)
  if n_corr:
    tokens[:n_corr] = spec.impl.impose(spec, rng, tokens[:n_corr])
  # The uncorrelated part must not obey the correlation by chance.
  rest = np.arange(n_corr, n)
  bad = rest[obeys_correlation(spec, tokens[rest])]
  while len(bad):
    tokens[bad] = _sample_plain(spec, rng, len(bad))
    bad = bad[obeys_correlation(spec, tokens[bad])]
  perm = rng.permutation(n)
  return tokens[perm]


def agrees(spec: TaskSpec, tokens_NxL: np.ndarray) -> np.ndarray:
  """[N] True where r(x, O_PT) == r(x, O_FT): one answer scores on both tasks."""
  return result(spec, tokens_NxL, spec.operand_ft) == result(spec, tokens_NxL, spec.operand_pt)


def sample_disagreeing(spec: TaskSpec, rng: np.random.Generator, n: int) -> np.ndarray:
  """n rows where no row obeys the correlation and r(x, O_PT) != r(x, O_FT).

  The C_Te=0 set the paper's Table 3 implies (a perfect O_FT model scores 0 on
  O_PT there; paper.C_TE0_SETS). Rows are redrawn until both hold, so the
  labels keep the plain distribution conditioned on those two events.
  """
  out = sample(spec, rng, n, 0.0)
  bad = np.flatnonzero(agrees(spec, out))
  while len(bad):
    out[bad] = _sample_plain(spec, rng, len(bad))
    bad = bad[agrees(spec, out[bad]) | obeys_correlation(spec, out[bad])]
  return out


def to_strings(spec: TaskSpec, tokens_NxL: np.ndarray) -> list[list[str]]:
  return [[spec.vocab[t] for t in row] for row in tokens_NxL]


def label_ids(values: np.ndarray, output_values: Sequence) -> np.ndarray:
  """Maps task results to the compiled model's class ids; -1 for a value it lacks."""
  index = {v: i for i, v in enumerate(output_values)}
  return np.array([index.get(v, -1) for v in values.tolist()], np.int32)


# ------------------------------------------------------------ registry ----


def _no_check(spec: TaskSpec, prefix: str) -> None:
  del spec, prefix


@dataclasses.dataclass(frozen=True)
class Task:
  """A fine-tuning task: what the study compiles, samples, labels and correlates."""
  name: str  # Registry key; names the tables and figures.
  program: str  # A registered RASP program or 'path/to/file.py:function' (tracr.programs).
  operand_kwarg: str  # The program kwarg set to the operand when compiling.
  sample_plain: Callable[[TaskSpec, np.random.Generator, int], np.ndarray]  # -> ids [n, L].
  result: Callable[[TaskSpec, np.ndarray, Any], np.ndarray]  # r(x, O): label indices [N].
  label_values: Callable[[TaskSpec], Sequence]  # Label index -> the program's output value.
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # TaskSpec fields.
  impose: Callable[[TaskSpec, np.random.Generator, np.ndarray], np.ndarray] = impose_by_rejection
  check: Callable[[TaskSpec, str], None] = _no_check  # Raises ValueError naming prefix.field.
  readout_position: int = PAPER_READOUT_POSITION  # Model position of the answer.
  # Whose task-specific paper claims judge this task (tracr.paper.CLAIMS); None: only the
  # claims that hold for every task.
  paper_claims: Optional[str] = None
  description: str = ''

  def spec(self, **overrides) -> TaskSpec:
    """A TaskSpec from the defaults, with overrides."""
    return TaskSpec(task=self.name, **{**dict(self.defaults), **overrides})


TASKS: dict[str, Task] = {}
_BY_REF: dict[str, Task] = {}  # 'file.py:function' -> the Task it returned.


def register(task: Task, replace: bool = False) -> Task:
  """Adds a task to the registry (replace=True to redefine a name)."""
  if not isinstance(task, Task):
    raise ValueError(f'register takes a tracr.tasks.Task, got {type(task).__name__}.')
  if task.name in TASKS and TASKS[task.name] is not task and not replace:
    raise ValueError(f'task {task.name!r} is already registered; pick another name or pass '
                     'replace=True.')
  TASKS[task.name] = task
  return task


def get(name: str) -> Task:
  """A registered task, or the Task that 'path/to/file.py:function' returns (then registered)."""
  if name in TASKS:
    return TASKS[name]
  if export.is_file_ref(name):
    if name in _BY_REF:
      return _BY_REF[name]
    fn = export.load_ref(name, 'task')
    task = fn() if callable(fn) and not isinstance(fn, Task) else fn
    if not isinstance(task, Task):
      raise ValueError(f'task {name!r} gave {type(task).__name__}; it must be a function '
                       'returning a wrapper_study.tracr.tasks.Task.')
    if task.name in BUILTIN:
      raise ValueError(f'task {name!r} is named {task.name!r}, a built-in task; rename it.')
    _BY_REF[name] = register(task, replace=True)
    return task
  raise ValueError(f'task {name!r} is unknown; registered: {sorted(TASKS)}, or give '
                   "'path/to/file.py:function' returning a tracr.tasks.Task.")


SPEC_FIELDS = ('vocab', 'seq_len', 'operand_pt', 'operand_ft', 'q', 'program')


def from_config(config, name: str) -> TaskSpec:
  """The task's defaults, overridden by the config section named after the task (if any)."""
  task = get(name)
  section = config.get(task.name) if hasattr(config, 'get') else None
  overrides = {}
  if hasattr(section, 'keys'):
    overrides = {k: section[k] for k in SPEC_FIELDS if k in section}
  return task.spec(**overrides)


COUNTER = register(Task(
    name='counter', program='counter', operand_kwarg='count_token',
    sample_plain=sample_with_replacement, result=_counter_result,
    label_values=lambda spec: list(range(spec.seq_len + 1)),  # Counts.
    defaults=dict(vocab='abcdefghi', seq_len=10, operand_pt='a', operand_ft='b', q=1),
    impose=_impose_counter, check=_check_counter, paper_claims='counter',
    description='count of a token (paper Alg. 1)'))

MAX_IDENTIFIER = register(Task(
    name='max_identifier', program='max_identifier', operand_kwarg='rank',
    sample_plain=sample_without_replacement, result=_max_identifier_result,
    label_values=lambda spec: list(spec.vocab),  # Token id -> its letter.
    defaults=dict(vocab='abcdefghijklmnopqrstuvwxyz', seq_len=10, operand_pt=5, operand_ft=6,
                  q=1),
    check=_check_max_identifier, paper_claims='max_identifier',
    description='the rank-th smallest token (paper Alg. 2)'))

BUILTIN = ('counter', 'max_identifier')
