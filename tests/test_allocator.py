"""The fast allocator: chosen as documented, re-executes once, changes no result."""

import os
import subprocess
import sys

import numpy as np
import pytest

from wrapper_study import allocator

# A few AdamW steps of a small transformer; params written to argv[1].
TRAIN = r'''
import sys
from wrapper_study import allocator
allocator.ensure_fast()
import jax, numpy as np, optax
from wrapper_study import losses, model, train
cfg = model.TransformerConfig(vocab_size=13, max_len=9, d_model=32, n_layers=2, n_heads=4,
                              d_head=8, d_mlp=64, causal=True, layer_norm=True)
params = model.init_params(cfg, jax.random.key(0))
tx = optax.adamw(1e-2)
state = train.create_state(params, tx)
step = train.make_train_step(losses.next_token_loss_fn(cfg), tx)
rng = np.random.default_rng(0)
for _ in range(5):
  state, _ = step(state, rng.integers(0, 13, (8, 10)))
flat = {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(x)
        for path, x in jax.tree_util.tree_flatten_with_path(state.params)[0]}
np.savez(sys.argv[1], **flat)
print('ALLOCATOR', allocator.active())
'''


def _train(tmp_path, name, choice):
  env = {k: v for k, v in os.environ.items() if not k.startswith(('LD_PRELOAD', 'MALLOC_',
                                                                   'WRAPPER_STUDY_ALLOC'))}
  env[allocator.ENV] = choice
  out = tmp_path / f'{name}.npz'
  proc = subprocess.run([sys.executable, '-c', TRAIN, str(out)], env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  used = [l for l in proc.stdout.splitlines() if l.startswith('ALLOCATOR')][0]
  with np.load(out) as f:
    return used, dict(f)


def test_training_is_bitwise_the_same_with_every_allocator(tmp_path):
  off_used, off = _train(tmp_path, 'off', 'off')
  glibc_used, glibc = _train(tmp_path, 'glibc', 'glibc')
  auto_used, auto = _train(tmp_path, 'auto', 'auto')
  assert 'default settings' in off_used and 'tuned' in glibc_used
  if allocator.find_tcmalloc():
    assert 'tcmalloc' in auto_used
  for other in (glibc, auto):
    assert other.keys() == off.keys()
    for k in off:
      np.testing.assert_array_equal(other[k], off[k])


def test_environment_choices():
  base = {'PATH': '/bin'}
  assert allocator.environment('off', base) is None
  assert allocator.environment('auto', {**base, 'WRAPPER_STUDY_ALLOCATOR_SET': '1'}) is None
  glibc = allocator.environment('glibc', base)
  assert all(glibc[k] == v for k, v in allocator.GLIBC_SETTINGS.items())
  assert 'LD_PRELOAD' not in glibc
  auto = allocator.environment('auto', {**base, 'LD_PRELOAD': 'libother.so'})
  if allocator.find_tcmalloc():
    assert auto['LD_PRELOAD'] == f'{allocator.find_tcmalloc()} libother.so'
  else:
    assert auto['MALLOC_MMAP_MAX_'] == '0'
  with pytest.raises(ValueError, match='WRAPPER_STUDY_ALLOCATOR'):
    allocator.environment('jemalloc', base)
