"""Orbax checkpoints that know which architecture they belong to.

Each step directory holds two items: `state` (the train state pytree) and `meta`
(JSON describing the architecture, e.g. the model config and a name, see
`make_meta`). Restoring reads `meta` first and refuses a checkpoint written for
another architecture, naming every field that differs, before any array is read.

Saves are asynchronous and atomic (orbax writes a temporary directory and
renames it when complete), so a run killed mid-save resumes from the previous
complete checkpoint.

A step damaged later (a file truncated or deleted, broken JSON) is found by
`verify_step` before orbax reads it: orbax's concurrent reads, failing midway,
leave tensorstore callbacks firing into a closed event loop (dozens of "Event
loop is closed" tracebacks). Resuming moves such a step aside to
`<dir>/<step>.corrupt-<n>` (never deleted; orbax no longer lists it) and uses the
newest intact step.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import threading
from typing import Any, Mapping, Optional
import weakref

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from wrapper_study import config_check
from wrapper_study import model as model_lib

STATE = 'state'
META = 'meta'
# TransformerConfig fields that choose how to compute, not what: left out of meta.
COMPUTE_FIELDS = ('precision', 'attention', 'qkv')


def make_meta(name: str, model_config=None, params=None, **extra) -> dict:
  """Architecture description: name, model config dict and param shapes."""
  meta = {'name': name}
  if model_config is not None:
    meta['model'] = (model_config.to_dict() if hasattr(model_config, 'to_dict')
                     else dict(model_config))
    # Compute choices are not architecture: an fp32 checkpoint resumes under bf16,
    # one trained with explicit attention under fused, three q/k/v matmuls under one.
    for compute in COMPUTE_FIELDS:
      meta['model'].pop(compute, None)
  if params is not None:
    meta['param_shapes'] = model_lib.param_shapes(params)
  meta.update(extra)
  return _jsonable(meta)


def _jsonable(meta: Mapping) -> dict:
  # The saved copy went through JSON (tuples became lists); compare like with like.
  return json.loads(json.dumps(meta))


def _flatten(d: Any, prefix: str = '') -> dict[str, Any]:
  """Nested dict -> {'a.b.c': leaf}."""
  if isinstance(d, Mapping) and d:
    out = {}
    for k, v in d.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: d}


_MISSING = '<missing>'


def meta_differences(saved: Mapping, expected: Mapping) -> list[str]:
  """'field: saved X, expected Y' for every differing (dotted) field."""
  saved_f, expected_f = _flatten(_jsonable(saved)), _flatten(_jsonable(expected))
  lines = []
  for key in sorted(set(saved_f) | set(expected_f)):
    s, e = saved_f.get(key, _MISSING), expected_f.get(key, _MISSING)
    if s != e:
      lines.append(f'{key}: saved {s}, expected {e}')
  return lines


def _with_model_defaults(saved: Mapping) -> Mapping:
  """Fills model fields added to TransformerConfig after a checkpoint was written.

  Their defaults reproduce the old behaviour exactly, so an old checkpoint is
  the architecture the default value describes.
  """
  if not isinstance(saved.get('model'), Mapping):
    return saved
  defaults = {f.name: f.default for f in dataclasses.fields(model_lib.TransformerConfig)
              if f.default is not dataclasses.MISSING and f.name not in COMPUTE_FIELDS}
  return {**saved, 'model': {**_jsonable(defaults), **saved['model']}}


def _check_meta(directory: str, step: int, saved: Mapping, expected: Mapping,
                params=None) -> None:
  saved = _with_model_defaults(saved)
  diffs = meta_differences(saved, expected)
  if params is not None and 'param_shapes' in saved and 'param_shapes' not in expected:
    diffs += meta_differences({'param_shapes': saved['param_shapes']},
                              {'param_shapes': model_lib.param_shapes(params)})
  # Config fields first; per-parameter shapes only as supporting evidence.
  shapes = [d for d in diffs if d.startswith('param_shapes.')]
  diffs = [d for d in diffs if not d.startswith('param_shapes.')] + shapes[:8]
  if len(shapes) > 8:
    diffs.append(f'(and {len(shapes) - 8} more param_shapes)')
  if diffs:  # A user's input error (the config or the workdir), not damage: ConfigError.
    raise config_check.ConfigError(
        f'Checkpoint {directory} (step {step}) was written for a different '
        f'architecture; these fields differ:\n  ' + '\n  '.join(diffs) +
        '\nUse another --workdir for this config, or fix the config to match '
        'the checkpoint.')


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class CorruptCheckpointError(OSError):
  """A checkpoint step whose files cannot be read (truncated, deleted, bad JSON)."""

  def __init__(self, directory: str, step: int, path: str, error: BaseException):
    self.directory, self.step, self.path = directory, step, path
    self.reason = _first_line(error)
    super().__init__(f'Checkpoint {directory} step {step} cannot be read: {path}: '
                     f'{self.reason}')


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return f'{type(error).__name__}: {text.splitlines()[0] if text else ""}'.strip()


# JSON files orbax writes in a step directory; required ones must exist.
_JSON_NAMES = ('_CHECKPOINT_METADATA', '_METADATA', '_sharding', 'metadata')
_REQUIRED = (os.path.join(META, 'metadata'), os.path.join(STATE, '_METADATA'))
_ARRAY_TYPES = ('jax.Array', 'np.ndarray', 'scalar')


def verify_step(directory: str, step: int) -> None:
  """Reads every file of a step synchronously; raises CorruptCheckpointError.

  Synchronous on purpose: tensorstore's blocking reads fail with one exception,
  where orbax's concurrent restore would fail with a cascade of "Event loop is
  closed" tracebacks. Costs one extra read of the step (then in the page cache).
  """
  step_dir = os.path.join(directory, str(step))

  def corrupt(path, error):
    return CorruptCheckpointError(directory, step, path, error)

  for rel in _REQUIRED:
    if not os.path.isfile(os.path.join(step_dir, rel)):
      raise corrupt(os.path.join(step_dir, rel), FileNotFoundError('missing'))
  jsons = {}
  for root, _, files in os.walk(step_dir):
    for f in files:
      path = os.path.join(root, f)
      if f in _JSON_NAMES or os.path.basename(root) == 'array_metadatas':
        try:
          with open(path, 'rb') as fh:
            jsons[os.path.relpath(path, step_dir)] = json.loads(fh.read())
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError too.
          raise corrupt(path, e) from e
  state_dir = os.path.join(step_dir, STATE)
  tree_meta = jsons[os.path.join(STATE, '_METADATA')]
  try:
    use_ocdbt = bool(tree_meta.get('use_ocdbt', True))
    expected = {'.'.join(str(k['key']) for k in v['key_metadata'])
                for v in tree_meta['tree_metadata'].values()
                if v['value_metadata'].get('value_type') in _ARRAY_TYPES
                and not v['value_metadata'].get('skip_deserialize')}
  except (AttributeError, KeyError, TypeError) as e:
    raise corrupt(os.path.join(state_dir, '_METADATA'), e) from e
  _verify_arrays(state_dir, use_ocdbt, expected, corrupt)


def _verify_arrays(state_dir: str, use_ocdbt: bool, expected: set[str], corrupt) -> None:
  """Opens and fully reads every zarr array under state_dir, one at a time."""
  base = {'driver': 'file', 'path': state_dir + '/'}
  store = {'driver': 'ocdbt', 'base': base} if use_ocdbt else base
  context = ts.Context()  # Fresh caches: read the files as they are now.
  name = state_dir
  try:
    keys = [k.decode() for k in
            ts.KvStore.open(store, context=context).result().list().result()]
    arrays = {}
    for key in keys:
      head, _, tail = key.rpartition('/')
      if tail in ('.zarray', 'zarr.json'):
        arrays[head] = 'zarr' if tail == '.zarray' else 'zarr3'
    missing = sorted(expected - set(arrays))
    if missing:
      raise FileNotFoundError(f'{len(missing)} arrays missing, e.g. {missing[0]}')
    for name, driver in sorted(arrays.items()):
      spec = {'driver': driver, 'kvstore': {**store, 'path': name + '/'}}
      ts.open(spec, open=True, read=True, context=context).result().read().result()
  except (OSError, ValueError, RuntimeError) as e:  # tensorstore raises ValueError.
    where = state_dir if name == state_dir else f'{state_dir} (array {name})'
    raise corrupt(where, e) from e


def _move_aside(directory: str, step: int, error: CorruptCheckpointError) -> str:
  """Renames an unreadable step to <step>.corrupt-<n> (orbax lists digits only)."""
  src = os.path.join(directory, str(step))
  n = 1
  while os.path.exists(f'{src}.corrupt-{n}'):
    n += 1
  dst = f'{src}.corrupt-{n}'
  os.rename(src, dst)
  logging.warning('Checkpoint %s step %d is unreadable (%s: %s); moved it to %s and '
                  'falling back to the previous step.', directory, step, error.path,
                  error.reason, dst)
  return dst


# Checkpointers not closed yet. A process ending on an exception before a
# caller's close() would otherwise exit with a save in flight: the save is lost
# and orbax's threads die in hundreds of "Event loop is closed" / "cannot
# schedule new futures after interpreter shutdown" tracebacks.
_OPEN: 'weakref.WeakSet[Checkpointer]' = weakref.WeakSet()


def _close_open_checkpointers() -> None:
  """Closes (so finishes saving) every open Checkpointer at interpreter exit."""
  for ckpt in list(_OPEN):
    try:
      ckpt.close()
    except Exception as e:  # pylint: disable=broad-exception-caught
      logging.warning('Closing checkpointer %s at exit failed: %s', ckpt.directory,
                      _first_line(e))


# threading's exit hooks run before concurrent.futures stops taking work
# (plain atexit hooks run after, too late for orbax's thread pools).
getattr(threading, '_register_atexit', atexit.register)(_close_open_checkpointers)


class Checkpointer:
  """Saves every `save_every` steps, keeps `max_to_keep`, checks meta on restore."""

  def __init__(self, directory: str, meta: Mapping, save_every: int = 1000,
               max_to_keep: Optional[int] = 3):
    if save_every < 1:
      raise ValueError(f'save_every must be >= 1, got {save_every}.')
    self.directory = os.path.abspath(directory)
    self.meta = _jsonable(meta)
    self.save_every = int(save_every)
    self.moved_aside: list[str] = []  # Unreadable steps renamed by restore_latest.
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=1, create=True))
    # Interval handled by should_save below, so `force` saves at any step work
    # without orbax's own interval logic in the way.
    _OPEN.add(self)

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def should_save(self, step: int) -> bool:
    return step % self.save_every == 0 and step != self.latest_step()

  def save(self, step: int, state, force: bool = False) -> bool:
    """Starts an async save if due (or forced); returns whether it did."""
    if not (force or self.should_save(step)):
      return False
    if step == self.latest_step():
      return False  # Already on disk (e.g. the final force after an interval save).
    return self._mngr.save(
        step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            META: ocp.args.JsonSave(self.meta)}),
        force=True)

  def read_meta(self, step: int) -> dict:
    return self._mngr.restore(step, args=ocp.args.Composite(
        **{META: ocp.args.JsonRestore()}))[META]

  def restore(self, step: int, target_state, verify: bool = True):
    """State at `step`, shaped like `target_state`, after the meta check.

    Raises CorruptCheckpointError (nothing moved) if the step cannot be read.
    """
    if verify:
      verify_step(self.directory, step)
    saved = self.read_meta(step)
    _check_meta(self.directory, step, saved, self.meta,
                getattr(target_state, 'params', None))
    try:
      restored = self._mngr.restore(step, args=ocp.args.Composite(**{
          STATE: ocp.args.StandardRestore(_abstract(target_state))}))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(
          f'Checkpoint {self.directory} (step {step}) matches the architecture '
          f'meta but not the train state structure (another optimizer?): {e}\n'
          'Use another --workdir for this config, or fix the config.') from e
    return restored[STATE]

  def restore_latest(self, target_state):
    """(step, state) of the newest intact checkpoint, or None if there is none.

    Unreadable newer steps are moved aside (see _move_aside) with a warning, so
    a damaged file costs the steps since the previous checkpoint, not the run.
    An architecture mismatch still raises: it is the config's fault, not the
    files'.
    """
    for step in sorted(self.all_steps(), reverse=True):
      try:
        verify_step(self.directory, step)
      except CorruptCheckpointError as e:
        self.moved_aside.append(_move_aside(self.directory, step, e))
        self._mngr.reload()
        continue
      logging.info('Restoring checkpoint %s step %d.', self.directory, step)
      return step, self.restore(step, target_state, verify=False)
    return None

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and stops orbax's threads; safe to call twice."""
    _OPEN.discard(self)
    self._mngr.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def load_params(directory: str, expected_meta: Mapping, step: Optional[int] = None):
  """Params of a finished run (latest step by default), after the meta check.

  With step=None, unreadable newer steps are moved aside with a warning and the
  newest intact step is loaded; an explicit unreadable step raises
  CorruptCheckpointError (one line naming the file) and is left in place.
  """
  directory = os.path.abspath(directory)
  mngr = ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(create=False),
      item_handlers={STATE: ocp.PyTreeCheckpointHandler(),
                     META: ocp.JsonCheckpointHandler()})
  try:
    if step is None:
      for candidate in sorted(mngr.all_steps(), reverse=True):
        try:
          verify_step(directory, candidate)
        except CorruptCheckpointError as e:
          _move_aside(directory, candidate, e)
          continue
        step = candidate
        break
      if step is None:
        raise FileNotFoundError(f'No intact checkpoint in {directory}.')
    else:
      verify_step(directory, step)
    saved = mngr.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
    _check_meta(directory, step, saved, _jsonable(expected_meta))
    # Read only the params subtree: the optimizer state may be large and its
    # structure is not needed here.
    meta_tree = mngr.item_metadata(step)[STATE]
    item = {'params': jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                                   _params_of(meta_tree))}
    restored = mngr.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.PyTreeRestore(
            item=item, partial_restore=True,
            restore_args=jax.tree.map(
                lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item))}))
    return restored[STATE]['params']
  finally:
    mngr.close()


def _params_of(tree_metadata):
  # Orbax stores a dataclass state as a dict of its fields.
  tree = getattr(tree_metadata, 'tree', tree_metadata)
  if 'params' not in tree:
    raise ValueError(f'Checkpoint state has no params; fields: {list(tree.keys())}.')
  return tree['params']
