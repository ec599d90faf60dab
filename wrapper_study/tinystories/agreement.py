"""The TinyStories run against the paper's Table 1, entry by entry (issue 29).

A row of ours (report.table1_rows: % of generations with a twist, the mean
over replicates) stands for the paper's row of the same deletion protocol and
lr name (eta_M, eta_S) or Not in PT; our reFT points 0 and reft.score_steps for
the paper's 0, 30, 300, 3000 (validate() asks for as many). A paper row with no
counterpart (a protocol or lr name not run) is counted as not compared and
named. Scored by report.agreement (within 10 points); no collapse check: a
twist rate has no "distinct answers".
"""

from __future__ import annotations

from wrapper_study.report import agreement as agreement_lib
from wrapper_study.report import paper_agreement
from wrapper_study.tinystories import paper
from wrapper_study.tinystories import train

NAME = 'Table 1'


def _label(key) -> str:
  return 'Not in PT' if key == paper.NOT_IN_PT else f'{key[0]} ({key[1]})'


def paper_keys(config) -> dict:
  """Our model's run name -> the paper's Table 1 row key it stands for."""
  keys = {train.deletion_name(p, lr): (p, name) for p, lr, name in train.deletion_runs(config)}
  return keys | {paper.NOT_IN_PT: paper.NOT_IN_PT}


def mapping(config, rows) -> dict:
  """Ours keyed as the paper's table: (row key, paper reFT iteration) -> twist %."""
  points = (0,) + tuple(config.reft.score_steps)
  keys = paper_keys(config)
  return {(keys[r['model']], ps): r.get(f'ours @{s}')
          for r in rows if r['model'] in keys
          for s, ps in zip(points, paper.PAPER_TABLE1_POINTS)}


def paper_table() -> dict:
  """The paper's Table 1 keyed as `mapping`."""
  return {(key, ps): v for key, values in paper.PAPER_TABLE1.items()
          for ps, v in zip(paper.PAPER_TABLE1_POINTS, values)}


def summary_rows(config, rows) -> list[dict]:
  """tables/paper_agreement.csv: Table 1 and the total (the same, one table)."""
  ours, ref = mapping(config, rows), paper_table()
  compared = {k: v for k, v in ref.items() if k in ours}
  missing = sorted({k[0] for k in ref if k not in ours}, key=str)
  not_compared = {f'{_label(key)} not run': sum(1 for k in ref if k[0] == key and k not in ours)
                  for key in missing}
  found = agreement_lib.compare(ours, compared) if compared else None
  read_at = (f'our reFT iterations {(0,) + tuple(config.reft.score_steps)} for the paper\'s '
             f'{paper.PAPER_TABLE1_POINTS}')
  return paper_agreement.with_total([paper_agreement.row(
      NAME, found, len(ref), not_compared, read_at, collapse=False)])


def line(config, rows) -> str:
  """The report line beside the verdicts."""
  return paper_agreement.line(summary_rows(config, rows))
