"""Linear probes of the TinyStories models (paper Figs 11 left, 35-38), wired to analysis.probing.

One binary probe per (model, site B0..BL, story feature), all fitted in ONE
`probing.fit_and_score` call; the input is the mean residual over the final
story tokens (data.right_padded rows). Results are cached in
results/probes_<key>.json, the key a digest of the models and config.probe.
Also the means over replicates (config.model_seeds) of probes and run logs that
the tables and figures show.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from wrapper_study import metrics
from wrapper_study.analysis import probing
from wrapper_study.tinystories import data
from wrapper_study.tinystories import model as ts_model


def probe_accuracies(config, world: data.World, models: dict, workdir) -> dict:
  """{model: {feature: [acc % per site B0..BL]}}: every model x site x feature in ONE fit.

  The cache is reused only for the same models (parameters included) in the same order (the
  tables' row order) and the same probe settings.
  """
  key = metrics.digest(list(models), list(models.values()), str(config.probe), config.seed)
  path = pathlib.Path(workdir) / 'results' / f'probes_{key}.json'
  if path.exists():
    saved = json.loads(path.read_text())
    if list(saved) == list(models):
      return saved
  cfg = ts_model.model_config(config)
  p = config.probe
  collect = lambda params, a, name: probing.collect_features(
      cfg, params, a.tokens_NxT, positions=a.weights_NxT, pad_mask_NxT=a.mask_NxT,
      batch_size=p.feature_batch_size, set_name=name)
  train_f = np.concatenate([collect(params, world.probe_train, f'probe train ({name})')
                            for name, params in models.items()])
  test_f = np.concatenate([collect(params, world.probe_test, f'probe test ({name})')
                           for name, params in models.items()])
  probe_cfg = probing.ProbeConfig(method='adamw', steps=p.steps, lr=p.lr, boundaries=(),
                                  batch_size=p.batch_size, seed=config.seed)
  acc_SxF = probing.fit_and_score(
      train_f, world.probe_train.labels_NxF.T.astype(np.int32), test_f,
      world.probe_test.labels_NxF.T.astype(np.int32), n_classes=2, cfg=probe_cfg)
  n_sites = cfg.n_layers + 1
  acc_MxSxF = acc_SxF.reshape(len(models), n_sites, -1)
  out = {m: {f: [float(a) for a in acc_MxSxF[i, :, j]]
             for j, f in enumerate(world.probe_train.feature_names)}
         for i, m in enumerate(models)}
  metrics.cached_json(path, lambda: out)  # Atomic: a kill never leaves half a file.
  return out


def mean_over_blocks(accs: Sequence[float]) -> float:
  """Mean over B1..BL (B0, the embeddings, cannot carry story-level information)."""
  return float(np.mean(accs[1:]))


def mean_probes(probes_S: Sequence[dict]) -> dict:
  """{model: {feature: accuracy % per site}}, the mean over replicates' probe_accuracies."""
  return {m: {f: [float(a) for a in np.mean([p[m][f] for p in probes_S], axis=0)]
              for f in by_f} for m, by_f in probes_S[0].items()}


class MeanLog(metrics.RunLog):
  """The mean over replicates of one run's RunLogs (read-only): a (metric, step) is there
  only when every replicate has it, so a mean never mixes different sets of seeds."""

  def __init__(self, logs: Sequence[metrics.RunLog]):  # pylint: disable=super-init-not-called
    self.path = None
    keys = set.intersection(*[{(k, s) for k, by_step in log.data.items() for s in by_step}
                              for log in logs])
    self.data = {}
    for k, s in sorted(keys):
      self.data.setdefault(k, {})[s] = float(np.mean([log.data[k][s] for log in logs]))

  def record(self, step: int, values: Mapping[str, Any]) -> None:
    raise TypeError('a MeanLog is computed from replicates; record into their RunLogs')


def mean_logs(logs_S: Sequence[Mapping[str, metrics.RunLog]]) -> dict:
  """{run: log} of replicates: one replicate's as they are, several as their MeanLogs."""
  if len(logs_S) == 1:
    return dict(logs_S[0])
  return {name: MeanLog([logs[name] for logs in logs_S]) for name in logs_S[0]}
