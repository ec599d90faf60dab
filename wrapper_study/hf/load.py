"""Hugging Face checkpoints from a local directory into the shared transformer.

The layout `save_pretrained` writes: `config.json` plus either one `model.safetensors` or
shards named by `model.safetensors.index.json` (its `weight_map`). Nothing is downloaded and
PyTorch is not needed: the tensors are read with numpy (`safetensors_io`). The model type is
checked from config.json before any weight is read, so an unsupported checkpoint fails at
once with one line. Parameters come back as fp32 (fp16 / bf16 checkpoints are widened), in the
tree `model.init_params` makes for the returned config, so every instrument of the project
(`run_with_cache`, probes, pruning) runs on them as on the worlds' own models.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import struct

import jax
import numpy as np

from wrapper_study import config_check
from wrapper_study import model as model_lib
from wrapper_study.hf import architectures
from wrapper_study.hf import safetensors_io

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
SUPPORTED = {'gpt2': 'GPT-2', 'llama': 'LLaMA family (LLaMA 1/2/3 without rope scaling, '
                                        'TinyLlama, SmolLM, llama2.c exports)',
             'mistral': 'Mistral, up to its sliding window'}


class UnsupportedModelError(config_check.ConfigError):
  """A checkpoint the loader cannot read; its message is one line. A ConfigError (so a
  ValueError): raised from an experiment's validate() or run(), `wrapper-study` prints
  `FATAL config error: <message>` and exits 2."""


def supported_text() -> str:
  return ', '.join(f'{k!r} ({v})' for k, v in SUPPORTED.items())


def read_config(directory) -> dict:
  """config.json of a checkpoint directory, as a dict."""
  path = pathlib.Path(directory) / CONFIG_FILE
  if not path.is_file():
    raise UnsupportedModelError(f'{directory} has no {CONFIG_FILE}: expected a Hugging Face '
                                f'checkpoint directory (config.json + *.safetensors).')
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise UnsupportedModelError(f'{path} is not valid JSON: {e}.') from None


def check_supported(directory) -> dict:
  """Raises UnsupportedModelError (one line) unless the checkpoint loads; reads no weights.

  Returns the config.json dict.
  """
  hf = read_config(directory)
  model_type = hf.get('model_type')
  if model_type not in SUPPORTED:
    raise UnsupportedModelError(f'model_type={model_type!r} in {directory}/{CONFIG_FILE} is not '
                                f'supported; supported: {supported_text()}.')
  problems = architectures.unsupported_options(hf)
  if problems:
    raise UnsupportedModelError(f'{directory}: model_type={model_type!r} is supported, but not '
                                f'with {"; ".join(problems)}.')
  directory = pathlib.Path(directory)
  if not (directory / WEIGHTS_FILE).is_file() and not (directory / INDEX_FILE).is_file():
    found = sorted(p.name for p in directory.iterdir() if p.suffix in ('.bin', '.pt', '.h5',
                                                                        '.msgpack', '.gguf'))
    raise UnsupportedModelError(f'{directory} has no {WEIGHTS_FILE} or {INDEX_FILE}'
                                f'{f" (found {found})" if found else ""}; only safetensors '
                                f'weights load (convert with save_pretrained(..., '
                                f'safe_serialization=True)).')
  return hf


def config_from_hf(hf: dict, **overrides) -> model_lib.TransformerConfig:
  """config.json dict -> TransformerConfig; overrides set non-architecture fields
  (precision, attention, qkv) or anything else."""
  config = architectures.LOADERS[hf['model_type']][0](hf)
  config = dataclasses.replace(config, **overrides)
  config.validate()
  return config


def read_tensors(directory) -> dict[str, np.ndarray]:
  """Every tensor of the checkpoint, sharded or not: name -> numpy array."""
  directory = pathlib.Path(directory)
  if (directory / INDEX_FILE).is_file():
    weight_map = json.loads((directory / INDEX_FILE).read_text())['weight_map']
    files = sorted(set(weight_map.values()))
  else:
    files = [WEIGHTS_FILE]
  tensors = {}
  for name in files:
    try:
      tensors.update(safetensors_io.load_file(directory / name))
    except (OSError, ValueError, struct.error) as e:  # Missing shard, truncated or not the format.
      raise UnsupportedModelError(f'{directory / name}: not a readable safetensors file '
                                  f'({type(e).__name__}: {e}).') from None
  return tensors


def load_pretrained(directory, **overrides) -> tuple[model_lib.TransformerConfig, dict]:
  """(config, params) of the Hugging Face checkpoint in `directory`, ready for model.Transformer.

  overrides: TransformerConfig fields to set after reading config.json, e.g.
  precision='bf16' or attention='fused' (not architecture: the params are the same).
  """
  hf = check_supported(directory)
  config = config_from_hf(hf, **overrides)
  _, to_params, prefix = architectures.LOADERS[hf['model_type']]
  tensors = {(k[len(prefix):] if k.startswith(prefix) else k): v
             for k, v in read_tensors(directory).items()
             if not k.endswith(architectures.IGNORED_SUFFIXES)}
  used = set()

  class _Tracked(dict):  # Records which tensors the architecture read.
    def __getitem__(self, key):
      if key not in self:
        raise UnsupportedModelError(f'{directory}: tensor {key!r} (or {prefix}{key}) is missing '
                                    f'from the checkpoint for model_type={hf["model_type"]!r}.')
      used.add(key)
      return dict.__getitem__(self, key)

  params = to_params(_Tracked(tensors), config)
  unused = sorted(set(tensors) - used - ({'lm_head.weight'} if config.tied_embeddings else set()))
  if unused:
    raise UnsupportedModelError(f'{directory}: {len(unused)} tensor(s) the architecture does not '
                                f'use, e.g. {unused[:3]}; not a plain {hf["model_type"]} model.')
  params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
  _check_shapes(config, params, directory)
  return config, jax.tree_util.tree_map(jax.numpy.asarray, params)


def _check_shapes(config, params, directory) -> None:
  """The tree and shapes must be exactly what init_params makes for this config."""
  want = model_lib.param_shapes(jax.eval_shape(
      lambda: model_lib.init_params(config, jax.random.PRNGKey(0))))
  got = model_lib.param_shapes(params)
  if want != got:
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    raise UnsupportedModelError(
        f'{directory}: checkpoint tensors do not fit config.json: '
        + ', '.join(f'{k} {got.get(k)} vs {want.get(k)}' for k in diff[:3]) + '.')
