"""TensorBoard event files without TensorFlow: one run directory, summary values, readers.

A TensorBoard run is a directory of event files; `RunEvents` writes one (its
event file created on the first write) and keeps every (tag, step) it holds,
read back from the files already there: a value whose (tag, step) the run
already holds is not written again. A resumed train loop replays the steps
after its checkpoint bitwise identically (train.train_loop), so skipping them
leaves one value per (run, tag, step) and the curves exactly as an
uninterrupted run's; values a killed process never flushed are written by the
replay. (TensorBoard's own purge, a `SessionLog.START` event, is not used:
readers would have to replay its semantics.)

HParams plugin data (experiment summary, session start and end) is built from
`api_pb2` / `plugin_data_pb2` with `metadata.create_summary_metadata`, as
tensorboard's hparams summary does, minus its TensorFlow import.
"""

from __future__ import annotations

import glob
import io
import os
import struct
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.proto import tensor_pb2
from tensorboard.compat.proto import tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.summary.writer import event_file_writer
from tensorboard.util import tensor_util

# ----------------------------------------------------------------- values ---


def _png_size(png: bytes) -> tuple[int, int]:
  """(height, width) from the PNG IHDR chunk."""
  if png[:8] != b'\x89PNG\r\n\x1a\n':
    raise ValueError('not a PNG')
  width, height = struct.unpack('>II', png[16:24])
  return height, width


def encode_png(image) -> bytes:
  """PNG bytes of PNG bytes, a HxW, HxWx3 or HxWx4 array (uint8 or float in [0, 1]) or a Figure."""
  if isinstance(image, bytes):
    _png_size(image)
    return image
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


def scalar_value(tag: str, value: float) -> summary_pb2.Summary.Value:
  return summary_pb2.Summary.Value(tag=tag, simple_value=float(value))


def image_value(tag: str, image) -> summary_pb2.Summary.Value:
  png = encode_png(image)
  height, width = _png_size(png)
  return summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(
      height=height, width=width, encoded_image_string=png))


def text_value(tag: str, text: str) -> summary_pb2.Summary.Value:
  """Markdown for TensorBoard's Text tab."""
  tensor = tensor_pb2.TensorProto(
      dtype=types_pb2.DT_STRING, string_val=[str(text).encode('utf-8')],
      tensor_shape=tensor_shape_pb2.TensorShapeProto())
  meta = summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='text'))
  return summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta)


def _hparams_value(tag: str, data: plugin_data_pb2.HParamsPluginData):
  return summary_pb2.Summary.Value(tag=tag, metadata=hp_metadata.create_summary_metadata(data),
                                   tensor=hp_metadata.NULL_TENSOR)


def experiment_value(hparams: Mapping[str, type], metric_tags: Sequence[str]):
  """The HParams experiment summary: hparam name -> float or str; the metrics' scalar tags."""
  kind = {float: api_pb2.DATA_TYPE_FLOAT64, int: api_pb2.DATA_TYPE_FLOAT64,
          str: api_pb2.DATA_TYPE_STRING, bool: api_pb2.DATA_TYPE_BOOL}
  experiment = api_pb2.Experiment(
      hparam_infos=[api_pb2.HParamInfo(name=k, type=kind[t]) for k, t in hparams.items()],
      metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(group='', tag=t))
                    for t in metric_tags],
      time_created_secs=time.time())
  return _hparams_value(hp_metadata.EXPERIMENT_TAG,
                        plugin_data_pb2.HParamsPluginData(experiment=experiment))


def session_values(hparams: Mapping[str, Any], group: str, ok: bool = True) -> list:
  """Session start (hparam values) and end (success, or failure: e.g. a diverged member)."""
  start = plugin_data_pb2.SessionStartInfo(group_name=group, start_time_secs=time.time())
  for k, v in hparams.items():
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, bool):
      start.hparams[k].bool_value = v
    elif isinstance(v, (int, float)):
      start.hparams[k].number_value = float(v)
    else:
      start.hparams[k].string_value = str(v)
  end = plugin_data_pb2.SessionEndInfo(
      status=api_pb2.STATUS_SUCCESS if ok else api_pb2.STATUS_FAILURE, end_time_secs=time.time())
  return [_hparams_value(hp_metadata.SESSION_START_INFO_TAG,
                         plugin_data_pb2.HParamsPluginData(session_start_info=start)),
          _hparams_value(hp_metadata.SESSION_END_INFO_TAG,
                         plugin_data_pb2.HParamsPluginData(session_end_info=end))]


# -------------------------------------------------------------------- run ---


class RunEvents:
  """The event files of one run directory; writes each (tag, step) once (see module doc)."""

  def __init__(self, logdir: str, flush_secs: int = 30):
    self.logdir, self.flush_secs = logdir, flush_secs
    self._writer = None  # Created on the first write: no empty runs.
    self.steps: dict[str, set[int]] = {}  # tag -> steps this run holds.
    for step, _, value in _values(logdir, exact=True):
      self.steps.setdefault(value.tag, set()).add(step)

  def has(self, tag: str, step: int) -> bool:
    return int(step) in self.steps.get(tag, ())

  def next_step(self) -> int:
    """One past the largest step of any tag of the run (0 for a new run)."""
    return 1 + max((max(s) for s in self.steps.values() if s), default=-1)

  def add(self, step: int, values: Sequence[summary_pb2.Summary.Value]) -> None:
    step = int(step)
    new = [v for v in values if not self.has(v.tag, step)]
    if not new:
      return
    if self._writer is None:
      os.makedirs(self.logdir, exist_ok=True)
      self._writer = event_file_writer.EventFileWriter(self.logdir, flush_secs=self.flush_secs)
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step,
                                           summary=summary_pb2.Summary(value=new)))
    for v in new:
      self.steps.setdefault(v.tag, set()).add(step)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


# ---------------------------------------------------------------- readers ---


def event_files(logdir: str) -> list[str]:
  return sorted(glob.glob(os.path.join(glob.escape(logdir), '*tfevents*')))


def _run_dir(logdir) -> str:
  """logdir, or logdir/tb (the root run) when given a workdir."""
  logdir = str(logdir)
  if not event_files(logdir) and os.path.isdir(os.path.join(logdir, 'tb')):
    return os.path.join(logdir, 'tb')
  return logdir


def list_runs(logdir: str) -> list[str]:
  """Every run under logdir (directories holding event files), relative, '.' for logdir itself."""
  runs = [os.path.relpath(d, logdir) for d, _, files in os.walk(logdir)
          if any('tfevents' in f for f in files)]
  return sorted(runs)


def _values(logdir: str, exact: bool = False):
  """(step, plugin_name, Summary.Value) for every value of one run, oldest file first."""
  for path in event_files(logdir if exact else _run_dir(logdir)):
    # EventFileLoader migrates legacy simple_value / image summaries to the
    # tensor form with plugin metadata, as TensorBoard itself sees them.
    for event in event_file_loader.EventFileLoader(path).Load():
      if not event.HasField('summary'):
        continue
      for value in event.summary.value:
        yield event.step, value.metadata.plugin_data.plugin_name, value


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value)] of one run, in write order."""
  out: dict[str, list] = {}
  for step, plugin, value in _values(logdir):
    if value.HasField('simple_value'):
      out.setdefault(value.tag, []).append((step, float(value.simple_value)))
    elif plugin == 'scalars':
      out.setdefault(value.tag, []).append(
          (step, float(tensor_util.make_ndarray(value.tensor).item())))
  return out


def read_images(logdir: str) -> dict[str, list[tuple[int, bytes]]]:
  """tag -> [(step, png_bytes)] of one run."""
  out: dict[str, list] = {}
  for step, plugin, value in _values(logdir):
    if value.HasField('image'):
      out.setdefault(value.tag, []).append((step, value.image.encoded_image_string))
    elif plugin == 'images':
      # Migrated form: a string tensor [width, height, png, ...].
      out.setdefault(value.tag, []).append((step, bytes(value.tensor.string_val[2])))
  return out


def read_text(logdir: str) -> dict[str, list[tuple[int, str]]]:
  """tag -> [(step, text)] of one run."""
  out: dict[str, list] = {}
  for step, plugin, value in _values(logdir):
    if plugin == 'text':
      out.setdefault(value.tag, []).append(
          (step, value.tensor.string_val[0].decode('utf-8')))
  return out


def _hparam(v) -> Any:
  """A google.protobuf.Value's number, string or bool."""
  kind = v.WhichOneof('kind')
  return None if kind is None else getattr(v, kind)


def read_hparams(logdir: str) -> dict[str, dict]:
  """run -> what the HParams plugin reads from it, for every run under logdir.

  {'experiment': {'hparams': [name], 'metrics': [tag]}} for a run with an
  experiment summary; {'hparams': {name: value}, 'group': str, 'status': str}
  for a session (one member).
  """
  out: dict[str, dict] = {}
  for run in list_runs(logdir):
    for _, plugin, value in _values(os.path.join(logdir, run), exact=True):
      if plugin != hp_metadata.PLUGIN_NAME:
        continue
      content = value.metadata.plugin_data.content
      entry = out.setdefault(run, {})
      if value.tag == hp_metadata.EXPERIMENT_TAG:
        e = hp_metadata.parse_experiment_plugin_data(content)
        entry['experiment'] = {'hparams': [h.name for h in e.hparam_infos],
                               'metrics': [m.name.tag for m in e.metric_infos]}
      elif value.tag == hp_metadata.SESSION_START_INFO_TAG:
        s = hp_metadata.parse_session_start_info_plugin_data(content)
        entry['hparams'] = {k: _hparam(v) for k, v in s.hparams.items()}
        entry['group'] = s.group_name
      elif value.tag == hp_metadata.SESSION_END_INFO_TAG:
        entry['status'] = api_pb2.Status.Name(
            hp_metadata.parse_session_end_info_plugin_data(content).status)
  return out



def repeats(logdir: str) -> dict[str, list[tuple[str, int]]]:
  """run -> the (tag, step) pairs it holds more than once, for every run under logdir ({}: none)."""
  out = {}
  for run in list_runs(logdir):
    seen, twice = set(), []
    for step, _, value in _values(os.path.join(logdir, run), exact=True):
      (twice.append if (value.tag, step) in seen else seen.add)((value.tag, step))
    if twice:
      out[run] = twice
  return out
