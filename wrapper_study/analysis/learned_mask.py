"""A learned pruning mask: the fewest units whose removal restores a capability.

Beyond the paper (App. D prunes in one step by grad x weight). Each unit u of
a `pruning.Units` gets a logit; its keep probability is

  keep_u = sigmoid(logit_u / temperature)

and every scalar of unit u is multiplied by keep_u (scalars of unit -1 are
untouched). Adam minimises

  loss_fn(masked params, batch) + sparsity * sum_u (1 - keep_u)

where sum_u (1 - keep_u) is the (expected) number of units removed: a unit is
dropped only when the loss of the capability to revive falls faster with its
removal than `sparsity` nats per unit. The ranking returned (ascending keep =
pruned first) plugs into `pruning.search` / `pruning.sweep`.

Defaults and why:
  init_keep 0.95   every unit starts almost fully on (logit = 2.94), so the
                   search starts at the fine-tuned model and the gradient
                   d loss / d keep_u is close to the one-step score's.
  temperature 1.0  keep = sigmoid(logit); with Adam the step in logit space is
                   ~lr whatever the gradient scale, so a lower temperature only
                   makes decisions saturate sooner.
  lr 0.1, steps 200  Adam moves a logit by up to ~0.1 per step: 200 steps take
                   a unit from keep 0.95 to below 1e-7, or back up.
  sparsity 1e-2    nats of task loss per removed unit: 100 units removed cost
                   1 nat, small against the loss gap of a wrapped capability
                   (several nats) and large against the noise of a batch.
  noise 0.0        deterministic relaxation. noise > 0 adds logistic noise
                   times `noise` to the logits at each step (the binary-
                   concrete relaxation of Maddison et al. 2017 / Louizos et al.
                   2018), which favours confident 0/1 decisions; `seed` seeds it.
A unit counts as pruned when keep < 0.5.

Batches: a fixed `batch` (the whole optimisation is one jitted lax.scan) or
`batch_fn(step)` returning the batch of each step (a jitted step in a Python
loop, so batch_fn may run numpy on the host).

Shapes: U units, N scalars of one member, P members, S steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from wrapper_study.analysis import pruning


@dataclasses.dataclass(frozen=True)
class LearnedMask:
  """Result of learn_mask (or, with a leading P axis on each field, learn_masks_population)."""
  keep_U: np.ndarray  # float [U]: final keep probabilities.
  rank_U: np.ndarray  # int [U]: prune position (0 = lowest keep, pruned first).
  n_pruned: Any  # int (or int [P]): units with keep < 0.5.
  task_loss_S: np.ndarray  # float [S]: loss_fn of the masked params before each step.
  objective_S: np.ndarray  # float [S]: task loss + sparsity penalty before each step.


def _check(units: pruning.Units, batch, batch_fn, steps, lr, sparsity, init_keep,
           temperature, noise) -> None:
  if units.n_units == 0:
    raise ValueError('units has no prunable unit; pick another eligibility set.')
  if (batch is None) == (batch_fn is None):
    raise ValueError('give exactly one of batch (fixed) or batch_fn(step) -> batch.')
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f'steps={steps!r}; valid: an integer >= 1.')
  if not 0.0 < init_keep < 1.0:
    raise ValueError(f'init_keep={init_keep}; valid: strictly between 0 and 1.')
  for name, value in (('lr', lr), ('temperature', temperature)):
    if not value > 0:
      raise ValueError(f'{name}={value}; valid: > 0.')
  for name, value in (('sparsity', sparsity), ('noise', noise)):
    if not value >= 0:
      raise ValueError(f'{name}={value}; valid: >= 0.')


def _make_step(loss_fn: Callable, units: pruning.Units, unravel: Callable,
               tx: optax.GradientTransformation, sparsity: float, temperature: float,
               noise: float) -> Callable:
  """(flat_N, logit_U, opt_state, key, batch) -> (logit_U, opt_state, (task, objective))."""
  ids_N = jnp.asarray(units.unit_of_scalar)

  def objective(logit_U, flat_N, key, batch):
    if noise:
      u = jax.random.uniform(key, logit_U.shape, minval=1e-6, maxval=1 - 1e-6)
      logit_U = logit_U + noise * (jnp.log(u) - jnp.log1p(-u))  # Logistic noise.
    keep_U = jax.nn.sigmoid(logit_U / temperature)
    scale_N = jnp.where(ids_N >= 0, keep_U[jnp.maximum(ids_N, 0)], 1.0)
    task = loss_fn(unravel(flat_N * scale_N), batch)[0]
    return task + sparsity * jnp.sum(1.0 - keep_U), task

  def step(flat_N, logit_U, opt_state, key, batch):
    (obj, task), g = jax.value_and_grad(objective, has_aux=True)(logit_U, flat_N, key, batch)
    updates, opt_state = tx.update(g, opt_state, logit_U)
    return optax.apply_updates(logit_U, updates), opt_state, (task, obj)

  return step


def _run(step: Callable, flat, logit, tx, keys_S, batch, batch_fn, steps: int):
  """Runs `steps` updates; step may be vmapped (then flat/logit carry a leading P)."""
  opt_state = tx.init(logit) if flat.ndim == 1 else jax.vmap(tx.init)(logit)
  if batch_fn is None:
    @jax.jit  # Arguments, not closures: big params must not become compile-time constants.
    def scan(flat, logit, opt_state, keys_S, batch):
      def body(carry, key):
        logit, opt_state = carry
        logit, opt_state, losses = step(flat, logit, opt_state, key, batch)
        return (logit, opt_state), losses
      return jax.lax.scan(body, (logit, opt_state), keys_S)
    (logit, _), (task_S, obj_S) = scan(flat, logit, opt_state, keys_S, batch)
    return logit, np.asarray(task_S), np.asarray(obj_S)
  jstep = jax.jit(step)
  task, obj = [], []
  for s in range(steps):
    logit, opt_state, (t, o) = jstep(flat, logit, opt_state, keys_S[s], batch_fn(s))
    task.append(t)
    obj.append(o)
  # Stacked with the step axis first, as the scan returns it.
  return logit, np.asarray(jnp.stack(task)), np.asarray(jnp.stack(obj))


def _result(logit, temperature, task_S, obj_S, population: bool) -> LearnedMask:
  keep = jax.nn.sigmoid(logit / temperature)
  order = jax.vmap(pruning.prune_order) if population else pruning.prune_order
  n_pruned = np.asarray((keep < 0.5).sum(-1))
  if population:  # [S, P] from the scan -> [P, S].
    task_S, obj_S = task_S.T, obj_S.T
  return LearnedMask(keep_U=np.asarray(keep), rank_U=np.asarray(order(-keep)),
                     n_pruned=n_pruned if population else int(n_pruned),
                     task_loss_S=task_S, objective_S=obj_S)


def learn_mask(loss_fn: Callable, params, units: pruning.Units, batch=None, *,
               batch_fn: Optional[Callable[[int], Any]] = None, steps: int = 200,
               lr: float = 0.1, sparsity: float = 1e-2, init_keep: float = 0.95,
               temperature: float = 1.0, noise: float = 0.0, seed: int = 0) -> LearnedMask:
  """Learns keep probabilities of `units` (see the module docstring for the defaults).

  Args:
    loss_fn: (params, batch) -> (loss, aux), the loss of the capability to
      revive (as for pruning.scores).
    params: one model; units from pruning.make_units on it.
    batch / batch_fn: a fixed batch, or step -> batch (exactly one).
  """
  _check(units, batch, batch_fn, steps, lr, sparsity, init_keep, temperature, noise)
  flat_N, unravel = ravel_pytree(params)
  tx = optax.adam(lr)
  step = _make_step(loss_fn, units, unravel, tx, sparsity, temperature, noise)
  logit_U = jnp.full((units.n_units,), temperature * float(np.log(init_keep / (1 - init_keep))))
  keys_S = jax.random.split(jax.random.key(seed), steps)
  logit_U, task_S, obj_S = _run(step, flat_N, logit_U, tx, keys_S, batch, batch_fn, steps)
  return _result(logit_U, temperature, task_S, obj_S, population=False)


def learn_masks_population(loss_fn: Callable, params_P, units: pruning.Units, batch=None, *,
                           batch_fn: Optional[Callable[[int], Any]] = None, steps: int = 200,
                           lr: float = 0.1, sparsity: float = 1e-2, init_keep: float = 0.95,
                           temperature: float = 1.0, noise: float = 0.0,
                           seed: int = 0) -> LearnedMask:
  """learn_mask for every member of a stacked population at once (vmapped step).

  All members share the batch of each step; the noise differs per member.
  Fields of the result carry a leading [P] axis (keep_U [P, U], task_loss_S [P, S]).
  """
  _check(units, batch, batch_fn, steps, lr, sparsity, init_keep, temperature, noise)
  n_members = pruning.member_count(params_P)
  flat_PxN = jax.vmap(lambda p: ravel_pytree(p)[0])(params_P)
  if flat_PxN.shape[1] != units.unit_of_scalar.shape[0]:
    raise ValueError(f'units were made for {units.unit_of_scalar.shape[0]} scalars but one '
                     f'member of params_P holds {flat_PxN.shape[1]}; build units from one member.')
  _, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], params_P))
  tx = optax.adam(lr)
  step = jax.vmap(_make_step(loss_fn, units, unravel, tx, sparsity, temperature, noise),
                  in_axes=(0, 0, 0, 0, None))
  logit_PxU = jnp.full((n_members, units.n_units),
                       temperature * float(np.log(init_keep / (1 - init_keep))))
  keys_SxP = jax.random.split(jax.random.key(seed), (steps, n_members))
  logit_PxU, task_S, obj_S = _run(step, flat_PxN, logit_PxU, tx, keys_SxP, batch, batch_fn,
                                  steps)
  return _result(logit_PxU, temperature, task_S, obj_S, population=True)
