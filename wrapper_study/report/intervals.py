"""Intervals that decide verdicts: Student-t over seeds, Wilson for rates of n samples.

A verdict never rests on a bare `a <= b`: with 3 seeds the normal 1.96 would
draw a band less than half as wide as the data support, and 64 generations
leave a rate uncertain by about +-12 points.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Two-sided 95% Student-t quantiles by degrees of freedom.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
Z975 = 1.959964


def t_quantile_975(df: int) -> float:
  """The tabulated quantile at the largest df <= the given one (conservative)."""
  if df < 1:
    return 0.0
  if df > 30:
    return Z975
  return _T975[max(k for k in _T975 if k <= df)]


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
  """(mean, low, high): a 95% t confidence interval of the mean over seeds.

  One value gives a zero-width interval at the value (n_seeds says how little
  that is worth); NaNs (diverged members) are dropped by the caller, not here.
  """
  v = np.asarray(values, float)
  if v.size == 0:
    return math.nan, math.nan, math.nan
  mean = float(v.mean())
  if v.size < 2:
    return mean, mean, mean
  half = t_quantile_975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
  return mean, mean - half, mean + half


def wilson_interval(k: int, n: int) -> tuple[float, float, float]:
  """(rate %, low %, high %): the 95% Wilson score interval of k successes in n."""
  if n <= 0:
    return math.nan, math.nan, math.nan
  p = k / n
  centre = (p + Z975 ** 2 / (2 * n)) / (1 + Z975 ** 2 / n)
  half = Z975 * math.sqrt(p * (1 - p) / n + Z975 ** 2 / (4 * n * n)) / (1 + Z975 ** 2 / n)
  return 100 * p, 100 * max(centre - half, 0.0), 100 * min(centre + half, 1.0)


def per_seed(seeds: Sequence[int], values: Sequence[float], reduce=np.mean) -> list[float]:
  """One value per independent seed, in seed order: the members of one seed (several C_Tr,
  lrs or reFT runs of the same seed's model) reduced by `reduce` first, so a t-interval is
  over seeds, never over pseudo-replicates. NaN members (diverged) are dropped within their
  seed; a seed with none finite is NaN (judge counts it as diverged)."""
  by = {}
  for s, v in zip(seeds, values):
    by.setdefault(int(s), []).append(float(v))
  out = []
  for s in sorted(by):
    finite = [v for v in by[s] if math.isfinite(v)]
    out.append(float(reduce(finite)) if finite else math.nan)
  return out
