"""The PCFG world's training phases: pretrain, fine-tune a population, reverse fine-tune.

- `pretrain`: AdamW, next-token loss on every token, data drawn on the fly from
  config.grammar with config.data.families, checkpoints kept at
  pretrain.keep_steps (resumable).
- `finetune`: the lr x C_Tr x seed grid on one pretrained model as one
  vmapped population (answer-only loss), Acc O_PT / O_FT at C_Te = 0 and 1.
- `reft`: reverse fine-tuning of fine-tuned members, Scr.+FT and Scr. as one
  population, on count-O_PT prompts from the same grammar.
Every data stream is seeded per (seed, C_Tr, step), so a resumed run sees the
same batches.
"""

from __future__ import annotations

import dataclasses
import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import checkpoint
from wrapper_study import dry_run
from wrapper_study import losses
from wrapper_study import model as model_lib
from wrapper_study import optim
from wrapper_study import population
from wrapper_study import train
from wrapper_study.analysis import readout
from wrapper_study.pcfg import device_sampler
from wrapper_study.pcfg import finetune_data
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import sampler
from wrapper_study.pcfg import tasks

SCR_FT = 'scr+ft'  # reFT source: pretrained to count O_FT, then trained on O_PT.
SCR = 'scr'  # reFT source: random init.
_PRETRAIN_SALT, _EVAL_SALT, _TEST_SALT, _NATURAL_SALT = 101, 202, 303, 304
NATURAL = 'c_te0n'  # History prefix of the natural C_Te = 0 set (chance agreement allowed).
COLLAPSED_MAX = 2  # A model giving this many distinct answers or fewer has collapsed.
_FINETUNE_SALT, _REFT_SALT = 1000, 7000


def _adamw(lr: float, weight_decay: float, warmup_fraction: float) -> dict:
  """minGPT's AdamW with warmup + cosine to lr / 100 and grad clipping (every phase)."""
  return dict(name='adamw', lr=lr, b1=0.9, b2=0.95, weight_decay=weight_decay,
              schedule='warmup_cosine', warmup_fraction=warmup_fraction, min_lr_ratio=0.01,
              grad_clip_norm=1.0)


def answer_accuracy(cfg, params, b: tasks.Batch, batch_size: int, population_: bool = False):
  """Accuracy (%) of the answer token of `b` ([P] for a population), batch_size rows a call."""
  i = b.answer_index
  return readout.accuracy(cfg, params, b.tokens[:, :i], b.tokens[:, i], i - 1,
                          population=population_, chunk=batch_size)


def answer_predictions(cfg, params_P, b: tasks.Batch, batch_size: int) -> np.ndarray:
  """[P, N] predicted answer tokens of a population on `b`."""
  i = b.answer_index
  return readout.predict(cfg, params_P, b.tokens[:, :i], i - 1, population=True,
                         chunk=batch_size)


def n_distinct(pred_PxN, n_tokens: int) -> np.ndarray:
  """[P] distinct answers per member (readout.n_distinct): <= COLLAPSED_MAX is a collapse."""
  return np.asarray(jax.vmap(lambda p: readout.n_distinct(p, n_tokens))(jnp.asarray(pred_PxN)))


# -------------------------------------------------------------- pretrain ----


def pretrain_meta(config, cfg, params, prior) -> dict:
  return checkpoint.make_meta(f'pcfg/pretrain/{pcfg_model.pretrain_name(config, prior)}', cfg,
                              params, window_length=config.data.window_length)


def pretrain_eval_sets(config, n: int) -> dict[str, tasks.Batch]:
  """Count/index prompts for O_PT and O_FT on fixed windows: the pretrained Acc O_PT / O_FT."""
  rng = np.random.default_rng([config.seed, _EVAL_SALT])
  windows = sampler.sample_windows(pcfg_model.grammar(config), rng, n, config.data.window_length)
  fam = finetune_data.TASK_FAMILY[config.finetune.task]
  o_prime, vocab = pcfg_model.o_primes(config)[fam], pcfg_model.vocab(config)
  return {f'{fam}_{op}': tasks.make_sequences(windows, fam, op, o_prime, vocab)
          for op in (config.finetune.operand_pt, config.finetune.operand_ft)}


def init_params(config, prior_index: int):
  """The initial parameters of the prior_index-th pretraining run."""
  return model_lib.init_params(pcfg_model.model_config(config),
                               jax.random.fold_in(jax.random.PRNGKey(config.seed), prior_index))


def pretrain_batch_fn(config, prior, prior_index: int):
  """step -> the pretraining mixture's batch, seeded by (config.seed, prior_index, step):
  drawn by numpy on the host, or with data.on_device inside one jitted function
  (pcfg/device_sampler.py: the same law, another random stream)."""
  p = config.pretrain
  kwargs = dict(o_primes=pcfg_model.pretrain_o_primes(config), grammar=pcfg_model.grammar(config),
                window_length=config.data.window_length, vocab=pcfg_model.vocab(config),
                jailbreak_operand=config.finetune.operand_pt)
  probs = pcfg_model.prior_probs(config, prior)
  if config.data.get('on_device', False):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), _PRETRAIN_SALT),
                             prior_index)
    return device_sampler.pretraining_batch_fn(key, p.batch_size, probs, config.data.families,
                                               **kwargs)

  def batch_fn(step):
    rng = np.random.default_rng([config.seed, _PRETRAIN_SALT, prior_index, step])
    return pcfg_model.lm_batch(tasks.sample_pretraining_batch(
        rng, p.batch_size, probs, config.data.families, **kwargs), answer_only=False)

  return batch_fn


def pretrain(config, prior, workdir: pathlib.Path, writer, prior_index: int | None = None) -> dict:
  """Trains one model on the mixture with `prior`; returns its final eval accuracies.

  prior_index seeds the init and the data; default: the prior's place in
  config.pretrain.priors (a baseline prior outside that list passes its own).
  """
  p = config.pretrain
  cfg = pcfg_model.model_config(config)
  if prior_index is None:
    prior_index = list(config.pretrain.priors).index(prior)
  params = init_params(config, prior_index)
  meta = pretrain_meta(config, cfg, params, prior)
  tx = optim.make_optimizer(_adamw(p.lr, p.weight_decay, p.warmup_fraction), p.steps)
  state = train.create_state(params, tx)
  batch_fn = pretrain_batch_fn(config, prior, prior_index)
  eval_sets = pretrain_eval_sets(config, config.eval.num_samples)
  last = {}

  def evaluate(params, step):
    del step
    out = {k: float(answer_accuracy(cfg, params, b, config.eval.batch_size))
           for k, b in eval_sets.items()}
    last.update(out)
    return out

  name = pcfg_model.pretrain_name(config, prior)
  kept = checkpoint.Checkpointer(workdir / 'checkpoints' / f'pretrain_{name}_kept', meta=meta,
                                 save_every=1, max_to_keep=None)

  def keep(params, step):
    kept.save(step, {'params': params}, force=True)
    return {}

  with checkpoint.Checkpointer(workdir / 'checkpoints' / f'pretrain_{name}', meta=meta,
                               save_every=p.save_every, max_to_keep=2) as ckpt:
    logging.info('pretraining prior=%s (%s) for %d steps', prior,
                 tasks.resolve_prior(pcfg_model.prior_probs(config, prior),
                                     pcfg_model.vocab(config).terminals), p.steps)
    state = train.train_loop(
        state=state, tx=tx, loss_fn=losses.next_token_loss_fn(cfg), batch_fn=batch_fn,
        total_steps=p.steps, workdir=str(workdir), mesh=train.batch_mesh(p.batch_size),
        writer=None if writer is None else writer.run(f'pretrain_{name}'), checkpointer=ckpt,
        log_every=p.log_every, evaluators={'eval': (p.eval_every, evaluate),
                                           'keep': (tuple(p.keep_steps), keep)})
  kept.wait()
  kept.close()
  if not last:  # Resumed after the end: evaluate the final params once.
    evaluate(state.params, p.steps)
  return last


def load_pretrained(config, prior, step: int, workdir: pathlib.Path):
  """The kept pretraining checkpoint at `step` (its architecture checked against the config)."""
  cfg = pcfg_model.model_config(config)
  template = model_lib.init_params(cfg, jax.random.PRNGKey(0))
  meta = pretrain_meta(config, cfg, template, prior)
  name = pcfg_model.pretrain_name(config, prior)
  return checkpoint.load_params(str(workdir / 'checkpoints' / f'pretrain_{name}_kept'), meta,
                                step=step)


# -------------------------------------------------------------- finetune ----


def _test_batches(config, make, salt: int, pt_family: str | None):
  """`make` (a finetune_data test-set builder) on this run's spec, grammar and vocabulary."""
  return make(np.random.default_rng([config.seed, salt]), config.eval.num_samples,
              pcfg_model.finetune_spec(config), grammar=pcfg_model.grammar(config),
              pt_family=pt_family or config.finetune.pt_eval_family or None,
              vocab=pcfg_model.vocab(config))


def test_sets(config, pt_family: str | None = None):
  """{C_Te: {'pt', 'ft'}} test batches; the same windows for every call (seeded)."""
  return _test_batches(config, finetune_data.make_test_sets, _TEST_SALT, pt_family)


def natural_test_set(config, pt_family: str | None = None):
  """{'pt', 'ft'} on natural C_Te = 0 windows (own rng: the other test sets are unchanged)."""
  return _test_batches(config, finetune_data.natural_test_set, _NATURAL_SALT, pt_family)


@dataclasses.dataclass(frozen=True)
class Arm:
  """One fine-tuning condition of an analysis variant."""
  name: str
  pt_fraction: float = 0.0  # App. E.1.
  rand_ft: bool = False  # App. E.4.


def arms(config) -> list[Arm]:
  """The fine-tuning conditions of config.analysis.variant."""
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


def finetune_batch_fn(config, prior, members, salt: int):
  """step -> answer-only batches [P, ...]: one stream per (seed, C_Tr)."""
  f = config.finetune
  spec, g = pcfg_model.finetune_spec(config), pcfg_model.grammar(config)
  pt_o_primes, vocab = pcfg_model.pretrain_o_primes(config), pcfg_model.vocab(config)

  def sample(rng, c_tr):
    return pcfg_model.lm_batch(finetune_data.sample_finetune_batch(
        rng, f.batch_size, c_tr, spec, pt_fraction=f.pt_fraction,
        operand_prior=pcfg_model.prior_probs(config, prior),
        pt_families=config.data.families, pt_o_primes=pt_o_primes, rand_ft=f.rand_ft,
        grammar=g, vocab=vocab), answer_only=True)
  return population.stream_batch_fn(members, config.seed, salt, sample)


def finetune(config, prior, pt_step: int, params, workdir, writer, name: str | None = None,
             extra_pt_families=(), members=None):
  """The grid on one pretrained model, as one population.

  name: the population's name (default finetune_<prior>_<pt_step>).
  extra_pt_families: also evaluate Acc O_PT with these family tokens (App. E.2
    jailbreak: 'T_J1', 'T_J2'), as c_te<x>/acc_o_pt_<family>.
  Returns (members, History, final stacked params).
  """
  f = config.finetune
  cfg = pcfg_model.model_config(config)
  members = members or population.grid(f.lrs, f.c_trs, f.seeds)
  params_P = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * len(members)), params)
  test = {f'c_te{c_te:g}': sets for c_te, sets in test_sets(config).items()}
  test[NATURAL] = natural_test_set(config)
  extra = {fam: test_sets(config, fam) for fam in extra_pt_families}
  n_tokens = pcfg_model.vocab(config).size

  def evaluate(params_P):
    """Acc O_PT / O_FT per test set, and distinct answers over all of them (collapse)."""
    out, preds = {}, []
    for key, sets in test.items():
      for which in ('pt', 'ft'):
        pred = answer_predictions(cfg, params_P, sets[which], config.eval.batch_size)
        out[f'{key}/acc_o_{which}'] = (pred == sets[which].answers).mean(-1) * 100
        preds.append(pred)
    out['n_distinct_answers'] = n_distinct(np.concatenate(preds, axis=1), n_tokens)
    for c_te in finetune_data.TEST_C_TE:
      for fam, fam_sets in extra.items():
        out[f'c_te{c_te:g}/acc_o_pt_{fam}'] = answer_accuracy(
            cfg, params_P, fam_sets[c_te]['pt'], config.eval.batch_size, True)
    return out

  salt = _FINETUNE_SALT + list(config.pretrain.priors).index(prior)
  name = name or f'finetune_{pcfg_model.prior_name(prior)}_{pt_step}'
  logging.info('%s: %d members (%d lrs x %d C_Tr x %d seeds), %d steps', name, len(members),
               len(f.lrs), len(f.c_trs), len(f.seeds), f.steps)
  params_P, history = population.run_population(
      name=name, model_config=cfg, members=members, params_P=params_P,
      opt_cfg=_adamw(1.0, config.pretrain.weight_decay, f.warmup_fraction), total_steps=f.steps,
      batch_fn=finetune_batch_fn(config, prior, members, salt),
      loss_fn=losses.next_token_loss_fn(cfg), evaluate=evaluate,
      eval_steps=(0,) + tuple(f.eval_steps), workdir=workdir,
      writer=writer, save_every=f.save_every, log_every=f.log_every,
      member_chunk=config.member_chunk)
  return members, history, params_P


# ------------------------------------------------------------------ reFT ----


def reft_batch_fn(config, members, salt: int):
  """Count-O_PT prompts on fresh windows (answer-only), one stream per member seed."""
  f = config.finetune
  fam = finetune_data.TASK_FAMILY[f.task]
  o_prime = pcfg_model.o_primes(config)[fam]
  g, vocab = pcfg_model.grammar(config), pcfg_model.vocab(config)

  def sample(rng, c_tr):
    del c_tr  # One stream per seed.
    windows = sampler.sample_windows(g, rng, f.batch_size, config.data.window_length)
    return pcfg_model.lm_batch(tasks.make_sequences(windows, fam, f.operand_pt, o_prime, vocab),
                               answer_only=True)
  return population.stream_batch_fn(members, config.seed, salt, sample, by_c_tr=False)


def reft(config, sources, scr_ft_params, workdir, writer):
  """reFT of the eta_L models, Scr.+FT and Scr., as one population.

  sources: {label: (members, params_P)} of fine-tuned populations.
  Returns (members, History).
  """
  a = config.analysis
  cfg = pcfg_model.model_config(config)
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
  test = test_sets(config)[0.0]

  def evaluate(params_P):
    return {k: answer_accuracy(cfg, params_P, test[which], config.eval.batch_size, True)
            for k, which in (('c_te0/acc_o_pt', 'pt'), ('c_te0/acc_o_ft', 'ft'))}

  f = config.finetune
  logging.info('reFT: %d members (%s)', len(members), sorted({m.source for m in members}))
  _, history = population.run_population(
      name=f'reft_{a.variant}', model_config=cfg, members=members, params_P=params_P,
      opt_cfg=_adamw(1.0, config.pretrain.weight_decay, f.warmup_fraction),
      total_steps=a.reft_steps, batch_fn=reft_batch_fn(config, members, _REFT_SALT),
      loss_fn=losses.next_token_loss_fn(cfg), evaluate=evaluate,
      eval_steps=(0,) + tuple(a.reft_eval_steps), workdir=workdir,
      writer=writer, save_every=f.save_every,
      log_every=f.log_every, member_chunk=config.member_chunk)
  return members, history


# --------------------------------------------------------------- dry run ----


def dry_run_phases(config, analysis: bool = False) -> list[dry_run.Phase]:
  """Every training phase as shapes: pretraining (per prior; with analysis.reft also the
  Scr.+FT base), the lr calibration when finetune.lrs=(), the fine-tuning population (per
  prior and kept step; analysis: per prior and arm) and, for the analysis, reFT."""
  cfg, p, f = pcfg_model.model_config(config), config.pretrain, config.finetune
  params = pcfg_model.template(config)
  length = config.data.window_length + tasks.N_EXTRA_TOKENS - 1
  batch = lambda n: {'inputs': jax.ShapeDtypeStruct((n, length), np.int32),
                     'targets': jax.ShapeDtypeStruct((n, length), np.int32),
                     'weights': jax.ShapeDtypeStruct((n, length), np.float32)}
  loss, priors = losses.next_token_loss_fn(cfg), len(p.priors)
  ft_tx = lambda steps: optim.make_optimizer(
      _adamw(1.0, p.weight_decay, f.warmup_fraction), steps)
  reft = analysis and config.analysis.reft
  phase = lambda name, n, tx, steps, **kw: dry_run.Phase(
      name=name, params=params, batch=batch(n), loss_fn=loss, tx=tx, steps=steps,
      precision=config.model.precision, **kw)
  phases = [phase('pretrain (each prior' + (', Scr.+FT base)' if reft else ')'), p.batch_size,
                  optim.make_optimizer(_adamw(p.lr, p.weight_decay, p.warmup_fraction), p.steps),
                  p.steps, runs=priors + bool(reft))]
  n_lrs = len(f.lrs) or 3  # Calibration picks eta_L, eta_M, eta_S.
  if not f.lrs:
    phases.append(phase('lr calibration', f.batch_size, ft_tx(f.steps), f.steps,
                        members=len(config.calibration.lr_grid)))
  n_grid = n_lrs * len(f.c_trs) * len(f.seeds)
  runs = priors * (len(arms(config)) if analysis else len(p.keep_steps))
  phases.append(phase('fine-tune grid (each prior' + (', arm)' if analysis else ', kept step)'),
                      f.batch_size, ft_tx(f.steps), f.steps, members=n_grid, runs=runs))
  if reft:
    a = config.analysis
    n_reft_lrs = len(a.reft_lrs) or len(sorted(f.lrs or range(n_lrs))[1:3]) or n_lrs
    sources = priors * len(arms(config)) * len(f.seeds) * len(
        [c for c in f.c_trs if c in a.reft_source_c_trs])
    phases.append(phase('reFT + Scr.+FT + Scr.', f.batch_size, ft_tx(a.reft_steps), a.reft_steps,
                        members=n_reft_lrs * (sources + 2 * len(f.seeds))))
  return phases
