"""report/agreement.py: a table compared with the paper's, entry by entry (issue 28)."""

import math

from wrapper_study.report import agreement
from wrapper_study.tracr import paper
from wrapper_study.tracr import report as tracr_report

COLUMNS = paper.TABLE3_COLUMNS


def _paper_entries(task='counter'):
  return {(lr, c, col): v for (lr, c), vals in paper.TABLE3[task].items()
          for col, v in zip(COLUMNS, vals)}


def test_the_papers_own_table_agrees_entirely():
  ref = _paper_entries()
  a = agreement.compare(dict(ref), ref, distinct={k[:-1]: 10 for k in ref})
  assert (a.total_within, a.total_entries) == (4 * 28, 4 * 28)
  assert a.pct == 100 and a.n_collapsed == 0 and a.passes(70)
  assert all(a.within[c] == 4 for c in a.entries)


def test_a_shifted_table_scores_less_and_per_cell():
  ref = _paper_entries()
  shifted = {k: v + 10.5 if k[2] == 'c_te0/acc_o_ft' else v for k, v in ref.items()}
  a = agreement.compare(shifted, ref)
  assert a.total_within == 3 * 28 and math.isclose(a.pct, 75.0)
  assert all(w == 3 for w in a.within.values())
  edge = agreement.compare({k: v + 10.0 for k, v in ref.items()}, ref)  # Exactly 10: within.
  assert edge.pct == 100
  missing = dict(ref)
  missing[(0.1, 0, 'c_te1/acc_o_pt')] = float('nan')  # A diverged entry never agrees.
  del missing[(0.1, 0, 'c_te1/acc_o_ft')]
  m = agreement.compare(missing, ref)
  assert m.within[(0.1, 0)] == 2 and m.total_entries == 4 * 28


def test_collapsed_cells_are_flagged_only_where_the_papers_is_not():
  ref = _paper_entries()
  distinct = {k[:-1]: 5 for k in ref}
  distinct[(0.01, 0)] = 1
  distinct[(0.01, 1)] = 2
  distinct[(0.001, 0)] = 3
  a = agreement.compare(dict(ref), ref, distinct=distinct)
  assert {c for c, v in a.collapsed.items() if v} == {(0.01, 0), (0.01, 1)}
  assert a.n_collapsed == 2 and not a.passes(70)
  assert '2 of 28 cells collapsed' in a.line()
  b = agreement.compare(dict(ref), ref, distinct=distinct, paper_collapsed={(0.01, 0): True})
  assert b.n_collapsed == 1


def test_tracr_table3_rows_carry_the_agreement():
  """Rows as table3_rows writes them: per cell paper_within_10, and the report's line."""
  rows = []
  for (lr, c), vals in paper.TABLE3['max_identifier'].items():
    row = dict(program='max_identifier', lr=lr, c_tr=c, n_distinct=7)
    for col, v in zip(COLUMNS, vals):
      row[col], row['paper_' + col] = (v + 20 if lr == 0.1 else v), v
    rows.append(row)
  a = tracr_report.table3_agreement(rows)
  assert (a.total_within, a.total_entries) == (4 * 21, 4 * 28)
  assert '84/112 entries (75.0%) within 10 points' in tracr_report.agreement_line(rows)
  assert tracr_report.agreement_line([dict(lr=1, c_tr=0, n_distinct=3)]) == ''
