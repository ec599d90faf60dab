"""Claims and verdicts, worded the same way in every world.

A verdict starts with one of HOLDS, INCONCLUSIVE, DOES_NOT_HOLD, NOT_MEASURED or
BY_CONSTRUCTION (LEGEND defines them; every world's report shows it on its
first screen). A claim that could not be measured says why (`not measured
(<reason>)`) and never holds; nothing is decided from fewer than MIN_SEEDS
independent seeds (`not measured (1 seed)`) or from a comparison whose arms
both ran out of budget (`not measured (censored: ...)`). A claim its
calibration chose the outcome of is `by construction` and is not counted among
the verdicts (`counted`). Each world keeps its claims' thresholds in its own
`paper.py`.

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
# The 95% interval straddles the threshold: the run cannot tell (issue 29: "partly" read as
# partial support, which it never was).
INCONCLUSIVE = 'inconclusive'
PARTLY = INCONCLUSIVE  # The old name, kept for callers.
DOES_NOT_HOLD = 'does not hold'
NOT_MEASURED = 'not measured'
BY_CONSTRUCTION = 'by construction'
VERDICTS = (HOLDS, INCONCLUSIVE, DOES_NOT_HOLD, NOT_MEASURED, BY_CONSTRUCTION)
MIN_SEEDS = 2  # Independent seeds a decisive verdict needs (one gives no spread to judge).
LEGEND = ('Verdicts: **holds** / **does not hold**: the whole 95% interval over independent '
          'seeds is on the claimed / the other side of the threshold; **inconclusive**: the '
          'interval straddles the threshold (neither; not partial support); **not measured '
          '(why)**: the manipulation check failed, the cell is not in the grid, fewer than '
          f'{MIN_SEEDS} seeds, or both arms of a comparison were censored (neither reached the '
          'level within the budget); **by construction**: the calibration chose the quantity '
          'the claim tests, so it says nothing and is not counted among the verdicts.')


def not_measured(reason: str = '') -> str:
  return f'{NOT_MEASURED} ({reason})' if reason else NOT_MEASURED


def by_construction(reason: str) -> str:
  return f'{BY_CONSTRUCTION} ({reason})'


def kind_of(verdict_text: str) -> str:
  """Which of VERDICTS a verdict text starts with ('' if none)."""
  return next((v for v in VERDICTS if str(verdict_text).startswith(v)), '')


def counted(rows) -> list[dict]:
  """The rows that count as verdicts: every row but the `by construction` ones."""
  return [r for r in rows if kind_of(r['verdict']) != BY_CONSTRUCTION]


def tally(rows) -> str:
  """'k holds, k inconclusive, ... of n counted (m by construction, not counted)'."""
  kinds = [kind_of(r['verdict']) for r in rows]
  parts = [f'{kinds.count(v)} {v}' for v in VERDICTS[:4] if kinds.count(v)]
  built = kinds.count(BY_CONSTRUCTION)
  return (f'{", ".join(parts) or "none"} of {len(kinds) - built} counted verdicts'
          + (f' ({built} by construction, not counted)' if built else ''))


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
  # The matched control in one line: what it is, and that it has the treatment's lr range,
  # budget and evaluation grid (shown in the report beside the statement; not a CSV column).
  control: str = ''


@dataclasses.dataclass(frozen=True)
class Check:
  """A manipulation check: did fine-tuning change what the claim is about?"""
  passed: bool
  description: str  # What was checked and measured, e.g. 'Acc O_PT fell 45.1 >= 30 points'.
  reason_if_failed: str = 'fine-tuning did not change what the claim is about'


# ------------------------------------------------ censored iteration counts ----
# A revival / recovery that never reached its level within the budget is censored: its
# iteration count is only a lower bound (>= budget + 1). A per-seed value built from one is
# marked, so `judge` decides from the bound and never from `never - never = 0`.
EXACT, LOWER, UPPER, CENSORED = 'exact', 'lower', 'upper', 'censored'


def iterations(its: float, never: float) -> tuple[float, str]:
  """(iterations to the level, EXACT or LOWER: never reached within the budget)."""
  return float(its), LOWER if its >= never else EXACT


def iteration_gap(treatment: float, control: float, never: float,
                  log2: bool = False) -> tuple[float, str]:
  """(control minus treatment iterations, its kind): > 0 when the treatment is faster.

  log2: the gap in doublings, log2(control / treatment) (a threshold read off a log-scale
  plot is compared as a ratio). Both arms never reached the level: CENSORED (no value);
  only the control: the gap is a LOWER bound; only the treatment: an UPPER bound.
  """
  t_out, c_out = treatment >= never, control >= never
  f = (lambda x: math.log2(max(float(x), 1.0))) if log2 else float
  value = f(control) - f(treatment)
  if t_out and c_out:
    return math.nan, CENSORED
  return value, LOWER if c_out else UPPER if t_out else EXACT


def judge(claim: Claim, per_seed: Sequence[float], *, check: Optional[Check] = None,
          control_value: Optional[float] = None, interval=None,
          kinds: Optional[Sequence[str]] = None, budget: Optional[int] = None,
          min_seeds: int = MIN_SEEDS) -> dict:
  """The claims.csv row of one claim: value, 95% interval, verdict and its reason.

  per_seed: the metric per independent seed (NaN: a diverged member, left out and
  counted in the reason; members of one seed are reduced to one value first,
  intervals.per_seed). interval: (value, low, high) to use instead of a
  t-interval over per_seed (e.g. the worst cell's). kinds: per seed EXACT,
  LOWER / UPPER (a bound from one censored arm) or CENSORED (both arms: no
  value); budget: the iterations they ran. min_seeds: 1 only where the interval
  is over samples of one object that has no seeds (a classifier's test set).

  Holds only when the whole interval is on the claimed side of the threshold
  (and no bound could move it back), does not hold when the whole interval is
  on the other side (and no bound could move it over), inconclusive in
  between; a failed manipulation check gives 'not measured (<its reason>)';
  fewer than min_seeds seeds 'not measured (1 seed)'; every seed censored
  'not measured (censored: neither revived within <budget>)'.
  """
  if claim.side not in SIDES:
    raise ValueError(f'{claim.claim_id}: side must be one of {SIDES}, got {claim.side!r}.')
  kinds = list(kinds) if kinds is not None else [EXACT] * len(per_seed)
  if len(kinds) != len(per_seed):
    raise ValueError(f'{claim.claim_id}: {len(kinds)} kinds for {len(per_seed)} seeds.')
  censored = sum(k == CENSORED for k in kinds)
  pairs = [(float(v), k) for v, k in zip(per_seed, kinds) if k != CENSORED]
  finite = [v for v, _ in pairs if math.isfinite(v)]
  used = {k for v, k in pairs if math.isfinite(v)}
  value, low, high = interval if interval is not None else intervals.t_interval(finite)
  row = dict(world=claim.world, claim_id=claim.claim_id, statement=claim.statement,
             metric=claim.metric, value=_round(value), ci_low=_round(low), ci_high=_round(high),
             n_seeds=len(finite), threshold=f'{claim.side} {claim.threshold:g}',
             control_value='' if control_value is None else _round(control_value),
             manipulation_check='' if check is None else
             f'{"passed" if check.passed else "failed"}: {check.description}')
  diverged = len(pairs) - len(finite)
  note = f'; {diverged} diverged seed(s) left out' if diverged else ''
  if censored:
    note += (f'; {censored} seed(s) censored in both arms (neither reached the level within '
             f'{budget if budget is not None else "the budget"}) left out')
  if check is not None and not check.passed:
    return {**row, 'verdict': not_measured(check.reason_if_failed),
            'reason': check.description + note}
  if not finite and censored:
    within = budget if budget is not None else 'the budget'
    return {**row, 'verdict': not_measured(f'censored: neither revived within {within}'),
            'reason': f'every seed censored in both arms{note}'}
  if not finite and interval is None or not math.isfinite(value):
    return {**row, 'verdict': not_measured('no finite measurement'), 'reason': 'no data' + note}
  above = claim.side == '>='
  lo_ok = low >= claim.threshold if above else high <= claim.threshold
  hi_ok = high >= claim.threshold if above else low <= claim.threshold
  spec = '.1f' if max(abs(low), abs(high), abs(value)) >= 1 else '.3f'  # Losses are < 1.
  span = (f'95% interval [{low:{spec}}, {high:{spec}}] (mean {value:{spec}}, {len(finite)} '
          f'seed{"" if len(finite) == 1 else "s"})')
  if len(finite) < min_seeds:
    n = len(finite)
    return {**row, 'verdict': not_measured(f'{n} seed' if n == 1 else f'{n} seeds'),
            'reason': f'a single observation, not a verdict: {span}; needs >= {min_seeds} '
                      f'independent seeds{note}'}
  # A bound from a censored arm: LOWER (true >= value) can only raise the value, UPPER lower it.
  for_claim, against = (LOWER, UPPER) if above else (UPPER, LOWER)
  bound_note = (f'; {sum(k != EXACT for _, k in pairs)} seed value(s) are bounds from one '
                'censored arm' if used - {EXACT} else '')
  if lo_ok and against not in used and not censored:
    return {**row, 'verdict': HOLDS,
            'reason': f'{span} is {claim.side} {claim.threshold:g}{bound_note}{note}'}
  if not hi_ok and for_claim not in used:
    return {**row, 'verdict': DOES_NOT_HOLD,
            'reason': f'{span} is on the wrong side of {claim.threshold:g}{bound_note}{note}'}
  if lo_ok or not hi_ok:  # Decisive on the values, but a bound or a censored seed could move it.
    why = ('a seed censored in both arms could be against the claim' if lo_ok and censored
           else 'a censored arm\'s bound could move it across')
    return {**row, 'verdict': INCONCLUSIVE,
            'reason': f'{span} is on one side of {claim.threshold:g}, but {why}{bound_note}{note}'}
  return {**row, 'verdict': INCONCLUSIVE,
          'reason': f'{span} straddles the threshold {claim.threshold:g}{bound_note}{note}'}


def _round(x) -> float | str:
  return '' if x is None or not math.isfinite(float(x)) else round(float(x), 2)
