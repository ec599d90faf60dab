"""One row per paper table and one report line: how close a run is to the paper's regime (issue 29).

`report.agreement` scores one table (entries within 10 points, collapsed cells);
this module adds what a world report needs around it: the paper's entries that
have no counterpart at our scale (counted as not compared, and named), a total
over the tables, the CSV rows of tables/paper_agreement.csv and the line printed
beside the verdicts. Knows no world.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

from wrapper_study.report import agreement as agreement_lib

CSV = 'paper_agreement.csv'
COLUMNS = ('table', 'within', 'entries', 'pct', 'cells', 'collapsed_cells', 'paper_entries',
           'not_compared_entries', 'not_compared', 'read_at', 'tolerance')
TOTAL = 'total'


def row(table: str, found: Optional[agreement_lib.Agreement], paper_entries: int,
        not_compared: Mapping[str, int], read_at: str = '', collapse: bool = True) -> dict:
  """A table's CSV row. found None: nothing of ours stands for the table (every entry not
  compared); not_compared: reason -> paper entries it leaves out; collapse False: the world
  has no collapse check (blank, not 0)."""
  s = found.summary() if found is not None else dict(within=0, entries=0, pct='', cells=0,
                                                     collapsed_cells=0)
  return dict(table=table, within=s['within'], entries=s['entries'], pct=s['pct'],
              cells=s['cells'], collapsed_cells=s['collapsed_cells'] if collapse else '',
              paper_entries=paper_entries, not_compared_entries=sum(not_compared.values()),
              not_compared='; '.join(f'{why} ({n} entries)' for why, n in not_compared.items()
                                     if n),
              read_at=read_at, tolerance=agreement_lib.TOLERANCE)


def with_total(rows: Sequence[dict]) -> list[dict]:
  """The rows and a total row over them (pct over every compared entry)."""
  add = lambda k: sum(int(r[k]) for r in rows if r[k] != '')
  within, entries = add('within'), add('entries')
  collapse = any(r['collapsed_cells'] != '' for r in rows)
  total = dict(table=TOTAL, within=within, entries=entries,
               pct=round(100 * within / entries, 1) if entries else '', cells=add('cells'),
               collapsed_cells=add('collapsed_cells') if collapse else '',
               paper_entries=add('paper_entries'), not_compared_entries=add('not_compared_entries'),
               not_compared='', read_at='', tolerance=agreement_lib.TOLERANCE)
  return list(rows) + [total]


def _pct(r) -> str:
  return f"{r['within']}/{r['entries']} ({float(r['pct']):.1f}%)" if r['entries'] else 'none'


def line(rows: Sequence[dict]) -> str:
  """'Agreement with the paper's tables (entries within 10 points): Table 5: 40/96 (41.7%) ...'."""
  parts = []
  for r in rows:
    if r['table'] == TOTAL:
      continue
    if not r['entries']:
      parts.append(f"{r['table']}: not compared ({r['not_compared']})")
      continue
    extra = [f"{r['collapsed_cells']} of {r['cells']} cells collapsed"] if r[
        'collapsed_cells'] not in ('', 0) else []
    if r['not_compared_entries']:
      extra.append(f"not compared: {r['not_compared']}")
    at = f" at {r['read_at']}" if r['read_at'] else ''
    parts.append(f"{r['table']}{at}: {_pct(r)}" + (f" ({'; '.join(extra)})" if extra else ''))
  total = next((r for r in rows if r['table'] == TOTAL), None)
  tol = f'{agreement_lib.TOLERANCE:g}'
  text = f"**Agreement with the paper's tables** (entries within {tol} points): " + '. '.join(parts)
  if total is not None:
    text += (f". In total {_pct(total)}; {total['not_compared_entries']} of the paper's "
             f"{total['paper_entries']} entries not compared")
  return text + '. (tables/' + CSV + ')'


def finite(v) -> bool:
  try:
    return math.isfinite(float(v))
  except (TypeError, ValueError):
    return False
