"""Metrics are written in one place: MetricWriter (TensorBoard runs + a CSV log).

Also here, because every world needs them and none should write its own:
`PopulationWriter` (a population's metrics split into one TensorBoard run per
member, with the grid's HParams), `write_report` (report.md and the figures into
TensorBoard), `RunLog` (a run's evaluations, persisted after every record),
`PhaseTimes` (seconds per phase, kept across reruns) and `cached_arrays` (a
finished result is loaded, never recomputed; written atomically).

TensorBoard layout: one run (a directory under workdir/tb) per thing trained,
e.g. `counter/finetune/lr=0.01,c_tr=1,seed=0` for a population member (the
name carries its hyperparameters; tags inside are plain: `train/loss`,
`eval/c_te0/acc_o_pt`), `counter/finetune` for the grid (its HParams experiment),
`counter/compiled`, `pretrain_low`, `summary`, `report` (report.md as text,
figures as images). `tensorboard --logdir <workdir>/tb` shows them all; the
HParams tab compares members in one table (its columns come from one grid's
experiment summary, TensorBoard reads one per logdir: `--logdir
<workdir>/tb/counter/finetune` gives that grid its own). Event files are written
with tensorboard's own writer and protos (tb_events), so TensorFlow is not
needed. A run's (tag, step) is written once: a resumed run's replayed steps
are not written again (tb_events).

Scalars also go to `workdir/metrics.csv` (one `step,name,value` row per scalar,
name = `<run>/<tag>`) so a run can be grepped or loaded with pandas. A resumed
run appends, replacing the rows of the steps it replays: one row per (step, name).
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import logging
import numpy as np

from wrapper_study import tb_events
# Readers of one run (a run dir; a workdir or workdir/tb reads the root run), and of the tree.
from wrapper_study.tb_events import list_runs, read_hparams, read_images, read_scalars, read_text  # pylint: disable=unused-import

TB_SUBDIR = 'tb'
CSV_NAME = 'metrics.csv'


_CSV_HEADER = ['step', 'name', 'value']


def _csv_key(row: list[str]) -> Optional[tuple[int, str]]:
  """(step, name) of a data row; None for the header or a broken row."""
  if len(row) != 3:
    return None
  try:
    return int(row[0]), row[1]
  except ValueError:
    return None


def _csv_keys(path: str):
  with open(path, newline='') as f:
    for row in csv.reader(f):
      yield _csv_key(row)


def _rewrite_csv(path: str, drop: set, among_first: int) -> int:
  """Rewrites metrics.csv atomically without broken rows and without the rows
  with `drop` keys among its first `among_first` data rows; returns how many
  of those it dropped. Leaves the file untouched when nothing changes.
  """
  with open(path, newline='') as f:
    text = f.read()
  lines = text.splitlines(keepends=True)
  if lines and not lines[-1].endswith('\n'):
    lines.pop()  # Cut by a kill mid-row.
  kept, seen, dropped = [_CSV_HEADER], 0, 0
  for row in csv.reader(lines):
    key = _csv_key(row)
    if key is None:
      continue
    seen += 1
    if seen <= among_first and key in drop:
      dropped += 1
    else:
      kept.append(row)
  out = io.StringIO()
  csv.writer(out).writerows(kept)
  if out.getvalue() != text:
    _write_atomic(pathlib.Path(path), out.getvalue())
  return dropped


class MetricWriter:
  """TensorBoard runs under workdir/tb plus workdir/metrics.csv.

  `run(name)` is the writer of the run workdir/tb/<name>; its metrics.csv rows
  are named `<name>/<tag>`. The MetricWriter's own write_* go to the root run
  (workdir/tb itself), with plain CSV names.

  metrics.csv: rows written by earlier writers (the run before a kill) are
  superseded: writing a (step, name) they have removes their rows for it, so a
  resumed run that replays the steps after its checkpoint leaves one row per
  (step, name); the new row goes at the end. Rows this writer wrote are never
  removed (two phases writing the same names into one writer keep both rows;
  give each phase its own run). TensorBoard: a run never gets a (tag, step)
  twice; the replayed steps keep their first values (bitwise the same, see
  train.train_loop).
  """

  def __init__(self, workdir: str, flush_secs: int = 30):
    self.workdir = str(workdir)
    self.logdir = os.path.join(self.workdir, TB_SUBDIR)
    self.flush_secs = flush_secs
    os.makedirs(self.logdir, exist_ok=True)
    self._runs: dict[str, RunWriter] = {}
    self.csv_path = os.path.join(self.workdir, CSV_NAME)
    # Earlier writers' rows (the file's first _old_rows data rows): name -> its
    # largest step there. A write at a step not above it may repeat one.
    self._old_last_step: dict[str, int] = {}
    self._old_rows = 0
    self._superseded: set[tuple[int, str]] = set()  # Keys already removed.
    is_new = not os.path.exists(self.csv_path) or os.path.getsize(self.csv_path) == 0
    if not is_new:
      self._index_csv()
    self._open_csv()
    if is_new:
      self._csv.writerow(_CSV_HEADER)

  def run(self, name: str) -> 'RunWriter':
    """The writer of run workdir/tb/<name> ('' the root); its event file is made on first write."""
    name = name.strip('/')
    if name not in self._runs:
      events = tb_events.RunEvents(os.path.join(self.logdir, name) if name else self.logdir,
                                   self.flush_secs)
      self._runs[name] = RunWriter(self, name, events)
    return self._runs[name]

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self.run('').write_scalars(step, scalars)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    self.run('').write_images(step, images)

  def write_text(self, step: int, texts: Mapping[str, str]) -> None:
    self.run('').write_text(step, texts)

  def _open_csv(self) -> None:
    # Line-buffered, so a running job's metrics.csv can be read (grep, tail -f).
    self._csv_file = open(self.csv_path, 'a', newline='', buffering=1)
    self._csv = csv.writer(self._csv_file)

  def _index_csv(self) -> None:
    """Indexes the earlier writers' rows; drops a last row cut by a kill."""
    with open(self.csv_path, 'rb') as f:
      cut = False
      if f.seek(0, os.SEEK_END) > 0:
        f.seek(-1, os.SEEK_END)
        cut = f.read(1) != b'\n'
    if cut:
      _rewrite_csv(self.csv_path, drop=set(), among_first=0)
    for key in _csv_keys(self.csv_path):
      if key is not None:
        step, name = key
        self._old_rows += 1
        self._old_last_step[name] = max(step, self._old_last_step.get(name, step))

  def _supersede(self, keys: set[tuple[int, str]]) -> None:
    """Removes the earlier writers' rows with these keys (atomic rewrite)."""
    self._csv_file.close()
    try:
      self._old_rows -= _rewrite_csv(self.csv_path, drop=keys, among_first=self._old_rows)
    finally:
      self._open_csv()
    self._superseded |= keys

  def _write_csv(self, step: int, named: Mapping[str, float]) -> None:
    """CSV rows, superseding earlier writers' rows (see class)."""
    # Only a step not above a name's last old one can repeat an old row.
    maybe = {(step, name) for name in named
             if step <= self._old_last_step.get(name, step - 1)} - self._superseded
    if maybe:
      self._supersede(maybe)
    self._csv.writerows([step, name, repr(value)] for name, value in named.items())

  def flush(self) -> None:
    for r in self._runs.values():
      r.events.flush()
    self._csv_file.flush()

  def close(self) -> None:
    if self._csv_file.closed:
      return
    for r in self._runs.values():
      r.events.close()
    self._csv_file.close()

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _flat(scalars: Mapping[str, Any]) -> dict[str, float]:
  """tag -> float; an array (a population written into one run) becomes tag/i."""
  out = {}
  for k, v in scalars.items():
    v = np.asarray(v)
    if v.size == 1:
      out[k] = float(v.reshape(()))
    else:
      out.update({f'{k}/{i}': float(x) for i, x in enumerate(v.reshape(-1))})
  return out


class RunWriter:
  """One TensorBoard run of a MetricWriter (MetricWriter.run): plain tags, CSV names run/tag."""

  def __init__(self, parent: MetricWriter, name: str, events: tb_events.RunEvents):
    self.parent, self.name, self.events = parent, name, events

  def run(self, name: str) -> 'RunWriter':
    """A run below this one: <this run>/<name>."""
    return self.parent.run(f'{self.name}/{name}' if self.name else name)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    step, flat = int(step), _flat(scalars)
    prefix = f'{self.name}/' if self.name else ''
    self.parent._write_csv(step, {prefix + k: v for k, v in flat.items()})  # pylint: disable=protected-access
    self.events.add(step, [tb_events.scalar_value(k, v) for k, v in flat.items()])

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """tag -> HxWx3/HxWx4 uint8 array (or HxW, PNG bytes, or a matplotlib Figure)."""
    self.events.add(step, [tb_events.image_value(k, v) for k, v in images.items()
                           if not self.events.has(k, step)])  # Encoded only when new.

  def write_text(self, step: int, texts: Mapping[str, str]) -> None:
    """tag -> markdown text (TensorBoard's Text tab)."""
    self.events.add(step, [tb_events.text_value(k, v) for k, v in texts.items()])

  def flush(self) -> None:
    self.parent.flush()


class PopulationWriter:
  """A population's writer: a [P] metric goes to each member's run, a scalar to the population's.

  run: the population's run (e.g. writer.run('counter/finetune')); member_runs:
  each member's run name below it (population.Member.run_name), so the tags stay
  plain and TensorBoard overlays or filters members by their hyperparameters.
  """

  def __init__(self, run: RunWriter, member_runs: Sequence[str]):
    if len(set(member_runs)) != len(member_runs):
      raise ValueError(f'two members share a run name: {sorted(member_runs)}')
    self.population = run
    self.members = [run.run(m) for m in member_runs]

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    shared, per_member = {}, [{} for _ in self.members]
    for k, v in scalars.items():
      v = np.asarray(v)
      if v.ndim and v.shape[0] == len(self.members):
        for d, x in zip(per_member, v):
          d[k] = x
      else:
        shared[k] = v
    if shared:
      self.population.write_scalars(step, shared)
    for w, d in zip(self.members, per_member):
      if d:
        w.write_scalars(step, d)

  def write_hparams(self, hparams: Sequence[Mapping[str, Any]], metric_tags: Sequence[str],
                    ok: Optional[Sequence[bool]] = None, types: Mapping[str, type] = ()) -> None:
    """The HParams tab's table: the experiment in the population's run, a session per member.

    hparams: each member's values (float or str); metric_tags: scalar tags of
    the members' runs whose last value the table shows; ok: False marks a member
    failed (e.g. diverged); types: columns no member may have. Step 0, once per run.
    """
    kinds: dict[str, type] = {}
    for h in list(hparams) + [{k: t() for k, t in dict(types).items()}]:
      for k, v in h.items():
        kinds.setdefault(k, str if isinstance(v, str) else float)
    self.population.events.add(0, [tb_events.experiment_value(kinds, metric_tags)])
    ok = [True] * len(self.members) if ok is None else ok
    for w, h, good in zip(self.members, hparams, ok):
      w.events.add(0, tb_events.session_values(h, group=w.name, ok=bool(good)))

  def flush(self) -> None:
    self.population.flush()


def write_report(workdir, report_path) -> str:
  """report.md as text and every figure under workdir/figures as an image; returns the run.

  The run is tb/<report stem> (e.g. 'report'); each call (one per invocation of
  a study) writes at the next step, so TensorBoard's step slider shows the
  report of every invocation.
  """
  report_path, workdir = pathlib.Path(report_path), pathlib.Path(workdir)
  run = report_path.stem
  events = tb_events.RunEvents(str(workdir / TB_SUBDIR / run))
  values = [tb_events.text_value(report_path.name, report_path.read_text())]
  figures = workdir / 'figures'
  for png in sorted(figures.rglob('*.png')):
    tag = 'figures/' + png.relative_to(figures).with_suffix('').as_posix()
    values.append(tb_events.image_value(tag, png.read_bytes()))
  events.add(events.next_step(), values)
  events.close()
  return run


def format_duration(seconds: float) -> str:
  """12s, 3m05s, 1h02m, 2d03h."""
  s = int(round(max(seconds, 0.0)))
  if s < 60:
    return f'{s}s'
  if s < 3600:
    return f'{s // 60}m{s % 60:02d}s'
  if s < 86400:
    return f'{s // 3600}h{(s % 3600) // 60:02d}m'
  return f'{s // 86400}d{(s % 86400) // 3600:02d}h'


class ProgressLogger:
  """Logs step, loss, steps/s and ETA through absl.logging every log_every steps."""

  def __init__(self, total_steps: int, log_every: int = 100, start_step: int = 0):
    self.total_steps = total_steps
    self.log_every = max(int(log_every), 1)
    self._last_step = start_step
    self._last_time = time.monotonic()
    self._first_done = False

  def update(self, step: int, scalars: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """Logs (and returns) a progress line if `step` is due, else None.

    The first step after a (re)start is always due: it says how long compiling took.
    """
    now = time.monotonic()
    if step == self._last_step + 1 and not self._first_done:
      self._first_done = True
      line = (f'step {step}/{self.total_steps}: compiled and ran the first step in '
              f'{format_duration(now - self._last_time)}')
      self._last_step, self._last_time = step, now
      logging.info(line)
      return line
    if step % self.log_every and step != self.total_steps:
      return None
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = format_duration((self.total_steps - step) / rate) if rate > 0 else '?'
    parts = [f'step {step}/{self.total_steps}']
    loss = (scalars or {}).get('loss')
    if loss is not None:
      parts.append(f'loss {float(loss):.4g}')
    parts += [f'{rate:.2f} steps/s', f'ETA {eta}']
    line = ', '.join(parts)
    logging.info(line)
    return line


def _write_atomic(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(text)
  os.replace(tmp, path)  # A killed run never leaves a half-written file.


class RunLog:
  """Evaluations of one run, {metric: {step: value}}, persisted after every record."""

  def __init__(self, workdir, name: str):
    self.path = pathlib.Path(workdir) / 'results' / f'{name}.json'
    self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

  def get(self, metric: str, step: int) -> Optional[float]:
    return self.data.get(metric, {}).get(str(step))

  def series(self, metric: str, steps: Sequence[int]) -> list[float]:
    return [float('nan') if self.get(metric, s) is None else self.get(metric, s) for s in steps]

  def record(self, step: int, values: Mapping[str, Any]) -> None:
    for k, v in values.items():
      self.data.setdefault(k, {})[str(step)] = float(v)
    _write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True))


class PhaseTimes:
  """Seconds per phase: in this invocation, and in the one that first completed it.

  A rerun restores finished phases in seconds; the report keeps the time the
  work took (`results/<name>.json`), beside this invocation's.
  """

  def __init__(self, workdir, name: str = 'timing', plan: Sequence[str] = ()):
    self.path = pathlib.Path(workdir) / 'results' / f'{name}.json'
    self.first = json.loads(self.path.read_text()) if self.path.exists() else {}
    self.rows = []
    self.plan = list(plan)  # The phases this run will time, in order: `[3/8] phase` headers.

  def header(self, phase: str) -> str:
    """Logs (and returns) `[i/n] phase`; a phase missing from the plan is appended to it."""
    if phase not in self.plan:
      self.plan.append(phase)
    line = f'[{self.plan.index(phase) + 1}/{len(self.plan)}] {phase}'
    logging.info('%s', line)
    return line

  def add(self, phase: str, seconds: float) -> None:
    first = self.first.setdefault(phase, round(seconds, 1))
    self.rows.append({'phase': phase, 'seconds': first, 'this invocation': round(seconds, 1)})
    _write_atomic(self.path, json.dumps(self.first, indent=1))

  def timed(self, phase: str):
    """Context manager: `with times.timed('pruning'): ...` adds the phase's seconds."""
    return _Timed(self, phase)

  def add_total(self) -> None:
    self.rows.append({'phase': 'total', 'seconds': round(sum(r['seconds'] for r in self.rows), 1),
                      'this invocation': round(sum(r['this invocation'] for r in self.rows), 1)})

  @staticmethod
  def note() -> str:
    return ('seconds: the invocation that completed the phase (a phase resumed after a kill '
            'counts only its last part); this invocation: restored phases take ~0.')


class _Timed:

  def __init__(self, times: PhaseTimes, phase: str):
    self.times, self.phase = times, phase

  def __enter__(self):
    self.times.header(self.phase)
    self.t0 = time.time()
    return self

  def __exit__(self, exc_type, *_):
    if exc_type is None:  # A failed phase is not finished: no time is recorded.
      self.times.add(self.phase, time.time() - self.t0)


def digest(*parts) -> str:
  """A short hash of arrays, pytrees of arrays and anything with a stable str (a config):
  the key of a cached result, so changed inputs never reuse it."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(parts):
    if hasattr(leaf, 'dtype') and hasattr(leaf, 'shape'):
      arr = np.ascontiguousarray(np.asarray(leaf))
      h.update(f'{arr.dtype}{arr.shape}'.encode())
      h.update(arr.tobytes())
    else:
      h.update(repr(str(leaf)).encode())
  return h.hexdigest()[:16]


def cached_arrays(path, compute: Callable[[], Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Loads a finished result (a dict of arrays, .npz), or computes and saves it atomically."""
  path = pathlib.Path(path)
  if path.exists():
    with np.load(path) as f:
      return dict(f)
  out = {k: np.asarray(v) for k, v in compute().items()}
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix('.tmp.npz')
  np.savez(tmp, **out)
  os.replace(tmp, path)
  return out


def cached_json(path, compute: Callable[[], Any]) -> Any:
  """Loads a finished JSON result, or computes and saves it atomically.

  Key order is kept and the computed result is returned as it will load, so a
  rerun's tables equal the first run's, columns included.
  """
  path = pathlib.Path(path)
  if path.exists():
    return json.loads(path.read_text())
  text = json.dumps(compute(), indent=1)
  _write_atomic(path, text)
  return json.loads(text)
