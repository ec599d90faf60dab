"""Is the capability still inside? Probes, pruning, reFT and weight change on PCFG models.

Per operand prior: pretrain (resumable, shared with pcfg_study) -> fine-tune
the lr x C_Tr x seed grid for each arm of the variant (plain fine-tuning; PT+FT
mixing; randFT) as one population -> for every member and the pretrained model:
  - accuracy curves during fine-tuning (Figs 5, 6, 18-21, 24),
  - relative weight change per matrix (where fine-tuning moved the weights),
  - linear probes on every block, all models x sites x targets in one vmapped
    call (Figs 8, 22-23, 25, 30, 90-98),
  - grad x weight neuron pruning over K = 0..k_max, and a learned mask, for
    all members and both scorings in one device-sharded search (Figs 7, 79-89),
-> reverse fine-tuning of the eta_L models against Scr.+FT and Scr. as one
population (Figs 9, 26, 28-29) -> claims P1-P4 with verdicts in report.md.

Config: configs/pcfg_analysis.py. Each analysis result is cached in
workdir/analysis/*.npz, so a rerun (or a killed run) redoes nothing finished.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import config_check as cc
from wrapper_study.analysis import learned_mask
from wrapper_study import metrics
from wrapper_study import model as model_lib
from wrapper_study.report import plots
from wrapper_study import population
from wrapper_study.analysis import probing
from wrapper_study.analysis import pruning
from wrapper_study.report import tables
from wrapper_study.experiments import pcfg_study
from wrapper_study.pcfg import finetune_data
from wrapper_study.pcfg import sampler
from wrapper_study.pcfg import tasks

SCR_FT = 'scr+ft'
SCR = 'scr'


@dataclasses.dataclass(frozen=True)
class Arm:
  """One fine-tuning condition of a variant."""
  name: str
  pt_fraction: float = 0.0  # App. E.1.
  rand_ft: bool = False  # App. E.4.


def arms(config) -> list[Arm]:
  variant = config.analysis.variant
  if variant == 'mixing':
    return [Arm(f'mix{f:g}', pt_fraction=float(f)) for f in config.analysis.pt_fractions]
  if variant == 'randft':
    return [Arm('ft'), Arm('randft', rand_ft=True)]
  return [Arm('ft')]


def arm_config(config, arm: Arm):
  c = config.copy_and_resolve_references()
  c.finetune.pt_fraction = arm.pt_fraction
  c.finetune.rand_ft = arm.rand_ft
  return c


def jailbreak_families(config) -> tuple[str, ...]:
  return tuple(f for f in tasks.JAILBREAK_FAMILIES if f in config.data.families)


# ---------------------------------------------------------------- config ----


def validate(config) -> None:
  """pcfg_study's checks plus the analysis fields; raises ConfigError before compute."""
  pcfg_study.validate(config)
  a = config.analysis
  cc.one_of(config, 'analysis.variant', ('main', 'mixing', 'jailbreak', 'randft'))
  cc.one_of(config, 'analysis.probe_method', ('adamw', 'closed_form'))
  cc.one_of(config, 'analysis.prune_matrices', tuple(pruning.ELIGIBLE))
  cc.positive(config, 'analysis.probe_steps', 'analysis.probe_train_samples',
              'analysis.probe_test_samples', 'analysis.prune_samples', 'analysis.prune_chunk',
              'analysis.mask_steps', 'analysis.reft_steps', 'analysis.k_step',
              'analysis.member_chunk', 'analysis.mask_samples',
              'analysis.prune_eval_samples', integer=True)
  cc.non_negative_int(config, 'analysis.k_max')
  cc.positive(config, 'analysis.probe_lr', 'analysis.mask_lr')
  cc.positive_list(config, 'analysis.reft_lrs')
  cc.fractions(config, 'analysis.pt_fractions')
  cc.fractions(config, 'analysis.reft_source_c_trs')
  if not 0 <= a.revival_threshold <= 100:
    cc.fail('analysis.revival_threshold', a.revival_threshold, 'must be a percentage in [0, 100]')
  if a.mask_sparsity < 0:
    cc.fail('analysis.mask_sparsity', a.mask_sparsity, 'must be >= 0')
  steps = a.reft_eval_steps
  if not steps or any(not isinstance(s, int) or not 0 < s <= a.reft_steps for s in steps):
    cc.fail('analysis.reft_eval_steps', steps, f'must be steps in 1..{a.reft_steps}')
  if a.reft:
    missing = [c for c in a.reft_source_c_trs if c not in config.finetune.c_trs]
    if missing:
      cc.fail('analysis.reft_source_c_trs', a.reft_source_c_trs,
              f'must be among finetune.c_trs={tuple(config.finetune.c_trs)}')
    try:
      tasks.resolve_prior(a.scr_ft_prior)
    except ValueError as e:
      raise cc.ConfigError(f'config.analysis.scr_ft_prior: {e}') from None
  if a.variant == 'jailbreak' and not jailbreak_families(config):
    cc.fail('data.families', config.data.families,
            "must include 'T_J1' and/or 'T_J2' for the jailbreak variant")
  try:
    probing.probe_sites(pcfg_study.model_config(config), tuple(a.probe_layers) or None)
  except ValueError as e:
    raise cc.ConfigError(f'config.analysis.probe_layers: {e}') from None
  if a.pruning:
    units = pruning.make_units(_template(config), 'neuron',
                               pruning.eligible_by_name(a.prune_matrices))
    try:
      pruning.check_k(a.k_max, units, 'analysis.k_max')
    except ValueError as e:
      raise cc.ConfigError(f'config.{e}') from None


def _template(config):
  cfg = pcfg_study.model_config(config)
  return jax.eval_shape(lambda: model_lib.init_params(cfg, jax.random.PRNGKey(0)))


# -------------------------------------------------------------- helpers ----


def _cached(path: pathlib.Path, compute):
  """Loads a finished analysis result, or computes and saves it (dict of arrays)."""
  if path.exists():
    with np.load(path) as f:
      return dict(f)
  out = {k: np.asarray(v) for k, v in compute().items()}
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix('.tmp.npz')
  np.savez(tmp, **out)
  tmp.rename(path)  # Atomic: a killed run never leaves a half-written result.
  return out


@functools.lru_cache(maxsize=None)
def _predict_fn(cfg: model_lib.TransformerConfig, answer_index: int):
  def predict(params, tokens):
    logits, _ = model_lib.Transformer(cfg).apply({'params': params}, tokens[:, :answer_index])
    return logits[:, answer_index - 1].argmax(-1)
  return predict


def _n_distinct(pred_N, n_tokens: int):
  return (jnp.zeros(n_tokens, jnp.int32).at[pred_N].add(1) > 0).sum()


# ------------------------------------------------------------- analyses ----


def weight_change(pre_params, params_P) -> dict[str, np.ndarray]:
  """{matrix path: [P] ||theta_FT - theta_PT|| / ||theta_PT||} per parameter array."""
  pre = dict(jax.tree_util.tree_flatten_with_path(pre_params)[0])
  out = {}
  for path, x_P in jax.tree_util.tree_flatten_with_path(params_P)[0]:
    name = '/'.join(str(getattr(k, 'key', k)) for k in path)
    p0 = jnp.asarray(pre[path])
    delta = jnp.sqrt(((x_P - p0[None]) ** 2).reshape(x_P.shape[0], -1).sum(1))
    out[name] = np.asarray(delta / jnp.maximum(jnp.linalg.norm(p0.ravel()), 1e-12))
  return out


def probe_data(config, n: int, salt: int):
  """Fine-tuning prompts (count b) on C_Te = 0 windows; labels: count of a, count of b."""
  sets = finetune_data.make_test_sets(np.random.default_rng([config.seed, salt]), n,
                                      pcfg_study.finetune_spec(config),
                                      grammar=pcfg_study.grammar(config))[0.0]
  tokens = sets['ft'].tokens[:, :sets['ft'].answer_index]
  labels_TxN = np.stack([sets['pt'].values, sets['ft'].values]).astype(np.int32)
  return tokens, labels_TxN, sets['ft'].answer_index - 1


def n_answer_classes(config) -> int:
  """How many answers the task has: counts 0..O' (counter) or indices 0..L (indexer)."""
  spec = pcfg_study.finetune_spec(config)
  return spec.k + 1 if spec.task == 'counter' else spec.window_length + 1


def probes(config, pre_params, params_P) -> dict[str, np.ndarray]:
  """Held-out probe accuracy [1 + P, sites, 2 targets]; model 0 is the pretrained one."""
  a = config.analysis
  cfg = pcfg_study.model_config(config)
  train_tokens, train_labels, pos = probe_data(config, a.probe_train_samples, 505)
  test_tokens, test_labels, _ = probe_data(config, a.probe_test_samples, 506)
  n_models = 1 + jax.tree.leaves(params_P)[0].shape[0]
  models = [pre_params] + [population.member_params(params_P, i) for i in range(n_models - 1)]
  sites = probing.probe_sites(cfg, tuple(a.probe_layers) or None)
  feats = lambda tokens: np.concatenate([
      probing.collect_features(cfg, p, tokens, pos, sites=sites, batch_size=config.eval.batch_size)
      for p in models])  # [models * sites, N, D]
  probe_cfg = probing.ProbeConfig(method=a.probe_method, steps=a.probe_steps, lr=a.probe_lr,
                                  boundaries=tuple(int(a.probe_steps * f) for f in
                                                   (0.5, 0.75, 0.875)),
                                  seed=config.seed)
  n_classes = n_answer_classes(config)
  acc = probing.fit_and_score(feats(train_tokens), train_labels, feats(test_tokens), test_labels,
                              n_classes, probe_cfg)
  return {'acc': np.asarray(acc).reshape(n_models, -1, 2)}


def prune_sets(config):
  """(scoring batch: count-a prompts on C_Te = 0 windows, test sets at C_Te = 0)."""
  spec = pcfg_study.finetune_spec(config)
  g = pcfg_study.grammar(config)
  score = finetune_data.make_test_sets(np.random.default_rng([config.seed, 404]),
                                       config.analysis.prune_samples, spec, grammar=g)[0.0]['pt']
  test = finetune_data.make_test_sets(np.random.default_rng([config.seed, 405]),
                                      config.analysis.prune_eval_samples, spec, grammar=g)[0.0]
  return pcfg_study.lm_batch(score, answer_only=True), test


def prune_ks(config) -> list[int]:
  """K = 0..15 one by one (Fig 7), then every analysis.k_step up to k_max (Figs 79-89)."""
  a = config.analysis
  return sorted(set(range(min(15, a.k_max) + 1)) | set(range(0, a.k_max + 1, a.k_step))
                | {a.k_max})


def prune(config, params_P) -> dict[str, np.ndarray]:
  """Curves [2 scorings, P, K] of Acc O_PT / Acc O_FT (C_Te = 0) and distinct predictions."""
  a = config.analysis
  cfg = pcfg_study.model_config(config)
  loss_fn = pcfg_study.lm_loss_fn(cfg)
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
  scores_PxU = jnp.concatenate([score_fn(part(g)) for g in groups])
  rank_gw = jax.vmap(pruning.prune_order)(scores_PxU)
  # The mask is optimised on the first mask_samples scoring prompts: its cost is
  # mask_steps backward passes per model, so it is kept near a fine-tuning run's.
  mask_batch = jax.tree.map(lambda x: x[:a.mask_samples], score_batch)
  logging.info('pruning: learned masks, %d models x %d steps on %d prompts', n_members,
               a.mask_steps, a.mask_samples)
  masks = [learned_mask.learn_masks_population(loss_fn, part(g), units, mask_batch,
                                               steps=a.mask_steps, lr=a.mask_lr,
                                               sparsity=a.mask_sparsity, seed=config.seed)
           for g in groups]
  rank_lm = jnp.concatenate([jnp.asarray(m.rank_U) for m in masks])
  n_pruned = np.concatenate([np.asarray(m.n_pruned) for m in masks])
  predict = _predict_fn(cfg, test['pt'].answer_index)
  pt_tokens, ft_tokens = jnp.asarray(test['pt'].tokens), jnp.asarray(test['ft'].tokens)
  n_tokens = tasks.VOCAB.size

  def eval_fn(params):
    pred_pt, pred_ft = predict(params, pt_tokens), predict(params, ft_tokens)
    ai = test['pt'].answer_index
    return {'acc_pt': (pred_pt == pt_tokens[:, ai]).mean() * 100,
            'acc_ft': (pred_ft == ft_tokens[:, ai]).mean() * 100,
            'classes_pt': _n_distinct(pred_pt, n_tokens)}

  ks = prune_ks(config)
  member_C = np.concatenate([np.arange(n_members)] * 2)
  logging.info('pruning: search over %d candidates x %d K values on %d device(s)',
               len(member_C), len(ks), jax.device_count())
  curves = pruning.search(eval_fn, params_P, units, jnp.concatenate([rank_gw, rank_lm]),
                          member_C, ks, chunk_size=a.prune_chunk)
  out = {k: np.asarray(v).reshape(2, n_members, len(ks)) for k, v in curves.items()}
  out['mask_n_pruned'] = n_pruned
  out['top_units_gw'] = np.array([pruning.top_units(units, rank_gw[i], 15)
                                  for i in range(n_members)])
  return out


# ------------------------------------------------------------------ reFT ----


def reft_batch_fn(config, members, salt: int):
  """Count-a prompts on fresh windows (answer-only), one stream per member seed."""
  f = config.finetune
  fam = finetune_data.TASK_FAMILY[f.task]
  o_prime = pcfg_study.o_primes(config)[fam]
  g = pcfg_study.grammar(config)
  seeds = sorted({m.seed for m in members})
  which = np.array([seeds.index(m.seed) for m in members])

  def batch_fn(step):
    parts = []
    for s in seeds:
      rng = population.stream_rng(config.seed, s, None, step, salt)
      windows = sampler.sample_windows(g, rng, f.batch_size, config.data.window_length)
      parts.append(pcfg_study.lm_batch(tasks.make_sequences(windows, fam, f.operand_pt, o_prime),
                                       answer_only=True))
    return {k: np.stack([p[k] for p in parts])[which] for k in parts[0]}
  return batch_fn


def reft(config, sources, scr_ft_params, workdir, writer):
  """reFT of the eta_L models, Scr.+FT and Scr., as one population.

  sources: {label: (members, params_P)} of fine-tuned populations.
  Returns (members, History).
  """
  a = config.analysis
  cfg = pcfg_study.model_config(config)
  lr_source = max(config.finetune.lrs)
  members, parts = [], []
  for label, (ft_members, params_P) in sources.items():
    for i, m in enumerate(ft_members):
      if m.lr == lr_source and m.c_tr in a.reft_source_c_trs:
        for lr in a.reft_lrs:
          members.append(population.Member(float(lr), m.c_tr, m.seed, label))
          parts.append(population.member_params(params_P, i))
  for s in config.finetune.seeds:
    for lr in a.reft_lrs:
      members.append(population.Member(float(lr), None, s, SCR_FT))
      parts.append(scr_ft_params)
      members.append(population.Member(float(lr), None, s, SCR))
      parts.append(model_lib.init_params(cfg, jax.random.PRNGKey(10_000 + s)))
  params_P = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *parts)
  test = pcfg_study.test_sets(config)[0.0]

  def evaluate(params_P):
    return {k: pcfg_study.answer_accuracy(cfg, params_P, test[which], config.eval.batch_size,
                                          True)
            for k, which in (('c_te0/acc_o_pt', 'pt'), ('c_te0/acc_o_ft', 'ft'))}

  f = config.finetune
  opt_cfg = dict(name='adamw', lr=1.0, b1=0.9, b2=0.95, weight_decay=config.pretrain.weight_decay,
                 schedule='warmup_cosine', warmup_fraction=f.warmup_fraction, min_lr_ratio=0.01,
                 grad_clip_norm=1.0)
  logging.info('reFT: %d members (%s)', len(members), sorted({m.source for m in members}))
  _, history = population.run_population(
      name=f'reft_{config.analysis.variant}', model_config=cfg, members=members,
      params_P=params_P, opt_cfg=opt_cfg, total_steps=a.reft_steps,
      batch_fn=reft_batch_fn(config, members, salt=7000), loss_fn=pcfg_study.lm_loss_fn(cfg),
      evaluate=evaluate, eval_steps=(0,) + tuple(a.reft_eval_steps), workdir=workdir,
      writer=writer, save_every=f.save_every, log_every=f.log_every)
  return members, history


def revival_step(steps, acc_S, threshold: float):
  """First evaluated step with accuracy >= threshold, or None."""
  hit = np.nonzero(np.asarray(acc_S) >= threshold)[0]
  return int(steps[hit[0]]) if hit.size else None


def reft_rows(config, members, history) -> list[dict]:
  steps, acc = history.curve('c_te0/acc_o_pt')
  rows = []
  for key in sorted({(m.source, m.c_tr if m.c_tr is not None else -1, m.lr) for m in members},
                    key=str):
    idx = [i for i, m in enumerate(members)
           if (m.source, m.c_tr if m.c_tr is not None else -1, m.lr) == key]
    revived = [revival_step(steps, acc[:, i], config.analysis.revival_threshold) for i in idx]
    ok = [r for r in revived if r is not None]
    rows.append(dict(source=key[0], c_tr='' if key[1] == -1 else key[1], reft_lr=key[2],
                     n_seeds=len(idx), revived=f'{len(ok)}/{len(idx)}',
                     median_iters_to_revival=float(np.median(ok)) if ok else '',
                     iters_per_seed=' '.join('-' if r is None else str(r) for r in revived),
                     final_acc_o_pt=round(float(acc[-1, idx].mean()), 1)))
  return rows


# --------------------------------------------------------------- figures ----

FIGURES = {  # variant -> figure kind -> file stem (the paper's figure numbers).
    'main': {'acc_ft': 'fig05_acc_o_ft', 'acc_pt': 'fig06_acc_o_pt', 'probes': 'fig08_90-98_probes',
             'prune15': 'fig07_pruning_k15', 'prune100': 'fig79-89_pruning_k100',
             'mask': 'learned_mask_vs_gradxw', 'reft': 'fig09_26_reft',
             'weights': 'weight_change'},
    'mixing': {'acc_ft': 'fig18_20_mixing_acc_o_ft', 'acc_pt': 'fig19_21_mixing_acc_o_pt',
               'probes': 'fig22_23_mixing_probes', 'weights': 'weight_change_mixing'},
    'jailbreak': {'acc_ft': 'fig24_jailbreak_acc_o_ft', 'acc_pt': 'fig24_jailbreak_acc_o_pt',
                  'probes': 'fig25_jailbreak_probes', 'weights': 'weight_change_jailbreak'},
    'randft': {'acc_ft': 'fig28-30_randft_acc_o_ft', 'acc_pt': 'fig28-30_randft_acc_o_pt',
               'probes': 'fig30_randft_probes', 'reft': 'fig28_29_randft_reft',
               'weights': 'weight_change_randft'},
}


def _lr_name(config, lr) -> str:
  names = dict(zip(sorted(config.finetune.lrs, reverse=True), ('eta_L', 'eta_M', 'eta_S')))
  return f'{names.get(lr, "lr")}={lr:g}'


def _tagged(results, metric_key):
  """Members of every population tagged with (prior, arm), values joined: [X, sum P]."""
  tagged, cols, x = [], [], None
  for (prior, arm), r in results.items():
    steps, values = r['history'].curve(metric_key)
    x = steps
    tagged += [(prior, arm, m) for m in r['members']]
    cols.append(values)
  return x, np.concatenate(cols, axis=1), tagged


def accuracy_figure(config, results, which: str):
  """Acc O_PT or O_FT during fine-tuning: rows prior x arm x C_Te (x family), cols lr."""
  keys = [f'c_te{c}/acc_o_{which}' for c in (0, 1)]
  if which == 'pt':
    keys += [f'c_te0/acc_o_pt_{fam}' for fam in jailbreak_families(config)]
  xs, cols, tagged = None, [], []
  for key in keys:
    x, values, t = _tagged(results, key)
    xs = x
    cols.append(values)
    tagged += [(key, *tm) for tm in t]
  multi_arm = len(arms(config)) > 1
  fig = plots.grouped_curves(
      xs, np.concatenate(cols, axis=1), tagged,
      rows=lambda t: f'{t[1]}{" " + t[2].name if multi_arm else ""} {t[0].replace("/", " ")}',
      panel=lambda t: _lr_name(config, t[3].lr), group=lambda t: f'C_Tr={t[3].c_tr:g}',
      ylabel=f'Acc O_{which.upper()} (%)', xlabel='fine-tuning iteration',
      title=f'Acc O_{which.upper()} during fine-tuning')
  return fig


def probes_figure(config, results):
  """Held-out probe accuracy per block; rows prior x arm x target; pretrained dashed."""
  labels = probing.site_labels(pcfg_study.model_config(config),
                               tuple(config.analysis.probe_layers) or None)
  tagged, cols, pre = [], [], {}
  target_names = (f'count {config.finetune.operand_pt} (O_PT)',
                  f'count {config.finetune.operand_ft} (O_FT)')
  for (prior, arm), r in results.items():
    acc = r['probes']['acc']  # [1 + P, S, 2]
    for t, tname in enumerate(target_names):
      row = f'{prior} {arm.name} {tname}' if len(arms(config)) > 1 else f'{prior} {tname}'
      pre[row] = acc[0, :, t]
      tagged += [(row, m) for m in r['members']]
      cols.append(acc[1:, :, t].T)
  fig = plots.grouped_curves(
      np.arange(len(labels)), np.concatenate(cols, axis=1), tagged, rows=lambda t: t[0],
      panel=lambda t: _lr_name(config, t[1].lr), group=lambda t: f'C_Tr={t[1].c_tr:g}',
      ylabel='probe accuracy (%)', xlabel='block', title='Linear probes (C_Te = 0)')
  row_names = sorted(pre, key=str)
  n_cols = len(fig.axes) // len(row_names)
  for i, ax in enumerate(fig.axes):
    ax.plot(np.arange(len(labels)), pre[row_names[i // n_cols]], 'k--', label='pretrained')
    ax.set_xticks(np.arange(len(labels)), labels, fontsize=7)
    ax.legend(fontsize=6)
  return fig


def pruning_figure(config, results, k_show: int):
  ks = np.array(prune_ks(config))
  n = int((ks <= k_show).sum())
  tagged, cols = [], []
  for (prior, arm), r in results.items():
    for metric, name in (('acc_pt', 'Acc O_PT'), ('acc_ft', 'Acc O_FT')):
      tagged += [(f'{prior} {name}', m) for m in r['members']]
      cols.append(r['prune'][metric][0, :, :n].T)  # grad x weight scoring.
  return plots.grouped_curves(
      ks[:n], np.concatenate(cols, axis=1), tagged, rows=lambda t: t[0],
      panel=lambda t: _lr_name(config, t[1].lr), group=lambda t: f'C_Tr={t[1].c_tr:g}',
      ylabel='accuracy (%), C_Te = 0', xlabel='neurons pruned (K)',
      title=f'grad x weight neuron pruning, K = 0..{k_show}')


def mask_figure(config, results):
  tagged, cols = [], []
  for (prior, arm), r in results.items():
    for s, sname in enumerate(('grad x weight', 'learned mask')):
      tagged += [(prior, sname, m) for m in r['members']]
      cols.append(r['prune']['acc_pt'][s].T)
  return plots.grouped_curves(
      np.array(prune_ks(config)), np.concatenate(cols, axis=1), tagged,
      rows=lambda t: f'{t[0]} C_Tr={t[2].c_tr:g}', panel=lambda t: _lr_name(config, t[2].lr),
      group=lambda t: t[1], ylabel='Acc O_PT (%), C_Te = 0', xlabel='neurons pruned (K)',
      title='Which units restore O_PT: grad x weight vs a learned mask')


def reft_figure(config, members, history):
  steps, acc = history.curve('c_te0/acc_o_pt')

  def group(m):
    if m.source in (SCR_FT, SCR):
      return {SCR_FT: 'Scr.+FT', SCR: 'Scr.'}[m.source]
    return f'reFT {m.source} C_Tr={m.c_tr:g}'
  return plots.grouped_curves(
      steps, acc, members, panel=lambda m: f'reFT lr={m.lr:g}', group=group,
      ylabel='Acc O_PT (%), C_Te = 0', xlabel='reFT iteration', logx=True,
      title=f'Reverse fine-tuning (fine-tuned at lr {max(config.finetune.lrs):g})')


def weight_rows(config, results) -> list[dict]:
  rows = []
  for (prior, arm), r in results.items():
    for lr in config.finetune.lrs:
      for c in config.finetune.c_trs:
        idx = [i for i, m in enumerate(r['members']) if m.lr == lr and m.c_tr == c]
        row = dict(prior=prior, arm=arm.name, lr=lr, c_tr=c)
        row.update({k: float(np.mean(v[idx])) for k, v in r['weights'].items()
                    if k.endswith('kernel') or k.endswith('embedding')})
        rows.append(row)
  return rows


def weight_figure(rows):
  keys = [k for k in rows[0] if k not in ('prior', 'arm', 'lr', 'c_tr')]
  data = np.array([[r[k] for k in keys] for r in rows])
  fig, ax = plots.plt.subplots(figsize=(0.45 * len(keys) + 3, 0.3 * len(rows) + 2))
  im = ax.imshow(np.log10(np.maximum(data, 1e-8)), aspect='auto', cmap='viridis')
  ax.set_xticks(range(len(keys)), [k.replace('/kernel', '').replace('blocks_', 'B') for k in keys],
                rotation=90, fontsize=6)
  ax.set_yticks(range(len(rows)), [f"{r['prior']} {r['arm']} lr={r['lr']:g} C_Tr={r['c_tr']:g}"
                                   for r in rows], fontsize=6)
  fig.colorbar(im, ax=ax, label='log10 ||dW|| / ||W_PT||')
  ax.set_title('Relative weight change, pretrained -> fine-tuned (mean over seeds)', fontsize=9)
  fig.tight_layout()
  return fig


# ---------------------------------------------------------------- claims ----
# Thresholds are fixed here, before any run; a claim whose cells are not in
# the grid is 'not measured', never 'holds'.


def _verdict(passes: list[bool]) -> str:
  if not passes:
    return 'not measured (cells not in the grid)'
  if all(passes):
    return 'holds'
  return 'partly' if any(passes) else 'does not hold'


def _last(history, key, idx) -> float:
  _, values = history.curve(key)
  return float(values[-1, idx].mean())


def _lrs(config) -> tuple[float, ...]:
  """(eta_S, eta_M, ...) ascending."""
  return tuple(sorted(config.finetune.lrs))


def claims_wrapper(config, results) -> list[dict]:
  """P1: the spurious-correlation wrapper (Fig 5, Table 5) and the O_PT drop (Fig 6)."""
  out = []
  for (prior, arm), r in results.items():
    if prior != 'low' or arm.rand_ft:  # randFT trains O_PT prompts to answer O_FT: no wrapper test.
      continue
    members, h = r['members'], r['history']
    sel = lambda lr, c: [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
    cells, passes = [], []
    for lr in _lrs(config):
      idx = sel(lr, 1.0)
      if idx:
        te0, te1 = _last(h, 'c_te0/acc_o_ft', idx), _last(h, 'c_te1/acc_o_ft', idx)
        cells.append(f'lr {lr:g}: {te0:.1f} / {te1:.1f}')
        passes.append(te0 <= 10 and te1 >= 90)
    out.append(dict(claim=f'P1a [{arm.name}] low prior, C_Tr=1: a wrapper, Acc O_FT <= 10 at '
                    'C_Te=0 and >= 90 at C_Te=1 (each lr)', measured='; '.join(cells),
                    verdict=_verdict(passes)))
    cells, passes = [], []
    for lr in _lrs(config):
      i0, i1 = sel(lr, 0.0), sel(lr, 1.0)
      if i0 and i1:
        a0, a1 = _last(h, 'c_te0/acc_o_pt', i0), _last(h, 'c_te0/acc_o_pt', i1)
        cells.append(f'lr {lr:g}: C_Tr=0 {a0:.1f}, C_Tr=1 {a1:.1f}')
        passes.append(a1 <= a0)
    out.append(dict(claim=f'P1b [{arm.name}] low prior: Acc O_PT (C_Te=0) ends lower with C_Tr=1 '
                    'than with C_Tr=0 (each lr; Fig 6)', measured='; '.join(cells),
                    verdict=_verdict(passes)))
  return out


def claims_pruning(config, results) -> list[dict]:
  """P2: 5-15 neurons restore O_PT (low prior, small lr; Fig 7); and the learned mask."""
  out = []
  k15 = min(15, config.analysis.k_max)  # prune_ks holds every K <= 15: index = K.
  for (prior, arm), r in results.items():
    if 'prune' not in r or prior != 'low':
      continue
    p, members = r['prune'], r['members']
    cells, passes = [], []
    for c in config.finetune.c_trs:
      idx = [i for i, m in enumerate(members) if m.lr == _lrs(config)[0] and m.c_tr == c]
      curve_pt = p['acc_pt'][0, idx].mean(0)
      curve_ft = p['acc_ft'][0, idx].mean(0)
      if curve_pt[0] >= 90:
        cells.append(f'C_Tr {c:g}: Acc O_PT already {curve_pt[0]:.1f} at K=0 (nothing to revive)')
        continue
      k = int(np.argmax(curve_pt[1:k15 + 1])) + 1
      gain, drop = curve_pt[k] - curve_pt[0], curve_ft[0] - curve_ft[k]
      classes = p['classes_pt'][0, idx, k].mean()
      cells.append(f'C_Tr {c:g}: +{gain:.1f} Acc O_PT at K={k} (O_FT -{drop:.1f}, '
                   f'{classes:.1f} distinct answers)')
      passes.append(gain >= 20 and drop >= 20 and classes >= 3)
    verdict = _verdict(passes)
    if not passes and cells:
      verdict = 'not measured (fine-tuning at this lr did not lose Acc O_PT)'
    out.append(dict(claim=f'P2 [{arm.name}] low prior, lr {_lrs(config)[0]:g}: pruning <= '
                    f'{k15} neurons raises Acc O_PT by >= 20 points and lowers Acc O_FT by >= 20, '
                    'without collapsing to < 3 distinct answers', measured='; '.join(cells),
                    verdict=verdict))
  return out


def units_to_restore(curve_K, pretrained: float, ks):
  """Smallest K that wins back half of the Acc O_PT fine-tuning lost, or None."""
  target = curve_K[0] + 0.5 * (pretrained - curve_K[0])
  if pretrained - curve_K[0] < 10:
    return None  # Less than 10 points lost: nothing meaningful to restore.
  hit = np.nonzero(curve_K >= target)[0]
  return int(ks[hit[0]]) if hit.size else None


def mask_rows(config, results) -> list[dict]:
  rows = []
  for (prior, arm), r in results.items():
    if 'prune' not in r:
      continue
    p = r['prune']
    for lr in config.finetune.lrs:
      for c in config.finetune.c_trs:
        idx = [i for i, m in enumerate(r['members']) if m.lr == lr and m.c_tr == c]
        row = dict(prior=prior, lr=lr, c_tr=c)
        for s, name in enumerate(('gradxw', 'learned')):
          ks = [units_to_restore(p['acc_pt'][s, i], r['pre_acc'][0], prune_ks(config))
                for i in idx]
          row[f'{name}_units_to_restore'] = ' '.join('-' if k is None else str(k) for k in ks)
        row['learned_mask_units_below_half'] = ' '.join(str(int(x))
                                                        for x in p['mask_n_pruned'][idx])
        rows.append(row)
  return rows


def claims_probes(config, results) -> list[dict]:
  """P3: O_PT stays linearly decodable (Fig 8); a drop only for eta_M with the low prior."""
  out = []
  lrs = _lrs(config)
  if len(lrs) < 2:
    return out
  eta_s, eta_m = lrs[0], lrs[1]
  for (prior, arm), r in results.items():
    acc = r['probes']['acc']  # [1 + P, S, 2]
    pre_best = acc[0, 1:, 0].max()
    cells, passes = [], []
    for lr in (eta_m, eta_s):
      idx = [i for i, m in enumerate(r['members']) if m.lr == lr]
      best = acc[1 + np.array(idx), 1:, 0].max(1).mean()
      cells.append(f'{_lr_name(config, lr)}: {best:.1f} (pretrained {pre_best:.1f})')
      if not (prior == 'low' and lr == eta_m):  # The paper's one allowed drop.
        passes.append(best >= pre_best - 10)
    out.append(dict(claim=f'P3 [{arm.name}] prior {prior}: the count of '
                    f'{config.finetune.operand_pt} stays decodable (best block >= pretrained - 10 '
                    'points at eta_M and eta_S; low prior at eta_M exempt)',
                    measured='; '.join(cells), verdict=_verdict(passes)))
  return out


def claims_reft(config, members, history) -> list[dict]:
  """P4: revival in 0.1-1K iterations (strong), ~3K (weak); Scr.+FT slower (Fig 9)."""
  a = config.analysis
  steps, acc = history.curve('c_te0/acc_o_pt')
  lr = max(a.reft_lrs)
  scale = a.reft_steps / 10_000  # The paper's iteration counts, scaled to this run.

  def revivals(pred):
    idx = [i for i, m in enumerate(members) if pred(m) and m.lr == lr]
    return [revival_step(steps, acc[:, i], a.revival_threshold) for i in idx]

  fmt = lambda rs: ', '.join('never' if x is None else str(x) for x in rs)
  out = []
  for source, limit, name in (('high/ft', 1_000 * scale, 'strong (high prior)'),
                              ('low/ft', 3_000 * scale, 'weak (low prior)')):
    rs = revivals(lambda m, s=source: m.source == s)
    out.append(dict(claim=f'P4 {name}: reFT at lr {lr:g} revives (>= {a.revival_threshold:g}%) '
                    f'within {limit:g} iterations (paper {limit / scale:g})', measured=fmt(rs),
                    verdict=_verdict([x is not None and x <= limit for x in rs])))
  scr = revivals(lambda m: m.source == SCR_FT)
  ft = revivals(lambda m: m.source not in (SCR_FT, SCR))
  never = a.reft_steps + 1
  median = lambda rs: float(np.median([never if x is None else x for x in rs])) if rs else None
  passes = [] if not scr or not ft else [median(scr) > median(ft)]
  verdict = _verdict(passes)
  if ft and all(x is None for x in ft + scr):
    verdict = 'not measured (neither reFT nor Scr.+FT revives within the run)'
  out.append(dict(claim=f'P4 Scr.+FT at lr {lr:g} is slower than reFT (median iterations to '
                  'revival; never = after the run)',
                  measured=f'Scr.+FT: {fmt(scr)}; reFT median {median(ft)}', verdict=verdict))
  if any(m.source.endswith('/randft') for m in members):
    rand = revivals(lambda m: m.source.endswith('/randft'))
    scr_only = revivals(lambda m: m.source == SCR)
    passes = [median(rand) < median(scr), median(rand) < median(scr_only)]
    verdict = _verdict(passes)
    if all(x is None for x in rand):
      verdict = 'does not hold (reFT of randFT models never revives within the run)'
    out.append(dict(claim='E.4 reFT of randFT models revives faster than Scr.+FT and Scr.',
                    measured=f'randFT median {median(rand)}, Scr.+FT {median(scr)}, '
                    f'Scr. {median(scr_only)} (never = {never})', verdict=verdict))
  return out


def claims_jailbreak(config, results) -> list[dict]:
  """E.2: counting a fails with the fine-tuned family token but works with T_J1/T_J2."""
  out = []
  for (prior, arm), r in results.items():
    h, members = r['history'], r['members']
    idx = [i for i, m in enumerate(members) if m.c_tr == 1.0]
    plain = _last(h, 'c_te0/acc_o_pt', idx)
    cells = [f'C: {plain:.1f}']
    passes = []
    for fam in jailbreak_families(config):
      jb = _last(h, f'c_te0/acc_o_pt_{fam}', idx)
      cells.append(f'{fam}: {jb:.1f}')
      passes.append(jb >= 90 and jb - plain >= 20)
    out.append(dict(claim=f'E.2 prior {prior}, C_Tr=1: Acc O_PT with a jailbreak token >= 90 and '
                    '>= 20 points above the fine-tuned family token', measured='; '.join(cells),
                    verdict=_verdict(passes)))
  return out


# ------------------------------------------------------------------- run ----


def run(config, workdir) -> dict:
  validate(config)
  if config.pretrain.steps not in config.pretrain.keep_steps:
    cc.fail('pretrain.keep_steps', config.pretrain.keep_steps,
            f'must include the final step pretrain.steps={config.pretrain.steps} (analysed)')
  workdir = tables.make_workdir(workdir)
  a = config.analysis
  figs = FIGURES[a.variant]
  pt_step = config.pretrain.steps
  timing: list[dict] = []
  # Seconds of the run that completed each phase: a rerun restores finished
  # phases in a moment, and the report should still say what they cost.
  first_path = workdir / 'analysis' / f'timing_{a.variant}.json'
  first_path.parent.mkdir(parents=True, exist_ok=True)
  first = json.loads(first_path.read_text()) if first_path.exists() else {}

  def timed(phase, fn):
    t0 = time.time()
    out = fn()
    seconds = round(time.time() - t0, 1)
    first.setdefault(phase, seconds)
    first_path.write_text(json.dumps(first, indent=1))
    timing.append(dict(phase=phase, seconds=seconds, seconds_when_computed=first[phase]))
    return out

  def figure(kind, make):
    if kind in figs:
      path = workdir / 'figures' / f'{figs[kind]}.png'
      timed(f'figure {path.name}', lambda: plots.save(make(), path))

  results, pre_rows = {}, []
  with metrics.MetricWriter(workdir) as writer:
    for prior in config.pretrain.priors:
      name = pcfg_study.prior_name(prior)
      acc = timed(f'pretrain {name}', lambda: pcfg_study.pretrain(config, prior, workdir, writer))
      pre_acc = tuple(acc.values())
      pre_rows.append(dict(prior=name, steps=pt_step, **{k: round(v, 1) for k, v in acc.items()}))
      pre_params = pcfg_study.load_pretrained(config, prior, pt_step, workdir)
      for arm in arms(config):
        pop = f'finetune_{pcfg_study.pretrain_name(config, prior)}_{pt_step}'
        pop += '' if arm.name == 'ft' else f'_{arm.name}'
        members, history, params_P = timed(f'fine-tune {name}/{arm.name}', lambda: (
            pcfg_study.finetune(arm_config(config, arm), prior, pt_step, pre_params, workdir,
                                writer, name=pop, extra_pt_families=jailbreak_families(config))))
        cache = workdir / 'analysis' / pop
        r = dict(members=members, history=history, params_P=params_P, pre_acc=pre_acc)
        r['weights'] = timed(f'weight change {name}/{arm.name}', lambda: _cached(
            cache.with_name(pop + '_weights.npz'), lambda: weight_change(pre_params, params_P)))
        r['probes'] = timed(f'probes {name}/{arm.name}', lambda: _cached(
            cache.with_name(pop + '_probes.npz'), lambda: probes(config, pre_params, params_P)))
        if a.pruning:
          r['prune'] = timed(f'pruning + learned mask {name}/{arm.name}', lambda: _cached(
              cache.with_name(pop + '_prune.npz'), lambda: prune(config, params_P)))
        results[(name, arm)] = r

    reft_out = None
    if a.reft:
      scr_index = len(config.pretrain.priors)  # Its own init and data seed.
      timed('pretrain Scr.+FT base', lambda: pcfg_study.pretrain(
          config, tuple(a.scr_ft_prior), workdir, writer, prior_index=scr_index))
      scr_params = pcfg_study.load_pretrained(config, tuple(a.scr_ft_prior), pt_step, workdir)
      sources = {f'{p}/{arm.name}': (r['members'], r['params_P']) for (p, arm), r in
                 results.items()}
      reft_out = timed('reFT + Scr.+FT + Scr.', lambda: reft(config, sources, scr_params, workdir,
                                                             writer))

  figure('acc_ft', lambda: accuracy_figure(config, results, 'ft'))
  figure('acc_pt', lambda: accuracy_figure(config, results, 'pt'))
  figure('probes', lambda: probes_figure(config, results))
  if a.pruning:
    figure('prune15', lambda: pruning_figure(config, results, min(15, a.k_max)))
    figure('prune100', lambda: pruning_figure(config, results, a.k_max))
    figure('mask', lambda: mask_figure(config, results))
  if reft_out:
    figure('reft', lambda: reft_figure(config, *reft_out))
  w_rows = weight_rows(config, results)
  figure('weights', lambda: weight_figure(w_rows))

  found = claims_wrapper(config, results) + claims_probes(config, results)
  if a.pruning:
    found += claims_pruning(config, results)
  if reft_out:
    found += claims_reft(config, *reft_out)
  if a.variant == 'jailbreak':
    found += claims_jailbreak(config, results)
  v = a.variant
  tables_dir = workdir / 'tables'
  tables.write_csv(tables_dir / f'analysis_{v}_claims.csv', found)
  tables.write_csv(tables_dir / f'analysis_{v}_timing.csv', timing)
  tables.write_csv(tables_dir / f'analysis_{v}_weight_change.csv', w_rows)
  probe_rows = probe_table(config, results)
  tables.write_csv(tables_dir / f'analysis_{v}_probes.csv', probe_rows)
  sections = [
      ('Claims, checked', tables.markdown_table(found) + '\n\nThresholds are fixed in '
       'wrapper_study/experiments/pcfg_analysis.py before any run. At CPU scale these are not '
       "the paper's numbers; iteration counts scale with reft_steps / 10K."),
      ('Scale', f'model {config.model.n_layers}x{config.model.d_model}, window '
       f'{config.data.window_length}, pretraining {config.pretrain.steps} iterations, '
       f'fine-tuning {config.finetune.steps} (lrs {tuple(config.finetune.lrs)}, C_Tr '
       f'{tuple(config.finetune.c_trs)}, seeds {tuple(config.finetune.seeds)}), probes '
       f'{a.probe_method} {a.probe_steps} steps on {a.probe_train_samples} samples; '
       f'reFT {a.reft_steps} iterations.'),
      ('Pretrained accuracy (%, answer token)', tables.markdown_table(pre_rows)),
      ('Probes: held-out accuracy of the best block (mean over seeds)',
       tables.markdown_table(probe_rows)),
  ]
  if a.pruning:
    m_rows = mask_rows(config, results)
    tables.write_csv(tables_dir / f'analysis_{v}_learned_mask.csv', m_rows)
    sections.append(('Units needed to win back half the lost Acc O_PT: grad x weight vs learned '
                     'mask (per seed; - = never within k_max, or < 10 points lost)',
                     tables.markdown_table(m_rows)))
  if reft_out:
    r_rows = reft_rows(config, *reft_out)
    tables.write_csv(tables_dir / f'analysis_{v}_reft.csv', r_rows)
    sections.append((f'Reverse fine-tuning: iterations to Acc O_PT >= {a.revival_threshold:g}%',
                     tables.markdown_table(r_rows)))
  sections.append(('Where fine-tuning moved the weights (largest relative change per group)',
                   tables.markdown_table(weight_summary(w_rows))))
  sections.append(('Time (s), per phase and per figure', tables.markdown_table(timing)))
  path = tables.write_report(workdir / f'report_{v}.md', f'PCFG wrapper analysis ({v})', sections)
  return {'claims': found, 'timing': timing, 'probes': probe_rows, 'report': path}


def probe_table(config, results) -> list[dict]:
  rows = []
  for (prior, arm), r in results.items():
    acc = r['probes']['acc']
    labels = probing.site_labels(pcfg_study.model_config(config),
                                 tuple(config.analysis.probe_layers) or None)
    for t, target in enumerate(('O_PT', 'O_FT')):
      rows.append(dict(prior=prior, arm=arm.name, target=target, model='pretrained',
                       best_block=labels[int(acc[0, :, t].argmax())],
                       accuracy=round(float(acc[0, :, t].max()), 1)))
      for lr in config.finetune.lrs:
        for c in config.finetune.c_trs:
          idx = 1 + np.array([i for i, m in enumerate(r['members'])
                              if m.lr == lr and m.c_tr == c])
          per_block = acc[idx, :, t].mean(0)
          rows.append(dict(prior=prior, arm=arm.name, target=target,
                           model=f'lr={lr:g} C_Tr={c:g}',
                           best_block=labels[int(per_block.argmax())],
                           accuracy=round(float(per_block.max()), 1)))
  return rows


def weight_summary(rows) -> list[dict]:
  out = []
  for r in rows:
    mats = {k: v for k, v in r.items() if k not in ('prior', 'arm', 'lr', 'c_tr')}
    top = sorted(mats, key=mats.get, reverse=True)[:3]
    out.append(dict(prior=r['prior'], arm=r['arm'], lr=r['lr'], c_tr=r['c_tr'],
                    largest=', '.join(f'{k.replace("/kernel", "")} {mats[k]:.2e}' for k in top),
                    median=f'{np.median(list(mats.values())):.2e}'))
  return out
