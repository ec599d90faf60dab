"""Reverse fine-tuning read-outs: when does a capability come back, in one table schema.

Every world writes its reFT table with `REVIVAL_COLUMNS`, so a sweep can join
Tracr and PCFG revival rows. A member's "revival" is the first evaluated step at
which its Acc O_PT reaches the threshold.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

DIVERGED = 'diverged'  # A member whose params went NaN/inf; also report.tables.DIVERGED.

REVIVAL_COLUMNS = ('task', 'source', 'c_tr', 'reft_lr', 'n_seeds', 'acc_o_pt_start',
                   'acc_o_pt_end', 'revived', 'iters_to_revival_median', 'iters_to_revival_each')


def revival_step(steps, acc_S, threshold: float) -> Optional[int]:
  """First evaluated step with accuracy >= threshold, or None."""
  hit = np.flatnonzero(np.asarray(acc_S) >= threshold)
  return int(np.asarray(steps)[hit[0]]) if hit.size else None


def _c_tr(m) -> str | float:
  return '' if m.c_tr is None else m.c_tr


def revival_rows(task: str, members: Sequence, steps, acc_SxP, threshold: float,
                 sort_key: Callable = str) -> list[dict]:
  """One row per (source, C_Tr, reFT lr) group of members (seeds pooled).

  members: population.Member-like (source, c_tr, lr); acc_SxP: Acc O_PT (%) at
  each evaluated step (rows) of each member (columns).
  """
  acc_SxP = np.asarray(acc_SxP)
  groups = sorted({(m.source, _c_tr(m), m.lr) for m in members}, key=sort_key)
  rows = []
  for source, c_tr, lr in groups:
    idx = [i for i, m in enumerate(members) if (m.source, _c_tr(m), m.lr) == (source, c_tr, lr)]
    # A diverged member (NaN curve) is marked, and left out of the means.
    ok = [i for i in idx if np.isfinite(acc_SxP[:, i]).any()]
    revived = [revival_step(steps, acc_SxP[:, i], threshold) if i in ok else DIVERGED
               for i in idx]
    done = [r for r in revived if r not in (None, DIVERGED)]
    mean = lambda row: round(float(np.nanmean(acc_SxP[row, ok])), 1) if ok else DIVERGED
    diverged = f' ({len(idx) - len(ok)} diverged)' if len(ok) < len(idx) else ''
    rows.append(dict(task=task, source=source, c_tr=c_tr, reft_lr=lr, n_seeds=len(idx),
                     acc_o_pt_start=mean(0), acc_o_pt_end=mean(-1),
                     revived=f'{len(done)}/{len(idx)}{diverged}',
                     iters_to_revival_median=float(np.median(done)) if done else '',
                     iters_to_revival_each=' '.join('-' if r is None else str(r)
                                                    for r in revived)))
  return rows
