"""Tests for wrapper_study.train (with checkpoint and metrics).

Run as a script (`python tests/test_train.py WORKDIR TOTAL SAVE_EVERY`) it trains
the toy run below; the kill test SIGKILLs such a process mid-run.
"""

import csv
import functools
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from wrapper_study import checkpoint
from wrapper_study import losses
from wrapper_study import metrics
from wrapper_study import tb_events
from wrapper_study import model
from wrapper_study import optim
from wrapper_study import train

CFG = model.TransformerConfig(vocab_size=8, max_len=8, d_model=16, n_layers=1,
                              n_heads=2, d_head=8, d_mlp=32)
SEED = 0
# Fast compiles; the child process of the kill test imports this too.
jax.config.update('jax_disable_most_optimizations', True)


@functools.cache
def _loss_fn(config):
  def loss_fn(params, batch):
    logits_BxTxO, _ = model.Transformer(config).apply({'params': params}, batch['x'])
    loss, m = losses.weighted_cross_entropy(logits_BxTxO, batch['y'], batch['w'])
    # 'scale' lets a test inject a NaN at a chosen step.
    return loss * batch['scale'], m
  return loss_fn


def _batch_fn(step, nan_at=None, delay=0.0):
  """Deterministic in (SEED, step): a resumed run sees the same batches."""
  if delay:
    time.sleep(delay)
  rng = np.random.default_rng([SEED, step])
  x_BxT = rng.integers(0, CFG.vocab_size, (4, CFG.max_len)).astype(np.int32)
  w_BxT = np.zeros_like(x_BxT, np.float32)
  w_BxT[:, -1] = 1.0  # Only the last position counts, as in fine-tuning.
  scale = np.float32(np.nan if step == nan_at else 1.0)
  return dict(x=x_BxT, y=np.sort(x_BxT, axis=1), w=w_BxT, scale=scale)


@functools.cache
def _tx():
  # One schedule length for every run, so runs share one compiled step.
  opt_cfg = optim.default_opt_config()
  opt_cfg.lr = 3e-3
  return optim.make_optimizer(opt_cfg, total_steps=40)


def _setup(config=CFG):
  params = model.init_params(config, jax.random.key(SEED))
  meta = checkpoint.make_meta('toy', config, params)
  return train.create_state(params, _tx()), _tx(), meta


def _run(workdir, total, save_every, batch_fn=_batch_fn, config=CFG, evaluators=None):
  state, tx, meta = _setup(config)
  # Closed on every path, as a run should: no orbax threads outlive a failure.
  with checkpoint.Checkpointer(os.path.join(workdir, 'ckpt'), meta,
                               save_every=save_every, max_to_keep=3) as ckpt, \
       metrics.MetricWriter(workdir) as writer:
    return train.train_loop(
        state=state, tx=tx, loss_fn=_loss_fn(config), batch_fn=batch_fn,
        total_steps=total, workdir=workdir, writer=writer, checkpointer=ckpt,
        log_every=5, evaluators=evaluators)


def _assert_trees_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_steps_lower_loss_and_write_metrics(tmp_path):
  def evaluate(params, step):
    del params
    return {'step_seen': step}
  state = _run(str(tmp_path), total=30, save_every=100,
               evaluators={'eval': (12, evaluate), 'at': ([3, 7], evaluate)})
  assert int(state.step) == 30
  scalars = metrics.read_scalars(str(tmp_path / 'tb'))
  assert scalars['eval/step_seen'] == [(12, 12.0), (24, 24.0), (30, 30.0)]
  assert scalars['at/step_seen'] == [(3, 3.0), (7, 7.0)]
  loss = [v for _, v in scalars['train/loss']]
  assert [s for s, _ in scalars['train/loss']] == [5, 10, 15, 20, 25, 30]
  assert loss[-1] < loss[0]
  for k in ('train/grad_norm', 'train/param_norm', 'train/update_norm', 'train/lr',
            'train/accuracy'):
    assert k in scalars
  assert os.path.exists(tmp_path / 'ckpt' / '30')  # Final save is forced.


@pytest.mark.parametrize('member_chunk', [0, 1, 2])  # One vmap; one at a time; 2 + remainder 1.
def test_mapped_population_equals_members(member_chunk):
  lrs = np.array([1e-3, 1e-2, 1e-1], np.float32)
  _, tx, _ = _setup()
  loss_fn = _loss_fn(CFG)
  params_P = train.stack([model.init_params(CFG, jax.random.key(i)) for i in range(3)])
  pop = train.create_population(params_P, tx, lrs)
  members = train.unstack(pop)  # Each keeps its own lr.
  pop_step = train.make_train_step(loss_fn, tx, vmap=True, member_chunk=member_chunk)
  one_step = train.make_train_step(loss_fn, tx)
  for t in range(3):
    batch_P = train.stack([_batch_fn(10 * t + i) for i in range(3)])
    pop, m_P = pop_step(pop, batch_P)
    outs = [one_step(s, _batch_fn(10 * t + i)) for i, s in enumerate(members)]
    members = [o[0] for o in outs]
  for i, member in enumerate(members):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 jax.tree.map(lambda x: x[i], pop.params), member.params)
  np.testing.assert_allclose(optim.get_learning_rate(pop.opt_state), lrs)
  # The effective lr is peak x schedule, per member.
  np.testing.assert_allclose(m_P['lr'] / lrs, m_P['lr'][0] / lrs[0], rtol=1e-6)
  assert len(set(np.asarray(m_P['lr']).tolist())) == 3


def test_member_chunk_default_and_bad_value():
  cpu = jax.default_backend() == 'cpu'
  assert train.default_member_chunk() == (1 if cpu else 0)
  assert train.default_member_chunk(train.TINY_MEMBER_FLOPS / 2) == 0  # Tiny members: one vmap.
  assert train.default_member_chunk(train.SMALL_MEMBER_FLOPS / 2) == (
      train.SMALL_MEMBER_CHUNK if cpu else 0)
  assert train.default_member_chunk(train.SMALL_MEMBER_FLOPS * 2) == (1 if cpu else 0)
  # Spread over several CPU devices: one member at a time, whatever the size.
  assert train.default_member_chunk(train.TINY_MEMBER_FLOPS / 2, devices=2) == (1 if cpu else 0)
  params_P = {'w': np.zeros((5, 3, 4), np.float32), 'b': np.zeros((5, 4), np.float32)}
  batch_P = {'tokens': np.zeros((5, 2, 7), np.int32), 'labels': np.zeros((5, 2), np.int32)}
  assert train.member_flops(params_P, batch_P) == 6 * 16 * 14  # 6 x params x tokens.
  with pytest.raises(ValueError, match='member_chunk=-2'):
    train.over_members(lambda x: x, -2)


def test_resume_after_exception_is_bitwise_identical(tmp_path):
  total = 12
  reference = _run(str(tmp_path / 'ref'), total, save_every=4)

  def dies_at_7(step):
    if step == 7:
      raise KeyboardInterrupt  # Abandon everything: no final save.
    return _batch_fn(step)

  with pytest.raises(KeyboardInterrupt):
    _run(str(tmp_path / 'run'), total, save_every=4, batch_fn=dies_at_7)
  assert checkpoint.Checkpointer(str(tmp_path / 'run' / 'ckpt'), {}).latest_step() == 4
  resumed = _run(str(tmp_path / 'run'), total, save_every=4)
  _assert_trees_equal(resumed.params, reference.params)
  _assert_trees_equal(resumed.opt_state, reference.opt_state)


def test_sigkill_and_relaunch_is_bitwise_identical(tmp_path):
  total, save_every = 40, 5
  reference = _run(str(tmp_path / 'ref'), total, save_every)
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.Popen([sys.executable, __file__, workdir, str(total), str(save_every)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(workdir, 'ckpt')
  deadline = time.time() + 60
  try:
    # Kill soon after the second checkpoint starts: likely mid-save or mid-step.
    while time.time() < deadline and proc.poll() is None:
      if os.path.isdir(ckpt_dir) and any(
          n.startswith('10') for n in os.listdir(ckpt_dir)):
        break
      time.sleep(0.01)
    assert proc.poll() is None, 'the child finished before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  latest = checkpoint.Checkpointer(ckpt_dir, {}).latest_step()
  assert latest is not None and latest < total
  resumed = _run(workdir, total, save_every)
  _assert_trees_equal(resumed.params, reference.params)


def test_nan_stops_without_saving_bad_state(tmp_path):
  workdir = str(tmp_path)
  # Batch 7 is NaN, so the state after 8 updates is bad; 8 is also a save step.
  nan_batches = lambda step: _batch_fn(step, nan_at=7)
  with pytest.raises(FloatingPointError, match='step 8.*last good checkpoint: step 4'):
    _run(workdir, total=12, save_every=4, batch_fn=nan_batches)
  ckpt_dir = os.path.join(workdir, 'ckpt')
  assert checkpoint.Checkpointer(ckpt_dir, {}).all_steps() == [4]
  _, _, meta = _setup()
  params = checkpoint.load_params(ckpt_dir, meta)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.parametrize('field,other', [('d_model', 32), ('n_layers', 2)])
def test_restore_other_architecture_fails(tmp_path, field, other):
  _run(str(tmp_path), total=2, save_every=2)
  config = CFG.__class__(**{**CFG.to_dict(), field: other})
  with pytest.raises(ValueError, match=rf'model\.{field}: saved \d+, expected {other}'
                     r'(.|\n)*another --workdir'):
    _run(str(tmp_path), total=4, save_every=2, config=config)
  with pytest.raises(ValueError, match=rf'model\.{field}'):
    checkpoint.load_params(str(tmp_path / 'ckpt'), _setup(config)[2])


def test_load_params_matches_final_state(tmp_path):
  state = _run(str(tmp_path), total=3, save_every=10)
  _, _, meta = _setup()
  _assert_trees_equal(checkpoint.load_params(str(tmp_path / 'ckpt'), meta), state.params)


def _csv_rows(workdir):
  with open(os.path.join(workdir, 'metrics.csv'), newline='') as f:
    return list(csv.reader(f))


def test_resumed_run_has_one_csv_row_per_step(tmp_path):
  # Killed after logging step 10 but with step 8 its last checkpoint: the
  # relaunch replays steps 9-10 and logs step 10 again.
  reference = str(tmp_path / 'ref')
  _run(reference, total=12, save_every=4)

  def dies_at_11(step):
    if step == 11:
      raise KeyboardInterrupt
    return _batch_fn(step)

  workdir = str(tmp_path / 'run')
  with pytest.raises(KeyboardInterrupt):
    _run(workdir, total=12, save_every=4, batch_fn=dies_at_11)
  assert ['10', 'train/loss'] in [r[:2] for r in _csv_rows(workdir)]
  _run(workdir, total=12, save_every=4)
  rows = _csv_rows(workdir)
  assert rows[0] == ['step', 'name', 'value']
  keys = [(r[0], r[1]) for r in rows[1:]]
  assert len(keys) == len(set(keys)), 'a (step, name) appears twice'
  # Bitwise resumable, so the same rows as the uninterrupted run.
  assert sorted(rows[1:]) == sorted(_csv_rows(reference)[1:])
  assert [s for s, n in keys if n == 'train/loss'] == ['5', '10', '12']
  # TensorBoard: the replayed step 10 is not written again; the curves are the reference's.
  assert tb_events.repeats(os.path.join(workdir, 'tb')) == {}
  assert metrics.read_scalars(workdir) == metrics.read_scalars(reference)

if __name__ == '__main__':
  # Child of the SIGKILL test: a slow run (a short sleep per batch) to kill.
  _workdir, _total, _save_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
  _run(_workdir, _total, _save_every, batch_fn=lambda s: _batch_fn(s, delay=0.05))
