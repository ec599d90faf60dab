"""On 4 forced CPU devices: data-parallel training (sharded jit), and a population spread
over the devices by member (shard_map), each equal to one device."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json
import jax, jax.numpy as jnp, numpy as np
from wrapper_study import model as model_lib, optim, train, losses

cfg = model_lib.TransformerConfig(vocab_size=11, max_len=8, d_model=16, n_layers=1, n_heads=2,
                                  d_head=8, d_mlp=32, causal=True, layer_norm=True)
# SGD: Adam's 1/sqrt(v) would magnify the all-reduce's float reassociation in
# near-zero gradients, hiding a real mismatch behind a loose tolerance.
tx = optim.make_optimizer(dict(name='sgd', lr=0.5, momentum=0.0, schedule='constant'), 5)

def loss_fn(params, batch):
  logits, _ = model_lib.Transformer(cfg).apply({'params': params}, batch['inputs'])
  loss, m = losses.weighted_cross_entropy(logits, batch['targets'], batch['weights'])
  return loss, {}

def batch_fn(step):
  rng = np.random.default_rng(step)
  tokens = rng.integers(0, 11, (8, 9)).astype(np.int32)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'weights': np.ones((8, 8), np.float32)}

def run(mesh):
  state = train.create_state(model_lib.init_params(cfg, jax.random.PRNGKey(0)), tx)
  return train.train_loop(state=state, tx=tx, loss_fn=loss_fn, batch_fn=batch_fn, total_steps=5,
                          mesh=mesh, nan_check=True)

mesh = train.batch_mesh(8)  # What a single-model phase asks for: every device divides 8.
sharded = run(mesh)
single = run(None)
leaf = jax.tree.leaves(sharded.params)[0]
batch = train.shard_batch(batch_fn(0), mesh)
try:
  train.shard_batch({'x': np.zeros((6, 2))}, mesh)
  err = ''
except ValueError as e:
  err = str(e)
diff = max(float(jnp.abs(a - b).max()) for a, b in
           zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)))
print(json.dumps(dict(devices=jax.device_count(), diff=diff,
                      param_devices=len(leaf.sharding.device_set),
                      batch_shards=len(batch['inputs'].addressable_shards),
                      batch_shard_rows=batch['inputs'].addressable_shards[0].data.shape[0],
                      moved=max(float(jnp.abs(a - b).max()) for a, b in zip(
                          jax.tree.leaves(sharded.params),
                          jax.tree.leaves(model_lib.init_params(cfg, jax.random.PRNGKey(0))))),
                      error=err, mesh_devices=mesh.size,
                      no_mesh_for_6=train.batch_mesh(6) is None,
                      no_mesh_on_one=train.batch_mesh(8, jax.devices()[:1]) is None)))
'''


def _run(n_devices, script=SCRIPT):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={n_devices}')
  proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_data_parallel_on_four_devices_matches_one_device():
  out = _run(4)
  assert out['devices'] == 4
  assert out['param_devices'] == 4  # State replicated on every device.
  assert out['batch_shards'] == 4 and out['batch_shard_rows'] == 2  # Batch of 8 split 4 ways.
  assert out['moved'] > 1e-3  # Training happened.
  assert out['diff'] < 1e-5, out
  assert 'not divisible by the 4 devices' in out['error']
  assert out['mesh_devices'] == 4  # batch_mesh: every device when they divide the batch,
  assert out['no_mesh_for_6'] and out['no_mesh_on_one']  # else one device (no mesh).


POPULATION_SCRIPT = r'''
import json
import jax, jax.numpy as jnp, numpy as np
from wrapper_study import model as model_lib, optim, train, losses

cfg = model_lib.TransformerConfig(vocab_size=11, max_len=8, d_model=16, n_layers=1, n_heads=2,
                                  d_head=8, d_mlp=32, causal=True)
tx = optim.make_optimizer(dict(name='sgd', lr=0.5, momentum=0.0, schedule='constant'), 5)
P = 8

def loss_fn(params, batch):
  logits, _ = model_lib.Transformer(cfg).apply({'params': params}, batch['inputs'])
  return losses.weighted_cross_entropy(logits, batch['targets'], batch['weights'])[0], {}

def batch_fn(step):  # Each member its own data.
  tokens = np.random.default_rng(step).integers(0, 11, (P, 4, 9)).astype(np.int32)
  return {'inputs': tokens[..., :-1], 'targets': tokens[..., 1:],
          'weights': np.ones((P, 4, 8), np.float32)}

def run(mesh, member_chunk):
  params = train.stack([model_lib.init_params(cfg, jax.random.PRNGKey(i)) for i in range(P)])
  state = train.create_population(params, tx, jnp.linspace(0.1, 0.8, P))
  return train.train_loop(state=state, tx=tx, loss_fn=loss_fn, batch_fn=batch_fn,
                          total_steps=5, vmap=True, mesh=mesh, member_chunk=member_chunk)

mesh = train.member_mesh(P)
out = dict(devices=jax.device_count(), no_mesh_for_6=train.member_mesh(6) is None,
           no_mesh_on_one=train.member_mesh(P, jax.devices()[:1]) is None)
single = run(None, 0)
for chunk in (0, 1):
  spread = run(mesh, chunk)
  leaf = jax.tree.leaves(spread.params)[0]
  out[f'chunk{chunk}'] = dict(
      diff=max(float(jnp.abs(a - b).max()) for a, b in
               zip(jax.tree.leaves(spread.params), jax.tree.leaves(single.params))),
      shards=len(leaf.addressable_shards), rows=leaf.addressable_shards[0].data.shape[0],
      steps=np.asarray(spread.step).tolist())
init = train.stack([model_lib.init_params(cfg, jax.random.PRNGKey(i)) for i in range(P)])
# The default mapping (member_chunk None): these tiny members in one vmap on one device, one
# at a time (lax.map: a scan) on each device of the mesh (train.default_member_chunk).
probe = train.create_population(init, tx, jnp.linspace(0.1, 0.8, P))
for name, m in (('one_device', None), ('mesh', mesh)):
  jaxpr = jax.make_jaxpr(train.make_train_step(loss_fn, tx, vmap=True, mesh=m))(probe, batch_fn(0))
  out[f'default_scan_{name}'] = 'scan' in str(jaxpr)
out['moved'] = max(float(jnp.abs(a - b).max()) for a, b in
                   zip(jax.tree.leaves(single.params), jax.tree.leaves(init)))
# 5 of the spread members (as the Tracr reFT population is cut from fine-tuned ones): slicing
# leaves them replicated on every device; without a mesh the loop steps them on one.
cut = jax.tree.map(lambda x: x[:5], spread.params)
out['cut_devices'] = len(jax.tree.leaves(cut)[0].sharding.device_set)
# 19 members over 2 of the devices: padded with one copy of the last, which the caller never
# sees (metrics, evaluations, the returned state have 19); each member as on one device.
P = 19
seen = {'train': set(), 'eval': set()}
class Writer:
  def write_scalars(self, step, scalars):
    seen['train'].update(np.shape(v)[0] for v in scalars.values())
  def flush(self):
    pass
def evaluate(params, step):
  seen['eval'].add(jax.tree.leaves(params)[0].shape[0])
  return {}
odd_mesh = train.member_mesh(P, jax.devices()[:2])
out['odd_mesh'] = None if odd_mesh is None else odd_mesh.size
out['no_mesh_for_9_on_4'] = train.member_mesh(9) is None  # 3 copies: more than 10%.
odd = {}
for name, m in (('one', None), ('padded', odd_mesh)):
  params = train.stack([model_lib.init_params(cfg, jax.random.PRNGKey(i)) for i in range(P)])
  odd[name] = train.train_loop(state=train.create_population(params, tx, jnp.linspace(0.1, 0.8, P)),
                               tx=tx, loss_fn=loss_fn, batch_fn=batch_fn, total_steps=5, vmap=True,
                               mesh=m, writer=Writer(), log_every=1,
                               evaluators={'eval': (5, evaluate)})
# Killed at step 3 (its last save) and resumed to 5: the checkpoint holds the 19 members
# (restorable on any device count), and the resumed run ends where the uninterrupted one does.
import tempfile
from wrapper_study import checkpoint
with tempfile.TemporaryDirectory() as tmp:
  fresh = lambda: train.create_population(
      train.stack([model_lib.init_params(cfg, jax.random.PRNGKey(i)) for i in range(P)]), tx,
      jnp.linspace(0.1, 0.8, P))
  with checkpoint.Checkpointer(tmp, meta={'name': 'odd'}, save_every=3) as ckpt:
    train.train_loop(state=fresh(), tx=tx, loss_fn=loss_fn, batch_fn=batch_fn, total_steps=3,
                     vmap=True, mesh=odd_mesh, checkpointer=ckpt)
  with checkpoint.Checkpointer(tmp, meta={'name': 'odd'}, save_every=3) as ckpt:
    resumed = train.train_loop(state=fresh(), tx=tx, loss_fn=loss_fn, batch_fn=batch_fn,
                               total_steps=5, vmap=True, mesh=odd_mesh, checkpointer=ckpt)
out['odd_resumed_equal'] = all(bool((np.asarray(a) == np.asarray(b)).all()) for a, b in
                               zip(jax.tree.leaves(resumed), jax.tree.leaves(odd['padded'])))
out['odd'] = dict(
    diff=max(float(jnp.abs(a - b).max()) for a, b in
             zip(jax.tree.leaves(odd['padded'].params), jax.tree.leaves(odd['one'].params))),
    members=sorted({x.shape[0] for x in jax.tree.leaves(odd['padded'])}),
    devices=len(jax.tree.leaves(odd['padded'].params)[0].sharding.device_set),
    seen_train=sorted(seen['train']), seen_eval=sorted(seen['eval']))
P = 5
rest = train.train_loop(state=train.create_population(cut, tx, jnp.linspace(0.1, 0.5, P)), tx=tx,
                        loss_fn=loss_fn, batch_fn=batch_fn, total_steps=1, vmap=True)
out['rest_devices'] = len(jax.tree.leaves(rest.params)[0].sharding.device_set)
print(json.dumps(out))
'''


def test_population_spread_over_four_devices_matches_one_device():
  out = _run(4, POPULATION_SCRIPT)
  assert out['devices'] == 4
  assert out['no_mesh_for_6'] and out['no_mesh_on_one']  # Uneven or one device: no mesh.
  assert out['moved'] > 1e-3  # Training happened.
  for chunk in ('chunk0', 'chunk1'):  # One vmap per device, and lax.map one member at a time.
    assert out[chunk]['shards'] == 4 and out[chunk]['rows'] == 2, out  # 8 members, 2 a device.
    assert out[chunk]['steps'] == [5] * 8
    assert out[chunk]['diff'] < 1e-5, out
  assert out['cut_devices'] == 4 and out['rest_devices'] == 1, out
  assert not out['default_scan_one_device'] and out['default_scan_mesh'], out
  assert out['odd_mesh'] == 2 and out['no_mesh_for_9_on_4'], out
  assert out['odd']['members'] == [19] and out['odd']['devices'] == 1, out
  assert out['odd']['seen_train'] == [19] and out['odd']['seen_eval'] == [19], out
  assert out['odd']['diff'] < 1e-5, out
  assert out['odd_resumed_equal'], out

