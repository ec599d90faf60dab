"""Claims and verdicts, worded the same way in every world.

A verdict is one of HOLDS, PARTLY, DOES_NOT_HOLD or NOT_MEASURED; a claim that
could not be measured says why (`not measured (<reason>)`) and never holds.
Each world keeps its claims' thresholds in its own `paper.py`.

`Claim` + `judge` make a claim data: a statement, a metric per seed, a
threshold fixed before any run, a manipulation check and a matched control,
decided by a 95% interval (never a bare `a <= b`), written as one row of
`CLAIMS_COLUMNS`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

from wrapper_study.report import intervals

HOLDS = 'holds'
PARTLY = 'partly'
DOES_NOT_HOLD = 'does not hold'
NOT_MEASURED = 'not measured'


def not_measured(reason: str = '') -> str:
  return f'{NOT_MEASURED} ({reason})' if reason else NOT_MEASURED


def verdict(passes: Sequence[Optional[bool]], *, allow_partly: bool = True,
            reason: str = 'cells not in the grid') -> str:
  """The verdict of one claim from its checks (None: that check could not be made).

  allow_partly=False: a claim about every cell either holds in all or does not hold.
  """
  passes = [p for p in passes if p is not None]
  if not passes:
    return not_measured(reason)
  if all(passes):
    return HOLDS
  return PARTLY if allow_partly and any(passes) else DOES_NOT_HOLD


# ---------------------------------------------------- claims as data ----
# Every world writes tables/claims.csv with exactly these columns, so a sweep
# can gather claims from many runs.
CLAIMS_COLUMNS = ('world', 'claim_id', 'statement', 'metric', 'value', 'ci_low', 'ci_high',
                  'n_seeds', 'threshold', 'control_value', 'manipulation_check', 'verdict',
                  'reason')
SIDES = ('>=', '<=')


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim of the paper, fixed (with its threshold) in a world's paper.py before any run."""
  world: str
  claim_id: str
  statement: str
  metric: str  # What is measured, in words (per seed, then an interval over seeds).
  threshold: float
  side: str = '>='  # The claim holds when the metric's whole interval is on this side.


@dataclasses.dataclass(frozen=True)
class Check:
  """A manipulation check: did fine-tuning change what the claim is about?"""
  passed: bool
  description: str  # What was checked and measured, e.g. 'Acc O_PT fell 45.1 >= 30 points'.
  reason_if_failed: str = 'fine-tuning did not change what the claim is about'


def judge(claim: Claim, per_seed: Sequence[float], *, check: Optional[Check] = None,
          control_value: Optional[float] = None, interval=None) -> dict:
  """The claims.csv row of one claim: value, 95% interval, verdict and its reason.

  per_seed: the metric per seed (NaN: a diverged member, left out and counted
  in the reason). interval: (value, low, high) to use instead of a t-interval
  over per_seed (e.g. a Wilson interval of a rate). The verdict holds only when
  the whole interval is on the claimed side of the threshold, does not hold
  when the whole interval is on the other side, and is 'partly' (reason: the
  interval straddles the threshold) in between; a failed manipulation check
  gives 'not measured (<its reason>)', never a verdict.
  """
  if claim.side not in SIDES:
    raise ValueError(f'{claim.claim_id}: side must be one of {SIDES}, got {claim.side!r}.')
  values = [float(v) for v in per_seed]
  finite = [v for v in values if math.isfinite(v)]
  value, low, high = interval if interval is not None else intervals.t_interval(finite)
  row = dict(world=claim.world, claim_id=claim.claim_id, statement=claim.statement,
             metric=claim.metric, value=_round(value), ci_low=_round(low), ci_high=_round(high),
             n_seeds=len(finite), threshold=f'{claim.side} {claim.threshold:g}',
             control_value='' if control_value is None else _round(control_value),
             manipulation_check='' if check is None else
             f'{"passed" if check.passed else "failed"}: {check.description}')
  diverged = len(values) - len(finite)
  note = f'; {diverged} diverged seed(s) left out' if diverged else ''
  if check is not None and not check.passed:
    return {**row, 'verdict': not_measured(check.reason_if_failed),
            'reason': check.description + note}
  if not finite and interval is None or not math.isfinite(value):
    return {**row, 'verdict': not_measured('no finite measurement'), 'reason': 'no data' + note}
  above = claim.side == '>='
  lo_ok = low >= claim.threshold if above else high <= claim.threshold
  hi_ok = high >= claim.threshold if above else low <= claim.threshold
  spec = '.1f' if max(abs(low), abs(high), abs(value)) >= 1 else '.3f'  # Losses are < 1.
  span = (f'95% interval [{low:{spec}}, {high:{spec}}] (mean {value:{spec}}, {len(finite)} '
          f'seed{"" if len(finite) == 1 else "s"})')
  if lo_ok:
    return {**row, 'verdict': HOLDS, 'reason': f'{span} is {claim.side} {claim.threshold:g}{note}'}
  if not hi_ok:
    return {**row, 'verdict': DOES_NOT_HOLD,
            'reason': f'{span} is on the wrong side of {claim.threshold:g}{note}'}
  return {**row, 'verdict': PARTLY,
          'reason': f'{span} straddles the threshold {claim.threshold:g}{note}'}


def _round(x) -> float | str:
  return '' if x is None or not math.isfinite(float(x)) else round(float(x), 2)
