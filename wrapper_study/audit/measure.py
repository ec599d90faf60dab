"""What each model does on the capability's sets: accuracy and loss, probes, weight change.

Accuracy of a row: every scored position (weights > 0) predicted right (argmax);
loss: the weighted cross-entropy over all scored positions. One jitted function
per (architecture, set shape) evaluates a model in row chunks under `lax.map`,
so a 50K-vocabulary model on 512 prompts never holds all logits at once; the
same function is the pruning search's and reFT's evaluator.

Probes: the shared `analysis.probing` on the residual stream at B0..BL of both
models, fitted for every (model, block, target) in one vmapped call per probe
seed (the seed orders the minibatches; results are per seed, for intervals).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import model as model_lib
from wrapper_study.analysis import probing
from wrapper_study.analysis import weights
from wrapper_study.audit import spec as spec_lib


def _chunks(n: int, chunk: int) -> tuple[int, int]:
  """(rows per chunk, number of chunks) covering n rows."""
  c = max(1, min(chunk, n))
  return c, -(-n // c)


def _padded(s: spec_lib.TokenSet, chunk: int):
  """inputs, targets, weights as [n_chunks, C, T] (padding rows have weight 0)."""
  c, k = _chunks(s.n, chunk)
  pad = c * k - s.n
  arrs = []
  for a, dtype in ((s.inputs, jnp.int32), (s.targets, jnp.int32), (s.weights, jnp.float32)):
    a = np.asarray(a)
    if pad:
      a = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
    arrs.append(jnp.asarray(a.reshape(k, c, -1), dtype))
  return tuple(arrs)


def set_arrays(s: spec_lib.TokenSet, chunk: int):
  """A TokenSet as device arrays for `metrics`, chunked once."""
  return _padded(s, chunk)


def metrics(cfg: model_lib.TransformerConfig, params, arrays) -> dict:
  """{'acc': % of rows right at every scored position, 'loss': weighted CE}; traceable."""
  inputs_KxCxT, targets_KxCxT, weights_KxCxT = arrays

  def one(chunk):
    inputs, targets, w = chunk
    logits, _ = model_lib.Transformer(cfg).apply({'params': params}, inputs)
    logits = logits.astype(jnp.float32)
    pred = logits.argmax(-1)
    scored = w > 0
    row_ok = jnp.all((pred == targets) | ~scored, axis=-1) & scored.any(-1)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
    return row_ok.sum(), scored.any(-1).sum(), (ce * w).sum(), w.sum()

  ok, rows, ce, w = jax.lax.map(one, (inputs_KxCxT, targets_KxCxT, weights_KxCxT))
  return {'acc': ok.sum() / jnp.maximum(rows.sum(), 1) * 100, 'loss': ce.sum() / w.sum()}


@functools.lru_cache(maxsize=None)
def metrics_fn(cfg: model_lib.TransformerConfig, population: bool = False):
  """jit: (params, arrays) -> metrics; for a population, members one after another."""
  fn = functools.partial(metrics, cfg)
  if population:
    return jax.jit(lambda params_P, arrays: jax.lax.map(lambda p: fn(p, arrays), params_P))
  return jax.jit(fn)


def set_metrics(cfg, models: dict, sets: dict, chunk: int) -> list[dict]:
  """Rows {model, set, acc, loss} for every model and every (non-empty) set."""
  rows = []
  for set_name, s in sets.items():
    if s is None:
      continue
    arrays = set_arrays(s, chunk)
    for model_name, params in models.items():
      m = metrics_fn(cfg)(params, arrays)
      rows.append(dict(model=model_name, set=set_name, n=s.n, acc=float(m['acc']),
                       loss=float(m['loss'])))
  return rows


def lookup(rows, model: str, set_name: str, key: str = 'acc') -> float:
  hit = [r[key] for r in rows if r['model'] == model and r['set'] == set_name]
  return hit[0] if hit else float('nan')


# ----------------------------------------------------------------------------- probes

def probe_config(a, seed: int) -> probing.ProbeConfig:
  """The PCFG analysis' probe protocol: lr x0.1 at 1/2, 3/4 and 7/8 of the steps."""
  return probing.ProbeConfig(method=a.method, steps=a.steps, lr=a.lr,
                             boundaries=tuple(int(a.steps * f) for f in (0.5, 0.75, 0.875)),
                             seed=seed)


def probes(cfg, models: dict, cap: spec_lib.Capability, probe_section, batch_size: int) -> dict:
  """Held-out probe accuracy: {'acc': [seeds, models, sites, targets] %, 'majority': [targets]}.

  Every model's sites are one stack of features, so each seed's probes (all
  models x blocks x targets) are one vmapped fit (`probing.fit_and_score`).
  """
  targets = cap.probe_targets
  sites = probing.probe_sites(cfg)
  feats = lambda p, s: probing.collect_features(cfg, p, s.inputs, s.positions, sites=sites,
                                                batch_size=batch_size)
  train = np.concatenate([feats(p, cap.probe_train) for p in models.values()])
  test = np.concatenate([feats(p, cap.probe_test) for p in models.values()])
  y_train, y_test = cap.probe_train.labels_TxN(targets), cap.probe_test.labels_TxN(targets)
  acc = [np.asarray(probing.fit_and_score(train, y_train, test, y_test,
                                          cap.probe_train.n_classes,
                                          probe_config(probe_section, int(seed))))
         for seed in probe_section.seeds]
  acc = np.stack(acc).reshape(len(acc), len(models), len(sites), len(targets))
  majority = np.array([100 * np.bincount(y).max() / len(y) for y in y_test])
  return {'acc': acc, 'majority': majority}


def probe_rows(cfg, models: dict, cap, out: dict, seeds) -> list[dict]:
  labels = probing.site_labels(cfg)
  rows = []
  for m, model_name in enumerate(models):
    for s, site in enumerate(labels):
      for t, target in enumerate(cap.probe_targets):
        v = out['acc'][:, m, s, t]
        rows.append(dict(model=model_name, block=site, target=target, acc_mean=float(v.mean()),
                         acc_min=float(v.min()), acc_max=float(v.max()), n_seeds=len(seeds),
                         majority=float(out['majority'][t])))
  return rows


# ----------------------------------------------------------------------------- weights

def weight_rows(pre_params, ft_params) -> list[dict]:
  """One row per parameter array: ||theta_FT - theta_PT|| / ||theta_PT||."""
  change = weights.weight_change(pre_params, jax.tree.map(lambda x: jnp.asarray(x)[None],
                                                          ft_params))
  return [dict(matrix=k, relative_change=float(v[0])) for k, v in change.items()]
