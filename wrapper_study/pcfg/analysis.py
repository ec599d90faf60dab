"""Is the capability still inside? Probes, pruning, learned masks and weight change of PCFG models.

Wires the shared analyses (`wrapper_study.analysis`) to this world's data: the
probe inputs are fine-tuning prompts (count O_FT) on C_Te = 0 windows, the
targets the counts of O_PT and O_FT; pruning scores neurons on count-O_PT
prompts and reads Acc O_PT / O_FT at C_Te = 0 for every member and K in one
device-sharded search. Each result is cached in workdir/analysis/*.npz, so a
rerun (or a killed run) redoes nothing finished.
"""

from __future__ import annotations

import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import losses
from wrapper_study import metrics
from wrapper_study import population
from wrapper_study import progress
from wrapper_study.analysis import learned_mask
from wrapper_study.analysis import probing
from wrapper_study.analysis import pruning
from wrapper_study.analysis import readout
from wrapper_study.analysis import weights
from wrapper_study.pcfg import finetune_data
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import paper

_PROBE_TRAIN_SALT, _PROBE_TEST_SALT = 505, 506
_PRUNE_SCORE_SALT, _PRUNE_TEST_SALT, _PRUNE_RANDOM_SALT = 404, 405, 406


def probe_data(config, n: int, salt: int):
  """Fine-tuning prompts (count O_FT) on C_Te = 0 windows; labels: counts of O_PT and O_FT."""
  sets = finetune_data.make_test_sets(np.random.default_rng([config.seed, salt]), n,
                                      pcfg_model.finetune_spec(config),
                                      grammar=pcfg_model.grammar(config),
                                      vocab=pcfg_model.vocab(config))[0.0]
  tokens = sets['ft'].tokens[:, :sets['ft'].answer_index]
  labels_TxN = np.stack([sets['pt'].values, sets['ft'].values]).astype(np.int32)
  return tokens, labels_TxN, sets['ft'].answer_index - 1


def probes(config, pre_params, params_P) -> dict[str, np.ndarray]:
  """Held-out probe accuracy [1 + P, sites, 2 targets] (model 0: pretrained), majority class [2]."""
  a = config.analysis
  cfg = pcfg_model.model_config(config)
  train_tokens, train_labels, pos = probe_data(config, a.probe_train_samples, _PROBE_TRAIN_SALT)
  test_tokens, test_labels, _ = probe_data(config, a.probe_test_samples, _PROBE_TEST_SALT)
  n_models = 1 + jax.tree.leaves(params_P)[0].shape[0]
  models = [pre_params] + [population.member_params(params_P, i) for i in range(n_models - 1)]
  sites = probing.probe_sites(cfg, tuple(a.probe_layers) or None)
  feats = lambda tokens, what: np.concatenate([
      probing.collect_features(cfg, p, tokens, pos, sites=sites, batch_size=config.eval.batch_size)
      for p in progress.progress(models, f'probes: {what} features of {n_models} models')])
  probe_cfg = probing.ProbeConfig(method=a.probe_method, steps=a.probe_steps, lr=a.probe_lr,
                                  boundaries=tuple(int(a.probe_steps * f) for f in
                                                   (0.5, 0.75, 0.875)),
                                  seed=config.seed)
  feats_train, feats_test = feats(train_tokens, 'training'), feats(test_tokens, 'test')
  logging.info('probes: fitting %d probes (%s, %d steps)', feats_train.shape[0],
               a.probe_method, a.probe_steps)
  acc = probing.fit_and_score(feats_train, train_labels, feats_test, test_labels,
                              pcfg_model.n_answer_classes(config), probe_cfg)
  # The probe floor of P3: the majority class of each target on the test labels, %.
  majority = [100 * np.bincount(y).max() / len(y) for y in test_labels]
  return {'acc': np.asarray(acc).reshape(n_models, -1, 2), 'majority': np.array(majority)}


def prune_sets(config):
  """(scoring batch: count-O_PT prompts on C_Te = 0 windows, test sets at C_Te = 0)."""
  spec, g, vocab = (pcfg_model.finetune_spec(config), pcfg_model.grammar(config),
                    pcfg_model.vocab(config))
  score = finetune_data.make_test_sets(np.random.default_rng([config.seed, _PRUNE_SCORE_SALT]),
                                       config.analysis.prune_samples, spec, grammar=g,
                                       vocab=vocab)[0.0]['pt']
  test = finetune_data.make_test_sets(np.random.default_rng([config.seed, _PRUNE_TEST_SALT]),
                                      config.analysis.prune_eval_samples, spec, grammar=g,
                                      vocab=vocab)[0.0]
  return pcfg_model.lm_batch(score, answer_only=True), test


def prune_ks(config) -> list[int]:
  """K = 0..15 one by one (Fig 7), then every analysis.k_step up to k_max (Figs 79-89)."""
  a = config.analysis
  return sorted(set(range(min(paper.PRUNE_FEW_NEURONS, a.k_max) + 1))
                | set(range(0, a.k_max + 1, a.k_step)) | {a.k_max})


def prune(config, params_P) -> dict[str, np.ndarray]:
  """Curves [2 scorings, P, K] of Acc O_PT / Acc O_FT (C_Te = 0) and distinct predictions."""
  a = config.analysis
  cfg = pcfg_model.model_config(config)
  loss_fn = losses.next_token_loss_fn(cfg)
  units = pruning.make_units(population.member_params(params_P, 0), 'neuron',
                             pruning.eligible_by_name(a.prune_matrices))
  score_batch, test = prune_sets(config)
  n_members = jax.tree.leaves(params_P)[0].shape[0]
  score_batch = jax.tree.map(jnp.asarray, score_batch)
  # Members in groups of analysis.member_chunk: a vmapped backward pass over a
  # whole population holds every member's activations at once (27 members of
  # the CPU model on 512 prompts: > 10 GB).
  chunk = a.member_chunk
  groups = [slice(i, min(i + chunk, n_members)) for i in range(0, n_members, chunk)]
  part = lambda g: jax.tree.map(lambda x: x[g], params_P)
  score_fn = jax.jit(jax.vmap(lambda p: pruning.scores(loss_fn, p, score_batch, units)))
  logging.info('pruning: grad x weight scores of %d models over %d %s neurons', n_members,
               units.n_units, a.prune_matrices)
  scores_PxU = jnp.concatenate([jax.block_until_ready(score_fn(part(g))) for g in
                                progress.progress(groups, 'pruning: scores, member chunks')])
  rank_gw = jax.vmap(pruning.prune_order)(scores_PxU)
  # The mask is optimised on the first mask_samples scoring prompts: its cost is
  # mask_steps backward passes per model, so it is kept near a fine-tuning run's.
  mask_batch = jax.tree.map(lambda x: x[:a.mask_samples], score_batch)
  logging.info('pruning: learned masks, %d models x %d steps on %d prompts', n_members,
               a.mask_steps, a.mask_samples)
  masks = [learned_mask.learn_masks_population(loss_fn, part(g), units, mask_batch,
                                               steps=a.mask_steps, lr=a.mask_lr,
                                               sparsity=a.mask_sparsity, seed=config.seed)
           for g in progress.progress(groups, 'pruning: learned masks, member chunks')]
  rank_lm = jnp.concatenate([jnp.asarray(m.rank_U) for m in masks])
  n_pruned = np.concatenate([np.asarray(m.n_pruned) for m in masks])
  ai, n_tokens = test['pt'].answer_index, pcfg_model.vocab(config).size
  predict = readout.predict_fn(cfg, ai - 1)
  pt_tokens, ft_tokens = jnp.asarray(test['pt'].tokens), jnp.asarray(test['ft'].tokens)

  def eval_fn(params):
    pred_pt, pred_ft = predict(params, pt_tokens[:, :ai]), predict(params, ft_tokens[:, :ai])
    return {'acc_pt': (pred_pt == pt_tokens[:, ai]).mean() * 100,
            'acc_ft': (pred_ft == ft_tokens[:, ai]).mean() * 100,
            'classes_pt': readout.n_distinct(pred_pt, n_tokens)}

  ks = prune_ks(config)
  member_C = np.concatenate([np.arange(n_members)] * 2)
  logging.info('pruning: search over %d candidates x %d K values on %d device(s)',
               len(member_C), len(ks), jax.device_count())
  curves = pruning.search(eval_fn, params_P, units, jnp.concatenate([rank_gw, rank_lm]),
                          member_C, ks, chunk_size=a.prune_chunk)
  out = {k: np.asarray(v).reshape(2, n_members, len(ks)) for k, v in curves.items()}
  # P2's control (issue 29): K random units of the same model, searched over the same
  # K = 0..PRUNE_FEW_NEURONS with the same "best K" rule: did grad x weight find something
  # a random choice of as many units would not? One fixed permutation per member.
  few = list(range(min(paper.PRUNE_FEW_NEURONS, a.k_max) + 1))
  rng = np.random.default_rng([config.seed, _PRUNE_RANDOM_SALT])
  rank_rand = np.stack([np.argsort(rng.permutation(units.n_units)) for _ in range(n_members)])
  rand = pruning.search(eval_fn, params_P, units, jnp.asarray(rank_rand, jnp.int32),
                        np.arange(n_members), few, chunk_size=a.prune_chunk)
  out.update({f'{k}_rand': np.asarray(v).reshape(1, n_members, len(few))
              for k, v in rand.items()})
  out['mask_n_pruned'] = n_pruned
  out['top_units_gw'] = np.array([pruning.top_units(units, rank_gw[i], paper.PRUNE_FEW_NEURONS)
                                  for i in range(n_members)])
  return out


def units_to_restore(curve_K, pretrained: float, ks):
  """Smallest K that wins back half of the Acc O_PT fine-tuning lost, or None."""
  lost = pretrained - curve_K[0]
  if lost < paper.RESTORE_MIN_LOSS:
    return None  # Too few points lost: nothing meaningful to restore.
  hit = np.nonzero(curve_K >= curve_K[0] + paper.RESTORE_FRACTION * lost)[0]
  return int(ks[hit[0]]) if hit.size else None


def analyse(config, pop: str, pre_params, params_P, workdir: pathlib.Path,
            times: metrics.PhaseTimes, label: str) -> dict:
  """Weight change, probes and (if analysis.pruning) pruning of one fine-tuned population.

  Each result is read from workdir/analysis/<pop>_<key>_<kind>.npz when a run
  already computed it (key: a digest of the models and config.analysis, so a
  changed config recomputes). `label` names the phases in the timing table.
  """
  cache = pathlib.Path(workdir) / 'analysis'
  # A diverged member (NaN/inf params) is analysed as the pretrained model so the
  # population keeps its shape, and its results are then set to NaN: every
  # table and figure shows it as diverged, never as a measurement.
  ok_P = population.finite_members(params_P)
  if not ok_P.all():
    logging.warning('%s: %d diverged member(s) are left out of the analysis (NaN results).',
                    pop, int((~ok_P).sum()))
    params_P = jax.tree.map(
        lambda x, p0: jnp.where(ok_P.reshape((-1,) + (1,) * (x.ndim - 1)), x, p0[None]),
        params_P, pre_params)
  bad = ~ok_P
  out = {}
  # Keyed by the models and the analysis settings: a changed config never reuses a result.
  pop = f'{pop}_{metrics.digest(pre_params, params_P, str(config.analysis), config.seed)}'
  with times.timed(f'weight change {label}'):
    out['weights'] = metrics.cached_arrays(
        cache / f'{pop}_weights.npz',
        lambda: {k: _nan_at(v, bad, 0) for k, v in weights.weight_change(pre_params,
                                                                           params_P).items()})
  with times.timed(f'probes {label}'):
    out['probes'] = metrics.cached_arrays(
        cache / f'{pop}_probes.npz',
        lambda: _nan_probes(probes(config, pre_params, params_P), bad))
  if config.analysis.pruning:
    with times.timed(f'pruning + learned mask {label}'):
      out['prune'] = metrics.cached_arrays(cache / f'{pop}_prune_rand.npz',
                                           lambda: _nan_prune(prune(config, params_P), bad))
  return out


def _nan_at(x, bad_P, axis: int):
  """x (float) with NaN at the diverged members along `axis`."""
  x = np.array(x, float)
  if bad_P.any():
    x[(slice(None),) * axis + (bad_P,)] = np.nan
  return x


def _nan_probes(out, bad_P):
  return {**out, 'acc': _nan_at(out['acc'], np.concatenate([[False], bad_P]), 0)}


def _nan_prune(out, bad_P):
  curves = ('acc_pt', 'acc_ft', 'classes_pt', 'acc_pt_rand', 'acc_ft_rand', 'classes_pt_rand')
  return {k: _nan_at(v, bad_P, 1) if k in curves else
          (_nan_at(v, bad_P, 0) if k == 'mask_n_pruned' else v) for k, v in out.items()}
