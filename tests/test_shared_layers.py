"""The layers every world shares: read-out, losses, streams, reFT rows, weights, logs, verdicts."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wrapper_study import losses
from wrapper_study import metrics
from wrapper_study import model as model_lib
from wrapper_study import model_factory
from wrapper_study import population
from wrapper_study.analysis import readout
from wrapper_study.analysis import reft
from wrapper_study.analysis import weights
from wrapper_study.report import claims

CFG = model_lib.TransformerConfig(vocab_size=7, max_len=6, d_model=16, n_layers=1, n_heads=2,
                                  d_head=8, d_mlp=16, causal=True, layer_norm=True)


@pytest.fixture(scope='module')
def params_P():
  return jax.vmap(lambda k: model_lib.init_params(CFG, k))(jax.random.split(jax.random.key(0), 3))


def _logits_argmax(params, tokens_NxT, position):
  logits, _ = model_lib.Transformer(CFG).apply({'params': params}, tokens_NxT)
  return np.asarray(logits[:, position].argmax(-1))


def test_readout_matches_a_plain_forward_for_one_model_and_a_population(params_P):
  tokens = np.random.default_rng(0).integers(0, 7, (37, 6))
  one = population.member_params(params_P, 1)
  np.testing.assert_array_equal(readout.predict(CFG, one, tokens, 4, chunk=8),
                                _logits_argmax(one, tokens, 4))
  pred_PxN = readout.predict(CFG, params_P, tokens, 2, population=True, chunk=10)
  assert pred_PxN.shape == (3, 37)
  for i in range(3):
    np.testing.assert_array_equal(pred_PxN[i],
                                  _logits_argmax(population.member_params(params_P, i), tokens, 2))
  labels = pred_PxN[0].copy()
  labels[:10] = (labels[:10] + 1) % 7  # 27 of 37 right for member 0.
  acc = readout.accuracy(CFG, params_P, tokens, labels, 2, population=True)
  assert acc[0] == pytest.approx(100 * 27 / 37)
  assert int(readout.n_distinct(jnp.array([3, 3, 3]), 7)) == 1
  assert int(readout.n_distinct(jnp.array([0, 6, 3, 0]), 7)) == 3


def test_losses_agree_with_a_hand_computation(params_P):
  one = population.member_params(params_P, 0)
  windows = np.random.default_rng(1).integers(0, 7, (4, 7))
  logits, _ = model_lib.Transformer(CFG).apply({'params': one}, windows[:, :-1])
  logp = jax.nn.log_softmax(logits)
  want = -np.take_along_axis(np.asarray(logp), windows[:, 1:, None], -1).mean()
  loss_fn = losses.next_token_loss_fn(CFG)
  assert loss_fn is losses.next_token_loss_fn(CFG)  # One object per architecture: one compile.
  got, _ = loss_fn(one, windows)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  as_dict, _ = loss_fn(one, {'inputs': windows[:, :-1], 'targets': windows[:, 1:]})
  np.testing.assert_allclose(as_dict, want, rtol=1e-5)
  labels = windows[:, 3]
  got, _ = losses.answer_loss_fn(CFG, 2)(one, {'tokens': windows[:, :-1], 'labels': labels})
  want = -np.take_along_axis(np.asarray(logp[:, 2]), labels[:, None], -1).mean()
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_stream_batch_fn_shares_streams_and_is_deterministic():
  members = population.grid([1e-1, 1e-2], [0.0, 1.0], [0, 1])
  draws = []

  def sample(rng, c_tr):
    draws.append(c_tr)
    return {'x': rng.integers(0, 1000, 4), 'c': np.array(c_tr)}

  batch = population.stream_batch_fn(members, 5, 0, sample)(3)
  assert len(draws) == 4  # One draw per (seed, C_Tr), not per member.
  for i, m in enumerate(members):
    same = [j for j, n in enumerate(members) if (n.seed, n.c_tr) == (m.seed, m.c_tr)]
    for j in same:
      np.testing.assert_array_equal(batch['x'][i], batch['x'][j])
    want = sample(population.stream_rng(5, m.seed, m.c_tr, 3, 0), m.c_tr)['x']
    np.testing.assert_array_equal(batch['x'][i], want)
  by_seed = population.stream_batch_fn(members, 5, 0, sample, by_c_tr=False)(3)
  assert by_seed['c'].tolist() == [None] * len(members)
  np.testing.assert_array_equal(by_seed['x'][0], by_seed['x'][2])  # Seed 0, C_Tr 0 and 1.


def test_revival_rows_schema_and_never_revived():
  members = [population.Member(1e-3, 1.0, s, 'FT') for s in (0, 1)] + [
      population.Member(1e-3, None, s, 'Scr.+FT') for s in (0, 1)]
  steps = np.array([0, 10, 20])
  acc = np.array([[5, 5, 5, 5], [50, 95, 5, 5], [95, 99, 5, 91]], float)
  assert reft.revival_step(steps, acc[:, 0], 90) == 20
  assert reft.revival_step(steps, acc[:, 2], 90) is None
  rows = reft.revival_rows('counter', members, steps, acc, 90)
  assert all(tuple(r) == reft.REVIVAL_COLUMNS for r in rows)
  ft, scr = rows
  assert (ft['source'], ft['c_tr'], ft['revived'], ft['iters_to_revival_each']) == (
      'FT', 1.0, '2/2', '20 10')
  assert (scr['c_tr'], scr['revived'], scr['iters_to_revival_each']) == ('', '1/2', '- 20')


def test_weight_change_is_relative_per_matrix():
  pre = {'a': {'kernel': jnp.ones((2, 2))}, 'b': jnp.full((3,), 2.0)}
  post_P = {'a': {'kernel': jnp.stack([jnp.ones((2, 2)), 2 * jnp.ones((2, 2))])},
            'b': jnp.stack([jnp.full((3,), 2.0), jnp.zeros(3)])}
  out = weights.weight_change(pre, post_P)
  np.testing.assert_allclose(out['a/kernel'], [0.0, 1.0])
  np.testing.assert_allclose(out['b'], [0.0, 1.0])


def test_run_log_phase_times_and_caches_persist(tmp_path):
  log = metrics.RunLog(tmp_path, 'run')
  log.record(5, {'loss': 1.5})
  assert metrics.RunLog(tmp_path, 'run').get('loss', 5) == 1.5
  assert np.isnan(metrics.RunLog(tmp_path, 'run').series('loss', [5, 6])[1])
  times = metrics.PhaseTimes(tmp_path)
  with times.timed('a'):
    pass
  with pytest.raises(RuntimeError):
    with times.timed('b'):  # A failed phase is not recorded as done.
      raise RuntimeError
  assert set(json.loads((tmp_path / 'results' / 'timing.json').read_text())) == {'a'}
  calls = []
  compute = lambda: calls.append(1) or {'x': np.arange(3)}
  for _ in range(2):
    out = metrics.cached_arrays(tmp_path / 'r' / 'x.npz', compute)
    np.testing.assert_array_equal(out['x'], [0, 1, 2])
  assert calls == [1]
  assert metrics.cached_json(tmp_path / 'j.json', lambda: {'k': 1}) == {'k': 1}
  assert metrics.cached_json(tmp_path / 'j.json', lambda: 1 / 0) == {'k': 1}


def test_one_verdict_wording():
  assert claims.verdict([True, True]) == claims.HOLDS
  assert claims.verdict([True, False]) == claims.PARTLY
  assert claims.verdict([True, False], allow_partly=False) == claims.DOES_NOT_HOLD
  assert claims.verdict([False]) == claims.DOES_NOT_HOLD
  assert claims.verdict([None], reason='no cell') == 'not measured (no cell)'
  assert claims.verdict([], reason='') == 'not measured'


def test_model_factory_flavours():
  gpt = model_factory.from_config(dict(d_model=64, n_layers=2, n_heads=4, d_mlp=256,
                                   activation='gelu'), vocab_size=30, max_len=59)
  assert gpt == model_lib.TransformerConfig(
      vocab_size=30, max_len=59, d_model=64, n_layers=2, n_heads=4, d_head=16, d_mlp=256,
      activation='gelu', layer_norm=True, causal=True)
  section = dict(flavour='llama', vocab_size=512, max_len=256, d_model=64, n_layers=2,
                 n_heads=4, multiple_of=32)
  assert model_factory.from_config(section) == model_lib.llama_config(512, 256, 64, 2, 4,
                                                                   multiple_of=32)
  # A new flavour of a world's model is a config change.
  assert model_factory.from_config({**section, 'flavour': 'gpt', 'd_mlp': 8, 'norm': 'rms'}).norm == 'rms'
  with pytest.raises(ValueError, match='model.flavour'):
    model_factory.from_config({**section, 'flavour': 'mamba'})
  with pytest.raises(ValueError, match='divisible'):
    model_factory.from_config({**section, 'n_heads': 5})


def test_intervals():
  from wrapper_study.report import intervals
  mean, lo, hi = intervals.t_interval([1.0, 2.0, 3.0])
  assert mean == 2.0 and hi - mean == pytest.approx(4.303 / np.sqrt(3))
  assert intervals.t_interval([5.0]) == (5.0, 5.0, 5.0)
  rate, lo, hi = intervals.wilson_interval(32, 64)
  assert rate == 50.0 and (round(lo, 1), round(hi, 1)) == (38.1, 61.9)
  assert intervals.wilson_interval(0, 64)[1] == 0.0 and intervals.wilson_interval(64, 64)[2] == 100


def test_judge_decides_by_interval_and_manipulation_check():
  claim = claims.Claim('tracr', 'T1', 'learns b', 'Acc O_FT (%)', 90.0, '>=')
  holds = claims.judge(claim, [95, 96, 97])
  assert holds['verdict'] == claims.HOLDS and tuple(holds) == claims.CLAIMS_COLUMNS
  assert claims.judge(claim, [10, 12, 11])['verdict'] == claims.DOES_NOT_HOLD
  straddle = claims.judge(claim, [80, 99, 95])
  assert straddle['verdict'] == claims.PARTLY and 'straddles' in straddle['reason']
  failed = claims.judge(claim, [95, 96, 97], check=claims.Check(False, 'Acc O_PT fell 3 < 30',
                                                              'fine-tuning did not remove O_PT'))
  assert failed['verdict'] == 'not measured (fine-tuning did not remove O_PT)'
  assert failed['manipulation_check'].startswith('failed')
  low = claims.Claim('tracr', 'T2', 'cannot learn', 'Acc', 50.0, '<=')
  assert claims.judge(low, [10, float('nan'), 12])['n_seeds'] == 2
  assert 'diverged' in claims.judge(low, [10, float('nan'), 12])['reason']
  assert claims.judge(low, [float('nan')])['verdict'].startswith('not measured')
  # A Wilson interval of one object's samples (no seeds to have): min_seeds=0 says so.
  rate = claims.judge(low, [], interval=(40.0, 28.0, 52.1), min_seeds=0)
  assert rate['verdict'] == claims.PARTLY
