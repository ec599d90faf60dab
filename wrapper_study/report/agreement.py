"""How closely a table of ours agrees with the paper's, entry by entry (issue 28).

Knows no world: a table is a mapping (cell..., column) -> value, ours and the
paper's keyed alike. An entry agrees when both values are finite and within
`tolerance` points; a missing or non-finite value of ours (a diverged cell)
counts as an entry that does not agree, so a table never scores better by
losing cells. Per cell and in total. A cell is also flagged COLLAPSED when our
models give <= `max_distinct` distinct answers where the paper's cell is not
collapsed: its accuracies then measure a constant answer, and an entry that
agrees there agrees by accident.

Used for the Tracr Table 3 (its report line, a column of
tables/table3_<task>.csv and tables/table3_agreement.csv).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Hashable, Mapping, Optional, Sequence

TOLERANCE = 10.0  # Points (accuracies in %): an entry within this of the paper's agrees.
MAX_DISTINCT = 2  # A cell whose models give <= this many distinct answers collapsed.

Key = tuple  # (cell..., column)


def _finite(v) -> bool:
  try:
    return math.isfinite(float(v))
  except (TypeError, ValueError):
    return False


@dataclasses.dataclass(frozen=True)
class Agreement:
  """Entries within tolerance per cell, and which cells collapsed where the paper's did not."""
  within: dict[Hashable, int]  # cell -> entries within tolerance.
  entries: dict[Hashable, int]  # cell -> entries compared (the paper's entries of the cell).
  collapsed: dict[Hashable, bool]  # cell -> ours collapsed where the paper's is not.
  tolerance: float = TOLERANCE

  @property
  def total_within(self) -> int:
    return sum(self.within.values())

  @property
  def total_entries(self) -> int:
    return sum(self.entries.values())

  @property
  def pct(self) -> float:
    """% of entries within tolerance (NaN for an empty table)."""
    return 100 * self.total_within / self.total_entries if self.total_entries else math.nan

  @property
  def n_collapsed(self) -> int:
    return sum(self.collapsed.values())

  def summary(self) -> dict:
    """One row: entries within tolerance, %, cells and collapsed cells."""
    return dict(within=self.total_within, entries=self.total_entries,
                pct=round(self.pct, 1) if self.total_entries else '',
                cells=len(self.entries), collapsed_cells=self.n_collapsed,
                tolerance=self.tolerance)

  def line(self) -> str:
    """'106/224 entries (47.3%) within 10 points of the paper's; 30 of 56 cells collapsed'."""
    return (f'{self.total_within}/{self.total_entries} entries ({self.pct:.1f}%) within '
            f'{self.tolerance:g} points of the paper\'s; {self.n_collapsed} of '
            f'{len(self.entries)} cells collapsed (<= {MAX_DISTINCT} distinct answers) where the '
            'paper\'s is not')

  def passes(self, min_pct: float) -> bool:
    """A rule of the form '>= min_pct% of entries within tolerance and no cell collapsed'."""
    return self.total_entries > 0 and self.pct >= min_pct and self.n_collapsed == 0


def compare(ours: Mapping[Key, float], paper: Mapping[Key, float], *,
            distinct: Optional[Mapping[Hashable, float]] = None,
            paper_collapsed: Optional[Mapping[Hashable, bool]] = None,
            tolerance: float = TOLERANCE, max_distinct: int = MAX_DISTINCT) -> Agreement:
  """Ours against the paper over the paper's entries.

  ours, paper: (cell..., column) -> value; the cell is the key without its
  last element. distinct: cell -> the fewest distinct answers our models give
  (None: no collapse check). paper_collapsed: cell -> whether the paper's cell
  collapsed (default: none did; the paper reports no such cell).
  """
  within, entries = {}, {}
  for key, p in paper.items():
    if not _finite(p):
      continue
    cell = key[:-1]
    entries[cell] = entries.get(cell, 0) + 1
    o = ours.get(key)
    within[cell] = within.get(cell, 0) + int(
        _finite(o) and abs(float(o) - float(p)) <= tolerance + 1e-9)  # Float rounding.
  collapsed = {}
  for cell in entries:
    d = None if distinct is None else distinct.get(cell)
    ours_collapsed = _finite(d) and float(d) <= max_distinct
    collapsed[cell] = bool(ours_collapsed and not (paper_collapsed or {}).get(cell, False))
  return Agreement(within, entries, collapsed, tolerance)


def from_rows(rows: Sequence[Mapping], cell_fields: Sequence[str], columns: Sequence[str], *,
              paper_prefix: str = 'paper_', distinct_field: Optional[str] = None,
              tolerance: float = TOLERANCE) -> Agreement:
  """compare() over table rows that carry our value in `column` and the paper's in
  `paper_prefix + column` (blank: no paper entry); distinct_field: the row's distinct answers."""
  ours, paper, distinct = {}, {}, {}
  for r in rows:
    cell = tuple(r[f] for f in cell_fields)
    for c in columns:
      if _finite(r.get(paper_prefix + c)):
        paper[cell + (c,)] = float(r[paper_prefix + c])
        ours[cell + (c,)] = r.get(c)
    if distinct_field is not None:
      distinct[cell] = r.get(distinct_field)
  return compare(ours, paper, distinct=distinct if distinct_field else None, tolerance=tolerance)
