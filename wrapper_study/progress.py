"""Progress with ETA for the stretches that are not training loops.

Training loops log `step i/n ... ETA` (metrics.ProgressLogger); maps, pruning
chunks, probes, generation and evaluation loops log `what: i/n, ETA 1m05s` here,
at most every few seconds, so no phase longer than that is silent.
"""

from __future__ import annotations

import time
from typing import Optional

from absl import logging

from wrapper_study.metrics import format_duration


class Progress:
  """`what: i/n, ETA` lines for a loop that is not a training loop (maps, pruning chunks, ...).

  Logs at most every `every_s` seconds, and a last line if the loop took longer than that.
  """

  def __init__(self, what: str, total: int, every_s: float = 5.0):
    self.what, self.total, self.every_s, self.done = what, int(total), every_s, 0
    self._t0 = self._last = time.monotonic()

  def update(self, n: int = 1) -> Optional[str]:
    self.done += n
    now = time.monotonic()
    end = self.done >= self.total
    if now - self._last < self.every_s and not (end and now - self._t0 >= self.every_s):
      return None
    self._last = now
    rate = self.done / max(now - self._t0, 1e-9)
    eta = format_duration((self.total - self.done) / rate) if rate > 0 else '?'
    line = f'{self.what}: {self.done}/{self.total}, ' + (
        f'took {format_duration(now - self._t0)}' if end else f'ETA {eta}')
    logging.info('%s', line)
    return line


def progress(items, what: str, total: Optional[int] = None, every_s: float = 5.0):
  """Yields items, logging `what: i/n, ETA` through a Progress."""
  items = list(items) if total is None else items
  bar = Progress(what, len(items) if total is None else total, every_s)
  for item in items:
    yield item
    bar.update()
