"""The shared transformer: shapes, hook cache, hooks, masks, jit."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wrapper_study import attention_ops
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


# --- LLaMA flavour (TinyStories world): RMSNorm, RoPE, SwiGLU, tied embeddings. ---

LLAMA = m.llama_config(vocab_size=13, max_len=12, d_model=16, n_layers=2, n_heads=2,
                       multiple_of=8)
# The old flavour with a causal mask, for the cache tests that must hold for every config.
GPT = m.TransformerConfig(**{**CFG.to_dict(), 'd_vocab_out': None, 'causal': True,
                             'layer_norm': True, 'max_len': 12})


@functools.lru_cache(maxsize=None)
def _noisy_params(cfg, seed=0, scale=0.3):
  """Random init plus noise everywhere, so norm scales are not all ones."""
  def make():
    p = m.init_params(cfg, jax.random.PRNGKey(seed))
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  return jax.jit(make)()


@functools.lru_cache(maxsize=None)
def _jit_run(cfg, names=None):
  return jax.jit(functools.partial(m.run_with_cache, cfg, names=names))


def _run(cfg, p, toks, names=None, **kwargs):
  """run_with_cache, jitted: eager Flax is slow on a busy 2-core machine."""
  names = tuple(names) if isinstance(names, list) else names
  return _jit_run(cfg, names)(p, toks, **kwargs)


def _left_padded(cfg, n_pads=(0, 2, 5), t=8, seed=3):
  toks = jax.random.randint(jax.random.PRNGKey(seed), (len(n_pads), t), 0, cfg.vocab_size)
  mask = np.ones((len(n_pads), t), bool)
  for row, n in enumerate(n_pads):
    mask[row, :n] = False
  return toks, jnp.asarray(mask)


def test_default_flavour_param_tree_is_the_old_one(params):
  # The new fields at their defaults add and drop nothing (tracr / PCFG checkpoints load).
  want = {'embed/embedding', 'pos_embed/embedding', 'unembed/kernel'}
  for l in range(2):
    for d in ('attn/query', 'attn/key', 'attn/value', 'attn/out', 'mlp/fc_in', 'mlp/fc_out'):
      want |= {f'blocks_{l}/{d}/kernel', f'blocks_{l}/{d}/bias'}
  assert set(m.param_shapes(params)) == want


def test_llama_mlp_width_matches_llama2c():
  assert m.llama_mlp_width(768) == 2048
  assert m.llama_mlp_width(288) == 768  # llama2.c stories15M.
  assert m.llama_mlp_width(512) == 1408  # llama2.c stories42M.
  for d in range(1, 2000):
    assert m.llama_mlp_width(d) == 64 * int(np.ceil(8 * d / 3 / 64))


def test_llama_param_tree():
  shapes = m.param_shapes(_noisy_params(LLAMA))
  assert 'unembed/kernel' not in shapes and 'pos_embed/embedding' not in shapes
  assert not any(k.endswith('/bias') for k in shapes)
  assert shapes['blocks_0/mlp/fc_gate/kernel'] == (16, LLAMA.d_mlp)
  assert shapes['blocks_0/ln1/scale'] == (16,) and shapes['ln_final/scale'] == (16,)


def test_paper_scale_llama_has_91m_params():
  cfg = m.llama_config(vocab_size=8192, max_len=1024, d_model=768, n_layers=12, n_heads=12)
  assert (cfg.d_head, cfg.d_mlp) == (64, 2048)
  shapes = jax.eval_shape(lambda: m.init_params(cfg, jax.random.PRNGKey(0)))
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
  print(f'LLaMA-style :paper model: {n:,} parameters')
  assert 90e6 <= n <= 92e6


def _np_rope(x_TxHxK, base):
  """llama2.c's complex form: pair (2i, 2i+1) is x[2i] + j x[2i+1], times e^{j t theta_i}."""
  T, _, K = x_TxHxK.shape
  theta = base ** (-np.arange(0, K, 2) / K)
  turn = np.exp(1j * np.arange(T)[:, None, None] * theta)
  z = (x_TxHxK[..., 0::2] + 1j * x_TxHxK[..., 1::2]) * turn
  out = np.empty_like(x_TxHxK)
  out[..., 0::2], out[..., 1::2] = z.real, z.imag
  return out


def _np_llama_logits(cfg, params, tokens_T):
  """Hand numpy (float64) forward of the llama2.c architecture, one sequence."""
  P = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  rms = lambda x, s: x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * s
  T, H, K = len(tokens_T), cfg.n_heads, cfg.d_head
  E = P['embed']['embedding']
  x = E[np.asarray(tokens_T)]
  for l in range(cfg.n_layers):
    b = P[f'blocks_{l}']
    h = rms(x, b['ln1']['scale'])
    q, k, v = (h @ b['attn'][n]['kernel'] for n in ('query', 'key', 'value'))
    q, k = _np_rope(q.reshape(T, H, K), cfg.rope_base), _np_rope(k.reshape(T, H, K), cfg.rope_base)
    s = np.einsum('thk,shk->hts', q, k) / np.sqrt(K)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    z = np.einsum('hts,shk->thk', a, v.reshape(T, H, K)).reshape(T, H * K)
    x = x + z @ b['attn']['out']['kernel']
    h = rms(x, b['ln2']['scale'])
    gate, up = h @ b['mlp']['fc_gate']['kernel'], h @ b['mlp']['fc_in']['kernel']
    x = x + (gate / (1 + np.exp(-gate)) * up) @ b['mlp']['fc_out']['kernel']
  return rms(x, P['ln_final']['scale']) @ E.T


@pytest.fixture(scope='module')
def llama_run():
  """One jitted LLaMA forward caching every hook, shared by the checks below."""
  p = _noisy_params(LLAMA)
  toks = _tokens(t=8, seed=4) % LLAMA.vocab_size
  logits, cache = _run(LLAMA, p, toks, names=tuple(m.hook_names(LLAMA)))
  return p, toks, logits, cache


def test_llama_forward_matches_hand_numpy(llama_run):
  p, toks, logits, _ = llama_run
  for row in range(toks.shape[0]):
    np.testing.assert_allclose(logits[row], _np_llama_logits(LLAMA, p, toks[row]),
                               rtol=1e-4, atol=1e-4)


def test_rmsnorm_is_scale_only(llama_run):
  p, _, _, c = llama_run
  # x * rsqrt(mean(x^2) + 1e-5) * scale: no mean subtraction, no bias.
  for hook, x_name, scale in [('blocks.0.ln1.hook_normalized', 'blocks.0.hook_resid_pre',
                               p['blocks_0']['ln1']['scale']),
                              ('ln_final.hook_normalized', 'blocks.1.hook_resid_post',
                               p['ln_final']['scale'])]:
    x = np.asarray(c[x_name], np.float64)
    want = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * np.asarray(scale)
    np.testing.assert_allclose(c[hook], want, rtol=1e-5, atol=1e-5)


def test_swiglu_hooks_hold_gate_linear_and_product(llama_run):
  p, _, _, c = llama_run
  h = np.asarray(c['blocks.1.ln2.hook_normalized'], np.float64)
  mlp = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p['blocks_1']['mlp'])
  gate, up = h @ mlp['fc_gate']['kernel'], h @ mlp['fc_in']['kernel']
  post = gate / (1 + np.exp(-gate)) * up
  np.testing.assert_allclose(c['blocks.1.mlp.hook_pre'], gate, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(c['blocks.1.mlp.hook_pre_linear'], up, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(c['blocks.1.mlp.hook_post'], post, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(c['blocks.1.hook_mlp_out'], post @ mlp['fc_out']['kernel'],
                             rtol=1e-5, atol=1e-5)


def test_tied_embeddings_read_logits_off_the_embedding(llama_run):
  p, _, logits, c = llama_run
  assert 'unembed/kernel' not in m.param_shapes(p)
  np.testing.assert_allclose(logits, c['ln_final.hook_normalized'] @ p['embed']['embedding'].T,
                             rtol=1e-5, atol=1e-5)


def test_every_llama_hook_is_cached(llama_run):
  _, _, _, c = llama_run
  names = m.hook_names(LLAMA)
  assert 'hook_pos_embed' not in names
  assert {'blocks.0.attn.hook_rot_q', 'blocks.0.attn.hook_rot_k',
          'blocks.0.mlp.hook_pre_linear'} <= set(names)
  assert sorted(c) == sorted(names)
  assert c['blocks.1.attn.hook_rot_q'].shape == c['blocks.1.attn.hook_q'].shape == (3, 8, 2, 8)


def test_rope_scores_depend_only_on_offset():
  q, k = jax.random.normal(jax.random.PRNGKey(5), (2, 1, 7, 3, 8))
  scores = jax.jit(lambda pos: jnp.einsum('bthk,bshk->bhts', m.apply_rope(q, pos, 10000.0),
                                          m.apply_rope(k, pos, 10000.0)))
  base = jnp.arange(7)[None]
  np.testing.assert_allclose(scores(base), scores(base + 123), rtol=1e-4, atol=1e-4)
  # Rotation is not the identity and a different relative layout changes the scores.
  plain = jnp.einsum('bthk,bshk->bhts', q, k)
  assert not np.allclose(scores(base), plain, atol=1e-3)
  assert not np.allclose(scores(base), scores(2 * base), atol=1e-3)
  # Pairing convention: adjacent (2i, 2i+1), as llama2.c.
  np.testing.assert_allclose(m.apply_rope(q, base, 10000.0)[0], _np_rope(np.asarray(q[0]), 10000.0),
                             rtol=1e-5, atol=1e-5)


def test_rope_model_is_shift_invariant_and_learned_is_not():
  toks = _tokens(t=8) % LLAMA.vocab_size
  pos = jnp.broadcast_to(jnp.arange(8), (3, 8))
  for cfg, invariant in [(LLAMA, True), (GPT, False)]:
    p = _noisy_params(cfg)
    a, _ = _run(cfg, p, toks, positions_BxT=pos)
    b, _ = _run(cfg, p, toks, positions_BxT=pos + 4)
    assert np.allclose(a, b, rtol=1e-4, atol=1e-4) == invariant, cfg.pos_embedding
    # positions_BxT=None means 0..T-1.
    np.testing.assert_allclose(a, _run(cfg, p, toks)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('cfg', [LLAMA, GPT], ids=['llama', 'gpt'])
def test_left_padding_with_positions_matches_unpadded(cfg):
  p = _noisy_params(cfg)
  toks, mask = _left_padded(cfg)
  logits, _ = _run(cfg, p, toks, pad_mask_BxT=mask, positions_BxT=m.positions_from_pad_mask(mask))
  # Reference: each row's real tokens first, unpadded. The model is causal, so the
  # logits of those first n positions are those of the n-token sequence alone.
  ref = np.asarray(toks).copy()
  for row in range(ref.shape[0]):
    real = np.asarray(mask[row])
    ref[row, :real.sum()] = ref[row, real]
  ref_logits, _ = _run(cfg, p, jnp.asarray(ref))
  for row in range(ref.shape[0]):
    real = np.asarray(mask[row])
    np.testing.assert_allclose(logits[row, real], ref_logits[row, :real.sum()],
                               rtol=1e-5, atol=1e-5)


def test_positions_from_pad_mask():
  mask = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(m.positions_from_pad_mask(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


@pytest.mark.parametrize('cfg,padded', [(LLAMA, True), (GPT, True), (LLAMA, False)],
                         ids=['llama-left-padded', 'gpt-left-padded', 'llama-default-positions'])
def test_kv_cache_decode_matches_full_forward(cfg, padded):
  p = _noisy_params(cfg)
  toks, mask = _left_padded(cfg, n_pads=(0, 2, 5) if padded else (0, 0, 0))
  kwargs = dict(pad_mask_BxT=mask, positions_BxT=m.positions_from_pad_mask(mask)) if padded else {}
  full, _ = _run(cfg, p, toks, **kwargs)
  step = jax.jit(functools.partial(m.forward_with_kv_cache, cfg))
  kv = m.init_kv_cache(cfg, 3, length=10)
  pieces = []
  for a, b in [(0, 4)] + [(t, t + 1) for t in range(4, 8)]:  # Prefill 4, then 1 per step.
    chunk = {k: v[:, a:b] for k, v in kwargs.items()}
    logits, kv = step(p, toks[:, a:b], kv, **chunk)
    pieces.append(logits)
  assert int(kv.index) == 8
  cached = np.concatenate(pieces, axis=1)
  real = np.asarray(mask)
  np.testing.assert_allclose(cached[real], np.asarray(full)[real], rtol=1e-5, atol=1e-5)


def test_kv_cache_fails_fast():
  with pytest.raises(ValueError, match='model.causal'):
    m.init_kv_cache(CFG, 2)
  with pytest.raises(ValueError, match='model.max_len=12'):
    m.init_kv_cache(LLAMA, 2, length=13)
  kv = m.init_kv_cache(LLAMA, 1, length=4)
  with pytest.raises(ValueError, match='KV cache length=4'):
    m.forward_with_kv_cache(LLAMA, _noisy_params(LLAMA), jnp.zeros((1, 5), jnp.int32), kv)


def test_sequence_longer_than_context_fails(params):
  with pytest.raises(ValueError, match=r'Sequence length 10 exceeds model.max_len=9'):
    m.run_with_cache(CFG, params, _tokens(t=10))


@pytest.mark.parametrize('field,value,match', [
    ('norm', 'batch', r"model.norm='batch' is unknown; valid: \('layer', 'rms'\)"),
    ('pos_embedding', 'alibi', r"model.pos_embedding='alibi'.*'learned', 'rope', 'none'"),
    ('mlp', 'geglu', r"model.mlp='geglu'.*'standard', 'swiglu'"),
    ('d_head', 7, r'model.d_head=7 must be even'),
    ('activation', 'relu', r"model.mlp='swiglu'.*model.activation='silu'"),
    ('d_vocab_out', 5, r'model.tied_embeddings.*model.d_vocab_out'),
])
def test_new_fields_are_validated(field, value, match):
  cfg = m.TransformerConfig(**{**LLAMA.to_dict(), field: value})
  with pytest.raises(ValueError, match=match):
    cfg.validate()
  with pytest.raises(ValueError, match=match):  # The forward checks them too.
    m.Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))


def test_config_round_trips_new_fields():
  assert m.TransformerConfig.from_dict(LLAMA.to_dict()) == LLAMA


@pytest.mark.parametrize('flavour', ['gpt', 'llama'])
def test_bf16_computes_in_bf16_on_fp32_params_close_to_fp32(flavour):
  base = (CFG if flavour == 'gpt' else m.llama_config(11, 9, 16, 2, 2, multiple_of=8))
  params = m.init_params(base, jax.random.PRNGKey(0))
  bf16 = dataclasses.replace(base, precision='bf16')
  assert m.param_shapes(m.init_params(bf16, jax.random.PRNGKey(0))) == m.param_shapes(params)
  ref, _ = m.Transformer(base).apply({'params': params}, _tokens())
  out, cache = m.Transformer(bf16).apply({'params': params}, _tokens(),
                                         cache_names=['blocks.1.hook_resid_post'])
  assert out.dtype == jnp.float32 and cache['blocks.1.hook_resid_post'].dtype == jnp.bfloat16
  scale = float(jnp.abs(ref).max())
  assert 0 < float(jnp.abs(out - ref).max()) < 0.05 * scale  # bf16 has ~3 significant digits.

  def loss(p, cfg):
    logits, _ = m.Transformer(cfg).apply({'params': p}, _tokens())
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])
  grads = jax.grad(loss)(params, bf16)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  ref_g = jax.grad(loss)(params, base)
  cos = (sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_g)))
         / jnp.sqrt(sum(jnp.vdot(a, a) for a in jax.tree.leaves(grads))
                    * sum(jnp.vdot(b, b) for b in jax.tree.leaves(ref_g))))
  assert cos > 0.99


def test_tf32_is_fp32_on_cpu_and_precision_is_validated(params):
  ref, _ = m.Transformer(CFG).apply({'params': params}, _tokens())
  out, _ = m.Transformer(dataclasses.replace(CFG, precision='tf32')).apply({'params': params},
                                                                          _tokens())
  if jax.default_backend() == 'cpu':
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
  with pytest.raises(ValueError, match=r"model.precision='fp16' is unknown; valid: \('fp32'"):
    dataclasses.replace(CFG, precision='fp16').validate()


def test_checkpoint_meta_ignores_precision(params):
  from wrapper_study import checkpoint  # pylint: disable=g-import-not-at-top
  fp32 = checkpoint.make_meta('x', CFG, params)
  bf16 = checkpoint.make_meta('x', dataclasses.replace(CFG, precision='bf16'), params)
  assert fp32 == bf16 and 'precision' not in fp32['model']
  three = checkpoint.make_meta('x', dataclasses.replace(CFG, qkv='three_matmuls'), params)
  assert three == fp32 and 'qkv' not in three['model']
  assert checkpoint.meta_differences(fp32, checkpoint.make_meta(
      'x', dataclasses.replace(CFG, d_mlp=CFG.d_mlp + 1), params))


@pytest.mark.parametrize('attention', m.ATTENTIONS)
@pytest.mark.parametrize('cfg', [LLAMA, GPT, CFG], ids=['llama', 'gpt', 'bidirectional'])
def test_one_qkv_matmul_is_the_three(cfg, attention):
  """model.qkv='one_matmul' (the three kernels side by side): the params tree and init of
  three nn.Dense, the same hook_q/k/v, logits and gradients up to float rounding."""
  one = dataclasses.replace(cfg, attention=attention, qkv='one_matmul')
  three = dataclasses.replace(one, qkv='three_matmuls')
  jax.tree.map(np.testing.assert_array_equal, m.init_params(one, jax.random.PRNGKey(0)),
               m.init_params(three, jax.random.PRNGKey(0)))
  p = _noisy_params(cfg)
  toks = jax.random.randint(jax.random.PRNGKey(4), (3, 8), 0, cfg.vocab_size)
  names = tuple(f'blocks.{l}.attn.hook_{x}' for l in range(cfg.n_layers) for x in 'qkv')
  want, want_cache = _run(three, p, toks, names=names)
  got, got_cache = _run(one, p, toks, names=names)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  assert set(got_cache) == set(names)
  for name in names:
    np.testing.assert_allclose(got_cache[name], want_cache[name], rtol=1e-5, atol=1e-5)
  loss = lambda c, params: (m.run_with_cache(c, params, toks)[0] ** 2).mean()
  g_want = jax.jit(jax.grad(functools.partial(loss, three)))(p)
  g_got = jax.jit(jax.grad(functools.partial(loss, one)))(p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_got, g_want)
  with pytest.raises(ValueError, match=r"model.qkv='two' is unknown"):
    dataclasses.replace(cfg, qkv='two').validate()


@pytest.mark.parametrize('block', [64, 3], ids=['one-block', 'blocks-of-3'])
@pytest.mark.parametrize('cfg,padded', [(LLAMA, True), (GPT, True), (CFG, False)],
                         ids=['llama-left-padded', 'gpt-left-padded', 'bidirectional'])
def test_fused_attention_is_the_explicit_function(cfg, padded, block, monkeypatch):
  """model.attention='fused' (on CPU: causal query blocks with heads-major projections):
  same logits and gradients up to float rounding, also with padding and causal masks, with
  several query blocks, and in KV-cache decoding."""
  monkeypatch.setattr(attention_ops, 'CAUSAL_BLOCK', block)
  fused = dataclasses.replace(cfg, attention='fused')
  p = _noisy_params(cfg)
  toks, mask = _left_padded(cfg, n_pads=(0, 2, 5) if padded else (0, 0, 0))
  kwargs = dict(pad_mask_BxT=mask, positions_BxT=m.positions_from_pad_mask(mask)) if padded else {}
  real = np.asarray(mask)
  want, _ = _run(cfg, p, toks, **kwargs)
  got, _ = _run(fused, p, toks, **kwargs)
  assert np.isfinite(np.asarray(got)).all()  # Fully masked (pad) rows give no NaN either.
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], rtol=1e-5, atol=1e-5)

  def loss(c, params):
    logits, _ = m.run_with_cache(c, params, toks, **kwargs)
    return (jnp.where(real[..., None], logits, 0.0) ** 2).mean()
  g_want = jax.jit(jax.grad(functools.partial(loss, cfg)))(p)
  g_got = jax.jit(jax.grad(functools.partial(loss, fused)))(p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_got, g_want)
  if cfg.causal:
    kv = m.init_kv_cache(fused, 3, length=10)
    step = jax.jit(functools.partial(m.forward_with_kv_cache, fused))
    logits, kv = step(p, toks, kv, **kwargs)
    np.testing.assert_allclose(np.asarray(logits)[real], np.asarray(want)[real],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('platform', ['cpu', 'gpu'])
@pytest.mark.parametrize('causal_self', [True, False])
def test_every_fused_form_is_softmax_attention(platform, causal_self):
  """attention_ops.fused on each platform's branch (gpu: jax.nn.dot_product_attention, which
  also runs on CPU) against plain softmax attention, with a causal or a random mask."""
  rng = np.random.default_rng(0)
  B, T, H, K = 2, 7, 3, 4
  q, k, v = (jnp.asarray(rng.normal(size=(B, T, H, K)), jnp.float32) for _ in range(3))
  causal = np.tril(np.ones((T, T), bool))[None] & np.ones((B, 1, 1), bool)
  mask = causal if causal_self else (rng.random((B, T, T)) < 0.6) | np.eye(T, dtype=bool)
  scores = np.einsum('bthk,bshk->bhts', q, k) / np.sqrt(K)
  scores = np.where(mask[:, None], scores, -np.inf)
  pattern = np.exp(scores - scores.max(-1, keepdims=True))
  pattern /= pattern.sum(-1, keepdims=True)
  want = np.einsum('bhts,bshk->bthk', pattern, v)
  got = attention_ops.fused(q, k, v, jnp.asarray(mask), 1 / np.sqrt(K), causal_self,
                            platform=platform)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  if causal_self:
    blocks = attention_ops.causal_blocks(q, k, v, jnp.asarray(mask), 1 / np.sqrt(K), block=2)
    np.testing.assert_allclose(np.asarray(blocks), want, rtol=1e-5, atol=1e-6)


def test_fused_attention_asked_for_its_pattern_computes_it_explicitly():
  """A cache or hook asking for the scores/pattern gets the explicit path (under 'fused' no
  pattern exists otherwise; equal to float rounding, since XLA's CPU matmuls may split work
  differently between compilations on a loaded machine)."""
  fused = dataclasses.replace(CFG, attention='fused')
  p = _noisy_params(CFG)
  names = ('blocks.1.attn.hook_pattern',)
  want_logits, want = _run(CFG, p, _tokens(), names=names)
  got_logits, got = _run(fused, p, _tokens(), names=names)
  np.testing.assert_allclose(got['blocks.1.attn.hook_pattern'],
                             want['blocks.1.attn.hook_pattern'], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
  first_token_only = lambda x: x.at[:, 0].set(0.0).at[:, 0, :, 0].set(1.0)  # Head 0 -> key 0.
  hooked = lambda c: m.run_with_cache(c, p, _tokens(), hooks={
      'blocks.0.attn.hook_pattern': first_token_only})[0]
  np.testing.assert_allclose(hooked(fused), hooked(CFG), rtol=1e-5, atol=1e-5)  # Hook ran too.
  assert np.abs(hooked(CFG) - want_logits).max() > 1e-2
  with pytest.raises(ValueError, match=r"model.attention='flash' is unknown"):
    dataclasses.replace(CFG, attention='flash').validate()


def test_checkpoint_meta_ignores_attention(params):
  from wrapper_study import checkpoint  # pylint: disable=g-import-not-at-top
  explicit = checkpoint.make_meta('x', CFG, params)
  assert explicit == checkpoint.make_meta('x', dataclasses.replace(CFG, attention='fused'), params)
  assert 'attention' not in explicit['model']


@pytest.mark.parametrize('qkv', ['one_matmul', 'three_matmuls'])
def test_grouped_query_attention_is_multi_head_attention_with_shared_key_values(qkv):
  # n_kv_heads=2 of 4: query heads (0, 1) read kv head 0 and (2, 3) kv head 1. The same model
  # with 4 kv heads whose key/value kernels repeat each group's gives the same logits.
  gqa = m.llama_config(13, 8, 32, 2, 4, n_kv_heads=2, qkv=qkv)
  mha = dataclasses.replace(gqa, n_kv_heads=None)
  p = m.init_params(gqa, jax.random.PRNGKey(2))
  assert p['blocks_0']['attn']['key']['kernel'].shape == (32, 2 * 8)
  repeat = lambda w: jnp.repeat(w.reshape(32, 2, 8), 2, axis=1).reshape(32, 4 * 8)
  p_mha = jax.tree_util.tree_map(lambda x: x, p)
  for l in range(2):
    for name in ('key', 'value'):
      kernel = p[f'blocks_{l}']['attn'][name]['kernel']
      p_mha[f'blocks_{l}']['attn'][name] = {'kernel': repeat(kernel)}
  tokens = _tokens(t=8) % 13
  logits, cache = m.run_with_cache(gqa, p, tokens, names=['blocks.0.attn.hook_v'])
  assert cache['blocks.0.attn.hook_v'].shape == (3, 8, 2, 8)
  np.testing.assert_allclose(logits, m.run_with_cache(mha, p_mha, tokens)[0], atol=1e-5)
  with pytest.raises(ValueError, match='n_kv_heads=3 must divide'):
    dataclasses.replace(gqa, n_kv_heads=3).validate()
