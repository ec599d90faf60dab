"""Sweeps: a grid of configs of one experiment, run locally or on SLURM.

A sweep is a base config spec ('configs/tracr_study.py:smoke'), a grid (dotted
config field -> values; runs are the cartesian product) and fixed overrides.
Every run is one `launch/main.py` process in its own workdir,
sweep_dir/runs/<name>, logging to log.txt there. The run's process exiting 0
with a report.md leaves a DONE marker; relaunching the sweep skips those runs
and reruns the rest, which resume from their own checkpoints. A failing run
leaves FAILED (its one-line reason and the log's tail) and the others go on. Finished
runs' tables/*.csv are then gathered into sweep_dir/tables/, with the run's
grid values as extra columns, and sweep_dir/report.md links every run.

Backends: 'local' (subprocesses, max_parallel at a time), 'submitit' (SLURM
through submitit.AutoExecutor; the `slurm` options go to update_parameters)
and 'submitit_local' (submitit.LocalExecutor: the same job path on this
machine, for tests).
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import datetime
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

from absl import logging
import ml_collections

from wrapper_study.report import tables
from wrapper_study.sweep_grid import SweepError, display, expand, flag_literal, load_spec, run_name  # noqa: F401  (the public API)
from wrapper_study.sweep_grid import absolute_spec, leaf_fields, parent_of

REPO = pathlib.Path(__file__).resolve().parents[1]
MAIN = ('-m', 'launch.main')  # The installed binary: runs from a checkout or a pip install.
BACKENDS = ('local', 'submitit', 'submitit_local')
DONE = 'DONE'
FAILED = 'FAILED'
LOG = 'log.txt'
_TAIL_LINES = 30  # Log lines copied into FAILED.
# submitit's shared parameters; any other `slurm` key is SLURM-only.
_SUBMITIT_GENERIC = ('name', 'timeout_min', 'mem_gb', 'nodes', 'cpus_per_task',
                     'gpus_per_node', 'tasks_per_node', 'stderr_to_stdout')
# LocalExecutor kills a job after timeout_min, 2 by default: too short for a run.
_LOCAL_TIMEOUT_MIN = 24 * 60


@dataclasses.dataclass(frozen=True)
class Run:
  """One point of the grid: its name, workdir and config overrides."""
  name: str
  workdir: pathlib.Path
  base: str  # Config spec 'path[:arg]', path absolute.
  values: tuple[tuple[str, Any], ...]  # Grid field -> value, in grid order.
  flags: tuple[tuple[str, str], ...]  # Field -> flag literal: fixed, then grid.


@dataclasses.dataclass
class Sweep:
  base: str  # Config spec, e.g. 'configs/tracr_study.py:smoke'.
  sweep_dir: pathlib.Path
  grid: Mapping[str, Sequence[Any]]  # Dotted field -> values; order sets names.
  fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  slurm: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Summary:
  """What one launch did with each run."""
  done: list[Run] = dataclasses.field(default_factory=list)
  skipped: list[Run] = dataclasses.field(default_factory=list)  # Finished earlier.
  failed: list[Run] = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    return not self.failed

  def text(self) -> str:
    lines = [f'Sweep: {len(self.done)} done, {len(self.skipped)} skipped (finished earlier), '
             f'{len(self.failed)} failed.']
    lines += [f'  done     {r.name}: {r.workdir / "report.md"}' for r in self.done]
    lines += [f'  skipped  {r.name}: {r.workdir / "report.md"}' for r in self.skipped]
    lines += [f'  FAILED   {r.name}: {r.workdir / FAILED} (log: {r.workdir / LOG})'
              for r in self.failed]
    return '\n'.join(lines)


def command(run: Run) -> list[str]:
  """The run's process, started in REPO."""
  return [sys.executable, *MAIN, f'--config={run.base}', f'--workdir={run.workdir}',
          *[f'--config.{field}={literal}' for field, literal in run.flags]]


def plan(sweep: Sweep) -> list[Run]:
  """Validates the sweep against its base config (no run starts) and names its runs."""
  base = absolute_spec(sweep.base)
  config = load_spec(base)
  if not isinstance(config, ml_collections.ConfigDict):
    raise SweepError(f'{sweep.base!r}: get_config() returned {type(config).__name__}, '
                     'not a ConfigDict.')
  both = set(sweep.grid) & set(sweep.fixed)
  if both:
    raise SweepError(f'Fields {sorted(both)} are in both grid and fixed; keep each in one.')
  combos = expand(sweep.grid)
  # Setting every value on a fresh copy catches unknown fields and wrong types
  # now rather than as one failed run per grid point. Fresh: a None field takes
  # the type of the first value set.
  config.unlock()
  types = {}
  values = [('fixed', f, v) for f, v in sweep.fixed.items()]
  values += [('grid', f, v) for f, vs in sweep.grid.items() for v in vs]
  for where, field, value in values:
    parent, key = parent_of(copy.deepcopy(config), field)
    types.setdefault(field, parent.get_type(key))  # The base's type parses the flag.
    if types[field] is type(None):
      raise SweepError(f'Field {field!r} is None in the base config, and ml_collections '
                       'cannot override a None field from the command line; declare it '
                       'with ml_collections.config_dict.placeholder(type).')
    try:
      parent[key] = value
    except (TypeError, ValueError) as e:
      raise SweepError(f'{where} value {field}={value!r} does not fit the field '
                       f'(type {types[field].__name__}): {e}') from None
  fixed_flags = tuple((f, flag_literal(v, types[f])) for f, v in sweep.fixed.items())
  runs, seen = [], {}
  for overrides in combos:
    name = run_name(overrides)
    if name in seen:
      raise SweepError(f'Runs {seen[name]} and {overrides} get the same name {name!r}; '
                       'the grid repeats a value.')
    seen[name] = overrides
    runs.append(Run(
        name=name,
        workdir=pathlib.Path(sweep.sweep_dir).resolve() / 'runs' / name,
        base=base,
        values=tuple(overrides.items()),
        flags=fixed_flags + tuple((f, flag_literal(v, types[f])) for f, v in overrides.items())))
  return runs


# --- Running one run (also the submitit job: must stay a picklable top-level function). ---


def is_finished(workdir) -> bool:
  workdir = pathlib.Path(workdir)
  return (workdir / DONE).is_file() and (workdir / 'report.md').is_file()


def _now() -> str:
  return datetime.datetime.now().isoformat(timespec='seconds')


def _log_tail(workdir: pathlib.Path, n: int = _TAIL_LINES) -> str:
  """The last lines of the latest attempt in the run's log."""
  try:
    lines = (workdir / LOG).read_text(errors='replace').splitlines(True)
  except OSError:
    return '(no log)\n'
  starts = [i for i, line in enumerate(lines) if line.startswith('=== ')]
  return ''.join(lines[max(starts[-1] if starts else 0, len(lines) - n):])


def mark_failed(workdir, reason: str) -> None:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / FAILED).write_text(
      f'{reason}\nat {_now()}\n--- last lines of {LOG} ---\n{_log_tail(workdir)}')


def run_one(run: Run) -> str:
  """Runs one process to its end; writes DONE or FAILED; returns 'done' or 'failed'."""
  run.workdir.mkdir(parents=True, exist_ok=True)
  (run.workdir / FAILED).unlink(missing_ok=True)
  cmd = command(run)
  start = time.time()
  try:
    # Appending keeps earlier attempts' logs; each starts with its command.
    with (run.workdir / LOG).open('a') as log:
      log.write(f'=== {_now()} {shlex.join(cmd)}\n')
      log.flush()
      returncode = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  check=False).returncode
  except OSError as e:
    mark_failed(run.workdir, f'could not start the run: {e}')
    return 'failed'
  if returncode == 0 and (run.workdir / 'report.md').is_file():
    (run.workdir / DONE).write_text(
        f'finished at {_now()} after {time.time() - start:.0f} s\n{shlex.join(cmd)}\n')
    return 'done'
  mark_failed(run.workdir, _failure_reason(returncode, run.workdir))
  return 'failed'


def _failure_reason(returncode: int, workdir: pathlib.Path) -> str:
  """One line: how the process ended, and the launcher's own FATAL line when it wrote one."""
  if returncode < 0:
    try:
      return f'killed by {signal.Signals(-returncode).name}'
    except ValueError:
      return f'killed by signal {-returncode}'
  if returncode == 0:
    return 'exit code 0 but no report.md was written'
  fatal = [line for line in _log_tail(workdir).splitlines() if line.startswith('FATAL ')]
  return f'exit code {returncode}' + (f': {fatal[-1]}' if fatal else '')


# --- Backends. ---


def _run_local(runs: Sequence[Run], max_parallel: int) -> list[str]:
  with concurrent.futures.ThreadPoolExecutor(max_parallel) as pool:
    futures = [pool.submit(run_one, r) for r in runs]
    statuses = []
    for r, f in zip(runs, futures):
      statuses.append(f.result())
      logging.info('%s: %s (%s)', r.name, statuses[-1], r.workdir / LOG)
    return statuses


def _executor(backend: str, folder: pathlib.Path, slurm: Mapping[str, Any],
              max_parallel: int | None):
  import submitit  # pylint: disable=g-import-not-at-top
  if backend == 'submitit_local':
    executor = submitit.LocalExecutor(folder=folder)
    # It reads only these; others (partition, mem_gb...) mean nothing locally.
    # Note: it sets CUDA_VISIBLE_DEVICES to gpus_per_node GPUs, none by default.
    params = {k: v for k, v in slurm.items()
              if k in ('timeout_min', 'gpus_per_node', 'visible_gpus', 'signal_delay_s')}
    params.setdefault('timeout_min', _LOCAL_TIMEOUT_MIN)
  else:
    executor = submitit.AutoExecutor(folder=folder)
    params = {k if k in _SUBMITIT_GENERIC or k.startswith('slurm_') else f'slurm_{k}': v
              for k, v in slurm.items()}
    if max_parallel:
      params.setdefault('slurm_array_parallelism', max_parallel)
    if executor.cluster != 'slurm':  # No SLURM here: submitit fell back to local jobs.
      params.setdefault('timeout_min', _LOCAL_TIMEOUT_MIN)
  executor.update_parameters(**params)
  return executor


def _run_submitit(runs: Sequence[Run], backend: str, folder: pathlib.Path,
                  slurm: Mapping[str, Any], max_parallel: int | None) -> list[str]:
  executor = _executor(backend, folder, slurm, max_parallel)
  # LocalExecutor starts every job at once; waves keep max_parallel.
  wave = max_parallel if backend == 'submitit_local' and max_parallel else len(runs)
  statuses = []
  for i in range(0, len(runs), wave):
    chunk = runs[i:i + wave]
    jobs = executor.map_array(run_one, chunk)  # One job array on SLURM.
    logging.info('Submitted jobs %s', ', '.join(str(j.job_id) for j in jobs))
    for r, job in zip(chunk, jobs):
      try:
        statuses.append(job.result())
      except Exception as e:  # pylint: disable=broad-except
        # The job itself died (timeout, preemption, out of memory), so run_one
        # could not write FAILED. The message holds the job's traceback; its
        # last 'XxxError: ...' line says why.
        errors = [l.strip() for l in str(e).splitlines() if re.match(r'\s*[\w.]*Error: ', l)]
        why = errors[-1] if errors else f'{type(e).__name__}: {str(e)[:200]}'
        mark_failed(r.workdir, f'submitit job {job.job_id} died: {why}\n'
                    f'job logs: {job.paths.stdout}, {job.paths.stderr}')
        statuses.append('failed')
      logging.info('%s: %s (job %s, %s)', r.name, statuses[-1], job.job_id, r.workdir / LOG)
  return statuses


def launch(sweep: Sweep, backend: str = 'local', max_parallel: int | None = None) -> Summary:
  """Runs every unfinished run, then gathers tables and writes sweep_dir/report.md.

  max_parallel: runs at a time; None means 1 for 'local' and no limit for the
  submitit backends.
  """
  if backend not in BACKENDS:
    raise SweepError(f'Unknown backend {backend!r}; valid: {", ".join(BACKENDS)}.')
  if max_parallel is not None and max_parallel < 1:
    raise SweepError(f'max_parallel={max_parallel} must be >= 1.')
  runs = plan(sweep)
  sweep_dir = pathlib.Path(sweep.sweep_dir).resolve()
  summary = Summary()
  todo = []
  for r in runs:
    if is_finished(r.workdir):
      logging.info('Skipping %s: finished earlier (%s).', r.name, r.workdir / DONE)
      summary.skipped.append(r)
    else:
      todo.append(r)
  logging.info('Sweep %s: %d runs, %d to run on %s.', sweep_dir, len(runs), len(todo), backend)
  if todo:
    if backend == 'local':
      statuses = _run_local(todo, max_parallel or 1)
    else:
      statuses = _run_submitit(todo, backend, sweep_dir / 'submitit', sweep.slurm, max_parallel)
    for r, status in zip(todo, statuses):
      (summary.done if status == 'done' else summary.failed).append(r)
  gather(sweep, runs)
  write_sweep_report(sweep, runs, summary)
  logging.info('%s', summary.text())
  return summary


# --- Gathering. ---


def gather(sweep: Sweep, runs: Sequence[Run]) -> list[pathlib.Path]:
  """sweep_dir/tables/<name>.csv: every finished run's rows, with run and grid columns."""
  out_dir = pathlib.Path(sweep.sweep_dir) / 'tables'
  found: dict[str, list[tuple[Run, list[dict]]]] = {}
  for r in runs:
    if is_finished(r.workdir):
      for path in sorted((r.workdir / 'tables').glob('*.csv')):
        found.setdefault(path.stem, []).append((r, tables.read_csv(path)))
  # A grid column named like a table's own column (say 'seed') gets a prefix.
  taken = {'run'} | {c for parts in found.values() for _, rows in parts for row in rows[:1]
                     for c in row}
  column = {f: f'config.{f}' if f in taken else f for f in sweep.grid}
  if out_dir.is_dir():
    for stale in out_dir.glob('*.csv'):  # Written by an earlier gather; remade below.
      stale.unlink()
  written = []
  for name, parts in sorted(found.items()):
    own = list(dict.fromkeys(c for _, rows in parts for row in rows for c in row))
    rows = [{'run': r.name, **{column[f]: display(v) for f, v in r.values}, **row}
            for r, table in parts for row in table]
    written.append(tables.write_csv(out_dir / f'{name}.csv', rows,
                                    ['run', *column.values(), *own]))
  return written


def write_sweep_report(sweep: Sweep, runs: Sequence[Run], summary: Summary) -> pathlib.Path:
  sweep_dir = pathlib.Path(sweep.sweep_dir).resolve()
  now_done = {r.name for r in summary.done}

  def status(r: Run) -> str:
    if is_finished(r.workdir):
      return 'done' if r.name in now_done else 'done (earlier launch)'
    if (r.workdir / FAILED).is_file():
      return 'FAILED: ' + (r.workdir / FAILED).read_text().split('\n', 1)[0]
    return 'not run'

  rows = []
  for r in runs:
    rel = r.workdir.relative_to(sweep_dir)
    link = f'[{r.name}]({rel}/report.md)' if is_finished(r.workdir) else r.name
    rows.append({'run': link, **{f: display(v) for f, v in r.values}, 'status': status(r),
                 'log': f'[log]({rel}/{LOG})'})
  setup = [f'- Base config: `{sweep.base}`',
           *[f'- Grid `{f}`: {", ".join(display(v) for v in vs)}' for f, vs in sweep.grid.items()],
           *[f'- Fixed `{f}` = {display(v)}' for f, v in sweep.fixed.items()],
           f'- Runs: {len(runs)}; this launch: {len(summary.done)} done, '
           f'{len(summary.skipped)} skipped, {len(summary.failed)} failed.']
  gathered = sorted((sweep_dir / 'tables').glob('*.csv'))
  table_links = '\n'.join(f'- [{t.stem}](tables/{t.name})' for t in gathered) or (
      'None yet: no run has finished.')
  sections = [('Setup', '\n'.join(setup)),
              ('Runs', tables.markdown_table(rows, ['run', *sweep.grid, 'status', 'log'])),
              ('Gathered tables (all finished runs, with run and grid columns)', table_links)]
  failed = [r for r in runs if (r.workdir / FAILED).is_file() and not is_finished(r.workdir)]
  if failed:
    sections.append(('Failures', '\n\n'.join(
        f'### {r.name}\n\n```\n{(r.workdir / FAILED).read_text().rstrip()}\n```' for r in failed)))
  return tables.write_report(sweep_dir / 'report.md', f'Sweep {sweep_dir.name}', sections)


def from_config(spec: ml_collections.ConfigDict | Mapping, sweep_dir) -> Sweep:
  """A sweep file's get_sweep() result (base, grid, fixed, slurm) -> Sweep."""
  def plain(d) -> dict:
    if d is None:
      return {}
    if isinstance(d, ml_collections.ConfigDict):
      # ConfigDict sorts keys; sweep files keep grid order with convert_dict=False.
      return dict(zip(leaf_fields(d), (_get(d, f) for f in leaf_fields(d))))
    return dict(d)

  if not spec.get('base'):
    raise SweepError('The sweep has no `base` config spec.')
  return Sweep(base=spec['base'], sweep_dir=pathlib.Path(sweep_dir), grid=plain(spec.get('grid')),
               fixed=plain(spec.get('fixed')), slurm=plain(spec.get('slurm')))


def _get(config, field: str):
  for part in field.split('.'):
    config = config[part]
  return config
