"""Issue 29, the shared layer: verdicts a referee would sign (points 1-4).

Each test feeds `report.claims.judge` the situation the issue found scored as a result: one
seed, both arms censored, members of one seed, an interval straddling the threshold. The
per-world points (5-11) are tested beside each world's claims (test_tracr_claims.py,
test_pcfg_claims.py, test_tinystories_claims.py: `issue 29` in their docstrings).
"""

import math

import pytest

from wrapper_study.report import claims
from wrapper_study.report import intervals

HIGH = claims.Claim('w', 'high', 'learns', 'Acc %', 90.0, '>=')
FASTER = claims.Claim('w', 'faster', 'reFT faster', 'iterations', 1.0, '>=')


def test_one_seed_is_not_a_verdict():
  """Point 1: one seed gave a zero-width interval and 'does not hold' (PCFG P2, -4.5)."""
  row = claims.judge(HIGH, [40.0])
  assert row['verdict'] == claims.not_measured('1 seed'), row
  assert 'a single observation' in row['reason'] and row['n_seeds'] == 1
  row = claims.judge(HIGH, [40.0, float('nan'), float('nan')])  # Two diverged: one left.
  assert row['verdict'] == claims.not_measured('1 seed'), row
  assert claims.judge(HIGH, [40.0, 41.0])['verdict'] == claims.DOES_NOT_HOLD
  # A rate of one object's samples (no seeds to have) says so explicitly.
  assert claims.judge(HIGH, [], interval=(95.0, 92.0, 97.0), min_seeds=0)['verdict'] == \
      claims.HOLDS


def test_both_arms_censored_is_not_measured():
  """Point 2: neither arm revived within 500: the gap was 501 - 501 = 0, 'does not hold'."""
  never = 501
  gaps = [claims.iteration_gap(never, never, never) for _ in range(3)]
  assert all(k == claims.CENSORED and math.isnan(v) for v, k in gaps)
  row = claims.judge(FASTER, [v for v, _ in gaps], kinds=[k for _, k in gaps], budget=500)
  assert row['verdict'] == claims.not_measured('censored: neither revived within 500'), row


def test_one_arm_censored_is_decided_from_the_bound():
  """Point 2: only the control censored: the gap is a lower bound, enough to hold; only the
  treatment censored: an upper bound, enough to fail; a bound never decides the other way."""
  never = 501
  lower = [claims.iteration_gap(t, never, never) for t in (10, 20, 15)]
  assert {k for _, k in lower} == {claims.LOWER}
  row = claims.judge(FASTER, [v for v, _ in lower], kinds=[k for _, k in lower], budget=500)
  assert row['verdict'] == claims.HOLDS and 'bounds' in row['reason'], row
  upper = [claims.iteration_gap(never, c, never) for c in (10, 20, 15)]
  row = claims.judge(FASTER, [v for v, _ in upper], kinds=[k for _, k in upper], budget=500)
  assert row['verdict'] == claims.DOES_NOT_HOLD, row
  # A lower bound below the threshold says nothing: the true gap may be above it.
  row = claims.judge(FASTER, [-5.0, -6.0, -7.0], kinds=[claims.LOWER] * 3)
  assert row['verdict'] == claims.INCONCLUSIVE, row
  # A seed censored in both arms may be against the claim: the rest cannot make it hold.
  row = claims.judge(FASTER, [400.0, 410.0, math.nan],
                     kinds=[claims.EXACT, claims.EXACT, claims.CENSORED], budget=500)
  assert row['verdict'] == claims.INCONCLUSIVE and 'censored' in row['reason'], row
  assert claims.iteration_gap(20, 80, never, log2=True)[0] == pytest.approx(2.0)


def test_members_of_one_seed_are_one_value():
  """Point 3: C_Tr 0 and 1 of one seed went into one t-interval as two seeds."""
  seeds, values = [0, 0, 1, 1, 2, 2], [10.0, 30.0, 12.0, 28.0, 11.0, 29.0]
  per = intervals.per_seed(seeds, values)
  assert per == pytest.approx([20.0, 20.0, 20.0])
  pseudo, honest = claims.judge(HIGH, values), claims.judge(HIGH, per)
  assert pseudo['n_seeds'] == 6 and honest['n_seeds'] == 3
  kept, diverged = intervals.per_seed([0, 0, 1], [5.0, float('nan'), float('nan')])
  assert kept == 5.0 and math.isnan(diverged)  # A seed with no finite member stays NaN.
  assert intervals.per_seed([0, 0], [1.0, 3.0], max) == [3.0]


def test_a_straddling_interval_is_inconclusive_and_the_legend_says_so():
  """Point 4: 'partly' read as partial support; it is an interval that straddles."""
  row = claims.judge(HIGH, [80.0, 99.0, 95.0])
  assert row['verdict'] == claims.INCONCLUSIVE == 'inconclusive'
  assert 'straddles' in row['reason']
  assert 'inconclusive' in claims.LEGEND and 'straddles' in claims.LEGEND
  assert 'by construction' in claims.LEGEND and 'not counted' in claims.LEGEND


def test_every_verdict_starts_with_a_defined_word_and_by_construction_is_not_counted():
  rows = [claims.judge(HIGH, v) for v in ([95, 96, 97], [10, 11, 12], [80, 99, 95], [50])]
  rows.append({'verdict': claims.by_construction('eta_S chosen on this quantity')})
  assert [claims.kind_of(r['verdict']) for r in rows] == [
      claims.HOLDS, claims.DOES_NOT_HOLD, claims.INCONCLUSIVE, claims.NOT_MEASURED,
      claims.BY_CONSTRUCTION]
  assert len(claims.counted(rows)) == 4
  assert claims.tally(rows) == ('1 holds, 1 inconclusive, 1 does not hold, 1 not measured of 4 '
                                'counted verdicts (1 by construction, not counted)')
