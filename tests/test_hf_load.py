"""Hugging Face checkpoints in and out: parity with transformers' logits (stored, no PyTorch
here), one-line refusals, bitwise export round trips of the worlds' own models."""

import functools
import json
import pathlib
import shutil
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pcfg_study
from configs import tinystories_study
from wrapper_study import config_check
from wrapper_study import hf
from wrapper_study import model as model_lib
from wrapper_study.hf import safetensors_io
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.tinystories import model as tinystories_model

FIXTURES = pathlib.Path(__file__).parent / 'data' / 'hf'  # make_hf_fixtures.py writes them.
TOLERANCE = 1e-4  # Max |logits - transformers' logits|, fp32 (measured: see the notes).


def _logits(config, params, tokens, **kwargs):
  return np.asarray(model_lib.run_with_cache(config, params, jnp.asarray(tokens), **kwargs)[0])


def _same_tree(a, b) -> bool:
  """Same structure, dtypes and bits."""
  if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
    return False
  return all(x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize('name,overrides', [
    ('gpt2', {}),
    ('llama_gqa', {}),
    ('mistral_mqa', {}),
    ('llama_gqa', {'attention': 'fused'}),  # Other forms of the same function.
    ('llama_gqa', {'qkv': 'three_matmuls', 'attention': 'fused'}),
])
def test_logits_match_transformers(name, overrides):
  config, params = hf.load_pretrained(FIXTURES / name, **overrides)
  reference = np.load(FIXTURES / name / 'logits.npy')
  logits = _logits(config, params, np.load(FIXTURES / name / 'tokens.npy'))
  assert logits.shape == reference.shape
  assert np.abs(logits - reference).max() <= TOLERANCE
  assert reference.std() > 1.0  # Logits far from zero: a wrong permutation would show.


def test_configs_read_from_the_fixtures():
  gpt2, _ = hf.load_pretrained(FIXTURES / 'gpt2')
  assert (gpt2.activation, gpt2.tied_embeddings, gpt2.pos_embedding, gpt2.use_bias) == (
      'gelu_tanh', True, 'learned', True)
  llama, params = hf.load_pretrained(FIXTURES / 'llama_gqa')  # Sharded on disk.
  assert (llama.n_heads, llama.n_kv_heads, llama.rope_base, llama.norm_eps) == (4, 2, 5e5, 1e-6)
  assert not llama.tied_embeddings and 'unembed' in params
  assert params['blocks_0']['attn']['key']['kernel'].shape == (32, 2 * 8)
  mistral, params = hf.load_pretrained(FIXTURES / 'mistral_mqa')
  assert (mistral.n_kv_heads, mistral.max_len, mistral.tied_embeddings) == (1, 16, True)
  assert 'unembed' not in params  # Tied: one matrix, as in the file.


def test_run_with_cache_on_a_loaded_model():
  config, params = hf.load_pretrained(FIXTURES / 'llama_gqa')
  tokens = np.load(FIXTURES / 'llama_gqa' / 'tokens.npy')
  logits, cache = model_lib.run_with_cache(config, params, tokens, names=lambda n: True)
  assert set(cache) == set(model_lib.hook_names(config))
  assert cache['blocks.1.attn.hook_k'].shape == (3, 12, 2, 8)  # The 2 key/value heads.
  assert cache['blocks.1.attn.hook_pattern'].shape == (3, 4, 12, 12)  # The 4 query heads.
  np.testing.assert_allclose(logits, np.load(FIXTURES / 'llama_gqa' / 'logits.npy'),
                             atol=TOLERANCE)
  zeroed = _logits(config, params, tokens, hooks={'blocks.1.hook_mlp_out': jnp.zeros_like})
  assert np.abs(zeroed - np.asarray(logits)).max() > 0.1


def test_kv_cache_decoding_of_a_loaded_gqa_model_matches_the_full_forward():
  config, params = hf.load_pretrained(FIXTURES / 'llama_gqa')
  tokens = np.load(FIXTURES / 'llama_gqa' / 'tokens.npy')
  kv = model_lib.init_kv_cache(config, batch_size=3, length=12)
  step = jax.jit(functools.partial(model_lib.forward_with_kv_cache, config))
  first, kv = step(params, tokens[:, :7], kv)
  rest, _ = step(params, tokens[:, 7:], kv)
  np.testing.assert_allclose(np.concatenate([first, rest], axis=1),
                             np.load(FIXTURES / 'llama_gqa' / 'logits.npy'), atol=TOLERANCE)


def _checkpoint(tmp_path, config_json: dict) -> pathlib.Path:
  """A directory with this config.json and a weights file that is not safetensors at all."""
  (tmp_path / 'config.json').write_text(json.dumps(config_json))
  (tmp_path / 'model.safetensors').write_bytes(b'not read')
  return tmp_path


def test_unsupported_model_type_fails_in_one_line_before_reading_weights(tmp_path):
  directory = _checkpoint(tmp_path, {'model_type': 'bert', 'hidden_size': 8})
  with pytest.raises(hf.UnsupportedModelError) as e:
    hf.load_pretrained(directory)
  message = str(e.value)
  assert '\n' not in message and "model_type='bert'" in message
  assert "'gpt2'" in message and "'llama'" in message
  # A ConfigError: `wrapper-study` prints it as `FATAL config error: ...` and exits 2.
  assert isinstance(e.value, config_check.ConfigError)


def test_unsupported_options_of_a_supported_type_fail_in_one_line(tmp_path):
  llama = json.loads((FIXTURES / 'llama_gqa' / 'config.json').read_text())
  llama['rope_parameters'] = {'rope_type': 'llama3', 'rope_theta': 5e5, 'factor': 8.0}
  with pytest.raises(hf.UnsupportedModelError, match="rope scaling 'llama3'") as e:
    hf.check_supported(_checkpoint(tmp_path, llama))
  assert '\n' not in str(e.value)
  shutil.copy(FIXTURES / 'gpt2' / 'config.json', tmp_path)  # Supported, but torch weights.
  (tmp_path / 'model.safetensors').unlink()
  (tmp_path / 'pytorch_model.bin').write_bytes(b'')
  with pytest.raises(hf.UnsupportedModelError, match=r"found \['pytorch_model.bin'\].*only"):
    hf.check_supported(tmp_path)


def test_checkpoints_of_the_bare_model_without_the_head_prefix_load_the_same(tmp_path):
  # The original `gpt2` upload is a GPT2Model: 'h.0.attn...' instead of 'transformer.h.0...',
  # with the causal-mask buffers 'h.{l}.attn.bias' and 'h.{l}.attn.masked_bias' stored too.
  tensors = safetensors_io.load_file(FIXTURES / 'gpt2' / 'model.safetensors')
  bare = {k.removeprefix('transformer.'): v for k, v in tensors.items()}
  for l in range(2):
    bare[f'h.{l}.attn.bias'] = np.tril(np.ones((1, 1, 16, 16), np.float32))
    bare[f'h.{l}.attn.masked_bias'] = np.array(-1e4, np.float32)
  safetensors_io.save_file(bare, tmp_path / 'model.safetensors')
  shutil.copy(FIXTURES / 'gpt2' / 'config.json', tmp_path)
  assert _same_tree(hf.load_pretrained(tmp_path)[1], hf.load_pretrained(FIXTURES / 'gpt2')[1])


def test_a_missing_or_extra_tensor_is_named(tmp_path):
  tensors = safetensors_io.load_file(FIXTURES / 'gpt2' / 'model.safetensors')
  shutil.copy(FIXTURES / 'gpt2' / 'config.json', tmp_path)
  missing = {k: v for k, v in tensors.items() if k != 'transformer.h.1.mlp.c_fc.bias'}
  safetensors_io.save_file(missing, tmp_path / 'model.safetensors')
  with pytest.raises(hf.UnsupportedModelError, match='h.1.mlp.c_fc.bias'):
    hf.load_pretrained(tmp_path)
  safetensors_io.save_file({**tensors, 'transformer.h.0.adapter.weight': np.zeros(2, np.float32)},
                           tmp_path / 'model.safetensors')
  with pytest.raises(hf.UnsupportedModelError, match='adapter'):
    hf.load_pretrained(tmp_path)
  (tmp_path / 'model.safetensors').write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
  with pytest.raises(hf.UnsupportedModelError, match='not a readable safetensors file'):
    hf.load_pretrained(tmp_path)


def test_bf16_and_fp16_tensors_widen_to_fp32_exactly(tmp_path):
  values = np.array([1.0, -2.5, 3.140625, 1e-3], np.float32)
  bf16 = (values.view(np.uint32) >> 16).astype('<u2')  # Truncation: bf16's bits of each value.
  header = json.dumps({'a': {'dtype': 'BF16', 'shape': [2, 2], 'data_offsets': [0, 8]},
                       'b': {'dtype': 'F16', 'shape': [4], 'data_offsets': [8, 16]}}).encode()
  (tmp_path / 'x.safetensors').write_bytes(struct.pack('<Q', len(header)) + header
                                           + bf16.tobytes() + values.astype('<f2').tobytes())
  read = safetensors_io.load_file(tmp_path / 'x.safetensors')
  np.testing.assert_array_equal(read['a'].ravel(), (bf16.astype(np.uint32) << 16).view(np.float32))
  np.testing.assert_array_equal(read['a'].ravel()[:3], values[:3])  # Exact in bf16.
  np.testing.assert_array_equal(read['b'], values.astype(np.float16))


def _random_params(config, seed: int) -> dict:
  """Params of init_params' tree, every leaf N(0, 1) (biases and norms too; no slow init)."""
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(np.float32)),
      jax.eval_shape(lambda: model_lib.init_params(config, jax.random.PRNGKey(0))))


def _world_models():
  pcfg = pcfg_model.model_config(pcfg_study.get_config('smoke'))
  tinystories = tinystories_model.model_config(tinystories_study.get_config('smoke'))
  return {'pcfg_gpt': pcfg, 'tinystories_llama': tinystories}


@pytest.mark.parametrize('world', ['pcfg_gpt', 'tinystories_llama'])
@pytest.mark.parametrize('max_shard_bytes', [None, 4096])
def test_export_then_load_is_bitwise(tmp_path, world, max_shard_bytes):
  config = _world_models()[world]
  params = _random_params(config, seed=3)
  hf.save_pretrained(config, params, tmp_path, max_shard_bytes=max_shard_bytes)
  assert (tmp_path / 'model.safetensors.index.json').exists() == bool(max_shard_bytes)
  loaded_config, loaded = hf.load_pretrained(tmp_path, precision=config.precision,
                                             attention=config.attention, qkv=config.qkv)
  assert loaded_config == config
  assert _same_tree(params, loaded)  # Same config and bits: the same model.


def test_export_round_trip_of_grouped_query_untied_llama(tmp_path):
  config = model_lib.llama_config(40, 16, 32, 2, 4, n_kv_heads=2, tied_embeddings=False,
                                   use_bias=True, rope_base=5e5, norm_eps=1e-6)
  params = _random_params(config, seed=4)
  loaded_config, loaded = hf.load_pretrained(hf.save_pretrained(config, params, tmp_path))
  assert loaded_config == config and _same_tree(params, loaded)


def test_a_model_without_a_hugging_face_architecture_is_refused_in_one_line(tmp_path):
  tracr_like = model_lib.TransformerConfig(vocab_size=8, max_len=6)  # No LayerNorm, not causal.
  with pytest.raises(ValueError, match='model.causal=False') as e:
    hf.save_pretrained(tracr_like, params=None, directory=tmp_path)  # Refused before params.
  assert '\n' not in str(e.value) and not list(tmp_path.iterdir())
