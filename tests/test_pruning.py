"""Pruning: scores equal hand computations; K sweeps, the candidate x K search, eligibility
sets and bad input; the learned mask finds a planted inhibitor and nothing else."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wrapper_study import model as m
from wrapper_study.analysis import learned_mask
from wrapper_study.analysis import pruning

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


@functools.lru_cache(maxsize=None)
def _init(cfg: m.TransformerConfig, seed: int = 0):
  """N(0, init_std) params of the model's shapes (numpy: compiling Flax init takes seconds)."""
  shapes = jax.eval_shape(functools.partial(m.init_params, cfg), jax.random.PRNGKey(seed))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(0, cfg.init_std, s.shape).astype(np.float32), shapes)


def test_scores_match_finite_differences_on_a_transformer():
  cfg = m.TransformerConfig(vocab_size=6, max_len=5, d_model=8, n_layers=1, n_heads=1, d_head=4,
                            d_mlp=8, d_vocab_out=3)
  params = _init(cfg)
  params = jax.tree.map(lambda x: x * 10, params)  # Away from zero so scores are not tiny.
  tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 5), 0, 6)
  labels = jnp.array([0, 1, 2, 1])

  def loss_fn(p, batch):
    logits, _ = m.Transformer(cfg).apply({'params': p}, batch[0])
    return -jnp.mean(jax.nn.log_softmax(logits[:, 2])[jnp.arange(4), batch[1]]), {}

  units = pruning.make_units(params, 'weight')
  got = np.asarray(pruning.scores(loss_fn, params, (tokens, labels), units))
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  flat_loss = jax.jit(lambda x: loss_fn(unravel(x), (tokens, labels))[0])  # One compile.
  for u in [0, 17, units.n_units - 1]:
    i = int(np.flatnonzero(units.unit_of_scalar == u)[0])
    eps = 1e-2
    f = lambda d: float(flat_loss(flat.at[i].add(d)))
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


# ----------------------------------------------------------------------------- eligibility sets

TINY = m.TransformerConfig(vocab_size=6, max_len=5, d_model=8, n_layers=1, n_heads=2, d_head=4,
                           d_mlp=16, d_vocab_out=3)
EXPECTED_LAYERS = {
    'blocks': ['attn/query', 'attn/key', 'attn/value', 'attn/out', 'mlp/fc_in', 'mlp/fc_out'],
    'attn': ['attn/query', 'attn/key', 'attn/value', 'attn/out'],
    'mlp': ['mlp/fc_in', 'mlp/fc_out'],
    'mlp_hidden': ['mlp/fc_in'],
}


def _tiny_loss(p, batch):
  logits, _ = m.Transformer(TINY).apply({'params': p}, batch[0])
  return -jnp.mean(jax.nn.log_softmax(logits[:, 2])[jnp.arange(4), batch[1]]), {}


def _tiny_setup():
  params = jax.tree.map(lambda x: x * 10, _init(TINY))  # Away from zero: scores not tiny.
  tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (4, 5), 0, 6))
  labels = np.array([0, 1, 2, 1])
  return params, (tokens, labels), _tiny_loss


@pytest.mark.parametrize('name', sorted(EXPECTED_LAYERS))
def test_neuron_scores_equal_hand_loops_for_each_eligibility_set(name):
  params, batch, loss_fn = _tiny_setup()
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch)[0]))(params)
  hand = {}  # Unit name -> sum over kernel column j and bias j of g * w, by explicit loops.
  for layer in EXPECTED_LAYERS[name]:
    mod, dense = layer.split('/')
    w = np.asarray(params['blocks_0'][mod][dense]['kernel'], np.float64)
    b = np.asarray(params['blocks_0'][mod][dense]['bias'], np.float64)
    gw = np.asarray(grads['blocks_0'][mod][dense]['kernel'], np.float64)
    gb = np.asarray(grads['blocks_0'][mod][dense]['bias'], np.float64)
    for j in range(w.shape[1]):
      total = gb[j] * b[j]
      for i in range(w.shape[0]):
        total += gw[i, j] * w[i, j]
      hand[f'blocks_0/{layer}[{j}]'] = total
  units = pruning.make_units(params, 'neuron', eligible=name)
  assert sorted(units.names) == sorted(hand)  # Exactly the eligible layers' neurons.
  got = np.asarray(pruning.scores(loss_fn, params, batch, units))
  want = np.array([hand[n] for n in units.names])
  assert np.abs(want).max() > 1e-3  # The comparison is not between near-zeros.
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # The name and the predicate it stands for make the same units.
  same = pruning.make_units(params, 'neuron', eligible=pruning.eligible_by_name(name))
  np.testing.assert_array_equal(same.unit_of_scalar, units.unit_of_scalar)


def test_mlp_hidden_units_are_the_mlp_width():
  params, _, _ = _tiny_setup()
  units = pruning.make_units(params, 'neuron', 'mlp_hidden')
  assert units.n_units == TINY.d_mlp * TINY.n_layers
  # fc_in kernel [D, M] plus bias [M]: D + 1 scalars per hidden unit; fc_out untouched.
  assert np.bincount(units.unit_of_scalar[units.unit_of_scalar >= 0]).tolist() == (
      [TINY.d_model + 1] * TINY.d_mlp)


def test_unknown_eligibility_name_lists_valid_ones():
  with pytest.raises(ValueError, match=r"pruning.eligible='mlps' is unknown; valid: "
                                       r"\['attn', 'blocks', 'mlp', 'mlp_hidden'\]"):
    pruning.eligible_by_name('mlps')
  with pytest.raises(ValueError, match='is unknown'):
    pruning.make_units(PARAMS, 'neuron', eligible='mlps')


# ----------------------------------------------------------------------------- search: bad input

def _population():
  params, batch, loss_fn = _tiny_setup()
  params_P = jax.tree.map(lambda x: np.stack([x, -x]), params)
  units = pruning.make_units(params, 'neuron', 'mlp')
  rank = np.stack([np.arange(units.n_units)] * 2)
  return params_P, units, rank, (lambda p: loss_fn(p, batch)[0])


@pytest.mark.parametrize('change, message', [
    (dict(ks=[0, 25]), r'ks holds \[25\]; valid K: integers 0..24 \(the 24 prunable neurons'),
    (dict(ks=[0, -1]), r'ks holds \[-1\]; valid K: integers 0..24'),
    (dict(ks=[]), r'ks is empty'),
    (dict(member_C=[0, 2]), r'member_C holds \[2\]; valid: 0..1 \(params_P has 2 members\)'),
    (dict(member_C=[-1, 0]), r'member_C holds \[-1\]; valid: 0..1'),
    (dict(rank_CxU=np.zeros((2, 23), int)), r'rank_CxU has shape \(2, 23\); expected \(C, U\) = \(2, 24\)'),
    (dict(rank_CxU=np.zeros((2, 24), int)), r'rank_CxU rows \[0, 1\] are not permutations of 0..23'),
    (dict(chunk_size=0), r'chunk_size=0; valid: None or an integer >= 1'),
])
def test_search_rejects_bad_input_before_compute(change, message):
  params_P, units, rank, eval_fn = _population()
  calls = []
  args = dict(rank_CxU=rank, member_C=[0, 1], ks=[0, 1, 2])
  args.update(change)
  with pytest.raises(ValueError, match=message):
    pruning.search(lambda p: calls.append(1) or eval_fn(p), params_P, units, **args)
  assert not calls  # Failed before tracing eval_fn.


def test_sweep_rejects_negative_k():
  units = pruning.make_units(PARAMS, 'neuron')
  with pytest.raises(ValueError, match=r'ks holds \[-2\]; valid K: integers 0..3'):
    pruning.sweep(lambda p: 0.0, PARAMS, units, jnp.arange(3), [-2, 1])


def test_search_equals_pruned_params_per_job():
  params_P, units, _, eval_fn = _population()
  rng = np.random.default_rng(0)
  rank = np.stack([rng.permutation(units.n_units) for _ in range(3)])
  member_C, ks = [1, 0, 1], [0, 3, 24]
  got = np.asarray(pruning.search(eval_fn, params_P, units, rank, member_C, ks, chunk_size=2))
  assert got.shape == (3, 3)
  for c in range(3):
    member = jax.tree.map(lambda x: x[member_C[c]], params_P)
    for i, k in enumerate(ks):
      want = eval_fn(pruning.pruned_params(member, units, jnp.asarray(rank[c]), k))
      np.testing.assert_allclose(got[c, i], want, rtol=1e-5)
  assert len(set(np.round(got.reshape(-1), 5))) > 3  # The jobs really differ.


def test_scores_population_is_scores_per_member():
  params_P, units, _, _ = _population()
  _, batch, loss_fn = _tiny_setup()
  got = np.asarray(pruning.scores_population(loss_fn, params_P, batch, units))
  for i in range(2):
    want = pruning.scores(loss_fn, jax.tree.map(lambda x: x[i], params_P), batch, units)
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- learned mask

INHIBITOR = 5  # The planted MLP hidden unit.


def _planted(boosted_class: int):
  """A tiny model whose hidden unit INHIBITOR is always on and adds 9 to one logit.

  Every label is class 1: boosting class 0 makes the unit an inhibitor (its
  removal drops the loss from ~9 nats to ~ln 3); boosting class 1 makes it a
  helper (nothing is gained by removing any unit). The other units are tiny.
  """
  params = jax.tree.map(np.array, _init(TINY))  # A copy: planted in place below.
  mlp = params['blocks_0']['mlp']
  mlp['fc_in']['bias'][INHIBITOR] = 3.0
  mlp['fc_out']['kernel'][INHIBITOR, :] = 0.0
  mlp['fc_out']['kernel'][INHIBITOR, 0] = 3.0
  params['unembed']['kernel'][0, :] = 0.0
  params['unembed']['kernel'][0, boosted_class] = 1.0
  tokens = jax.random.randint(jax.random.PRNGKey(2), (32, 5), 0, 6)
  labels = jnp.ones(32, jnp.int32)

  def loss_fn(p, batch):
    logits, _ = m.Transformer(TINY).apply({'params': p}, batch[0])
    return -jnp.mean(jax.nn.log_softmax(logits[:, -1])[jnp.arange(32), batch[1]]), {}

  return params, (tokens, labels), loss_fn


def test_learned_mask_finds_the_planted_inhibitor_and_keeps_the_rest():
  params, batch, loss_fn = _planted(boosted_class=0)
  units = pruning.make_units(params, 'neuron', 'mlp_hidden')
  mask = learned_mask.learn_mask(loss_fn, params, units, batch)
  assert mask.rank_U[INHIBITOR] == 0
  assert mask.n_pruned == 1
  assert mask.keep_U[INHIBITOR] < 0.05
  assert np.delete(mask.keep_U, INHIBITOR).min() > 0.95
  assert mask.task_loss_S[0] > 8 and mask.task_loss_S[-1] < 1.5  # ~9 nats -> ~ln 3.
  # The ranking plugs into search: pruning 1 unit restores the loss, exactly.
  curve = pruning.search(lambda p: loss_fn(p, batch)[0], jax.tree.map(lambda x: x[None], params),
                         units, mask.rank_U[None], [0], [0, 1])
  assert curve[0, 0] > 8 and curve[0, 1] < 1.2


def test_learned_mask_prunes_nothing_without_an_inhibitor():
  params, batch, loss_fn = _planted(boosted_class=1)  # The same unit, now a helper.
  units = pruning.make_units(params, 'neuron', 'mlp_hidden')
  mask = learned_mask.learn_mask(loss_fn, params, units, batch)
  assert mask.n_pruned == 0
  assert mask.keep_U.min() > 0.95


def test_learned_mask_sparsity_prices_each_removed_unit():
  # Removing the inhibitor gains ~8 nats; at 20 nats per unit it is not worth it.
  params, batch, loss_fn = _planted(boosted_class=0)
  units = pruning.make_units(params, 'neuron', 'mlp_hidden')
  mask = learned_mask.learn_mask(loss_fn, params, units, batch, sparsity=20.0, steps=100)
  assert mask.n_pruned == 0


def test_learned_masks_population_matches_members_and_batch_fn():
  inhibited, batch, loss_fn = _planted(boosted_class=0)
  helped, _, _ = _planted(boosted_class=1)
  params_P = jax.tree.map(lambda a, b: np.stack([a, b]), inhibited, helped)
  units = pruning.make_units(inhibited, 'neuron', 'mlp_hidden')
  pop = learned_mask.learn_masks_population(loss_fn, params_P, units, batch, steps=40)
  one = learned_mask.learn_mask(loss_fn, inhibited, units, batch_fn=lambda step: batch, steps=40)
  assert pop.n_pruned.tolist() == [1, 0]
  assert pop.task_loss_S.shape == (2, 40)
  np.testing.assert_allclose(pop.keep_U[0], one.keep_U, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(pop.task_loss_S[0], one.task_loss_S, rtol=1e-4)


def test_learned_mask_bad_input():
  params, batch, loss_fn = _planted(boosted_class=0)
  units = pruning.make_units(params, 'neuron', 'mlp_hidden')
  with pytest.raises(ValueError, match='exactly one of batch'):
    learned_mask.learn_mask(loss_fn, params, units)
  with pytest.raises(ValueError, match=r'init_keep=1.0; valid: strictly between 0 and 1'):
    learned_mask.learn_mask(loss_fn, params, units, batch, init_keep=1.0)
  with pytest.raises(ValueError, match=r'steps=0; valid: an integer >= 1'):
    learned_mask.learn_mask(loss_fn, params, units, batch, steps=0)
