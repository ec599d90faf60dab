"""pruning.search gives the same (candidate x K) curves on 1 and on 4 devices.

The device count is fixed when JAX starts, so each count runs SCRIPT in its
own process (4 CPU devices through XLA_FLAGS) and prints the curves as JSON;
both are compared with each other and with the single-model `sweep` here.
"""

import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import model as m
from wrapper_study.analysis import pruning

REPO = pathlib.Path(__file__).resolve().parents[1]

# Prints {'devices': n, 'vmap': {...}, 'chunked': {...}}, each {metric: [C][K]}.
SCRIPT = r'''
import json, sys
import jax
import numpy as np
from tests.test_pruning_sharded import setup
from wrapper_study.analysis import pruning
want = int(sys.argv[1])
assert jax.device_count() == want, (jax.device_count(), want)
eval_fn, params_P, units, rank_CxU, member_C, ks = setup()
out = {'devices': jax.device_count()}
for name, chunk in (('vmap', None), ('chunked', 2)):
  curves = pruning.search(eval_fn, params_P, units, rank_CxU, member_C, ks, chunk_size=chunk)
  out[name] = {k: np.asarray(v).tolist() for k, v in curves.items()}
print('RESULT ' + json.dumps(out))
'''


def setup():
  """A 2-layer d=16 population of 2 members, 3 candidates, ks 0..12 (deterministic)."""
  cfg = m.TransformerConfig(vocab_size=10, max_len=8, d_model=16, n_layers=2, n_heads=2,
                            d_head=8, d_mlp=32)
  # N(0, 0.2) numpy params of the model's shapes: compiling Flax init takes seconds.
  shapes = jax.eval_shape(functools.partial(m.init_params, cfg), jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  params_P = jax.tree.map(lambda s: rng.normal(0, 0.2, (2, *s.shape)).astype(np.float32), shapes)
  tokens = np.random.default_rng(0).integers(0, 10, (12, 8))

  def eval_fn(p):
    logits, _ = m.Transformer(cfg).apply({'params': p}, tokens[:, :-1])
    logp = jax.nn.log_softmax(logits)
    targets = tokens[:, 1:]
    loss = -jnp.take_along_axis(logp, targets[..., None], -1).mean()
    return {'loss': loss, 'acc': (logits.argmax(-1) == targets).mean()}

  units = pruning.make_units(jax.tree.map(lambda x: x[0], params_P), 'neuron', 'mlp')
  scores_P = pruning.scores_population(lambda p, b: (eval_fn(p)['loss'], {}), params_P, None,
                                       units)
  own = np.asarray(jax.vmap(pruning.prune_order)(scores_P))
  # Candidate 2 is member 1 pruned by member 0's ranking: a cross-seed candidate.
  rank_CxU = np.stack([own[0], own[1], own[0]])
  member_C = np.array([0, 1, 1])
  ks = list(range(13))
  return eval_fn, params_P, units, rank_CxU, member_C, ks


def _run(n_devices: int) -> dict:
  env = dict(os.environ)
  flags = env.get('XLA_FLAGS', '').replace('--xla_force_host_platform_device_count', '--_dropped')
  env['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={n_devices}'.strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
  proc = subprocess.run([sys.executable, '-c', SCRIPT, str(n_devices)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


def test_search_same_curves_on_1_and_4_devices_and_equals_sweep():
  one, four = _run(1), _run(4)
  assert (one['devices'], four['devices']) == (1, 4)
  eval_fn, params_P, units, rank_CxU, member_C, ks = setup()
  sweep = jax.jit(lambda params, rank: pruning.sweep(eval_fn, params, units, rank, ks))
  refs = [sweep(jax.tree.map(lambda x, m=m: x[m], params_P), rank_CxU[c])
          for c, m in enumerate(member_C)]
  for metric in ('loss', 'acc'):
    ref = np.stack([np.asarray(r[metric]) for r in refs])
    assert ref.shape == (3, len(ks))
    for run in (one, four):
      for mode in ('vmap', 'chunked'):
        np.testing.assert_allclose(np.asarray(run[mode][metric]), ref, rtol=1e-5, atol=1e-6,
                                   err_msg=f'{metric} {mode} on {run["devices"]} device(s)')
  # The curves are not trivially flat: pruning changes the loss, differently per candidate.
  loss = np.asarray(one['vmap']['loss'])
  assert np.ptp(loss, axis=1).min() > 1e-3
  assert np.abs(loss[1] - loss[2]).max() > 1e-3
