"""The one model factory of every trained world (nanodo's model_factory): config -> architecture.

Tracr's models are not built here: their shape comes from the compiled program
(`wrapper_study/tracr/model.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from wrapper_study.model import TransformerConfig, llama_config

FLAVOURS = ('gpt', 'llama')


def from_config(model_section: Mapping, **data_fields) -> TransformerConfig:
  """The one model factory of every trained world: a config's `model` section -> TransformerConfig.

  `flavour` picks the defaults ('gpt': minGPT-like pre-LayerNorm, causal,
  learned positions; 'llama': `llama_config`); every other key of the section
  that names a TransformerConfig field overrides them, so a new shape or
  flavour is a config change (`--config.model.norm=rms`). `data_fields` are
  what the world's data fixes (vocab_size, max_len). d_head defaults to
  d_model // n_heads. Keys that are not fields (e.g. `multiple_of`) are read
  by the flavour or ignored.
  """
  m = dict(model_section)
  flavour = m.pop('flavour', 'gpt')
  if flavour not in FLAVOURS:
    raise ValueError(f'model.flavour={flavour!r} is unknown; valid: {FLAVOURS}.')
  fields = {f.name for f in dataclasses.fields(TransformerConfig)}
  shape = {k: v for k, v in {**m, **data_fields}.items() if k in fields}
  if shape.get('d_model', 1) % shape.get('n_heads', 1):
    raise ValueError(f"model.d_model={shape['d_model']} must be divisible by "
                     f"model.n_heads={shape['n_heads']}.")
  if flavour == 'llama':
    base = llama_config(shape.pop('vocab_size'), shape.pop('max_len'), shape.pop('d_model'),
                        shape.pop('n_layers'), shape.pop('n_heads'),
                        multiple_of=m.get('multiple_of', 64))
    return dataclasses.replace(base, **shape)
  shape.setdefault('d_head', shape['d_model'] // shape['n_heads'])
  return TransformerConfig(**{'layer_norm': True, 'causal': True, **shape})
