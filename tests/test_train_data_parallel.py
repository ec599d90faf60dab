"""Data-parallel training (sharded jit) on 4 forced CPU devices equals one device."""

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

mesh = train.data_mesh()
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
                      error=err)))
'''


def _run(n_devices):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={n_devices}')
  proc = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO, env=env, capture_output=True,
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

