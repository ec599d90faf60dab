"""Compares a smoke run's tables/*.csv with the values recorded before the restructuring.

The record (tests/data/smoke_tables_before_move/<study>/) was written by each
study's `:smoke` config at commit 1bf17ce, the last commit before the code was
moved into world subpackages (timing tables left out: they are wall time).
The move must not change a number. Columns that were renamed to the shared
reverse fine-tuning schema (`analysis/reft.py`) are compared under their new
names; columns new since the record are ignored.
"""

import math
import pathlib

from wrapper_study.report import tables

RECORD = pathlib.Path(__file__).resolve().parent / 'data' / 'smoke_tables_before_move'

# study -> table stem -> {old column: new column}.
RENAMED = {
    'tracr_study': {f'reft_{p}': {'program': 'task'} for p in ('counter', 'max_identifier')},
    'pcfg_analysis': {'analysis_main_reft': {'median_iters_to_revival': 'iters_to_revival_median',
                                             'iters_per_seed': 'iters_to_revival_each',
                                             'final_acc_o_pt': 'acc_o_pt_end'}},
}


def _same(a: str, b: str) -> bool:
  if a == b:
    return True
  try:
    x, y = float(a), float(b)
  except ValueError:
    return False
  return math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(x) and math.isnan(y))


def differences(study: str, tables_dir) -> list[str]:
  """Every recorded value the run's tables do not reproduce ([] when all match)."""
  out = []
  for recorded in sorted((RECORD / study).glob('*.csv')):
    path = pathlib.Path(tables_dir) / recorded.name
    if not path.exists():
      out.append(f'{recorded.name}: missing')
      continue
    renamed = RENAMED.get(study, {}).get(recorded.stem, {})
    old, new = tables.read_csv(recorded), tables.read_csv(path)
    if len(old) != len(new):
      out.append(f'{recorded.name}: {len(new)} rows, recorded {len(old)}')
      continue
    for i, (o, n) in enumerate(zip(old, new)):
      for col, value in o.items():
        col_new = renamed.get(col, col)
        if col_new not in n:
          out.append(f'{recorded.name} row {i}: column {col!r} missing')
        elif not _same(value, n[col_new]):
          out.append(f'{recorded.name} row {i} {col}: {n[col_new]!r}, recorded {value!r}')
  return out
