"""Metrics are written in one place: MetricWriter (TensorBoard + a CSV log).

Also here, because every world needs them and none should write its own:
`RunLog` (a run's evaluations, persisted after every record), `PhaseTimes`
(seconds per phase, kept across reruns), `PrefixedWriter` (one tag space per
run inside a shared writer) and `cached_arrays` (a finished result is loaded,
never recomputed; written atomically).

TensorBoard event files are written with tensorboard's own writer and protos, so
TensorFlow is not needed. Scalars also go to `workdir/metrics.csv` (one
`step,name,value` row per scalar) so a run can be grepped or loaded with pandas.
A resumed run appends, replacing the rows of the steps it replays: one row per
(step, name).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import pathlib
import struct
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import logging
import numpy as np
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.proto import tensor_pb2
from tensorboard.compat.proto import tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.summary.writer import event_file_writer
from tensorboard.util import tensor_util

TB_SUBDIR = 'tb'
CSV_NAME = 'metrics.csv'


def _png_size(png: bytes) -> tuple[int, int]:
  """(height, width) from the PNG IHDR chunk."""
  if png[:8] != b'\x89PNG\r\n\x1a\n':
    raise ValueError('not a PNG')
  width, height = struct.unpack('>II', png[16:24])
  return height, width


def _encode_png(image) -> bytes:
  """PNG bytes of a HxW, HxWx3 or HxWx4 array (uint8 or float in [0, 1]) or Figure."""
  if hasattr(image, 'savefig'):  # A matplotlib Figure.
    buf = io.BytesIO()
    image.savefig(buf, format='png')
    return buf.getvalue()
  from PIL import Image  # Comes with matplotlib.
  arr = np.asarray(image)
  if arr.dtype != np.uint8:
    arr = (np.clip(arr.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
    raise ValueError(f'image must be HxW, HxWx3 or HxWx4, got shape {arr.shape}.')
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format='PNG')
  return buf.getvalue()


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
  """TensorBoard event files under workdir/tb plus workdir/metrics.csv.

  metrics.csv: rows written by earlier writers (the run before a kill) are
  superseded: writing a (step, name) they have removes their rows for it, so a
  resumed run that replays the steps after its checkpoint leaves one row per
  (step, name); the new row goes at the end. Rows this writer wrote are never
  removed (two runs sharing a writer with the same names keep both rows; give
  each run its own names, e.g. PrefixedWriter). TensorBoard events are
  append-only: a resumed run adds an event file that repeats the replayed steps.
  """

  def __init__(self, workdir: str, flush_secs: int = 30):
    self.workdir = workdir
    self.logdir = os.path.join(workdir, TB_SUBDIR)
    os.makedirs(self.logdir, exist_ok=True)
    self._events = event_file_writer.EventFileWriter(self.logdir, flush_secs=flush_secs)
    self.csv_path = os.path.join(workdir, CSV_NAME)
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

  def _add(self, step: int, values: list) -> None:
    summary = summary_pb2.Summary(value=values)
    self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """TensorBoard values and CSV rows (superseding earlier writers' rows, see class)."""
    step = int(step)
    values, rows = [], []
    for name, value in scalars.items():
      value = float(np.asarray(value))
      values.append(summary_pb2.Summary.Value(tag=name, simple_value=value))
      rows.append([step, name, repr(value)])
    # Only a step not above a name's last old one can repeat an old row.
    maybe = {(step, name) for name in scalars
             if step <= self._old_last_step.get(name, step - 1)} - self._superseded
    if maybe:
      self._supersede(maybe)
    self._csv.writerows(rows)
    self._add(step, values)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """name -> HxWx3/HxWx4 uint8 array (or HxW, or a matplotlib Figure)."""
    values = []
    for name, image in images.items():
      png = _encode_png(image)
      height, width = _png_size(png)
      img = summary_pb2.Summary.Image(height=height, width=width,
                                      encoded_image_string=png)
      values.append(summary_pb2.Summary.Value(tag=name, image=img))
    self._add(step, values)

  def write_text(self, step: int, texts: Mapping[str, str]) -> None:
    """name -> markdown text (TensorBoard's Text tab)."""
    values = []
    for name, text in texts.items():
      tensor = tensor_pb2.TensorProto(
          dtype=types_pb2.DT_STRING, string_val=[str(text).encode('utf-8')],
          tensor_shape=tensor_shape_pb2.TensorShapeProto())
      metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='text'))
      values.append(summary_pb2.Summary.Value(tag=name, tensor=tensor, metadata=metadata))
    self._add(step, values)

  def flush(self) -> None:
    self._events.flush()
    self._csv_file.flush()

  def close(self) -> None:
    if self._csv_file.closed:
      return
    self._events.close()
    self._csv_file.close()

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _event_files(logdir: str) -> list[str]:
  files = sorted(glob.glob(os.path.join(logdir, '*tfevents*')))
  if not files and os.path.isdir(os.path.join(logdir, TB_SUBDIR)):
    files = sorted(glob.glob(os.path.join(logdir, TB_SUBDIR, '*tfevents*')))
  return files


def _values(logdir: str):
  """(step, plugin_name, Summary.Value) for every value, oldest file first."""
  for path in _event_files(logdir):
    # EventFileLoader migrates legacy simple_value / image summaries to the
    # tensor form with plugin metadata, as TensorBoard itself sees them.
    for event in event_file_loader.EventFileLoader(path).Load():
      if not event.HasField('summary'):
        continue
      for value in event.summary.value:
        yield event.step, value.metadata.plugin_data.plugin_name, value


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value)] in write order (logdir = workdir/tb or workdir)."""
  out: dict[str, list] = {}
  for step, plugin, value in _values(logdir):
    if value.HasField('simple_value'):
      out.setdefault(value.tag, []).append((step, float(value.simple_value)))
    elif plugin == 'scalars':
      out.setdefault(value.tag, []).append(
          (step, float(tensor_util.make_ndarray(value.tensor).item())))
  return out


def read_images(logdir: str) -> dict[str, list[tuple[int, bytes]]]:
  """tag -> [(step, png_bytes)]."""
  out: dict[str, list] = {}
  for step, plugin, value in _values(logdir):
    if value.HasField('image'):
      out.setdefault(value.tag, []).append((step, value.image.encoded_image_string))
    elif plugin == 'images':
      # Migrated form: a string tensor [width, height, png, ...].
      out.setdefault(value.tag, []).append((step, bytes(value.tensor.string_val[2])))
  return out


def read_text(logdir: str) -> dict[str, list[tuple[int, str]]]:
  """tag -> [(step, text)]."""
  out: dict[str, list] = {}
  for step, plugin, value in _values(logdir):
    if plugin == 'text':
      out.setdefault(value.tag, []).append(
          (step, value.tensor.string_val[0].decode('utf-8')))
  return out


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

  def update(self, step: int, scalars: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """Logs (and returns) a progress line if `step` is due, else None."""
    if step % self.log_every and step != self.total_steps:
      return None
    now = time.monotonic()
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


class PrefixedWriter:
  """A MetricWriter view that puts every scalar under `prefix/` (one TB tag space per run)."""

  def __init__(self, writer: MetricWriter, prefix: str):
    self.writer, self.prefix = writer, prefix

  def write_scalars(self, step: int, scalars) -> None:
    self.writer.write_scalars(step, {f'{self.prefix}/{k}': v for k, v in scalars.items()})

  def flush(self) -> None:
    self.writer.flush()


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

  def __init__(self, workdir, name: str = 'timing'):
    self.path = pathlib.Path(workdir) / 'results' / f'{name}.json'
    self.first = json.loads(self.path.read_text()) if self.path.exists() else {}
    self.rows = []

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
    self.t0 = time.time()
    return self

  def __exit__(self, exc_type, *_):
    if exc_type is None:  # A failed phase is not finished: no time is recorded.
      self.times.add(self.phase, time.time() - self.t0)


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
  """Loads a finished JSON result, or computes and saves it atomically."""
  path = pathlib.Path(path)
  if path.exists():
    return json.loads(path.read_text())
  out = compute()
  _write_atomic(path, json.dumps(out, indent=1, sort_keys=True))
  return out
