"""Fine-tuning and reverse fine-tuning compiled Tracr models, each population in one jit.

A population is a list of `Member`s (learning rate x C_Tr x seed, and for
reverse fine-tuning also the model it starts from). Their parameters are
stacked on a leading axis P and one vmapped train step updates them all: the
Table 3 grid is a single compiled computation instead of hundreds of runs.

Data are generated on the host per step from rng streams keyed by
(config seed, member seed, C_Tr, step): members that differ only in learning
rate see identical batches, and a resumed run sees the batches it would have.

Shapes: P members, B batch, N test samples, T = seq_len + 1 (BOS).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

from absl import logging
import jax
import numpy as np

from wrapper_study import dry_run
from wrapper_study import losses
from wrapper_study import model as model_lib
from wrapper_study import optim
from wrapper_study import population
from wrapper_study import train
from wrapper_study.analysis import readout
from wrapper_study.tracr import model as tracr_model
from wrapper_study.tracr import paper
from wrapper_study.tracr import programs
from wrapper_study.tracr import tasks

# Not a parameter of the compiled model: tracr's read-out, rebuilt from labels.
FROZEN = ('unembed',)
# Evaluation steps of reverse fine-tuning (log-spaced; those <= reft.steps, and the last).
REFT_LOG_STEPS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 3000, 5000, 10000)


def compile_model(spec: tasks.TaskSpec, operand=None, cache_dir=None) -> tracr_model.TracrModel:
  """The task's program compiled for `operand` (default O_PT); cached after the first call."""
  operand = spec.operand_pt if operand is None else operand
  return tracr_model.get_compiled(
      spec.program_name, vocab=list(spec.vocab), max_seq_len=spec.seq_len,
      program_kwargs={spec.impl.operand_kwarg: operand}, cache_dir=cache_dir or None)


def check_program(spec: tasks.TaskSpec) -> None:
  """The task's program is registered or a file reference, and takes the operand: checked
  before any compile, so a mistyped name is one line naming `<task>.program`."""
  try:
    programs.resolve_kwargs(spec.program_name, {spec.impl.operand_kwarg: spec.operand_pt})
  except ValueError as e:
    raise ValueError(f'{spec.task}.{e}') from None


def compile_pair(spec: tasks.TaskSpec, cache_dir=None, precision: str = 'fp32',
                 qkv: str = 'one_matmul'):
  """(compiled for O_PT, compiled for O_FT): Scr.+FT starts from the latter, so shapes must match.

  Both run at `precision` (model.PRECISIONS) with the q/k/v form `qkv` (model.QKV_FORMS),
  which change compute, not the fp32 weights.
  """
  with_precision = lambda m: dataclasses.replace(
      m, config=dataclasses.replace(m.config, precision=precision, qkv=qkv))
  tm = with_precision(compile_model(spec, cache_dir=cache_dir))
  ft_tm = with_precision(compile_model(spec, spec.operand_ft, cache_dir))
  if model_lib.param_shapes(ft_tm.params) != model_lib.param_shapes(tm.params):
    raise ValueError(f'{spec.task} compiled for O_FT={spec.operand_ft!r} has another shape '
                     'than for O_PT; Scr.+FT needs both in one population.')
  return tm, ft_tm


class TaskData:
  """Vectorized encoding of token-id rows for one compiled model."""

  def __init__(self, spec: tasks.TaskSpec, tm: tracr_model.TracrModel):
    self.spec, self.tm = spec, tm
    self.position = spec.impl.readout_position
    self._input_lut = np.array([tm.input_encoding[c] for c in spec.vocab], np.int32)
    self._bos = np.int32(tm.input_encoding[tm.bos])
    if tm.output_values is None:
      raise ValueError(f'task {spec.task!r}: program {tm.name!r} has a numerical output; '
                       'fine-tuning needs a categorical one.')
    index = {v: i for i, v in enumerate(tm.output_values)}
    domain = spec.impl.label_values(spec)  # Label index -> output value.
    self._label_lut = np.array([index.get(v, -1) for v in domain], np.int32)

  def inputs(self, tokens_NxL: np.ndarray) -> np.ndarray:
    bos = np.full((len(tokens_NxL), 1), self._bos, np.int32)
    return np.concatenate([bos, self._input_lut[tokens_NxL]], axis=1)

  def labels(self, tokens_NxL: np.ndarray, operand) -> np.ndarray:
    """Class ids of r(x, operand); -1 where the model has no such class."""
    return self._label_lut[tasks.result(self.spec, tokens_NxL, operand)]


def make_batch_fn(data: TaskData, members: Sequence[population.Member], batch_size: int, seed: int,
                  operand, salt: int = 0) -> Callable[[int], dict]:
  """step -> {'tokens': [P, B, T], 'labels': [P, B]}, deterministic in the step.

  Members sharing (seed, C_Tr) share a stream, so they see the same batches.
  `salt` separates phases (fine-tuning 0, reFT 1) that would otherwise collide.
  """
  def sample(rng, c_tr):
    toks_BxL = tasks.sample(data.spec, rng, batch_size, c_tr)
    return {'tokens': data.inputs(toks_BxL), 'labels': data.labels(toks_BxL, operand)}
  return population.stream_batch_fn(members, seed, salt, sample)


@dataclasses.dataclass
class TestSet:
  inputs: np.ndarray  # [N, T] model inputs.
  label_pt: np.ndarray  # [N] class ids of r(x, O_PT).
  label_ft: np.ndarray  # [N] class ids of r(x, O_FT).
  tokens: np.ndarray  # [N, L] raw token ids (for figures).


def make_test_sets(data: TaskData, n: int, seed: int, c_tes=(0.0, 1.0), natural: bool = True,
                   c_te0_set: str = paper.C_TE0_DEFAULT) -> dict[str, TestSet]:
  """'c_te1' and the named C_Te=0 sets (paper.C_TE0_SETS), with 'c_te0' the one c_te0_set names.

  'c_te0_anti' (no row obeys the correlation), 'c_te0_natural' (plain inputs,
  chance agreement allowed, ~18% of Counter rows at seq_len 10) and
  'c_te0_disagree' (anti-correlated and r(x, O_PT) != r(x, O_FT): the set the
  paper's numbers imply). Each draws from its own rng, so adding one leaves the
  others unchanged. 'c_te0' is the selected set itself (the same object), which
  the paper's columns and the claims read. natural=False: only 'c_te0' (the
  anti-correlated set, as before the named sets) and 'c_te1'.
  """
  if c_te0_set not in paper.C_TE0_SETS:
    raise ValueError(f'c_te0_set={c_te0_set!r}; valid: {paper.C_TE0_SETS}')
  make = lambda toks: TestSet(data.inputs(toks), data.labels(toks, data.spec.operand_pt),
                              data.labels(toks, data.spec.operand_ft), toks)
  out = {}
  for c_te in c_tes:
    rng = np.random.default_rng([seed, 7, int(c_te * 1000)])
    out[f'c_te{c_te:g}'] = make(tasks.sample(data.spec, rng, n, c_te))
  if not natural or 0.0 not in c_tes:
    return out
  out[paper.c_te0_key('anti')] = out.pop('c_te0')
  out[paper.NATURAL] = make(tasks.sample(data.spec, np.random.default_rng([seed, 7, 9999]), n,
                                         None))
  out[paper.c_te0_key('disagree')] = make(tasks.sample_disagreeing(
      data.spec, np.random.default_rng([seed, 7, 9998]), n))
  out['c_te0'] = out[paper.c_te0_key(c_te0_set)]
  return out


def accuracies(config, position: int, params_P, test_sets: Mapping[str, TestSet],
               distinct: bool = False) -> dict[str, np.ndarray]:
  """'{c_te}/acc_o_pt' and '/acc_o_ft' in percent, each [P]; distinct: also 'c_te0/n_distinct',
  the distinct answers each member gives on the C_Te=0 set (<= 2: collapsed), traced during
  fine-tuning (issue 28)."""
  out, preds = {}, {}
  for name, ts in test_sets.items():
    if id(ts) not in preds:  # 'c_te0' is one of the named sets: predicted once.
      preds[id(ts)] = readout.predict(config, params_P, ts.inputs, position, population=True)
    pred_PxN = preds[id(ts)]
    out[f'{name}/acc_o_pt'] = (pred_PxN == ts.label_pt).mean(1) * 100
    out[f'{name}/acc_o_ft'] = (pred_PxN == ts.label_ft).mean(1) * 100
    if distinct and name == 'c_te0':
      out['c_te0/n_distinct'] = np.array([len(np.unique(p)) for p in pred_PxN], np.float32)
  return out


def noisy_params(params, members: Sequence[population.Member], seed: int, std: float,
                 frozen: Sequence[str] = ()):
  """Stacked copies of params, each with N(0, std^2) noise drawn from its member's seed.

  Members with the same seed get the same noise, so a grid cell differs from
  its neighbours only in what the cell varies.
  """
  copies = []
  for m in members:
    key = jax.random.fold_in(jax.random.PRNGKey(seed), m.seed)
    copies.append(tracr_model.add_weight_noise(params, key, std, skip=tuple(frozen)))
  return train.stack(copies)


def _with_finetune(config, field: str, value: float):
  """A copy of config with finetune.<field> = value (the caller's config is left as it is)."""
  config = config.copy_and_resolve_references()
  config.finetune[field] = float(value)
  return config


def with_noise(config, noise_std: float):
  """A copy of config whose fine-tuning (and Scr.+FT) starts at this weight-noise std."""
  return _with_finetune(config, 'noise_std', noise_std)


# Sensitivity arms (calibration.arms): 'key=value' overriding one fine-tuning field.
ARM_FIELDS = {'noise': 'noise_std', 'clip': 'grad_clip_norm'}


def parse_arm(arm: str) -> tuple[str, float]:
  """'noise=0.001' -> ('noise_std', 0.001); ValueError naming the valid keys otherwise."""
  key, sep, value = str(arm).partition('=')
  try:
    number = float(value)
  except ValueError:
    number = float('nan')
  if not sep or key.strip() not in ARM_FIELDS or not number >= 0:
    raise ValueError(f'arm {arm!r}: expected key=value with key one of {sorted(ARM_FIELDS)} '
                     'and a value >= 0 (e.g. "noise=0.001", "clip=10")')
  return ARM_FIELDS[key.strip()], number


def arm_config(config, arm: str):
  """A copy of config with the arm's fine-tuning field set, over calibration.arm_seeds
  (() = finetune.seeds)."""
  config = _with_finetune(config, *parse_arm(arm))
  if config.calibration.get('arm_seeds'):
    config.finetune.seeds = tuple(config.calibration.arm_seeds)
  return config


def start_tag(config) -> str:
  """The start and clipping a population was trained with, in its checkpoint name, so a
  workdir never resumes a grid that started from other noise or clipped otherwise."""
  f = config.finetune
  return f'noise{f.noise_std:g}_clip{f.grad_clip_norm:g}'


def run_population(*, name: str, tm: tracr_model.TracrModel, position: int, members, params_P,
                   opt_cfg, total_steps: int, batch_fn, test_sets, eval_steps, workdir, writer,
                   save_every: int, log_every: int, run=None, member_chunk=None):
  """population.run_population with the answer loss and test-set accuracies at `position`."""
  return population.run_population(
      name=name, model_config=tm.config, members=members, params_P=params_P, opt_cfg=opt_cfg,
      total_steps=total_steps, batch_fn=batch_fn,
      loss_fn=losses.answer_loss_fn(tm.config, position),
      evaluate=lambda p: accuracies(tm.config, position, p, test_sets, distinct=True),
      eval_steps=eval_steps, workdir=workdir, writer=writer, save_every=save_every,
      log_every=log_every, run=run, member_chunk=member_chunk)


def sgd_config(config, warmup_steps: int) -> dict:
  """SGD + momentum, warmup then cosine to lr/100; the peak lr is per member."""
  return dict(name='sgd', lr=1.0, momentum=config.finetune.momentum, schedule='warmup_cosine',
              warmup_steps=warmup_steps, min_lr_ratio=0.01, frozen=FROZEN,
              grad_clip_norm=config.finetune.grad_clip_norm)


def finetune_grid(config, data: TaskData, test_sets, workdir, writer, arm: str = ''):
  """The Table 3 grid (lrs x C_Tr x seeds) as one population: (members, params, history).

  arm: a sensitivity arm's name (its TensorBoard run is <task>/finetune[<arm>]); config is
  then already arm_config(config, arm).
  """
  f, name, tm = config.finetune, data.spec.task, data.tm
  members = population.grid(f.lrs, f.c_trs, f.seeds)
  params_P = noisy_params(tm.params, members, config.seed, f.noise_std, FROZEN)
  eval_steps = sorted({int(s) for s in np.linspace(0, f.steps, f.num_evals + 1)})
  logging.info('%s: fine-tuning %d members (%d lrs x %d C_Tr x %d seeds) for %d steps in one jit',
               name, len(members), len(f.lrs), len(f.c_trs), len(f.seeds), f.steps)
  params_P, history = run_population(
      name=f'{name}_finetune_{start_tag(config)}', tm=tm, position=data.position,
      members=members, params_P=params_P, opt_cfg=sgd_config(config, f.warmup_steps),
      total_steps=f.steps,
      batch_fn=make_batch_fn(data, members, f.batch_size, config.seed, data.spec.operand_ft),
      test_sets=test_sets, eval_steps=eval_steps, workdir=workdir, writer=writer,
      save_every=f.save_every, log_every=f.log_every,
      run=f'{name}/finetune' + (f'[{arm}]' if arm else ''), member_chunk=config.member_chunk)
  return members, params_P, history


def reft_population(config, data: TaskData, ft_tm: tracr_model.TracrModel, members, params_P,
                    test_sets, workdir, writer):
  """reFT of chosen fine-tuned models and the Scr.+FT baseline, as one population.

  Scr.+FT: the program compiled for O_FT, noised, trained on O_PT. Returns
  (reFT members, history, [P] True where the member did not diverge).
  """
  r, name, tm = config.reft, data.spec.task, data.tm
  reft_members, sources = [], []
  for i, m in enumerate(members):
    if m.lr in r.source_lrs and m.c_tr in r.source_c_trs:
      for lr in r.lrs:
        reft_members.append(population.Member(lr, None, m.seed, f'FT lr={m.lr:g} C_Tr={m.c_tr:g}'))
        sources.append(population.member_params(params_P, i))
  scratch = [population.Member(lr, None, s, 'Scr.+FT') for lr in r.scratch_lrs
             for s in config.finetune.seeds]
  scratch_P = noisy_params(ft_tm.params, scratch, config.seed + 1, config.finetune.noise_std,
                           FROZEN)
  params = population.concat(train.stack(sources) if sources else None, scratch_P)
  reft_members += scratch
  eval_steps = sorted({s for s in REFT_LOG_STEPS if s <= r.steps} | {r.steps})
  logging.info('%s: reverse fine-tuning %d members (incl. %d Scr.+FT) for %d steps',
               name, len(reft_members), len(scratch), r.steps)
  params, history = run_population(
      name=f'{name}_reft_{start_tag(config)}', tm=tm, position=data.position,
      members=reft_members, params_P=params, opt_cfg=sgd_config(config, r.warmup_steps), total_steps=r.steps,
      batch_fn=make_batch_fn(data, reft_members, config.finetune.batch_size, config.seed,
                             data.spec.operand_pt, salt=1),
      test_sets={'c_te0': test_sets['c_te0']}, eval_steps=eval_steps, workdir=workdir,
      writer=writer, save_every=config.finetune.save_every, log_every=config.finetune.log_every,
      run=f'{name}/reft', member_chunk=config.member_chunk)
  return reft_members, history, population.finite_members(params)


def dry_run_phases(config) -> list[dry_run.Phase]:
  """Every training phase of the study as shapes, per task: the fine-tuning grid, each
  sensitivity arm, and reFT with Scr.+FT (one population). Compiles the programs (cached)."""
  phases = []
  for t in config.tasks:
    spec = tasks.from_config(config, tasks.get(t).name)
    tm, _ = compile_pair(spec, config.cache_dir, config.precision, config.qkv)
    f, r = config.finetune, config.reft
    batch = {'tokens': jax.ShapeDtypeStruct((f.batch_size, spec.seq_len + 1), np.int32),
             'labels': jax.ShapeDtypeStruct((f.batch_size,), np.int32)}
    loss = losses.answer_loss_fn(tm.config, spec.impl.readout_position)
    phase = lambda name, cfg, members, steps, warmup: dry_run.Phase(
        name=f'{spec.task}/{name}', params=tm.params, batch=batch, loss_fn=loss,
        tx=optim.make_optimizer(sgd_config(cfg, warmup), steps), steps=steps, members=members,
        precision=config.precision)
    grid = population.grid(f.lrs, f.c_trs, f.seeds)
    phases.append(phase('finetune', config, len(grid), f.steps, f.warmup_steps))
    for arm in config.calibration.arms:
      acfg = arm_config(config, arm)
      n = len(population.grid(f.lrs, f.c_trs, acfg.finetune.seeds))
      phases.append(phase(f'finetune[{arm}]', acfg, n, f.steps, f.warmup_steps))
    n_reft = len(r.lrs) * sum(m.lr in r.source_lrs and m.c_tr in r.source_c_trs for m in grid)
    n_reft += len(r.scratch_lrs) * len(f.seeds)
    phases.append(phase('reft + Scr.+FT', config, n_reft, r.steps, r.warmup_steps))
  return phases
