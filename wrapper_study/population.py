"""A population of runs trained in one vmapped jit, resumable, with eval curves.

Members (learning rate x C_Tr x seed, ...) share one architecture; their
parameters are stacked on a leading axis P and `train.train_loop(vmap=True)`
updates them all with one compiled step. `stream_batch_fn` gives every world
the same per-(seed, C_Tr) data streams. Used by the Tracr grid and the PCFG
fine-tuning and reFT grids.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import checkpoint
from wrapper_study import metrics
from wrapper_study import optim
from wrapper_study import train


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a population."""
  lr: float  # Peak learning rate.
  c_tr: Optional[float]  # Fraction of correlated training samples; None: plain inputs.
  seed: int  # Weight-noise and data seed.
  source: str = 'compiled'  # Which initial parameters (reFT: the fine-tuned run).

  @property
  def label(self) -> str:
    c = 'plain' if self.c_tr is None else f'C_Tr={self.c_tr:g}'
    return f'{self.source} lr={self.lr:g} {c} seed={self.seed}'

  @property
  def run_name(self) -> str:
    """Its TensorBoard run below the population's: 'lr=0.01,c_tr=1,seed=0' (reFT: source=... first)."""
    parts = [] if self.source == 'compiled' else [f'source={_path_safe(self.source)}']
    parts.append(f'lr={self.lr:g}')
    if self.c_tr is not None:
      parts.append(f'c_tr={self.c_tr:g}')
    return ','.join(parts + [f'seed={self.seed}'])

  @property
  def hparams(self) -> dict:
    """Its row of TensorBoard's HParams table (c_tr left out for plain inputs)."""
    out = {'source': self.source, 'lr': self.lr, 'seed': self.seed}
    if self.c_tr is not None:
      out['c_tr'] = self.c_tr
    return out


def _path_safe(text: str) -> str:
  """'FT lr=0.01 C_Tr=1' -> 'FT_lr0.01_C_Tr1': one path component without '=' or ','."""
  return re.sub(r'[^A-Za-z0-9._+-]+', '_', text.replace('=', ''))


def stream_rng(seed: int, member_seed: int, c_tr: Optional[float], step: int,
               salt: int = 0) -> np.random.Generator:
  """The data rng of one (seed, C_Tr) stream at one step: resumable by construction."""
  c = -1 if c_tr is None else int(round(c_tr * 1_000_000))
  return np.random.default_rng([seed, salt, member_seed, c + 1, step])


def stream_batch_fn(members: Sequence[Member], seed: int, salt: int,
                    sample: Callable[[np.random.Generator, Optional[float]], Mapping[str, np.ndarray]],
                    by_c_tr: bool = True) -> Callable[[int], dict]:
  """step -> {key: [P, ...]}: one data stream per (member seed, C_Tr), the same for every world.

  Members sharing a stream (they differ only in lr or source) see the same
  batches; by_c_tr=False keys streams by seed alone (C_Tr is then passed as
  None). `sample(rng, c_tr)` draws one batch; `salt` separates phases.
  """
  keys = [(m.seed, m.c_tr if by_c_tr else None) for m in members]
  unique = sorted(set(keys), key=lambda k: (k[0], -1 if k[1] is None else k[1]))
  which = np.array([unique.index(k) for k in keys])

  def batch_fn(step: int) -> dict:
    parts = [sample(stream_rng(seed, s, c, step, salt), c) for s, c in unique]
    return {k: np.stack([p[k] for p in parts])[which] for k in parts[0]}
  return batch_fn


def grid(lrs: Sequence[float], c_trs: Sequence[float], seeds: Sequence[int],
         source: str = 'compiled') -> list[Member]:
  return [Member(float(lr), float(c), int(s), source) for lr in lrs for c in c_trs for s in seeds]


def member_params(params_P, i: int):
  """Member i of a stacked population (one model's params)."""
  return jax.tree.map(lambda x: x[i], params_P)


def finite_members(params_P) -> np.ndarray:
  """[P] True where every parameter of the member is finite (False: it diverged)."""
  ok = [jnp.isfinite(x).reshape(x.shape[0], -1).all(1) for x in jax.tree.leaves(params_P)]
  return np.asarray(jnp.stack(ok).all(0))


def diverged_as_nan(values: Mapping[str, np.ndarray], params_P) -> dict[str, np.ndarray]:
  """{metric: [P]} with NaN for every member whose params are not finite.

  A diverged member's argmax answers would read as a (meaningless) accuracy;
  NaN makes every table and figure show it as diverged and leave it out.
  """
  finite_P = finite_members(params_P)
  return {k: np.where(finite_P, np.asarray(v, float), np.nan) for k, v in values.items()}


def concat(*params_Ps):
  """Joins stacked populations along the member axis (empty ones allowed)."""
  parts = [p for p in params_Ps if p is not None]
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


class History:
  """Evaluation curves, kept in a JSONL file so a resumed run keeps its past."""

  def __init__(self, path: pathlib.Path, keep_until: int):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    if self.path.exists() and keep_until > 0:
      rows = [r for r in map(json.loads, self.path.read_text().splitlines()) if r['step'] <= keep_until]
    self.rows = rows
    self._write()

  def _write(self):
    self.path.write_text(''.join(json.dumps(r) + '\n' for r in self.rows))

  def add(self, step: int, metrics: Mapping[str, np.ndarray]):
    self.rows = [r for r in self.rows if r['step'] != step]
    self.rows.append({'step': int(step), **{k: np.asarray(v).tolist() for k, v in metrics.items()}})
    self.rows.sort(key=lambda r: r['step'])
    self._write()

  def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps [S], values [S, P])."""
    rows = [r for r in self.rows if key in r]
    return np.array([r['step'] for r in rows]), np.array([r[key] for r in rows])


def run_population(*, name: str, model_config, members: Sequence[Member], params_P, opt_cfg,
                   total_steps: int, batch_fn, loss_fn, evaluate: Callable, eval_steps,
                   workdir: pathlib.Path, writer, save_every: int, log_every: int,
                   meta_extra: Optional[Mapping] = None, run: Optional[str] = None,
                   member_chunk: Optional[int] = None):
  """Trains every member for total_steps in one vmapped jit (its members spread over every
  device when there are several: train.member_mesh); resumable.

  evaluate(params_P) -> {metric: [P] array}, run at eval_steps (0 included if
  listed) and kept in a History. writer (a MetricWriter or one of its runs, or
  None): every member gets its own TensorBoard run `<run>/<member.run_name>`
  (run defaults to name) with train/* and eval/* and, at the end, its HParams
  session (the experiment in `<run>`). member_chunk: how the members are
  mapped (train.over_members; None = the backend's default). Returns (final
  stacked params, History).
  """
  tx = optim.make_optimizer(opt_cfg, total_steps)
  lr_P = jnp.asarray([m.lr for m in members], jnp.float32)
  state = train.create_population(params_P, tx, lr_P)
  template = jax.tree.map(lambda x: x[0], params_P)
  meta = checkpoint.make_meta(f'population/{name}', model_config, template,
                              members=[dataclasses.asdict(m) for m in members],
                              total_steps=total_steps, **dict(meta_extra or {}))
  # Closed on any error too, so pending saves land and orbax shuts down cleanly.
  with checkpoint.Checkpointer(workdir / 'checkpoints' / name, meta=meta,
                              save_every=save_every, max_to_keep=2) as ckpt:
    history = History(workdir / 'history' / f'{name}.jsonl', keep_until=ckpt.latest_step() or 0)
    pop_writer = None if writer is None else metrics.PopulationWriter(
        writer.run(run or name), [m.run_name for m in members])
    if 0 in eval_steps and not any(r['step'] == 0 for r in history.rows):
      history.add(0, diverged_as_nan(evaluate(state.params), state.params))
      if pop_writer is not None:
        pop_writer.write_scalars(0, {f'eval/{k}': v for k, v in history.rows[0].items()
                                     if k != 'step'})

    def evaluator(params_P, step):
      if step not in eval_steps:
        return {}
      values = diverged_as_nan(evaluate(params_P), params_P)
      history.add(step, values)
      return values  # [P] each: one value per member's run, no mean over the grid.

    state = train.train_loop(
        state=state, tx=tx, loss_fn=loss_fn, batch_fn=batch_fn, total_steps=total_steps,
        workdir=str(workdir), writer=pop_writer, checkpointer=ckpt, log_every=log_every,
        evaluators={'eval': (sorted(s for s in eval_steps if s > 0), evaluator)}, vmap=True,
        member_chunk=member_chunk, mesh=train.member_mesh(len(members)),
        clip_norm=opt_cfg.get('grad_clip_norm') or None)
  if pop_writer is not None:
    keys = sorted({k for r in history.rows for k in r if k != 'step'})
    pop_writer.write_hparams([{'population': run or name, **m.hparams} for m in members],
                             ['train/loss'] + [f'eval/{k}' for k in keys],
                             ok=finite_members(state.params), types={'c_tr': float})
    pop_writer.flush()
  return state.params, history
