"""Inputs and labels for the Tracr tasks (paper Sec. 4, App. B.1).

Counter: tokens drawn uniformly WITH replacement from a-i; r(x, O) = count of O.
Max-identifier: tokens drawn WITHOUT replacement from a-z; r(x, O) = the O-th
smallest token (the paper orders "a > b > ...", so its 5th "largest" is our 5th
smallest: `bdafhmxpqn` -> 'h').

A spurious correlation r(x, O_FT) - r(x, O_PT) = q holds in an EXACT fraction
C_Tr of a fine-tuning set: round(C_Tr * n) samples are built to obey it and the
others are resampled until they do not (at seq_len 20 that conditioning moves
the mean count of `a` from 2.22 to about 2.36, since accidental correlates are
rows with few a's). Labels are always recomputed from the
final tokens, never assumed from the construction.

Everything is numpy and seeded by the caller's np.random.Generator.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One Tracr task: which program, its alphabet, and the two operands."""
  program: str  # 'counter' or 'max_identifier'.
  vocab: str  # Input alphabet, one character per token.
  seq_len: int  # Tokens after BOS.
  operand_pt: object  # Counter: token counted in pretraining; Max-id: rank (1-based).
  operand_ft: object  # The fine-tuning operand.
  q: int  # The spurious offset r(x, O_FT) - r(x, O_PT).

  def validate(self, prefix: str = 'task') -> None:
    if self.program not in ('counter', 'max_identifier'):
      raise ValueError(f"{prefix}.program={self.program!r}: valid are 'counter', 'max_identifier'.")
    if len(set(self.vocab)) != len(self.vocab) or not self.vocab:
      raise ValueError(f'{prefix}.vocab={self.vocab!r} must be a non-empty string of distinct tokens.')
    if self.seq_len < 2:
      raise ValueError(f'{prefix}.seq_len={self.seq_len} must be >= 2: the answer is read at '
                       'the second token (model position 2).')
    if self.operand_pt == self.operand_ft:
      raise ValueError(f'{prefix}.operand_ft equals {prefix}.operand_pt ({self.operand_pt!r}): '
                       'fine-tuning must change the operand.')
    if self.program == 'counter':
      for f in ('operand_pt', 'operand_ft'):
        if getattr(self, f) not in self.vocab:
          raise ValueError(f'{prefix}.{f}={getattr(self, f)!r} is not in {prefix}.vocab={self.vocab!r}.')
      # count(ft) = count(pt) + q needs some n_pt >= 0 with n_pt + (n_pt + q) <= seq_len.
      if abs(self.q) > self.seq_len:
        raise ValueError(f'{prefix}.q={self.q} is impossible for seq_len={self.seq_len}: '
                         'need |q| <= seq_len.')
      if self.q == 0:
        raise ValueError(f'{prefix}.q must be non-zero: with q=0 the correlated samples have '
                         'equal counts and the two tasks cannot be told apart.')
    else:
      if self.seq_len > len(self.vocab):
        raise ValueError(f'{prefix}.seq_len={self.seq_len} exceeds the {len(self.vocab)} tokens of '
                         f'{prefix}.vocab: max-identifier samples without replacement.')
      for f in ('operand_pt', 'operand_ft'):
        r = getattr(self, f)
        if not isinstance(r, int) or not 1 <= r <= self.seq_len:
          raise ValueError(f'{prefix}.{f}={r!r} must be a rank in 1..seq_len={self.seq_len}.')
      lo, hi = sorted((self.operand_pt, self.operand_ft))
      # The two ranked tokens differ by at least (hi - lo) letters.
      sign = 1 if self.operand_ft > self.operand_pt else -1
      if self.q * sign < hi - lo or abs(self.q) > len(self.vocab) - 1:
        raise ValueError(
            f'{prefix}.q={self.q} is impossible: the {self.operand_ft}-th and {self.operand_pt}-th '
            f'smallest of distinct letters differ by at least {sign * (hi - lo)} (same sign).')


def result(spec: TaskSpec, tokens_NxL: np.ndarray, operand) -> np.ndarray:
  """r(x, O) for each row of token ids (indices into spec.vocab)."""
  if spec.program == 'counter':
    return (tokens_NxL == spec.vocab.index(operand)).sum(axis=1)
  # The rank-th smallest token id (ids follow the alphabet order).
  return np.sort(tokens_NxL, axis=1)[:, operand - 1]


def obeys_correlation(spec: TaskSpec, tokens_NxL: np.ndarray) -> np.ndarray:
  return result(spec, tokens_NxL, spec.operand_ft) - result(spec, tokens_NxL, spec.operand_pt) == spec.q


def _sample_plain(spec: TaskSpec, rng: np.random.Generator, n: int) -> np.ndarray:
  V, L = len(spec.vocab), spec.seq_len
  if spec.program == 'counter':
    return rng.integers(0, V, size=(n, L))
  # Without replacement, vectorized: argsort of uniform noise picks a random subset.
  return np.argsort(rng.random((n, V)), axis=1)[:, :L]


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
  pt, ft = spec.vocab.index(spec.operand_pt), spec.vocab.index(spec.operand_ft)
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


def _impose_max_identifier(spec: TaskSpec, rng: np.random.Generator, tokens_NxL: np.ndarray):
  """Resamples the letter set until the two ranked letters differ by exactly q.

  Vectorized rejection: the acceptance rate is high for the default q (about 1
  in 3 for consecutive ranks and q=1), so a few rounds suffice.
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
    impose = _impose_counter if spec.program == 'counter' else _impose_max_identifier
    tokens[:n_corr] = impose(spec, rng, tokens[:n_corr])
  # The uncorrelated part must not obey the correlation by chance.
  rest = np.arange(n_corr, n)
  bad = rest[obeys_correlation(spec, tokens[rest])]
  while len(bad):
    tokens[bad] = _sample_plain(spec, rng, len(bad))
    bad = bad[obeys_correlation(spec, tokens[bad])]
  perm = rng.permutation(n)
  return tokens[perm]


def to_strings(spec: TaskSpec, tokens_NxL: np.ndarray) -> list[list[str]]:
  return [[spec.vocab[t] for t in row] for row in tokens_NxL]


def label_ids(values: np.ndarray, output_values: Sequence) -> np.ndarray:
  """Maps task results to the compiled model's class ids; -1 for a value it lacks."""
  index = {v: i for i, v in enumerate(output_values)}
  return np.array([index.get(v, -1) for v in values.tolist()], np.int32)
