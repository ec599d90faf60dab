"""The project's own models written as Hugging Face checkpoints (config.json + safetensors).

The inverse of `load.load_pretrained`, bitwise: the GPT flavour (pre-LayerNorm, learned
positions, biases; tied or not) is written as `gpt2`, the LLaMA flavour (RMSNorm, RoPE,
SwiGLU, optional grouped-query attention) as `llama`, so `transformers` opens them as well
(`GPT2LMHeadModel` / `LlamaForCausalLM`). A model neither architecture can express (no
LayerNorm like Tracr's, bidirectional, an output vocabulary other than the input one, ...)
fails with one line naming the field. Params are written fp32 as they are.
"""

from __future__ import annotations

import json
import pathlib
from typing import Optional

import jax
import numpy as np

from wrapper_study import model as model_lib
from wrapper_study.hf import architectures
from wrapper_study.hf import load
from wrapper_study.hf import safetensors_io


def architecture_of(config: model_lib.TransformerConfig) -> str:
  """'gpt2' or 'llama'; ValueError (one line) naming what neither can express."""
  c = config
  common = [('causal', c.causal, True), ('layer_norm', c.layer_norm, True),
            ('d_vocab_out', c.n_outputs, c.vocab_size)]
  gpt2 = common + [('norm', c.norm, 'layer'), ('pos_embedding', c.pos_embedding, 'learned'),
                   ('mlp', c.mlp, 'standard'), ('use_bias', c.use_bias, True),
                   ('n_kv_heads', c.kv_heads, c.n_heads),
                   ('n_heads * d_head', c.n_heads * c.d_head, c.d_model),
                   ('activation', c.activation in architectures._GPT2_EXPORT_ACTIVATIONS, True)]
  llama = common + [('norm', c.norm, 'rms'), ('pos_embedding', c.pos_embedding, 'rope'),
                    ('mlp', c.mlp, 'swiglu'), ('activation', c.activation, 'silu')]
  misfits = {}
  for name, checks in (('gpt2', gpt2), ('llama', llama)):
    misfits[name] = [f'model.{field}={got!r} (needs {want!r})'
                     for field, got, want in checks if got != want]
    if not misfits[name]:
      return name
  nearest = min(misfits, key=lambda k: len(misfits[k]))
  raise ValueError(f'This model has no Hugging Face architecture: nearest is {nearest!r}, but '
                   f'{"; ".join(misfits[nearest])}.')


def save_pretrained(config: model_lib.TransformerConfig, params, directory,
                    max_shard_bytes: Optional[int] = None) -> pathlib.Path:
  """Writes config.json and model.safetensors (or shards of at most max_shard_bytes each plus
  model.safetensors.index.json) into directory; returns it. Loads back bitwise."""
  config.validate()
  kind = architecture_of(config)
  export = {'gpt2': architectures.gpt2_export, 'llama': architectures.llama_export}[kind]
  params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), jax.device_get(params))
  hf, tensors = export(config, params)
  tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}
  hf = {**hf, 'torch_dtype': 'float32', 'exported_by': 'wrapper_study'}
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / load.CONFIG_FILE).write_text(json.dumps(hf, indent=2, sort_keys=True) + '\n')
  shards = _shards(tensors, max_shard_bytes)
  if len(shards) == 1:
    safetensors_io.save_file(tensors, directory / load.WEIGHTS_FILE)
    return directory
  weight_map = {}
  for i, names in enumerate(shards):
    file = f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors'
    safetensors_io.save_file({n: tensors[n] for n in names}, directory / file)
    weight_map.update({n: file for n in names})
  index = {'metadata': {'total_size': sum(v.nbytes for v in tensors.values())},
           'weight_map': dict(sorted(weight_map.items()))}
  (directory / load.INDEX_FILE).write_text(json.dumps(index, indent=2) + '\n')
  return directory


def _shards(tensors: dict, max_shard_bytes: Optional[int]) -> list[list[str]]:
  """Names grouped in order into shards of at most max_shard_bytes (a bigger tensor alone)."""
  if max_shard_bytes is None:
    return [sorted(tensors)]
  shards, size = [[]], 0
  for name in sorted(tensors):
    n = tensors[name].nbytes
    if shards[-1] and size + n > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += n
  return shards
