"""Claims and verdicts, worded the same way in every world.

A verdict is one of HOLDS, PARTLY, DOES_NOT_HOLD or NOT_MEASURED; a claim that
could not be measured says why (`not measured (<reason>)`) and never holds.
Each world keeps its claims' thresholds in its own `paper.py`.
"""

from __future__ import annotations

from typing import Optional, Sequence

HOLDS = 'holds'
PARTLY = 'partly'
DOES_NOT_HOLD = 'does not hold'
NOT_MEASURED = 'not measured'


def not_measured(reason: str = '') -> str:
  return f'{NOT_MEASURED} ({reason})' if reason else NOT_MEASURED


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
