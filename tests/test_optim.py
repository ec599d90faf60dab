"""Tests for wrapper_study.optim."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wrapper_study import losses
from wrapper_study import model
from wrapper_study import optim

jax.config.update('jax_disable_most_optimizations', True)  # Fast compiles.

CFG = model.TransformerConfig(vocab_size=8, max_len=8, d_model=16, n_layers=1,
                              n_heads=2, d_head=8, d_mlp=32)


def _cfg(**kw):
  c = optim.default_opt_config()
  c.update(kw)
  return c


def test_warmup_cosine_shape():
  s = optim.make_schedule(_cfg(warmup_fraction=0.2), total_steps=100)
  vals = np.array([s(t) for t in range(101)])
  assert vals[0] == 0.0
  np.testing.assert_allclose(vals[10], 0.5, rtol=1e-6)  # Linear warmup.
  np.testing.assert_allclose(vals[20], 1.0, rtol=1e-6)  # Peak 1.
  assert np.all(np.diff(vals[:21]) > 0) and np.all(np.diff(vals[20:]) < 0)
  np.testing.assert_allclose(vals[100], 0.01, rtol=1e-5)  # max / 100.
  s = optim.make_schedule(_cfg(warmup_steps=10, min_lr_ratio=0.0), total_steps=100)
  np.testing.assert_allclose([s(10), s(100)], [1.0, 0.0], atol=1e-6)


def test_other_schedules():
  s = optim.make_schedule(_cfg(schedule='step', boundaries=(2000, 3000, 3500)), 4000)
  np.testing.assert_allclose([s(0), s(1999), s(2000), s(3000), s(3500), s(3999)],
                             [1, 1, .1, .01, .001, .001], rtol=1e-5)
  s = optim.make_schedule(_cfg(schedule='constant'), 50)
  assert s(0) == s(49) == 1.0
  s = optim.make_schedule(_cfg(schedule='warmup_constant', warmup_steps=4), 50)
  np.testing.assert_allclose([s(0), s(2), s(4), s(49)], [0, .5, 1, 1])


@pytest.mark.parametrize('field,value,match', [
    ('lr', -1, 'train.opt.lr must be > 0, got -1'),
    ('name', 'adam', r"train.opt.name='adam' is unknown; valid: \['sgd', 'adamw'\]"),
    ('schedule', 'linear', 'train.opt.schedule'),
    ('warmup_steps', 200, 'train.opt.warmup_steps gives 200 warmup steps, longer than'),
    ('min_lr_ratio', 2.0, r'train.opt.min_lr_ratio must be in \[0, 1\]'),
    ('momentum', 1.0, r'train.opt.momentum must be in \[0, 1\)'),
])
def test_validation_names_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    optim.make_optimizer(_cfg(**{field: value}), total_steps=100)


def test_plain_dict_and_unknown_field():
  tx = optim.make_optimizer({'name': 'sgd', 'lr': 0.1}, total_steps=10)
  assert isinstance(tx, optax.GradientTransformation)
  with pytest.raises(ValueError, match='Unknown optimizer config fields'):
    optim.make_optimizer({'learning_rate': 0.1}, total_steps=10)
  with pytest.raises(ValueError, match='train.opt.lr'):
    optim.validate_opt_config({'lr': 0.0})


def test_set_get_learning_rate_and_effective_lr():
  params = {'w': jnp.ones(3)}
  c = _cfg(name='sgd', lr=0.5, schedule='warmup_constant', warmup_steps=2, momentum=0.0)
  tx = optim.make_optimizer(c, total_steps=10)
  st = tx.init(params)
  assert float(optim.get_learning_rate(st)) == 0.5
  st = optim.set_learning_rate(st, 0.25)
  assert float(optim.get_learning_rate(st)) == 0.25
  g = {'w': jnp.ones(3)}
  for expected_lr in (0.0, 0.125, 0.25, 0.25):  # peak * warmup(t).
    u, st = tx.update(g, st, params)
    np.testing.assert_allclose(optim.effective_learning_rate(st), expected_lr)
    np.testing.assert_allclose(u['w'], -expected_lr)


def _tiny_task():
  params = model.init_params(CFG, jax.random.key(0))
  x_BxT = jax.random.randint(jax.random.key(1), (8, 8), 0, 8)
  batch = dict(x=x_BxT, y=x_BxT)  # Copy task.

  def loss_fn(p):
    logits, _ = model.Transformer(CFG).apply({'params': p}, batch['x'])
    return losses.weighted_cross_entropy(logits, batch['y'])[0]
  return params, loss_fn


@pytest.mark.parametrize('name,lr', [('sgd', 0.5), ('adamw', 1e-2)])
def test_optimizer_lowers_loss(name, lr):
  params, loss_fn = _tiny_task()
  tx = optim.make_optimizer(_cfg(name=name, lr=lr, schedule='constant',
                                 grad_clip_norm=1.0), total_steps=10)

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  st = tx.init(params)
  first = None
  for _ in range(8):
    params, st, loss = step(params, st)
    first = loss if first is None else first
  assert float(loss_fn(params)) < float(first) - 0.05


def test_frozen_params_unchanged():
  params, loss_fn = _tiny_task()
  tx = optim.make_optimizer(_cfg(lr=1e-2, frozen=('embed', 'unembed')), total_steps=10)

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(loss_fn)(p), s, p)
    return optax.apply_updates(p, u), s

  st = tx.init(params)
  new = params
  for _ in range(3):
    new, st = step(new, st)
  for name in ('embed', 'unembed'):
    jax.tree.map(np.testing.assert_array_equal, new[name], params[name])
  # 'embed' freezes whole path components only: pos_embed still trains.
  assert not np.array_equal(new['pos_embed']['embedding'], params['pos_embed']['embedding'])
  assert not np.array_equal(new['blocks_0']['mlp']['fc_in']['kernel'],
                            params['blocks_0']['mlp']['fc_in']['kernel'])
  with pytest.raises(ValueError, match='match no parameter'):
    optim.make_optimizer(_cfg(frozen=('unembedding',)), 10).init(params)
