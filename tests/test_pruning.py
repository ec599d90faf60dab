"""grad x weight pruning: scores equal a hand computation; the K sweep is right."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wrapper_study import model as m
from wrapper_study import pruning

W = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]], np.float32)  # [in=2, out=3]
B = np.array([0.2, -0.4, 1.0], np.float32)
T = np.array([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]], np.float32)
C = np.array([1.0, 2.0, -3.0], np.float32)
PARAMS = {'blocks_0': {'mlp': {'fc_in': {'kernel': W, 'bias': B}}},
          'embed': {'embedding': np.ones((2, 2), np.float32)}}


def _quadratic_loss(params, batch):
  del batch
  layer = params['blocks_0']['mlp']['fc_in']
  emb = params['embed']['embedding']
  return jnp.sum((layer['kernel'] - T) ** 2) + jnp.sum(layer['bias'] * C) + jnp.sum(emb ** 2), {}


def test_weight_scores_equal_hand_computation():
  units = pruning.make_units(PARAMS, 'weight')
  got = np.asarray(pruning.scores(_quadratic_loss, PARAMS, None, units))
  # d/dW sum((W-T)^2) = 2(W-T); score = grad * w; only the kernel is eligible.
  np.testing.assert_allclose(got, (2 * (W - T) * W).reshape(-1), rtol=1e-6)
  assert units.names[1] == 'blocks_0/mlp/fc_in/kernel[0, 1]'


def test_neuron_scores_equal_hand_computation():
  units = pruning.make_units(PARAMS, 'neuron')
  got = np.asarray(pruning.scores(_quadratic_loss, PARAMS, None, units))
  # Neuron j = kernel column j plus bias j; d/db sum(b*C) = C.
  expected = (2 * (W - T) * W).sum(0) + C * B
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert units.names == ('blocks_0/mlp/fc_in[0]', 'blocks_0/mlp/fc_in[1]', 'blocks_0/mlp/fc_in[2]')


def test_scores_match_finite_differences_on_a_transformer():
  cfg = m.TransformerConfig(vocab_size=6, max_len=5, d_model=8, n_layers=1, n_heads=1, d_head=4,
                            d_mlp=8, d_vocab_out=3)
  params = m.init_params(cfg, jax.random.PRNGKey(0))
  params = jax.tree.map(lambda x: x * 10, params)  # Away from zero so scores are not tiny.
  tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 5), 0, 6)
  labels = jnp.array([0, 1, 2, 1])

  def loss_fn(p, batch):
    logits, _ = m.Transformer(cfg).apply({'params': p}, batch[0])
    return -jnp.mean(jax.nn.log_softmax(logits[:, 2])[jnp.arange(4), batch[1]]), {}

  units = pruning.make_units(params, 'weight')
  got = np.asarray(pruning.scores(loss_fn, params, (tokens, labels), units))
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  for u in [0, 17, units.n_units - 1]:
    i = int(np.flatnonzero(units.unit_of_scalar == u)[0])
    eps = 1e-2
    f = lambda d: float(loss_fn(unravel(flat.at[i].add(d)), (tokens, labels))[0])
    fd_grad = (f(eps) - f(-eps)) / (2 * eps)
    np.testing.assert_allclose(got[u], fd_grad * float(flat[i]), rtol=2e-2, atol=1e-4)


def test_sweep_zeroes_exactly_the_top_k():
  units = pruning.make_units(PARAMS, 'weight')
  s = pruning.scores(_quadratic_loss, PARAMS, None, units)
  rank = pruning.prune_order(s)
  count_zero = lambda p: jnp.sum(p['blocks_0']['mlp']['fc_in']['kernel'] == 0)
  zeros = np.asarray(pruning.sweep(count_zero, PARAMS, units, rank, [0, 1, 2, 3]))
  assert zeros.tolist() == [1, 2, 3, 4]  # W already holds one zero.
  top = pruning.top_units(units, rank, 2)
  hand = np.argsort(-(2 * (W - T) * W).reshape(-1), kind='stable')[:2]
  assert top == [units.names[i] for i in hand]
  # Embeddings are never pruned.
  p3 = pruning.pruned_params(PARAMS, units, rank, 6)
  np.testing.assert_array_equal(p3['embed']['embedding'], 1.0)


def test_k_above_units_fails():
  units = pruning.make_units(PARAMS, 'neuron')
  with pytest.raises(ValueError, match=r'pruning.k_max=4 exceeds the 3 prunable neurons'):
    pruning.sweep(lambda p: 0.0, PARAMS, units, jnp.arange(3), [0, 4])
