"""The TinyStories world's training phases: pretrain, deletion, reverse fine-tuning (reFT).

pretrain   Present (whole pretraining split) and Not-in-PT (Twist filtered),
           warmup-cosine AdamW.
deletion   Present fine-tuned with each protocol (F, F+MM, F+RR) at each lr.
reft       every deleted model and Not-in-PT trained on Twist stories.
Every run is data-parallel over all devices, resumable from its checkpoint, and
records its evaluations in results/<run>.json (metrics.RunLog), so a rerun
restores every phase without a step.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import checkpoint
from wrapper_study import dry_run
from wrapper_study import losses
from wrapper_study import metrics
from wrapper_study import model as model_lib
from wrapper_study import optim
from wrapper_study import train
from wrapper_study.tinystories import data
from wrapper_study.tinystories import model as ts_model
from wrapper_study.tinystories.paper import NOT_IN_PT, PRESENT


def deletion_runs(config) -> list[tuple[str, float, str]]:
  """(protocol, lr, lr name) of every deletion run, lr-major as Table 1's rows."""
  d = config.deletion
  return [(p, lr, name) for lr, name in zip(d.lrs, d.lr_names) for p in d.protocols]


def deletion_name(protocol: str, lr: float) -> str:
  """('F+MM', 1e-4) -> 'delete_FMM_lr0.0001', the run's name (safe in paths)."""
  return f"delete_{protocol.replace('+', '')}_lr{lr:g}"


def reft_models(config) -> list[str]:
  """The models reverse fine-tuned: every deleted model, then Not-in-PT."""
  return [deletion_name(p, lr) for p, lr, _ in deletion_runs(config)] + [NOT_IN_PT]


def replicates(config, workdir) -> list[tuple[int, pathlib.Path, str]]:
  """(seed, its workdir, its phase-name prefix) of every replicate of config.model_seeds.

  One replicate keeps the flat layout (workdir itself); several get workdir/seed_<s> each
  (checkpoints, results, generations, TensorBoard runs), beside the shared data.
  """
  seeds = tuple(config.model_seeds)
  if len(seeds) == 1:
    return [(seeds[0], pathlib.Path(workdir), '')]
  return [(s, pathlib.Path(workdir) / f'seed_{s}', f'seed {s}: ') for s in seeds]


def phase_names(config, tag: str = '') -> list[str]:
  """One replicate's training phases, in order, as the timing table names them."""
  return [*[f'{tag}pretrain {m}' for m in (PRESENT, NOT_IN_PT)],
          *[f'{tag}deletion {deletion_name(p, lr)}' for p, lr, _ in deletion_runs(config)],
          *[f'{tag}reFT {m}' for m in reft_models(config)]]


@functools.lru_cache(maxsize=None)
def finetune_tx(weight_decay: float):
  """Constant-lr AdamW shared by every deletion and reFT run (the lr lives in its state)."""
  return optim.make_optimizer(dict(name='adamw', lr=1.0, b1=0.9, b2=0.95,
                                   weight_decay=weight_decay, schedule='constant',
                                   grad_clip_norm=1.0), 1)


def pretrain_opt(config) -> dict:
  p = config.pretrain
  return dict(name='adamw', lr=p.lr, b1=0.9, b2=0.95, weight_decay=p.weight_decay,
              schedule='warmup_cosine', warmup_steps=p.warmup_steps,
              min_lr_ratio=p.min_lr_ratio, grad_clip_norm=1.0)


def pretrain_tx(config):
  return optim.make_optimizer(pretrain_opt(config), config.pretrain.steps)


def lr_budget_ratio(config, phase: str = 'reft') -> float:
  """How far a constant-lr phase moves the model relative to pretraining, by the AdamW bound
  (a step moves a parameter by about its lr): lr x steps / Sum_t pretraining lr_t. For
  `deletion`, at its largest lr."""
  pretrain_budget = optim.lr_sum(pretrain_opt(config), config.pretrain.steps)
  c = config[phase]
  lr = max(c.lrs) if phase == 'deletion' else c.lr
  return lr * c.steps / pretrain_budget


def host(params):
  """A host copy: later states are built from fresh device copies, so donation never bites."""
  return jax.tree.map(np.asarray, jax.device_get(params))


@dataclasses.dataclass
class Phase:
  """One training run of the study."""
  name: str
  data: str  # Key of World.streams.
  init: dict  # Host params to start from.
  tx: object
  lr: Optional[float]  # Peak lr set into the state (None: tx's own).
  steps: int
  batch_size: int
  eval_steps: tuple  # Where the Twist-story loss is measured.
  score_steps: tuple  # Where the generation score is measured.
  save_every: int
  log_every: int
  salt: int  # Seeds the batch order.


@dataclasses.dataclass
class Context:
  """What every run of one invocation shares."""
  config: object
  world: data.World
  evaluate: Callable  # evaluate.Evaluator: (params, step, loss=, score=, save_as=) -> metrics.
  workdir: pathlib.Path
  writer: metrics.MetricWriter
  mesh: object
  timing: metrics.PhaseTimes
  seed: int = 0  # The replicate's seed (config.model_seeds): init, batch order, sampling.
  tag: str = ''  # Prefix of its phase names in the timing table ('' or 'seed 1: ').


def run_phase(ctx: Context, phase: Phase, step0: Optional[dict] = None):
  """Trains one run data-parallel (resuming), recording evaluations; returns (host params, log).

  step0: metrics of the starting model, recorded at step 0 (not recomputed).
  """
  config, workdir = ctx.config, ctx.workdir
  cfg = ts_model.model_config(config)
  log = metrics.RunLog(workdir, phase.name)
  if step0:
    new = {k: v for k, v in step0.items() if v is not None and log.get(k, 0) is None}
    if new:
      log.record(0, new)
      ctx.writer.run(phase.name).write_scalars(0, {f'eval/{k}': v for k, v in new.items()})
  windows = data.lm_windows(ctx.world.streams[phase.data], ctx.world.tok.bos_id,
                            config.model.max_len, phase.batch_size,
                            ctx.seed * 1000 + phase.salt, config.data.align_windows)
  state = train.create_state(jax.tree.map(jnp.array, phase.init), phase.tx)
  if phase.lr is not None:
    state = state.replace(opt_state=optim.set_learning_rate(state.opt_state, phase.lr))
  gen_dir = pathlib.Path(workdir) / 'generations'

  def evaluate(params, step):
    out = ctx.evaluate(params, step, loss=step in phase.eval_steps,
                       score=step in phase.score_steps,
                       save_as=gen_dir / f'{phase.name}_{step}.txt')
    log.record(step, out)
    return out

  meta = checkpoint.make_meta(f'tinystories/{phase.name}', cfg, phase.init,
                              lr=phase.lr, steps=phase.steps)
  with checkpoint.Checkpointer(pathlib.Path(workdir) / 'checkpoints' / phase.name, meta=meta,
                               save_every=phase.save_every, max_to_keep=1) as ckpt:
    logging.info('%s: %d steps on %s (batch %d)', phase.name, phase.steps, phase.data,
                 phase.batch_size)
    state = train.train_loop(
        state=state, tx=phase.tx, loss_fn=losses.next_token_loss_fn(cfg), batch_fn=windows.batch,
        total_steps=phase.steps, workdir=str(workdir),
        writer=ctx.writer.run(phase.name), checkpointer=ckpt,
        log_every=phase.log_every,
        evaluators={'eval': (tuple(sorted(set(phase.eval_steps) | set(phase.score_steps))),
                             evaluate)},
        mesh=ctx.mesh)
  params = host(state.params)
  # Resumed after the end with results/ lost: the final evaluations once more.
  final = phase.steps
  missing = [k for k, steps in (('twist_loss', phase.eval_steps),
                                ('twist_fraction', phase.score_steps))
             if final in steps and log.get(k, final) is None]
  if missing:
    evaluate(params, final)
  return params, log


def _end_metrics(log: metrics.RunLog, step: int) -> dict:
  """A run's final metrics, recorded as step 0 of the run that starts from it."""
  return {k: log.get(k, step) for k in ('twist_loss', 'twist_fraction')}


def pretrain(ctx: Context, finals: dict, logs: dict) -> None:
  """Present and Not-in-PT from one seeded init (adds their params and logs)."""
  config, p = ctx.config, ctx.config.pretrain
  init = host(model_lib.init_params(ts_model.model_config(config), jax.random.key(ctx.seed)))
  tx = pretrain_tx(config)
  eval_steps = tuple(range(p.eval_every, p.steps + 1, p.eval_every)) + (p.steps,)
  for salt, name in enumerate((PRESENT, NOT_IN_PT)):
    with ctx.timing.timed(f'{ctx.tag}pretrain {name}'):
      finals[name], logs[name] = run_phase(ctx, Phase(
          name=name, data=name, init=init, tx=tx, lr=None, steps=p.steps,
          batch_size=p.batch_size, eval_steps=eval_steps, score_steps=(p.steps,),
          save_every=p.save_every, log_every=p.log_every, salt=salt))


def delete(ctx: Context, finals: dict, logs: dict) -> None:
  """Present fine-tuned with every deletion protocol at every lr (adds params and logs)."""
  config, d = ctx.config, ctx.config.deletion
  ft_tx = finetune_tx(float(config.pretrain.weight_decay))
  start = _end_metrics(logs[PRESENT], config.pretrain.steps)
  for i, (protocol, lr, _) in enumerate(deletion_runs(config)):
    name = deletion_name(protocol, lr)
    with ctx.timing.timed(f'{ctx.tag}deletion {name}'):
      finals[name], logs[name] = run_phase(ctx, Phase(
          name=name, data=protocol, init=finals[PRESENT], tx=ft_tx, lr=lr, steps=d.steps,
          batch_size=d.batch_size, eval_steps=tuple(d.loss_steps) + (d.steps,),
          score_steps=(d.steps,), save_every=d.save_every, log_every=d.log_every,
          salt=10 + i), step0=start)


def reverse_finetune(ctx: Context, finals: dict, logs: dict) -> None:
  """Every deleted model and Not-in-PT trained on Twist stories (adds logs 'reft_<model>')."""
  config, r = ctx.config, ctx.config.reft
  ft_tx = finetune_tx(float(config.pretrain.weight_decay))
  for i, model in enumerate(reft_models(config)):
    end = config.pretrain.steps if model == NOT_IN_PT else config.deletion.steps
    name = 'reft_' + model
    with ctx.timing.timed(f'{ctx.tag}reFT {model}'):
      _, logs[name] = run_phase(ctx, Phase(
          name=name, data='reft', init=finals[model], tx=ft_tx, lr=r.lr, steps=r.steps,
          batch_size=r.batch_size, eval_steps=tuple(r.loss_steps),
          score_steps=tuple(sorted(set(r.score_steps) | set(r.get('recovery_steps', ())))),
          save_every=r.save_every, log_every=r.log_every,
          salt=100 + i), step0=_end_metrics(logs[model], end))


def write_hparams(ctx: Context, logs: dict) -> None:
  """TensorBoard's HParams tab for the two grids: deletion (protocol x lr) and reFT (source).

  Each grid is a run (`deletion`, `reft`) with one member run per training run,
  named by its hyperparameters (`deletion/protocol=F+MM,lr=0.0001`), holding its
  final twist loss and fraction and its HParams session.
  """
  config = ctx.config
  end = {NOT_IN_PT: config.pretrain.steps}
  grids = {
      'deletion': [(deletion_name(p, lr), {'protocol': p, 'lr': lr}, config.deletion.steps)
                   for p, lr, _ in deletion_runs(config)],
      'reft': [('reft_' + m, {'source': m, 'lr': config.reft.lr}, config.reft.steps)
               for m in reft_models(config)]}
  for grid, runs in grids.items():
    names = [','.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in h.items())
             for _, h, _ in runs]
    writer = metrics.PopulationWriter(ctx.writer.run(grid), names)
    final = {f'final/{k}': np.array([np.nan if v is None else v for v in vals], np.float64)
             for k, vals in zip(('twist_loss', 'twist_fraction'), zip(*[
                 _end_metrics(logs[name], end.get(name, steps)).values()
                 for name, _, steps in runs]))}
    writer.write_scalars(0, final)
    writer.write_hparams([h for _, h, _ in runs], sorted(final))
    writer.flush()


def dry_run_phases(config) -> list[dry_run.Phase]:
  """Every training phase as shapes (per replicate of model_seeds): pretraining (Present,
  Not-in-PT), each deletion run, each reFT run; data-parallel as the study trains."""
  cfg, seeds = ts_model.model_config(config), len(config.model_seeds)
  params, loss = ts_model.init_shapes(config), losses.next_token_loss_fn(cfg)
  windows = lambda n: jax.ShapeDtypeStruct((n, config.model.max_len + 1), np.int32)
  ft_tx = finetune_tx(float(config.pretrain.weight_decay))
  p, d, r = config.pretrain, config.deletion, config.reft
  phase = lambda name, c, tx, runs: dry_run.Phase(
      name=name, params=params, batch=windows(c.batch_size), loss_fn=loss, tx=tx, steps=c.steps,
      runs=runs * seeds, precision=config.model.precision)
  return [phase('pretrain (Present, Not-in-PT)', p, pretrain_tx(config), 2),
          phase('deletion (each protocol x lr)', d, ft_tx, len(deletion_runs(config))),
          phase('reFT (each deleted model, Not-in-PT)', r, ft_tx, len(reft_models(config)))]
