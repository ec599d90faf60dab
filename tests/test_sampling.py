"""KV-cache sampling: cached generate equals the uncached reference, padding, rng, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wrapper_study import model as m
from wrapper_study import sampling

# Large init so logits are peaked: greedy choices then have wide margins, and a
# token-for-token comparison tests the cache, not float round-off.
LLAMA = m.llama_config(vocab_size=17, max_len=16, d_model=16, n_layers=2, n_heads=2,
                       multiple_of=8, init_std=0.5)
GPT = m.TransformerConfig(vocab_size=17, max_len=16, d_model=16, n_layers=2, n_heads=2,
                          d_head=8, d_mlp=24, causal=True, layer_norm=True, init_std=0.5)
N_NEW = 6
_init = jax.jit(m.init_params, static_argnums=0)


@pytest.fixture(scope='module', params=[LLAMA, GPT], ids=['llama', 'gpt'])
def setup(request):
  cfg = request.param
  params = _init(cfg, jax.random.PRNGKey(0))
  # Three prompts of lengths 7, 4 and 1, left-padded to 7.
  toks = jax.random.randint(jax.random.PRNGKey(1), (3, 7), 0, cfg.vocab_size)
  mask = jnp.asarray(np.arange(7)[None] >= np.array([[0], [3], [6]]))
  return cfg, params, toks, mask


def test_greedy_cached_equals_uncached(setup):
  cfg, params, toks, mask = setup
  rng = jax.random.PRNGKey(0)
  cached = sampling.generate(cfg, params, toks, mask, N_NEW, rng, temperature=0)
  uncached = sampling.generate_uncached(cfg, params, toks, mask, N_NEW, rng, temperature=0)
  assert cached.shape == (3, N_NEW) and cached.dtype == jnp.int32
  np.testing.assert_array_equal(cached, uncached)
  assert len(np.unique(np.asarray(cached))) > 1  # Not a degenerate constant output.


def test_padded_row_generates_as_if_alone(setup):
  cfg, params, toks, mask = setup
  rng = jax.random.PRNGKey(0)
  batch = sampling.generate(cfg, params, toks, mask, N_NEW, rng, temperature=0)
  row = 1  # 3 pads, 4 real tokens.
  alone = sampling.generate(cfg, params, toks[row:row + 1, 3:], jnp.ones((1, 4), bool), N_NEW,
                            rng, temperature=0)
  np.testing.assert_array_equal(batch[row], alone[0])


def test_cached_step_logits_equal_uncached_forward(setup):
  # The logits each cached step samples from equal the full forward's logits at that position.
  cfg, params, toks, mask = setup
  new = sampling.generate(cfg, params, toks, mask, N_NEW, jax.random.PRNGKey(0), temperature=0)
  seq = jnp.concatenate([toks, new[:, :-1]], axis=1)
  seq_mask = jnp.concatenate([mask, jnp.ones((3, N_NEW - 1), bool)], axis=1)
  positions = m.positions_from_pad_mask(seq_mask)
  full_fn = jax.jit(lambda x, mk, pos: m.run_with_cache(cfg, params, x, pad_mask_BxT=mk,
                                                        positions_BxT=pos)[0])
  full = full_fn(seq, seq_mask, positions)
  step = jax.jit(lambda kv, x, mk, pos: m.forward_with_kv_cache(cfg, params, x, kv,
                                                                pad_mask_BxT=mk, positions_BxT=pos))
  kv = m.init_kv_cache(cfg, 3, length=seq.shape[1])
  logits, kv = step(kv, toks, mask, positions[:, :7])  # Prefill.
  steps = [logits[:, -1]]
  for t in range(7, seq.shape[1]):
    logits, kv = step(kv, seq[:, t:t + 1], seq_mask[:, t:t + 1], positions[:, t:t + 1])
    steps.append(logits[:, 0])
  np.testing.assert_allclose(np.stack(steps, 1), full[:, 6:], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.argmax(np.stack(steps, 1), -1), new)


def test_sampling_is_reproducible_and_matches_uncached(setup):
  cfg, params, toks, mask = setup
  draw = lambda seed, **kw: sampling.generate(cfg, params, toks, mask, N_NEW,
                                              jax.random.PRNGKey(seed), temperature=1.0, **kw)
  a, b, other = draw(7), draw(7), draw(8)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, other)
  uncached = sampling.generate_uncached(cfg, params, toks, mask, N_NEW, jax.random.PRNGKey(7),
                                        temperature=1.0)
  np.testing.assert_array_equal(a, uncached)
  greedy = sampling.generate(cfg, params, toks, mask, N_NEW, jax.random.PRNGKey(7), temperature=0)
  np.testing.assert_array_equal(draw(9, top_k=1), greedy)


def test_eos_fills_the_rest_of_the_row():
  cfg, params = LLAMA, _init(LLAMA, jax.random.PRNGKey(0))
  toks, mask = jnp.asarray([[1, 2, 3]]), jnp.ones((1, 3), bool)
  rng = jax.random.PRNGKey(0)
  free = np.asarray(sampling.generate(cfg, params, toks, mask, N_NEW, rng, temperature=0))[0]
  eos = int(free[2])
  first = int(np.flatnonzero(free == eos)[0])
  stopped = np.asarray(sampling.generate(cfg, params, toks, mask, N_NEW, rng, temperature=0,
                                         eos_id=eos))[0]
  np.testing.assert_array_equal(stopped[:first + 1], free[:first + 1])
  assert (stopped[first:] == eos).all()


def test_generate_works_inside_an_outer_jit(setup):
  cfg, params, toks, mask = setup
  f = jax.jit(lambda p, x, mk, r: sampling.generate(cfg, p, x, mk, N_NEW, r, temperature=0))
  np.testing.assert_array_equal(f(params, toks, mask, jax.random.PRNGKey(0)),
                                sampling.generate(cfg, params, toks, mask, N_NEW,
                                                  jax.random.PRNGKey(0), temperature=0))


def test_bad_inputs_fail_fast():
  p = jax.eval_shape(lambda: m.init_params(LLAMA, jax.random.PRNGKey(0)))  # Never run.
  rng = jax.random.PRNGKey(0)
  gen = lambda toks, mask, n=2, cfg=LLAMA, **kw: sampling.generate(cfg, p, toks, mask, n, rng, **kw)
  ones = lambda t: (jnp.zeros((2, t), jnp.int32), jnp.ones((2, t), bool))
  with pytest.raises(ValueError, match=r'prompt length 17 is longer than .* model.max_len=16'):
    gen(*ones(17))
  with pytest.raises(ValueError, match=r'prompt length 10 \+ max_new_tokens 8 - 1 exceeds'):
    gen(*ones(10), n=8)
  toks, mask = ones(4)
  with pytest.raises(ValueError, match='left padding'):
    gen(toks, mask.at[0, 1].set(False))
  with pytest.raises(ValueError, match='end in padding'):
    gen(toks, mask.at[1, -1].set(False))
  with pytest.raises(ValueError, match='model.causal'):
    gen(toks, mask, cfg=m.TransformerConfig(**{**LLAMA.to_dict(), 'causal': False}))
  with pytest.raises(ValueError, match='temperature'):
    gen(toks, mask, temperature=-1.0)
  with pytest.raises(ValueError, match='top_k'):
    gen(toks, mask, top_k=0)
  with pytest.raises(ValueError, match='max_new_tokens'):
    gen(toks, mask, n=0)
