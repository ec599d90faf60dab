"""Orbax checkpoints that know which architecture they belong to.

Each step directory holds two items: `state` (the train state pytree) and `meta`
(JSON describing the architecture, e.g. the model config and a name, see
`make_meta`). Restoring reads `meta` first and refuses a checkpoint written for
another architecture, naming every field that differs, before any array is read.

Saves are asynchronous and atomic (orbax writes a temporary directory and
renames it when complete), so a run killed mid-save resumes from the previous
complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from wrapper_study import model as model_lib

STATE = 'state'
META = 'meta'


def make_meta(name: str, model_config=None, params=None, **extra) -> dict:
  """Architecture description: name, model config dict and param shapes."""
  meta = {'name': name}
  if model_config is not None:
    meta['model'] = (model_config.to_dict() if hasattr(model_config, 'to_dict')
                     else dict(model_config))
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
              if f.default is not dataclasses.MISSING}
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
  if diffs:
    raise ValueError(
        f'Checkpoint {directory} (step {step}) was written for a different '
        f'architecture; these fields differ:\n  ' + '\n  '.join(diffs) +
        '\nUse another --workdir for this config, or fix the config to match '
        'the checkpoint.')


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Saves every `save_every` steps, keeps `max_to_keep`, checks meta on restore."""

  def __init__(self, directory: str, meta: Mapping, save_every: int = 1000,
               max_to_keep: Optional[int] = 3):
    if save_every < 1:
      raise ValueError(f'save_every must be >= 1, got {save_every}.')
    self.directory = os.path.abspath(directory)
    self.meta = _jsonable(meta)
    self.save_every = int(save_every)
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=1, create=True))
    # Interval handled by should_save below, so `force` saves at any step work
    # without orbax's own interval logic in the way.

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

  def restore(self, step: int, target_state):
    """State at `step`, shaped like `target_state`, after the meta check."""
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
    """(step, state) of the latest checkpoint, or None if there is none."""
    step = self.latest_step()
    if step is None:
      return None
    logging.info('Restoring checkpoint %s step %d.', self.directory, step)
    return step, self.restore(step, target_state)

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def load_params(directory: str, expected_meta: Mapping, step: Optional[int] = None):
  """Params of a finished run (latest step by default), after the meta check."""
  mngr = ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(create=False),
      item_handlers={STATE: ocp.PyTreeCheckpointHandler(),
                     META: ocp.JsonCheckpointHandler()})
  try:
    if step is None:
      step = mngr.latest_step()
      if step is None:
        raise FileNotFoundError(f'No checkpoint in {directory}.')
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
