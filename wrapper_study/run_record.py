"""A finished run's record, so rerunning a finished command returns in seconds.

Every phase caches its results, but a rerun would still restore checkpoints and
rebuild populations to reach the end. A run that completed writes
`results/finished_<fingerprint>.json`, the fingerprint being of its config and
of the library's source; the same command with the same config and code then
only lists what the run wrote. Any change to the config or the code, a missing
report, or a deleted record makes the run go through its phases again
(restoring what is cached, recomputing the rest), and so does a checkpoint file
that is missing or changed size since. Paths are relative to the workdir, so a
copied workdir is its own. One record per config, so
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


def path(workdir, config, started: Optional[str] = None) -> pathlib.Path:
  """Where this config's record lives in the workdir (started: its fingerprint taken earlier)."""
  name = f'finished_{(started or fingerprint(config))[:16]}.json'
  return pathlib.Path(workdir) / 'results' / name


def _checkpoint_files(workdir: pathlib.Path) -> dict[str, int]:
  """{path relative to the workdir: size} of every file under checkpoints/."""
  root = workdir / 'checkpoints'
  return {str(f.relative_to(workdir)): f.stat().st_size
          for f in sorted(root.rglob('*')) if f.is_file()} if root.is_dir() else {}


def finished(workdir, config) -> Optional[dict]:
  """The record of an earlier completed run of this config and code, or None.

  Paths in the record are relative to the workdir, so a workdir copied or moved elsewhere
  reports its own report.md; its checkpoints must all be there, each file of the size it
  had when the run ended (a missing or truncated file makes the run go through its phases,
  which restore what is intact). Returns the record with 'report' as a path in `workdir`.
  """
  workdir = pathlib.Path(workdir)
  try:
    record = json.loads(path(workdir, config).read_text())
  except (OSError, ValueError):
    return None
  report = record.get('report')
  if (record.get('fingerprint') != fingerprint(config) or not isinstance(report, str)
      or pathlib.Path(report).is_absolute() or not (workdir / report).is_file()):
    return None  # Another config or code, a record of the old absolute form, no report.
  saved = record.get('checkpoints')
  if not isinstance(saved, dict):
    return None
  now = _checkpoint_files(workdir)
  if any(now.get(name) != size for name, size in saved.items()):
    return None
  return {**record, 'report': str(workdir / report)}


def write(workdir, config, report, started: Optional[str] = None) -> None:
  """Records the run as finished: its report (relative to the workdir, where it must lie)
  and the size of every checkpoint file. started: fingerprint(config) taken when the run
  began; the code that ran is the code of that moment, and source edited during a long run
  must not be recorded as if it had run (the rerun then goes through the phases)."""
  workdir = pathlib.Path(workdir)
  started = started or fingerprint(config)
  target = path(workdir, config, started)
  target.parent.mkdir(parents=True, exist_ok=True)
  try:
    relative = str(pathlib.Path(report).resolve().relative_to(workdir.resolve()))
  except ValueError:
    return  # A report outside the workdir: no record, the rerun goes through the phases.
  tmp = target.with_suffix('.tmp')
  tmp.write_text(json.dumps({'fingerprint': started, 'report': relative,
                             'experiment': config.experiment,
                             'checkpoints': _checkpoint_files(workdir)}, indent=1))
  tmp.replace(target)  # A kill mid-write leaves no record, so the rerun redoes the checks.


def forget(workdir) -> None:
  """Drops every record: the next run goes through its phases (restoring what is cached)."""
  for record in pathlib.Path(workdir).glob(RECORD_GLOB):
    record.unlink()
