"""What the Tracr study measures beyond accuracy: controls, activations for maps, pruning.

Controls: the compiled model must answer O_PT perfectly before any training,
and the weight noise that starts fine-tuning must not already destroy it.
Pruning: grad x weight scores of the O_PT loss rank the units of each chosen
fine-tuned member; `analysis.pruning.search` evaluates every (member, K) on
the C_Te=0 test set, sharded over all devices.

Shapes: P population members, M pruned members, K pruning levels, N test inputs.
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import model as model_lib
from wrapper_study import losses
from wrapper_study import metrics
from wrapper_study import population
from wrapper_study import progress
from wrapper_study.analysis import pruning
from wrapper_study.analysis import readout
from wrapper_study.tracr import paper
from wrapper_study.tracr import tasks
from wrapper_study.tracr import train as tracr_train


def compiled_row(data: tracr_train.TaskData, test_sets) -> tuple[dict, dict]:
  """(row of the compiled-models table, {metric: accuracy}) of the compiled model, unnoised."""
  tm, spec = data.tm, data.spec
  single = jax.tree.map(lambda x: x[None], tm.params)
  acc = tracr_train.accuracies(tm.config, data.position, single, test_sets)
  row = dict(program=spec.task, seq_len=spec.seq_len, d_model=tm.config.d_model,
             n_layers=tm.config.n_layers, d_mlp=tm.config.d_mlp,
             n_params=sum(int(np.size(x)) for x in jax.tree.leaves(tm.params)),
             **{k: round(float(v[0]), 1) for k, v in acc.items()})
  return row, {k: float(v[0]) for k, v in acc.items()}


def calibration_rows(config, data: tracr_train.TaskData, test_sets, acc_compiled: float
                     ) -> list[dict]:
  """Noised-only Acc O_PT (C_Te=0) per seed, at each level of calibration.noise_grid and at
  finetune.noise_std: the same noise draws the fine-tuning grid starts from (issue 13)."""
  f, anchor = config.finetune, config.calibration.anchor_pct
  configured = {f.noise_std} if f.noise_std >= 0 else set()
  levels = sorted(set(config.calibration.noise_grid) | configured)
  seeds = [population.Member(0.0, None, s, 'noised') for s in f.seeds]
  rows = []
  for std in levels:
    params_P = tracr_train.noisy_params(data.tm.params, seeds, config.seed, std,
                                        tracr_train.FROZEN)
    acc = tracr_train.accuracies(data.tm.config, data.position, params_P,
                                 {'c_te0': test_sets['c_te0']})['c_te0/acc_o_pt']
    for m, a in zip(seeds, acc):
      pct = 100.0 * float(a) / acc_compiled if acc_compiled else float('nan')
      rows.append(dict(task=data.spec.task, noise_std=float(std), seed=m.seed,
                       acc_o_pt=round(float(a), 1), pct_of_compiled=round(pct, 1),
                       anchor_pct=anchor, passes=bool(pct >= anchor)))
  return rows


def start_noise(config, rows: Sequence[Mapping]) -> tuple[float, str]:
  """(noise std fine-tuning starts from, why): the configured one, or with noise_std=-1 the
  largest level of calibration.noise_grid at which every seed passes the anchor."""
  passing = lambda std: all(r['passes'] for r in rows if r['noise_std'] == std)
  if config.finetune.noise_std >= 0:
    std = float(config.finetune.noise_std)
    return std, 'configured (finetune.noise_std)' + ('' if passing(std) else ': FAILS the anchor')
  ok = [s for s in config.calibration.noise_grid if passing(s)]
  if ok:
    return float(max(ok)), 'chosen: the largest level of calibration.noise_grid that passes'
  return (float(min(config.calibration.noise_grid)),
          'chosen: no level passes the anchor, so the smallest (FAILS the anchor)')


def noised_columns(history, metrics: Sequence[str]) -> dict:
  """Step-0 accuracies of the fine-tuning population (compiled + noise), mean over members."""
  return {f'noised {m}': round(float(history.curve(m)[1][0].mean()), 1) for m in metrics}


@functools.lru_cache(maxsize=None)
def _cache_fn(config: model_lib.TransformerConfig, names: tuple[str, ...]):
  """One jitted cached forward per (architecture, names): compiled once, reused."""
  return jax.jit(lambda params, tokens: model_lib.run_with_cache(config, params, tokens,
                                                                 names=names)[1])


def activations(tm, params, inputs_BxT, names) -> dict[str, np.ndarray]:
  return jax.device_get(_cache_fn(tm.config, tuple(names))(params, inputs_BxT))


def token_labels(tm, inputs_BxT) -> list[list[str]]:
  inv = {i: str(v) for v, i in tm.input_encoding.items()}
  return [[inv[int(t)] for t in row] for row in inputs_BxT]


def n_prunable(params, granularity: str) -> int:
  """How many units pruning.k_max may reach, from the model's shapes (no compute)."""
  return pruning.make_units(params, granularity).n_units


def noised_only(config, tm, seeds):
  """(members, params): the compiled model with each seed's fine-tuning noise, never trained."""
  ms = [population.Member(0.0, 0.0, int(s), paper.NOISED) for s in seeds]
  return ms, tracr_train.noisy_params(tm.params, ms, config.seed, config.finetune.noise_std,
                                      tracr_train.FROZEN)


def _similarity(a, b) -> float:
  """Pearson correlation of two attention patterns (NaN if either is not finite)."""
  a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
  if not (np.isfinite(a).all() and np.isfinite(b).all()):
    return float('nan')
  if a.std() == 0 or b.std() == 0:
    return float(np.allclose(a, b, atol=1e-3))
  return float(np.corrcoef(a, b)[0, 1])


def attention_corr(tm, params_P, inputs_NxT, layer: int = 0) -> np.ndarray:
  """[P] correlation of each member's block-`layer` attention with the compiled model's."""
  name = f'blocks.{layer}.attn.hook_pattern'
  ref = activations(tm, tm.params, inputs_NxT, [name])[name]
  n = pruning.member_count(params_P)
  return np.array([_similarity(activations(tm, population.member_params(params_P, i),
                                           inputs_NxT, [name])[name], ref)
                   for i in progress.progress(range(n), f'block-{layer} attention of {n} models')])


def n_distinct(tm, position, params_P, test_sets) -> np.ndarray:
  """[P] distinct answers each member predicts over every test set (<= 2: collapsed)."""
  inputs = np.concatenate([ts.inputs for ts in test_sets.values()])
  pred_PxN = readout.predict(tm.config, params_P, inputs, position, population=True)
  return np.array([len(np.unique(p)) for p in pred_PxN])


def member_rows(config, data, members, params_P, history, test_sets, finite) -> list[dict]:
  """Per member: start and end accuracies on every test set, block-0 attention correlation,
  distinct answers, diverged; then one noised-only row per seed (the controls)."""
  tm, position = data.tm, data.position
  names = [f'{t}/{m}' for t in test_sets for m in ('acc_o_pt', 'acc_o_ft')]
  curves = {k: history.curve(k)[1] for k in names}
  curves = {k: c for k, c in curves.items() if c.size}  # Resumed from before a test set.
  names = list(curves)
  attn_in = test_sets[paper.NATURAL].inputs[:paper.ATTENTION_INPUTS]
  corr = attention_corr(tm, params_P, attn_in)
  distinct = n_distinct(tm, position, params_P, test_sets)
  rows = []
  for i, m in enumerate(members):
    row = dict(kind='fine-tuned', lr=m.lr, c_tr=m.c_tr, seed=m.seed, diverged=not finite[i])
    for k in names:
      row[f'start/{k}'] = round(float(curves[k][0, i]), 2)
      row[f'end/{k}'] = round(float(curves[k][-1, i]), 2) if finite[i] else ''
    row.update(attn0_corr=round(float(corr[i]), 4) if finite[i] else '',
               n_distinct=int(distinct[i]) if finite[i] else '')
    rows.append(row)
  ms, params_S = noised_only(config, tm, config.finetune.seeds)
  acc = tracr_train.accuracies(tm.config, position, params_S, test_sets)
  corr = attention_corr(tm, params_S, attn_in)
  distinct = n_distinct(tm, position, params_S, test_sets)
  for j, m in enumerate(ms):
    row = dict(kind=paper.NOISED, lr='', c_tr='', seed=m.seed, diverged=False)
    for k in names:
      row[f'start/{k}'] = row[f'end/{k}'] = round(float(acc[k][j]), 2)
    row.update(attn0_corr=round(float(corr[j]), 4), n_distinct=int(distinct[j]))
    rows.append(row)
  return rows


def single_ranks(rank_MxU, j: int):
  """The rankings with the j-th ranked unit moved to the front (swapped with the first): K=1
  then prunes that unit alone, as Fig. 55 prunes each of W1..W4 alone."""
  return jnp.where(rank_MxU == 0, j, jnp.where(rank_MxU == j, 0, rank_MxU))


def prune_population(config, data: tracr_train.TaskData, members, params_P, test_sets,
                     units_by_gran: Mapping[str, pruning.Units], cache_dir=None,
                     singles: Optional[dict] = None):
  """Pruning curves of the members with C_Tr in pruning.c_trs, and of their controls.

  Controls (issue 11): the C_Tr=0 members at the same lrs and, per seed, the
  noised-only model (compiled + that seed's noise, never fine-tuned), pruned
  the same way in the same sharded `pruning.search` call. Returns
  ({granularity: [M, K+1, 3] on C_Te=0}, {granularity: top units per member},
  the M pruned members (controls last; noised-only ones have source
  paper.NOISED), the number of them that are pruning.c_trs members, [M] not
  diverged). Per member and K: Acc O_PT (%), Acc O_FT (%) and the number of
  distinct classes predicted (Fig. 59's check that a pruned model has not
  collapsed). With cache_dir, each granularity's result is loaded if computed
  before from the same inputs. singles (a dict, filled in): {granularity: [M, n, 3]}, each
  of the top n = paper.FIG55_UNITS units pruned ALONE (Fig. 55's W1..W4; issue 28).
  """
  tm, spec, position = data.tm, data.spec, data.position
  idx = [i for i, m in enumerate(members) if m.c_tr in config.pruning.c_trs]
  n_main = len(idx)
  idx += [i for i, m in enumerate(members) if m.c_tr == 0.0 and i not in idx]
  base_members, base_S = noised_only(config, tm, config.finetune.seeds)
  chosen = [members[i] for i in idx] + base_members
  params_M = population.concat(jax.tree.map(lambda x: x[np.asarray(idx)], params_P), base_S)
  rng = np.random.default_rng([config.seed, 11])
  grad_toks = tasks.sample(spec, rng, config.pruning.num_grad_samples, None)
  grad_batch = {'tokens': jnp.asarray(data.inputs(grad_toks)),
                'labels': jnp.asarray(data.labels(grad_toks, spec.operand_pt))}
  loss_fn = losses.answer_loss_fn(tm.config, position)
  ks = tuple(range(config.pruning.k_max + 1))
  ts = test_sets['c_te0']
  inputs, label_pt, label_ft = (jnp.asarray(x) for x in (ts.inputs, ts.label_pt, ts.label_ft))

  def evaluate(params):
    logits_NxTxO, _ = model_lib.Transformer(tm.config).apply({'params': params}, inputs)
    pred_N = logits_NxTxO[:, position].argmax(-1)
    return jnp.stack([(pred_N == label_pt).mean() * 100, (pred_N == label_ft).mean() * 100,
                      readout.n_distinct(pred_N, tm.config.n_outputs).astype(jnp.float32)])

  def compute(units):
    ranks_MxU = jax.vmap(pruning.prune_order)(
        pruning.scores_population(loss_fn, params_M, grad_batch, units))
    one = lambda r, k: pruning.search(evaluate, params_M, units, r, np.arange(len(chosen)), k,
                                      chunk_size=config.pruning.chunk_size or None)
    n = min(paper.FIG55_UNITS, units.n_units)
    return {'curves': one(ranks_MxU, ks), 'ranks': ranks_MxU,
            'singles': jnp.concatenate([one(single_ranks(ranks_MxU, j), (1,))
                                        for j in range(n)], axis=1)}

  # Keyed by every input (models, batches, K), so a changed config never reuses a result.
  key = metrics.digest(params_M, grad_batch, ts.inputs, ts.label_pt, ts.label_ft, ks, position,
                       str(tm.config), 'fig55', paper.FIG55_UNITS)
  curves, top = {}, {}
  logging.info('%s: pruning: grad x weight scores, then every K masked and evaluated, one '
               'compiled search per granularity (%s)', spec.task, ', '.join(units_by_gran))
  bar = progress.Progress(f'{spec.task}: pruning {len(chosen)} models x {len(ks)} K, '
                          f'granularity ({", ".join(units_by_gran)})', len(units_by_gran))
  for gran, units in units_by_gran.items():
    path = None if cache_dir is None else cache_dir / f'pruning_{spec.task}_{gran}_{key}.npz'
    out = compute(units) if path is None else metrics.cached_arrays(path, lambda: compute(units))
    curves[gran] = np.asarray(out['curves'])
    top[gran] = [pruning.top_units(units, out['ranks'][i], 3) for i in range(len(chosen))]
    if singles is not None:
      singles[gran] = np.asarray(out['singles'])
    bar.update()
  return curves, top, chosen, n_main, population.finite_members(params_M)
