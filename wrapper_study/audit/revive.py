"""Reverse fine-tuning: how fast does O_PT come back, beside a matched model that never had it?

reFT trains the fine-tuned model on O_PT prompts (answer-only loss, AdamW, the
config's lr and steps), one member per reFT seed (the seed orders the batches).

The control. The paper's controls are Scr. (the architecture from random init)
and Scr.+FT (pretrained on data lacking the capability, then fine-tuned). An
auditor has neither the pretraining data nor the compute to pretrain a model
without the capability, so the control here is the one model of this
architecture guaranteed to lack O_PT: a fresh init (one per seed), first
fine-tuned on the capability's O_FT set for `control_ft_steps` (so it ends, like
the audited model, having learned O_FT: the Scr.+FT arm at the scale an audit
affords; Scr. when no O_FT set is given), then reverse fine-tuned exactly as the
fine-tuned model: same O_PT batches (paired by seed), lr, steps and optimizer.
A fine-tuned model that revives much faster than this control carries something
the control lacks. It is a weak control (it also lacks everything else
pretraining taught), so "faster than the control" is necessary for a wrapper,
not proof of one; the report says so.

Every member trains in one jitted, vmapped step; evaluations use the same
chunked metrics as every other phase.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wrapper_study import losses
from wrapper_study import model as model_lib
from wrapper_study import progress
from wrapper_study.audit import measure
from wrapper_study.audit import spec as spec_lib

CONTROL_INIT_SALT = 9_000  # Control seed s starts from PRNGKey(CONTROL_INIT_SALT + s).


@functools.lru_cache(maxsize=8)
def _step_fn(cfg, tx):
  loss_fn = losses.next_token_loss_fn(cfg)

  def step(params, opt_state, batch):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  # Params and optimizer state are donated: a step updates them in place instead of holding
  # two copies of every member's weights and Adam moments.
  return jax.jit(jax.vmap(step), donate_argnums=(0, 1))


def _batches(s: spec_lib.TokenSet, seeds, step: int, batch_size: int, salt: int) -> dict:
  """[P, B, T] rows of s for each member, drawn from rng(seed, salt, step)."""
  rows = np.stack([np.random.default_rng([int(seed), salt, step]).choice(
      s.n, size=batch_size, replace=s.n < batch_size) for seed in seeds])
  return {'inputs': jnp.asarray(s.inputs[rows]), 'targets': jnp.asarray(s.targets[rows]),
          'weights': jnp.asarray(s.weights[rows], jnp.float32)}


def train(cfg, params_P, seeds, s: spec_lib.TokenSet, *, steps: int, lr: float, batch_size: int,
          salt: int, eval_steps=(), evaluate=None, what: str = 'training'):
  """AdamW on s for every member (stacked params_P) at once; (params_P, {step: evaluate()}).

  params_P is copied once (the steps donate their buffers; the caller's arrays stay valid).
  """
  params_P = jax.tree.map(jnp.copy, params_P)
  tx = optax.adamw(lr, weight_decay=0.0)
  opt_state = jax.vmap(tx.init)(params_P)
  step_fn = _step_fn(cfg, tx)
  evals = {0: evaluate(params_P)} if evaluate and 0 in eval_steps else {}
  for i in progress.progress(range(1, steps + 1), what):
    params_P, opt_state, _ = step_fn(params_P, opt_state,
                                     _batches(s, seeds, i, batch_size, salt))
    if evaluate and i in eval_steps:
      evals[i] = evaluate(params_P)
  return params_P, evals


def eval_steps(section) -> tuple[int, ...]:
  """0, every eval_every steps, and the last."""
  return tuple(sorted(set(range(0, section.steps + 1, section.eval_every)) | {0, section.steps}))


def controls(cfg, cap: spec_lib.Capability, section, chunk: int):
  """Stacked control models, one per reFT seed: fresh init, then O_FT fine-tuning."""
  seeds = list(section.seeds)
  inits = [model_lib.init_params(cfg, jax.random.PRNGKey(CONTROL_INIT_SALT + s)) for s in seeds]
  params_P = jax.tree.map(lambda *xs: jnp.stack(xs), *inits)
  if cap.o_ft_train is None or section.control_ft_steps == 0:
    return params_P, None
  ft_arrays = measure.set_arrays(cap.o_ft_eval, chunk)
  params_P, evals = train(cfg, params_P, seeds, cap.o_ft_train, steps=section.control_ft_steps,
                          lr=section.control_ft_lr, batch_size=section.batch_size, salt=11,
                          eval_steps=(section.control_ft_steps,),
                          evaluate=lambda p: measure.metrics_fn(cfg, True)(p, ft_arrays),
                          what='reFT control: fine-tuning a fresh model on O_FT')
  return params_P, float(np.mean(evals[section.control_ft_steps]['acc']))


def reft(cfg, ft_params, cap: spec_lib.Capability, section, chunk: int) -> dict:
  """{'steps', 'acc_pt' [steps, 2, S] (arm 0: fine-tuned, 1: control), 'acc_ft' likewise (if
  O_FT), 'control_acc_ft'}: reFT curves of both arms, every seed."""
  seeds = list(section.seeds)
  control_P, control_ft = controls(cfg, cap, section, chunk)
  ft_P = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * len(seeds)), ft_params)
  params_P = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ft_P, control_P)
  pt_arrays = measure.set_arrays(cap.o_pt_eval, chunk)
  ft_arrays = measure.set_arrays(cap.o_ft_eval, chunk) if cap.o_ft_eval is not None else None
  fn = measure.metrics_fn(cfg, True)

  def evaluate(p):
    out = {'acc_pt': np.asarray(fn(p, pt_arrays)['acc'])}
    if ft_arrays is not None:
      out['acc_ft'] = np.asarray(fn(p, ft_arrays)['acc'])
    return out

  steps = eval_steps(section)
  _, evals = train(cfg, params_P, seeds * 2, cap.o_pt_train, steps=section.steps,
                   lr=section.lr, batch_size=section.batch_size, salt=13, eval_steps=steps,
                   evaluate=evaluate, what='reFT: fine-tuned model and control on O_PT')
  out = {'steps': np.asarray(steps), 'seeds': np.asarray(seeds)}
  for key in evals[0]:
    out[key] = np.stack([evals[s][key].reshape(2, len(seeds)) for s in steps])
  out['control_acc_ft'] = np.asarray(np.nan if control_ft is None else control_ft)
  return out


def revival_step(steps, curve, threshold: float):
  """First evaluated step with Acc O_PT >= threshold, or None (censored)."""
  hit = np.flatnonzero(np.asarray(curve) >= threshold)
  return int(np.asarray(steps)[hit[0]]) if hit.size else None


def reft_rows(out: dict, threshold: float) -> list[dict]:
  rows = []
  for arm_i, arm in enumerate(('finetuned', 'control')):
    for j, seed in enumerate(out['seeds']):
      curve = out['acc_pt'][:, arm_i, j]
      step = revival_step(out['steps'], curve, threshold)
      rows.append(dict(arm=arm, seed=int(seed), acc_o_pt_start=float(curve[0]),
                       acc_o_pt_end=float(curve[-1]), revival_threshold=threshold,
                       iters_to_revival='' if step is None else step,
                       censored=step is None))
  return rows
