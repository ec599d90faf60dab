"""The two checkpoints an audit compares, loaded from directories and checked as a pair.

A directory in the Hugging Face layout (`config.json` + `*.safetensors`) goes
through `wrapper_study.hf.load` (GPT-2 and the LLaMA family; an unsupported
`model_type` fails before loading, in one line). A directory the project wrote
itself with `save_native` (`transformer_config.json` + `params.npz`, every leaf
by its path) loads without it, so the audit runs on the worlds' own models with
no conversion. Both models must share one architecture (the audit prunes,
probes and reverse fine-tunes them with one compiled function each).
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

from wrapper_study import model as model_lib
from wrapper_study.audit.spec import SpecError

NATIVE_CONFIG = 'transformer_config.json'
NATIVE_PARAMS = 'params.npz'


class ModelError(SpecError):
  """A model directory that cannot be audited (one line, naming the flag)."""


def save_native(cfg: model_lib.TransformerConfig, params, directory) -> pathlib.Path:
  """Writes a model as transformer_config.json + params.npz (leaves keyed 'a/b/c')."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / NATIVE_CONFIG).write_text(json.dumps(cfg.to_dict(), indent=1))
  flat = {'/'.join(str(getattr(k, 'key', k)) for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  np.savez(directory / NATIVE_PARAMS, **flat)
  return directory


def _load_native(directory: pathlib.Path, flag: str):
  try:
    cfg = model_lib.TransformerConfig.from_dict(json.loads((directory / NATIVE_CONFIG).read_text()))
    cfg.validate()
  except (ValueError, TypeError) as e:
    raise ModelError(f'--{flag}={directory}: {NATIVE_CONFIG} is not a model config: {e}') from None
  template = jax.eval_shape(lambda: model_lib.init_params(cfg, jax.random.PRNGKey(0)))
  with np.load(directory / NATIVE_PARAMS) as z:
    stored = {k: z[k] for k in z.files}
  want = model_lib.param_shapes(template)
  got = {k: tuple(v.shape) for k, v in stored.items()}
  if want != got:
    diff = sorted(set(want.items()) ^ set(got.items()))[:3]
    raise ModelError(f'--{flag}={directory}: {NATIVE_PARAMS} does not match its config '
                     f'(first differences: {diff}).')
  leaves = jax.tree_util.tree_flatten_with_path(template)[0]
  treedef = jax.tree.structure(template)
  params = jax.tree.unflatten(treedef, [
      np.asarray(stored['/'.join(str(getattr(k, 'key', k)) for k in p)], np.float32)
      for p, _ in leaves])
  return cfg, params


def check(directory, flag: str) -> str:
  """'native' or 'hf' when `directory` holds a model the audit can load; ModelError otherwise.

  Cheap (reads config files only): runs before any compute."""
  d = pathlib.Path(directory) if directory else None
  if d is None or not d.is_dir():
    raise ModelError(f'--{flag}={directory!r}: no such directory; give a model directory '
                     f'(Hugging Face layout: config.json + *.safetensors).')
  if (d / NATIVE_CONFIG).is_file() and (d / NATIVE_PARAMS).is_file():
    return 'native'
  if (d / 'config.json').is_file():
    try:
      from wrapper_study.hf import load as hf_load  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ModelError(f'--{flag}={d}: a Hugging Face directory, but this install has no '
                       f'wrapper_study.hf loader.') from None
    try:
      hf_load.check_supported(d)
    except (ValueError, OSError) as e:
      raise ModelError(f'--{flag}={d}: {e}') from None
    return 'hf'
  raise ModelError(f'--{flag}={d}: holds neither config.json (Hugging Face layout) nor '
                   f'{NATIVE_CONFIG} + {NATIVE_PARAMS}.')


def load(directory, flag: str):
  """(TransformerConfig, params) of the model in `directory`."""
  kind = check(directory, flag)
  d = pathlib.Path(directory)
  if kind == 'native':
    return _load_native(d, flag)
  from wrapper_study.hf import load as hf_load  # pylint: disable=g-import-not-at-top
  try:
    cfg, params = hf_load.load_pretrained(d)
  except (ValueError, OSError, KeyError) as e:
    raise ModelError(f'--{flag}={d}: {e}') from None
  return cfg, jax.tree.map(lambda x: np.asarray(x, np.float32), params)


def files_digest(*paths) -> str:
  """A digest of the files at `paths` (directories: every file inside) by name, size and
  modification time: cheap (nothing is read), and changes when a checkpoint or data file does."""
  import hashlib  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  for p in paths:
    p = pathlib.Path(p)
    files = sorted(p.rglob('*')) if p.is_dir() else [p]
    for f in files:
      if f.is_file():
        st = f.stat()
        h.update(f'{f.resolve()}:{st.st_size}:{st.st_mtime_ns};'.encode())
  return h.hexdigest()[:16]


def _architecture(cfg: model_lib.TransformerConfig) -> dict:
  """The config fields that change the function (not precision, attention kernel, qkv form)."""
  d = cfg.to_dict()
  for k in ('precision', 'attention', 'qkv'):
    d.pop(k, None)
  return d


def load_pair(pretrained, finetuned):
  """(cfg, pre_params, ft_params): both directories loaded, one architecture checked."""
  check(pretrained, 'pretrained')
  check(finetuned, 'finetuned')
  cfg, pre = load(pretrained, 'pretrained')
  cfg_ft, ft = load(finetuned, 'finetuned')
  a, b = _architecture(cfg), _architecture(cfg_ft)
  if a != b:
    diff = {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
    raise ModelError(f'--pretrained and --finetuned differ in architecture {diff}; an audit '
                     f'compares two checkpoints of one architecture.')
  if model_lib.param_shapes(pre) != model_lib.param_shapes(ft):
    raise ModelError('--pretrained and --finetuned have different parameter shapes.')
  return cfg, pre, ft
