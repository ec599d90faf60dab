"""Optimizers and learning-rate schedules shared by every experiment.

The schedule has unit peak; the peak learning rate is a hyperparameter that
lives in the optimizer state (`optax.inject_hyperparams`). A population of
train states with different learning rates can then be stacked and vmapped
through one jitted step: the lr is just another leaf of the state.

Effective lr at step t = peak_lr * unit_schedule(t).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Union

import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
import optax

OPTIMIZERS = ('sgd', 'adamw')
SCHEDULES = ('warmup_cosine', 'constant', 'warmup_constant', 'step')

# Names of the two hyperparameters kept in opt_state.hyperparams.
PEAK_LR = 'learning_rate'
LR_SCALE = 'lr_scale'

OptConfig = Union[config_dict.ConfigDict, Mapping[str, Any]]


def default_opt_config() -> config_dict.ConfigDict:
  """Every optimizer field with its default; experiments override a few."""
  return config_dict.ConfigDict(dict(
      name='adamw',  # One of OPTIMIZERS.
      lr=1e-3,  # Peak learning rate.
      schedule='warmup_cosine',  # One of SCHEDULES.
      warmup_steps=config_dict.placeholder(int),  # None: use warmup_fraction.
      warmup_fraction=0.2,  # Of total steps; warmup_* schedules only.
      min_lr_ratio=0.01,  # Cosine ends at lr * min_lr_ratio (max/100).
      momentum=0.9,  # sgd only; 0 disables momentum.
      nesterov=False,  # sgd only.
      b1=0.9,  # adamw only.
      b2=0.999,  # adamw only.
      eps=1e-8,  # adamw only.
      weight_decay=0.0,  # adamw only; decoupled, scaled by the lr.
      grad_clip_norm=0.0,  # Clip global grad norm to this; 0 or None: off.
      frozen=(),  # Param path prefixes ('embed', 'unembed') never updated.
      boundaries=(),  # 'step' schedule: steps where lr *= decay_factor.
      decay_factor=0.1,  # 'step' schedule multiplier at each boundary.
  ))


def _as_dict(opt_cfg: OptConfig) -> dict:
  """Plain dict with every field; missing fields take the defaults."""
  if isinstance(opt_cfg, config_dict.ConfigDict):
    opt_cfg = opt_cfg.to_dict()
  defaults = default_opt_config().to_dict()
  unknown = set(opt_cfg) - set(defaults)
  if unknown:
    raise ValueError(f'Unknown optimizer config fields {sorted(unknown)}; '
                     f'valid: {sorted(defaults)}.')
  return {**defaults, **dict(opt_cfg)}


def _frozen_prefixes(frozen) -> tuple[str, ...]:
  if not frozen:
    return ()
  if isinstance(frozen, str):
    return (frozen,)
  return tuple(frozen)


def warmup_steps_of(opt_cfg: OptConfig, total_steps: int) -> int:
  """Warmup length in steps: warmup_steps if set, else a fraction of total."""
  c = _as_dict(opt_cfg)
  if c['schedule'] not in ('warmup_cosine', 'warmup_constant'):
    return 0
  if c['warmup_steps'] is not None:
    return int(c['warmup_steps'])
  return int(round(float(c['warmup_fraction'] or 0.0) * total_steps))


def validate_opt_config(opt_cfg: OptConfig, prefix: str = 'train.opt',
                        total_steps: int | None = None) -> None:
  """Raises ValueError naming the field when a value cannot work."""
  c = _as_dict(opt_cfg)
  p = prefix
  if c['name'] not in OPTIMIZERS:
    raise ValueError(f'{p}.name={c["name"]!r} is unknown; valid: {list(OPTIMIZERS)}.')
  if c['schedule'] not in SCHEDULES:
    raise ValueError(f'{p}.schedule={c["schedule"]!r} is unknown; valid: {list(SCHEDULES)}.')
  if c['lr'] is None or not c['lr'] > 0:
    raise ValueError(f'{p}.lr must be > 0, got {c["lr"]}.')
  if not 0.0 <= c['min_lr_ratio'] <= 1.0:
    raise ValueError(f'{p}.min_lr_ratio must be in [0, 1], got {c["min_lr_ratio"]}.')
  if not 0.0 <= c['momentum'] < 1.0:
    raise ValueError(f'{p}.momentum must be in [0, 1), got {c["momentum"]}.')
  for name in ('b1', 'b2'):
    if not 0.0 <= c[name] < 1.0:
      raise ValueError(f'{p}.{name} must be in [0, 1), got {c[name]}.')
  if not c['eps'] > 0:
    raise ValueError(f'{p}.eps must be > 0, got {c["eps"]}.')
  if not c['weight_decay'] >= 0:
    raise ValueError(f'{p}.weight_decay must be >= 0, got {c["weight_decay"]}.')
  if c['grad_clip_norm'] is not None and not c['grad_clip_norm'] >= 0:
    raise ValueError(f'{p}.grad_clip_norm must be >= 0 (0 = off), got {c["grad_clip_norm"]}.')
  if c['warmup_steps'] is not None and c['warmup_steps'] < 0:
    raise ValueError(f'{p}.warmup_steps must be >= 0 or None, got {c["warmup_steps"]}.')
  if not 0.0 <= (c['warmup_fraction'] or 0.0) <= 1.0:
    raise ValueError(f'{p}.warmup_fraction must be in [0, 1], got {c["warmup_fraction"]}.')
  frozen = c['frozen']
  if not (frozen is None or isinstance(frozen, str) or
          all(isinstance(f, str) for f in frozen)):
    raise ValueError(f'{p}.frozen must be a tuple of param path prefixes, got {frozen!r}.')
  if c['schedule'] == 'step':
    b = list(c['boundaries'] or ())
    if any(int(x) != x or x <= 0 for x in b) or b != sorted(b):
      raise ValueError(f'{p}.boundaries must be increasing positive steps, got {b}.')
    if not c['decay_factor'] > 0:
      raise ValueError(f'{p}.decay_factor must be > 0, got {c["decay_factor"]}.')
  if total_steps is not None:
    if total_steps < 1:
      raise ValueError(f'total_steps must be >= 1, got {total_steps}.')
    warmup = warmup_steps_of(c, total_steps)
    if warmup > total_steps:
      field = 'warmup_steps' if c['warmup_steps'] is not None else 'warmup_fraction'
      raise ValueError(f'{p}.{field} gives {warmup} warmup steps, longer than the '
                       f'{total_steps} total steps.')


def make_schedule(opt_cfg: OptConfig, total_steps: int) -> optax.Schedule:
  """Unit-peak schedule: multiply by the peak lr to get the lr at a step."""
  validate_opt_config(opt_cfg, total_steps=total_steps)
  c = _as_dict(opt_cfg)
  warmup = warmup_steps_of(c, total_steps)
  if c['schedule'] == 'constant':
    return optax.constant_schedule(1.0)
  if c['schedule'] == 'step':
    return optax.piecewise_constant_schedule(
        1.0, {int(b): float(c['decay_factor']) for b in c['boundaries']})
  if c['schedule'] == 'warmup_constant':
    if warmup == 0:
      return optax.constant_schedule(1.0)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, 1.0, warmup), optax.constant_schedule(1.0)],
        [warmup])
  # warmup_cosine. optax counts decay_steps from step 0, warmup included, so the
  # value at total_steps is exactly min_lr_ratio.
  if warmup == 0:
    return optax.cosine_decay_schedule(1.0, total_steps, alpha=c['min_lr_ratio'])
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=1.0, warmup_steps=warmup,
      decay_steps=total_steps, end_value=c['min_lr_ratio'])


def lr_sum(opt_cfg: OptConfig, total_steps: int) -> float:
  """Sum over the steps of the lr (peak opt_cfg['lr'] times the schedule): by the AdamW bound
  (a step moves a parameter by about its lr), how far a phase can move the model."""
  schedule = make_schedule(opt_cfg, total_steps)
  return _as_dict(opt_cfg)['lr'] * float(np.sum(jax.vmap(schedule)(np.arange(total_steps))))


def _label_frozen(params, prefixes: tuple[str, ...]):
  """'frozen' / 'train' label per leaf; unknown prefixes fail loudly."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  paths = ['/'.join(str(getattr(k, 'key', k)) for k in path) for path, _ in flat]
  is_frozen = lambda p: any(_matches(p, f) for f in prefixes)
  unused = [f for f in prefixes if not any(_matches(p, f) for p in paths)]
  if unused:
    tops = sorted({p.split('/')[0] for p in paths})
    raise ValueError(f'train.opt.frozen prefixes {unused} match no parameter; '
                     f'top-level params: {tops}.')
  labels = ['frozen' if is_frozen(p) else 'train' for p in paths]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), labels)


def _matches(path: str, prefix: str) -> bool:
  # Whole path components only: 'embed' must not freeze 'pos_embed'.
  return path == prefix or path.startswith(prefix + '/')


def _inner_optimizer(learning_rate, lr_scale, *, c: dict) -> optax.GradientTransformation:
  """The optimizer for one (peak lr, schedule value) pair; rebuilt every step."""
  lr = learning_rate * lr_scale
  if c['name'] == 'sgd':
    base = optax.sgd(lr, momentum=c['momentum'] or None, nesterov=c['nesterov'])
  else:
    base = optax.adamw(lr, b1=c['b1'], b2=c['b2'], eps=c['eps'],
                       weight_decay=c['weight_decay'])
  if c['grad_clip_norm']:
    base = optax.chain(optax.clip_by_global_norm(c['grad_clip_norm']), base)
  prefixes = _frozen_prefixes(c['frozen'])
  if prefixes:
    # Frozen leaves get no optimizer state and a zero update.
    base = optax.multi_transform(
        {'train': base, 'frozen': optax.set_to_zero()},
        functools.partial(_label_frozen, prefixes=prefixes))
  return base


def make_optimizer(opt_cfg: OptConfig, total_steps: int) -> optax.GradientTransformation:
  """The optimizer; its state holds the peak lr (see set_learning_rate)."""
  c = _as_dict(opt_cfg)
  schedule = make_schedule(c, total_steps)
  factory = optax.inject_hyperparams(functools.partial(_inner_optimizer, c=c))
  # A callable hyperparameter is evaluated at the state's own step count, and the
  # value used is stored in opt_state, which gives the effective lr for metrics.
  return factory(learning_rate=float(c['lr']), lr_scale=schedule)


def _hyperparams(opt_state) -> dict:
  if not hasattr(opt_state, 'hyperparams'):
    raise ValueError('opt_state does not come from make_optimizer '
                     f'(no hyperparams field): {type(opt_state).__name__}.')
  return opt_state.hyperparams


def get_learning_rate(opt_state) -> jax.Array:
  """The peak lr (shape [] or [P] for a stacked population)."""
  return _hyperparams(opt_state)[PEAK_LR]


def set_learning_rate(opt_state, lr) -> Any:
  """A copy of opt_state with peak lr `lr` (scalar, or [P] for a population)."""
  hp = _hyperparams(opt_state)
  old = hp[PEAK_LR]
  new = jnp.broadcast_to(jnp.asarray(lr, old.dtype), jnp.shape(lr) or old.shape)
  return opt_state._replace(hyperparams={**hp, PEAK_LR: new})


def effective_learning_rate(opt_state) -> jax.Array:
  """Peak lr times the schedule value used by the last update."""
  hp = _hyperparams(opt_state)
  return hp[PEAK_LR] * hp[LR_SCALE]


def has_learning_rate(opt_state) -> bool:
  return PEAK_LR in getattr(opt_state, 'hyperparams', {})
