"""A finished run's record, so rerunning a finished command returns in seconds.

Every phase caches its results, but a rerun would still restore checkpoints and
rebuild populations to reach the end. A run that completed writes
`results/finished_<fingerprint>.json`, the fingerprint being of its config and
of the library's source; the same command with the same config and code then
only lists what the run wrote. Any change to the config or the code, a missing
report, or a deleted record makes the run go through its phases again
(restoring what is cached, recomputing the rest). One record per config, so
the variants sharing a workdir (pcfg_analysis main / mixing / ...) each keep theirs.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Optional

import wrapper_study

RECORD_GLOB = 'results/finished_*.json'


def _source_digest() -> str:
  """sha256 over the library's .py files (names and contents), in a fixed order."""
  h = hashlib.sha256()
  root = pathlib.Path(wrapper_study.__file__).parent
  for path in sorted(root.rglob('*.py')):
    h.update(str(path.relative_to(root)).encode())
    h.update(path.read_bytes())
  return h.hexdigest()


def fingerprint(config) -> str:
  """Of the whole config (its text lists every field) and of the code that runs it."""
  return hashlib.sha256((str(config) + _source_digest()).encode()).hexdigest()


def path(workdir, config) -> pathlib.Path:
  """Where this config's record lives in the workdir."""
  return pathlib.Path(workdir) / 'results' / f'finished_{fingerprint(config)[:16]}.json'


def finished(workdir, config) -> Optional[dict]:
  """The record of an earlier completed run of this config and code, or None."""
  try:
    record = json.loads(path(workdir, config).read_text())
  except (OSError, ValueError):
    return None
  if record.get('fingerprint') != fingerprint(config):
    return None
  if not pathlib.Path(record.get('report', '')).is_file():
    return None
  return record


def write(workdir, config, report) -> None:
  target = path(workdir, config)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_suffix('.tmp')
  tmp.write_text(json.dumps({'fingerprint': fingerprint(config), 'report': str(report),
                             'experiment': config.experiment}, indent=1))
  tmp.replace(target)  # A kill mid-write leaves no record, so the rerun redoes the checks.


def forget(workdir) -> None:
  """Drops every record: the next run goes through its phases (restoring what is cached)."""
  for record in pathlib.Path(workdir).glob(RECORD_GLOB):
    record.unlink()
