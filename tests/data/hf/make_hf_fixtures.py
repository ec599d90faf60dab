"""Regenerates the Hugging Face parity fixtures under tests/data/hf/ (needs torch + transformers).

    /work/venv-torch/bin/python tests/data/hf/make_hf_fixtures.py   # any env with both

Tiny random models of the two supported architectures, seeded, with every weight drawn at a
scale where the nonlinearities, norms, biases and the RoPE order matter (Hugging Face's 0.02
init makes logits near zero, where a wrong permutation hides):
  gpt2/        GPT-2: gelu_new, tied embeddings, fused c_attn; one model.safetensors.
  llama_gqa/   LLaMA: 4 query heads on 2 key/value heads, untied lm_head, rope_theta 5e5,
               rms_norm_eps 1e-6; saved in shards (model.safetensors.index.json).
  mistral_mqa/ Mistral: 4 query heads on 1 key/value head, tied, sliding_window 16 (longer
               than the inputs, so it is LLaMA's function).
Each directory also holds tokens.npy (fixed inputs) and logits.npy, the logits of the
reference implementation (transformers, PyTorch fp32, eager attention) on them.
tests/test_hf_load.py compares the Flax model's logits with these, without PyTorch.

Then (nothing written) the other direction: the project's GPT and LLaMA flavours, exported
by wrapper_study.hf.save_pretrained, opened by transformers, against the Flax logits.
"""

import json
import pathlib

import numpy as np
import torch
import transformers

HERE = pathlib.Path(__file__).resolve().parent
VOCAB, SEQ, BATCH = 96, 12, 3


def _randomize(model, seed: int) -> None:
  """Every parameter redrawn: weights N(0, 0.3^2), norm scales 1 + N(0, 0.1^2), biases and
  norm offsets N(0, 0.1^2)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      if 'norm' in name or 'ln_' in name:
        p.copy_(1.0 + 0.1 * noise if name.endswith('weight') else 0.1 * noise)
      elif name.endswith('bias'):
        p.copy_(0.1 * noise)
      else:
        p.copy_(0.3 * noise)


def _save(model, name: str, **save_kwargs) -> None:
  out = HERE / name
  out.mkdir(exist_ok=True)
  for old in out.glob('*'):
    old.unlink()
  model.save_pretrained(out, safe_serialization=True, **save_kwargs)
  tokens = np.random.RandomState(0).randint(0, VOCAB, size=(BATCH, SEQ)).astype(np.int32)
  with torch.no_grad():
    logits = model(torch.from_numpy(tokens).long()).logits.float().numpy()
  np.save(out / 'tokens.npy', tokens)
  np.save(out / 'logits.npy', logits)
  for extra in ('generation_config.json',):  # Not read by the loader; keep the fixture small.
    if (out / extra).exists():
      (out / extra).unlink()
  size = sum(p.stat().st_size for p in out.iterdir())
  print(f'{name}: {sorted(p.name for p in out.iterdir())}, {size} bytes, '
        f'logits std {logits.std():.3f}')


def _save_tied(model, seed: int) -> None:
  _randomize(model, seed)
  model.tie_weights()  # Redrawn separately above; tied again, the saved file holds one.
  assert model.lm_head.weight is model.model.embed_tokens.weight
  _save(model.eval(), 'mistral_mqa')


def main():
  torch.manual_seed(0)
  gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=4,
      activation_function='gelu_new', bos_token_id=None, eos_token_id=None,
      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
      attn_implementation='eager'))
  _randomize(gpt2, seed=1)
  _save(gpt2.eval(), 'gpt2')

  llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
      rms_norm_eps=1e-6, rope_theta=500000.0, tie_word_embeddings=False,
      attn_implementation='eager'))
  _randomize(llama, seed=2)
  _save(llama.eval(), 'llama_gqa', max_shard_size='20KB')

  mistral = transformers.MistralForCausalLM(transformers.MistralConfig(
      vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
      sliding_window=16, rms_norm_eps=1e-5, tie_word_embeddings=True,
      attn_implementation='eager'))
  _save_tied(mistral, seed=3)
  print(json.dumps({'torch': torch.__version__, 'transformers': transformers.__version__}))
  check_exports()


def check_exports() -> None:
  """Max |logits difference| of transformers on save_pretrained's output vs the Flax model."""
  import tempfile  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from wrapper_study import model as model_lib  # pylint: disable=import-outside-toplevel
  from wrapper_study import model_factory  # pylint: disable=import-outside-toplevel
  from wrapper_study import hf  # pylint: disable=import-outside-toplevel
  sections = {'gpt (PCFG shape, exact gelu, untied)': dict(
                  n_layers=2, n_heads=4, d_model=64, d_mlp=256, activation='gelu'),
              'llama (tied, 4 heads on 2 kv heads)': dict(
                  flavour='llama', n_layers=2, n_heads=4, d_model=64, n_kv_heads=2)}
  tokens = np.random.RandomState(1).randint(0, VOCAB, size=(BATCH, SEQ))
  for name, section in sections.items():
    config = model_factory.from_config(section, vocab_size=VOCAB, max_len=16)
    params = model_lib.init_params(config, jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(  # Away from the 0.02 init, as the fixtures.
        lambda a: a + 0.3 * np.random.RandomState(a.size).standard_normal(a.shape), params)
    flax_logits = np.asarray(model_lib.run_with_cache(config, params, tokens)[0])
    with tempfile.TemporaryDirectory() as d:
      hf.save_pretrained(config, params, d)
      model = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation='eager')
    with torch.no_grad():
      logits = model.eval()(torch.from_numpy(tokens).long()).logits.numpy()
    print(f'export {name}: transformers vs Flax max |diff| {np.abs(logits - flax_logits).max():.2e}'
          f' (logits std {flax_logits.std():.2f})')


if __name__ == '__main__':
  main()
