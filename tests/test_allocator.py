"""The fast allocator: chosen as documented, found in its wheel, re-executes once, changes no
result."""

import importlib.metadata
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from wrapper_study import allocator

LINUX = sys.platform.startswith('linux')

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
maps = open('/proc/self/maps').read() if sys.platform == 'linux' else ''
print('MAPS', maps.replace(chr(10), ' '))
'''


def _clean_env(choice):
  env = {k: v for k, v in os.environ.items() if not k.startswith(('LD_PRELOAD', 'MALLOC_',
                                                                   'WRAPPER_STUDY_ALLOC'))}
  env[allocator.ENV] = choice
  return env


def _train(tmp_path, choice):
  out = tmp_path / f'{choice}.npz'
  proc = subprocess.run([sys.executable, '-c', TRAIN, str(out)], env=_clean_env(choice),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  used = [l for l in lines if l.startswith('ALLOCATOR ')][0][len('ALLOCATOR '):]
  maps = [l for l in lines if l.startswith('MAPS')][0]
  with np.load(out) as f:
    return used, maps, dict(f)


def test_training_is_bitwise_the_same_with_every_allocator(tmp_path):
  off_used, _, off = _train(tmp_path, 'off')
  assert 'default settings' in off_used
  runs = {'glibc': _train(tmp_path, 'glibc'), 'auto': _train(tmp_path, 'auto')}
  assert 'tuned' in runs['glibc'][0]
  for name in ('mimalloc', 'tcmalloc'):
    if allocator.FINDERS[name]():
      runs[name] = _train(tmp_path, name)
      # The library that the re-exec preloaded is mapped into the process, and said so.
      assert runs[name][0].startswith(name) and allocator.FINDERS[name]() in runs[name][1]
  if LINUX:  # The wheel is a Linux dependency (setup.py), so auto never falls to glibc.
    assert 'mimalloc' in runs
    fastest = next(n for n in allocator.AUTO_ORDER if allocator.FINDERS[n]())
    assert runs['auto'][0].startswith(fastest)
  for _, _, other in runs.values():
    assert other.keys() == off.keys()
    for k in off:
      np.testing.assert_array_equal(other[k], off[k])


@pytest.mark.skipif(not LINUX, reason='cmeel-mimalloc is a Linux-only dependency')
def test_mimalloc_is_found_in_the_installed_wheel():
  path = pathlib.Path(allocator.find_mimalloc())
  dist = importlib.metadata.distribution(allocator.MIMALLOC_DISTRIBUTION)
  assert path.is_relative_to(pathlib.Path(dist.locate_file('')).resolve())
  assert path.name.startswith('libmimalloc.so')
  assert path.read_bytes()[:4] == b'\x7fELF'  # A shared library, not a stub.


def test_no_wheel_no_mimalloc(monkeypatch):
  monkeypatch.setattr(allocator, 'MIMALLOC_DISTRIBUTION', 'no-such-allocator-distribution')
  assert allocator.find_mimalloc() is None
  with pytest.raises(ValueError, match='no mimalloc library is installed'):
    allocator.environment('mimalloc', {'PATH': '/bin'})
  auto = allocator.environment('auto', {'PATH': '/bin'})  # Another one in AUTO_ORDER.
  if allocator.find_tcmalloc():
    assert auto['LD_PRELOAD'] == allocator.find_tcmalloc()
  else:
    assert 'LD_PRELOAD' not in auto and auto['MALLOC_MMAP_MAX_'] == '0'


def test_environment_choices():
  base = {'PATH': '/bin'}
  assert allocator.environment('off', base) is None
  assert allocator.environment('auto', {**base, 'WRAPPER_STUDY_ALLOCATOR_SET': '1'}) is None
  # A fast allocator the user preloaded is kept.
  assert allocator.environment('auto', {**base, 'LD_PRELOAD': '/x/libjemalloc.so.2'}) is None
  glibc = allocator.environment('glibc', base)
  assert all(glibc[k] == v for k, v in allocator.GLIBC_SETTINGS.items())
  assert 'LD_PRELOAD' not in glibc and glibc['WRAPPER_STUDY_ALLOCATOR_SET'] == '1'
  auto = allocator.environment('auto', {**base, 'LD_PRELOAD': 'libother.so'})
  first = allocator.library('auto')
  if first:
    assert auto['LD_PRELOAD'] == f'{first} libother.so'
    assert 'MALLOC_MMAP_MAX_' not in auto
  else:
    assert auto['MALLOC_MMAP_MAX_'] == '0'
  if allocator.find_mimalloc():
    assert allocator.environment('mimalloc', base)['LD_PRELOAD'] == allocator.find_mimalloc()
  if not allocator.find_tcmalloc():
    with pytest.raises(ValueError, match='no tcmalloc library is installed'):
      allocator.environment('tcmalloc', base)
  with pytest.raises(ValueError, match='WRAPPER_STUDY_ALLOCATOR'):
    allocator.environment('jemalloc', base)


@pytest.mark.skipif(not LINUX, reason='the re-exec happens on Linux only')
@pytest.mark.parametrize('choice', ['off', 'mimalloc'])
def test_ensure_fast_reexecutes_once_or_not_at_all(choice):
  code = ('import os; from wrapper_study import allocator; print("RUN", flush=True); '
          'allocator.ensure_fast(); print(allocator.active(), os.environ.get("LD_PRELOAD"))')
  proc = subprocess.run([sys.executable, '-c', code], env=_clean_env(choice),
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  runs, (said,) = proc.stdout.count('RUN'), proc.stdout.splitlines()[-1:]
  if choice == 'off':
    assert runs == 1 and said.startswith('glibc, default settings') and said.endswith('None')
  else:
    assert runs == 2 and said.startswith('mimalloc (') and allocator.find_mimalloc() in said


def test_unknown_choice_is_one_fatal_line():
  code = 'from wrapper_study import allocator; allocator.ensure_fast(); print("RAN")'
  proc = subprocess.run([sys.executable, '-c', code], env=_clean_env('jemaloc'),
                        capture_output=True, text=True, timeout=60)
  if not LINUX:
    pytest.skip('ensure_fast does nothing off Linux')
  assert proc.returncode == 2 and 'RAN' not in proc.stdout
  assert proc.stderr.splitlines() == [
      f"FATAL allocator error: WRAPPER_STUDY_ALLOCATOR='jemaloc' is unknown; valid: "
      f'{allocator.CHOICES}.']
