"""Behavioural anchors of the learning-rate labels (issue 28), fixed before any run.

The paper calls 1e-1, 1e-2, 1e-3, 1e-4 large, medium, small and very small
(eta_L, eta_M, eta_S, eta_VS) because of what they do to the compiled models
(its Table 3 at C_Tr=0 and Figs 42, 44): eta_L and eta_M learn to count b,
eta_S does not, eta_VS keeps the Max-identifier's sorting. At another scale
(fewer iterations, another batch or clipping) a label can stop meaning its
behaviour, and the claims that name it then test something else. So each
label is checked against its behaviour on the C_Tr=0 models of the grid, and
the report's calibration section says per anchor whether it holds, as the PCFG
calibration does. Nothing is chosen from the paper's numbers; they are printed
beside ours.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from wrapper_study.tracr import paper


@dataclasses.dataclass(frozen=True)
class Anchor:
  name: str  # What the label should do.
  lr: float  # The label's learning rate.
  metric: str  # The member-row column read (models fine-tuned at C_Tr=0, mean over seeds).
  op: str  # '>=' or '<': the side of the threshold that holds.
  threshold: float
  paper_value: str  # The paper's number (Table 3, C_Tr=0) or behaviour, for the reader.


_FT0 = f'end/{paper.ANTI}/acc_o_ft'
# Per task (its Task.paper_claims); fixed before any run (issue 28).
ANCHORS = {
    'counter': (
        Anchor('eta_L learns O_FT', paper.LR_L, _FT0, '>=', paper.HIGH, '100'),
        Anchor('eta_M learns O_FT', paper.LR_M, _FT0, '>=', paper.HIGH, '98.8'),
        Anchor('eta_S does not learn O_FT', paper.LR_S, _FT0, '<', paper.CANNOT_LEARN, '27.2'),
    ),
    'max_identifier': (
        Anchor('eta_VS keeps the sorting', paper.LR_VS, 'attn0_corr', '>=',
               paper.SORTING_KEPT / 100, 'kept (Figs 44, 52)'),
    ),
}
COLUMNS = ('anchor', 'lr', 'metric', 'value', 'rule', 'paper', 'n_seeds', 'holds')


def _num(v) -> float:
  try:
    return float(v)
  except (TypeError, ValueError):
    return math.nan


def check(task_claims: str, member_rows: Sequence[Mapping]) -> list[dict]:
  """One row per anchor of the task: our mean over the non-diverged C_Tr=0 seeds at the
  label's lr, and whether it holds ('yes', 'NO', or 'not measured': lr not in the grid,
  every seed diverged, or the column missing)."""
  rows = []
  for a in ANCHORS.get(task_claims or '', ()):
    vals = [_num(r.get(a.metric)) for r in member_rows
            if r.get('kind') == 'fine-tuned' and _num(r.get('lr')) == a.lr
            and _num(r.get('c_tr')) == 0.0 and str(r.get('diverged')) in ('False', 'false', '0')]
    vals = [v for v in vals if math.isfinite(v)]
    value = float(np.mean(vals)) if vals else math.nan
    holds = ('not measured' if not vals else
             'yes' if (value >= a.threshold if a.op == '>=' else value < a.threshold) else 'NO')
    rows.append(dict(anchor=a.name, lr=a.lr, metric=a.metric,
                     value=round(value, 3) if vals else '', rule=f'{a.op} {a.threshold:g}',
                     paper=a.paper_value, n_seeds=len(vals), holds=holds))
  return rows


def verdict(rows: Sequence[Mapping]) -> str:
  """One sentence for the report: every anchor holds, or which fail."""
  if not rows:
    return 'No learning-rate anchor is defined for this task.'
  bad = [r['anchor'] for r in rows if r['holds'] != 'yes']
  if not bad:
    return ('Every learning-rate anchor holds: the labels eta_L..eta_VS mean at this scale the '
            'behaviour they name in the paper.')
  return ('FAILS: ' + '; '.join(bad) + '. At this scale those labels do not behave as the '
          'paper\'s: the claims that name them test another regime (read their verdicts so).')
