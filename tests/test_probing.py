"""Linear probes: planted signals are found, shuffled ones are not; the vmapped
fit equals the per-probe loop; features equal a hand-sliced activation cache."""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from wrapper_study import model as m
from wrapper_study.analysis import probing

N_CLASSES = 5
D = 16
# Few steps, same schedule shape as the paper's (decays at 1/2, 3/4, 7/8).
ADAMW = probing.ProbeConfig(method='adamw', steps=300, boundaries=(150, 225, 262), batch_size=128)
CLOSED = probing.ProbeConfig(method='closed_form')


def _planted(n, seed, shuffle=False):
  """3 sites x n samples x D features, 2 targets.

  Site 0 is noise only; sites 1 and 2 carry onehot(y_t) @ A_t for both
  targets (site 2 more weakly), plus noise. The maps A are fixed (seed 0) so
  that train and test sets share them.
  """
  maps = np.random.default_rng(0).normal(size=(2, N_CLASSES, D))
  rng = np.random.default_rng(seed)
  labels_TxN = rng.integers(0, N_CLASSES, size=(2, n))
  signal_NxD = sum(np.eye(N_CLASSES)[labels_TxN[t]] @ maps[t] for t in range(2))
  noise_SxNxD = rng.normal(size=(3, n, D)) * 0.5
  features = noise_SxNxD + np.stack([0 * signal_NxD, signal_NxD, 0.6 * signal_NxD])
  features = features * 3.0 + 1.0  # Off-centre and scaled: standardisation must cope.
  if shuffle:
    labels_TxN = np.stack([rng.permutation(l) for l in labels_TxN])
  return features.astype(np.float32), labels_TxN


@pytest.mark.parametrize('cfg', [ADAMW, CLOSED], ids=['adamw', 'closed_form'])
def test_probe_finds_planted_signal_and_not_shuffled_labels(cfg):
  train_f, train_l = _planted(800, seed=1)
  test_f, test_l = _planted(1000, seed=2)
  acc_SxT = probing.fit_and_score(train_f, train_l, test_f, test_l, N_CLASSES, cfg)
  assert acc_SxT.shape == (3, 2)
  assert (acc_SxT[1:] > 90).all(), acc_SxT
  assert (acc_SxT[0] < 35).all(), acc_SxT  # Noise site: chance is 20%.

  shuf_f, shuf_l = _planted(800, seed=1, shuffle=True)
  acc_shuffled = probing.fit_and_score(shuf_f, shuf_l, test_f, test_l, N_CLASSES, cfg)
  # Test features cluster by true class, so a probe fit to noise still lands
  # on the right class for a few whole clusters: chance (20%) with a wide spread.
  assert acc_shuffled.mean() < 30 and acc_shuffled.max() < 40, acc_shuffled
  # Shuffled labels are still fit on the train set a little (memorisation),
  # but that must not carry over: held-out is far below the real probe.
  assert (acc_shuffled[1:] < acc_SxT[1:] - 50).all()


def test_lr_schedule_follows_the_paper():
  sched = probing.lr_schedule(probing.ProbeConfig())
  got = [float(sched(s)) for s in (0, 1999, 2000, 2999, 3000, 3499, 3500, 3999)]
  np.testing.assert_allclose(got, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6], rtol=1e-5)


SHORT_ADAMW = probing.ProbeConfig(method='adamw', steps=120, boundaries=(60, 90), batch_size=64)


@pytest.mark.parametrize('cfg', [SHORT_ADAMW, CLOSED], ids=['adamw', 'closed_form'])
def test_vmapped_fit_equals_per_probe_loop(cfg):
  f, l = _planted(300, seed=3)
  batched = probing.train_probes(f, l, N_CLASSES, cfg)
  looped = probing.train_probes_loop(f, l, N_CLASSES, cfg)
  for got, want in zip(batched, looped):
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(probing.accuracy(batched, f, l), probing.accuracy(looped, f, l))
  # A different seed is a different minibatch stream, so the check above can fail.
  if cfg.method == 'adamw':
    other = probing.train_probes(f, l, N_CLASSES, dataclasses.replace(cfg, seed=1))
    assert not np.allclose(np.asarray(other.w_SxTxDxC), np.asarray(batched.w_SxTxDxC))


# ----------------------------------------------------------------------------- features

CFG = m.TransformerConfig(vocab_size=7, max_len=8, d_model=16, n_layers=2, n_heads=2, d_head=8,
                          d_mlp=32, activation='gelu', layer_norm=True, causal=True)


@pytest.fixture(scope='module')
def params():
  return m.init_params(CFG, jax.random.PRNGKey(0))


def _tokens(n=10, t=8):
  return np.asarray(jax.random.randint(jax.random.PRNGKey(1), (n, t), 0, CFG.vocab_size))


def test_sites_and_labels():
  assert probing.probe_sites(CFG) == ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post',
                                      'blocks.1.hook_resid_post']
  assert probing.site_labels(CFG) == ['B0', 'B1', 'B2']
  assert probing.probe_sites(CFG, layers=[2, 0]) == ['blocks.1.hook_resid_post',
                                                     'blocks.0.hook_resid_pre']


def _by_hand(params, tokens, pad_mask=None):
  _, cache = m.run_with_cache(CFG, params, tokens, names=probing.probe_sites(CFG),
                              pad_mask_BxT=pad_mask)
  hand = np.stack([np.asarray(cache[s]) for s in probing.probe_sites(CFG)])  # [S, N, T, D]
  # B0 is the token + position embedding.
  emb = params['embed']['embedding'][tokens] + params['pos_embed']['embedding'][:tokens.shape[1]]
  np.testing.assert_allclose(hand[0], emb, rtol=1e-6)
  return hand


def test_collect_features_int_and_array_positions(params):
  tokens = _tokens()
  hand = _by_hand(params, tokens)
  # batch_size 4 over 10 rows: three chunks, the last padded.
  got = probing.collect_features(CFG, params, tokens, 5, batch_size=4)
  assert got.shape == (3, 10, 16) and got.dtype == np.float32
  np.testing.assert_allclose(got, hand[:, :, 5], rtol=1e-5, atol=1e-6)
  pos = np.arange(10) % 8
  got = probing.collect_features(CFG, params, tokens, pos, batch_size=4)
  np.testing.assert_allclose(got, hand[:, np.arange(10), pos], rtol=1e-5, atol=1e-6)
  got = probing.collect_features(CFG, params, tokens, -1, batch_size=4)
  np.testing.assert_allclose(got, hand[:, :, -1], rtol=1e-5, atol=1e-6)


def test_collect_features_weighted_mean_of_last_story_positions(params):
  tokens = _tokens()
  lengths = np.array([8, 7, 6, 5, 4, 8, 3, 8, 2, 6])  # Right-padded stories.
  pad_mask = np.arange(8)[None] < lengths[:, None]
  hand = _by_hand(params, tokens, pad_mask)
  weights = probing.mean_last_k_weights(pad_mask, k=3)
  got = probing.collect_features(CFG, params, tokens, weights, batch_size=4,
                                 pad_mask_NxT=pad_mask)
  want = np.stack([hand[:, i, max(0, n - 3):n].mean(1) for i, n in enumerate(lengths)], 1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Unnormalised weights are normalised per row.
  got2 = probing.collect_features(CFG, params, tokens, weights * 7.0, batch_size=4,
                                  pad_mask_NxT=pad_mask)
  np.testing.assert_allclose(got2, got, rtol=1e-5, atol=1e-6)


def test_collect_features_keeps_only_requested_sites(params):
  tokens = _tokens()
  hand = _by_hand(params, tokens)
  sites = probing.probe_sites(CFG, layers=[2, 0])
  got = probing.collect_features(CFG, params, tokens, 3, sites=sites)
  assert got.shape == (2, 10, 16)
  np.testing.assert_allclose(got, hand[[2, 0], :, 3], rtol=1e-5, atol=1e-6)
  # The embedding site needs no block: its compiled forward has no matmul at all.
  lower = functools.partial(probing._site_features.lower, CFG, params, tokens, None,
                            np.zeros(10, np.int32), kind='index')
  hlo_b0 = lower(sites=('blocks.0.hook_resid_pre',)).compile().as_text()
  hlo_b2 = lower(sites=('blocks.1.hook_resid_post',)).compile().as_text()
  assert ' dot(' not in hlo_b0 and ' dot(' in hlo_b2


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_fail_with_named_messages(params):
  with pytest.raises(ValueError, match=r'layers=\[3\].*0\.\.2'):
    probing.probe_sites(CFG, layers=[3])
  with pytest.raises(ValueError, match=r'layers=\[-1\]'):
    probing.site_labels(CFG, layers=[-1])
  with pytest.raises(ValueError, match='probe test set is empty'):
    probing.collect_features(CFG, params, np.zeros((0, 8), np.int32), 0, set_name='probe test set')
  with pytest.raises(ValueError, match='positions must lie in'):
    probing.collect_features(CFG, params, _tokens(), 8)
  with pytest.raises(ValueError, match='one width'):  # MLP hidden (M=32) next to D=16.
    probing.collect_features(CFG, params, _tokens(), 0,
                             sites=['blocks.0.mlp.hook_post', 'blocks.0.hook_resid_post'])
  with pytest.raises(ValueError, match='one width'):  # [B, H, T, T] is not [B, T, D].
    probing.collect_features(CFG, params, _tokens(), 0, sites=['blocks.0.attn.hook_pattern'])
  f, l = _planted(50, seed=4)
  with pytest.raises(ValueError, match=r'train_labels_TxN must lie in \[0, n_classes=5\)'):
    probing.fit_and_score(f, l + 1, f, l, N_CLASSES, CLOSED)
  with pytest.raises(ValueError, match='test_features_SxNxD.*empty'):
    probing.fit_and_score(f, l, f[:, :0], l[:, :0], N_CLASSES, CLOSED)
  with pytest.raises(ValueError, match='has N=50 samples but train_labels_TxN has N=49'):
    probing.fit_and_score(f, l[:, :49], f, l, N_CLASSES, CLOSED)
  with pytest.raises(ValueError, match=r'test_features_SxNxD .* S and D'):
    probing.fit_and_score(f, l, f[:2], l, N_CLASSES, CLOSED)
  with pytest.raises(ValueError, match='labels_TxN must be \\[T, N\\]'):
    probing.train_probes(f, l[0], N_CLASSES, CLOSED)
  with pytest.raises(ValueError, match='probe.method'):
    probing.ProbeConfig(method='sgd').validate()
  with pytest.raises(ValueError, match='probe.boundaries'):
    probing.ProbeConfig(boundaries=(3000, 2000)).validate()
  with pytest.raises(ValueError, match='probe.steps'):
    probing.ProbeConfig(steps=0).validate()
