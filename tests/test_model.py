"""The shared transformer: shapes, hook cache, hooks, masks, jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wrapper_study import model as m

CFG = m.TransformerConfig(vocab_size=11, max_len=9, d_model=16, n_layers=2, n_heads=2,
                          d_head=8, d_mlp=24, d_vocab_out=5)


@pytest.fixture(scope='module')
def params():
  return m.init_params(CFG, jax.random.PRNGKey(0))


def _tokens(b=3, t=9, seed=1):
  return jax.random.randint(jax.random.PRNGKey(seed), (b, t), 0, CFG.vocab_size)


def test_logits_shape_and_param_layout(params):
  logits, cache = m.Transformer(CFG).apply({'params': params}, _tokens())
  assert logits.shape == (3, 9, 5)
  assert cache == {}
  shapes = m.param_shapes(params)
  assert shapes['blocks_1/attn/query/kernel'] == (16, 16)
  assert shapes['blocks_0/mlp/fc_in/kernel'] == (16, 24)
  assert shapes['unembed/kernel'] == (16, 5)


@pytest.mark.parametrize('names', [
    ['blocks.1.attn.hook_pattern'],
    ['hook_embed', 'blocks.0.hook_resid_post', 'blocks.1.mlp.hook_post'],
])
def test_cache_holds_exactly_the_names_asked_for(params, names):
  fwd = jax.jit(functools.partial(m.run_with_cache, CFG, names=names))
  _, cache = fwd(params, _tokens())
  assert sorted(cache) == sorted(names)


def test_cache_filters_and_shapes(params):
  _, cache = m.run_with_cache(CFG, params, _tokens(), names=lambda n: n.endswith('hook_resid_post'))
  assert sorted(cache) == ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']
  _, cache = m.run_with_cache(CFG, params, _tokens(), names='blocks.0.attn.hook_pattern')
  pattern = cache['blocks.0.attn.hook_pattern']
  assert pattern.shape == (3, 2, 9, 9)
  np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)


def test_resid_stream_adds_up(params):
  names = ['hook_embed', 'hook_pos_embed', 'blocks.0.hook_attn_out', 'blocks.0.hook_mlp_out',
           'blocks.0.hook_resid_post']
  _, c = m.run_with_cache(CFG, params, _tokens(), names=names)
  np.testing.assert_allclose(
      c['hook_embed'] + c['hook_pos_embed'] + c['blocks.0.hook_attn_out'] + c['blocks.0.hook_mlp_out'],
      c['blocks.0.hook_resid_post'], atol=1e-5)


def test_unknown_hook_name_fails_with_valid_names():
  with pytest.raises(ValueError, match=r"Unknown hook name.*blocks\.7\.hook_resid_post.*2-layer"):
    m.resolve_names(CFG, ['blocks.7.hook_resid_post'])


def test_hook_can_ablate(params):
  toks = _tokens()
  zero_mlp = {'blocks.1.hook_mlp_out': jnp.zeros_like}
  logits_ablated, c = m.run_with_cache(CFG, params, toks, names=['blocks.1.hook_mlp_out'],
                                       hooks=zero_mlp)
  assert float(jnp.abs(c['blocks.1.hook_mlp_out']).max()) == 0.0
  logits, _ = m.run_with_cache(CFG, params, toks)
  assert not np.allclose(logits, logits_ablated)


def test_causal_mask_blocks_future():
  cfg = m.TransformerConfig(**{**CFG.to_dict(), 'causal': True, 'layer_norm': True})
  p = m.init_params(cfg, jax.random.PRNGKey(2))
  toks = _tokens()
  logits, c = m.run_with_cache(cfg, p, toks, names='blocks.0.attn.hook_pattern')
  upper = np.triu(np.ones((9, 9), bool), 1)
  assert float(np.abs(np.asarray(c['blocks.0.attn.hook_pattern'])[..., upper]).max()) == 0.0
  # Changing the last token leaves earlier logits untouched.
  toks2 = toks.at[:, -1].set((toks[:, -1] + 1) % cfg.vocab_size)
  logits2, _ = m.run_with_cache(cfg, p, toks2)
  np.testing.assert_allclose(logits[:, :-1], logits2[:, :-1], atol=1e-6)


def test_pad_mask_hides_keys(params):
  toks = _tokens()
  pad = jnp.ones(toks.shape, bool).at[:, -2:].set(False)
  _, c = m.run_with_cache(CFG, params, toks, names='blocks.0.attn.hook_pattern', pad_mask_BxT=pad)
  assert float(np.asarray(c['blocks.0.attn.hook_pattern'])[..., -2:].max()) == 0.0


def test_config_validation_names_field():
  with pytest.raises(ValueError, match='model.activation'):
    m.TransformerConfig(vocab_size=3, max_len=4, activation='tanhh').validate()
  with pytest.raises(ValueError, match='model.n_heads'):
    m.TransformerConfig(vocab_size=3, max_len=4, n_heads=0).validate()
