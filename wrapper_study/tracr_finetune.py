"""Fine-tuning compiled Tracr models as one population in one jit.

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
import functools
import json
import pathlib
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import checkpoint
from wrapper_study import losses
from wrapper_study import model as model_lib
from wrapper_study import optim
from wrapper_study import tracr_bridge
from wrapper_study import tracr_tasks
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


def grid(lrs: Sequence[float], c_trs: Sequence[float], seeds: Sequence[int],
         source: str = 'compiled') -> list[Member]:
  return [Member(float(lr), float(c), int(s), source) for lr in lrs for c in c_trs for s in seeds]


class TaskData:
  """Vectorized encoding of token-id rows for one compiled model."""

  def __init__(self, spec: tracr_tasks.TaskSpec, tm: tracr_bridge.TracrModel):
    self.spec, self.tm = spec, tm
    self._input_lut = np.array([tm.input_encoding[c] for c in spec.vocab], np.int32)
    self._bos = np.int32(tm.input_encoding[tm.bos])
    index = {v: i for i, v in enumerate(tm.output_values)}
    if spec.program == 'counter':
      domain = list(range(spec.seq_len + 1))  # Counts.
    else:
      domain = list(spec.vocab)  # Token id -> its letter.
    self._label_lut = np.array([index.get(v, -1) for v in domain], np.int32)

  def inputs(self, tokens_NxL: np.ndarray) -> np.ndarray:
    bos = np.full((len(tokens_NxL), 1), self._bos, np.int32)
    return np.concatenate([bos, self._input_lut[tokens_NxL]], axis=1)

  def labels(self, tokens_NxL: np.ndarray, operand) -> np.ndarray:
    """Class ids of r(x, operand); -1 where the model has no such class."""
    return self._label_lut[tracr_tasks.result(self.spec, tokens_NxL, operand)]


def _stream_rng(seed: int, member: Member, step: int, salt: int) -> np.random.Generator:
  c = -1 if member.c_tr is None else int(round(member.c_tr * 1_000_000))
  return np.random.default_rng([seed, salt, member.seed, c + 1, step])


def make_batch_fn(data: TaskData, members: Sequence[Member], batch_size: int, seed: int,
                  operand, salt: int = 0) -> Callable[[int], dict]:
  """step -> {'tokens': [P, B, T], 'labels': [P, B]}, deterministic in the step.

  Members sharing (seed, C_Tr) share a stream, so they see the same batches.
  `salt` separates phases (fine-tuning 0, reFT 1) that would otherwise collide.
  """
  keys = [(m.seed, m.c_tr) for m in members]
  unique = sorted(set(keys), key=lambda k: (k[0], -1 if k[1] is None else k[1]))
  which = np.array([unique.index(k) for k in keys])

  def batch_fn(step: int) -> dict:
    toks = []
    for s, c in unique:
      rng = _stream_rng(seed, Member(0.0, c, s), step, salt)
      toks.append(tracr_tasks.sample(data.spec, rng, batch_size, c))
    toks = np.stack(toks)[which]  # [P, B, L]
    flat = toks.reshape(-1, toks.shape[-1])
    return {'tokens': data.inputs(flat).reshape(len(members), batch_size, -1),
            'labels': data.labels(flat, operand).reshape(len(members), batch_size)}
  return batch_fn


def answer_loss_fn(config: model_lib.TransformerConfig, readout: int):
  """Cross-entropy of the answer at the read-out position (the only supervised token)."""
  def loss_fn(params, batch):
    logits_BxTxO, _ = model_lib.Transformer(config).apply({'params': params}, batch['tokens'])
    logits_Bx1xO = logits_BxTxO[:, readout:readout + 1]
    loss, metrics = losses.weighted_cross_entropy(logits_Bx1xO, batch['labels'][:, None])
    return loss, {'accuracy': metrics['accuracy']}
  return loss_fn


@functools.lru_cache(maxsize=None)
def _population_predict_fn(config: model_lib.TransformerConfig, readout: int):
  def predict(params_P, tokens_NxT):
    def one(params):
      logits_NxTxO, _ = model_lib.Transformer(config).apply({'params': params}, tokens_NxT)
      return logits_NxTxO[:, readout].argmax(-1)
    return jax.vmap(one)(params_P)
  return jax.jit(predict)


def population_predict(config, readout: int, params_P, tokens_NxT, chunk: int = 512) -> np.ndarray:
  """[P, N] predicted class ids, in chunks of the test set to bound memory."""
  fn = _population_predict_fn(config, readout)
  return np.concatenate([np.asarray(fn(params_P, tokens_NxT[i:i + chunk]))
                         for i in range(0, len(tokens_NxT), chunk)], axis=1)


@dataclasses.dataclass
class TestSet:
  inputs: np.ndarray  # [N, T] model inputs.
  label_pt: np.ndarray  # [N] class ids of r(x, O_PT).
  label_ft: np.ndarray  # [N] class ids of r(x, O_FT).
  tokens: np.ndarray  # [N, L] raw token ids (for figures).


def make_test_sets(data: TaskData, n: int, seed: int, c_tes=(0.0, 1.0)) -> dict[str, TestSet]:
  out = {}
  for c_te in c_tes:
    rng = np.random.default_rng([seed, 7, int(c_te * 1000)])
    toks = tracr_tasks.sample(data.spec, rng, n, c_te)
    out[f'c_te{c_te:g}'] = TestSet(data.inputs(toks), data.labels(toks, data.spec.operand_pt),
                                   data.labels(toks, data.spec.operand_ft), toks)
  return out


def accuracies(config, readout, params_P, test_sets: Mapping[str, TestSet]) -> dict[str, np.ndarray]:
  """'{c_te}/acc_o_pt' and '/acc_o_ft' in percent, each [P]."""
  out = {}
  for name, ts in test_sets.items():
    pred = population_predict(config, readout, params_P, ts.inputs)
    out[f'{name}/acc_o_pt'] = (pred == ts.label_pt).mean(1) * 100
    out[f'{name}/acc_o_ft'] = (pred == ts.label_ft).mean(1) * 100
  return out


def finite_members(params_P) -> np.ndarray:
  """[P] True where every parameter of the member is finite (False: it diverged)."""
  ok = [jnp.isfinite(x).reshape(x.shape[0], -1).all(1) for x in jax.tree.leaves(params_P)]
  return np.asarray(jnp.stack(ok).all(0))


def noisy_params(params, members: Sequence[Member], seed: int, std: float,
                 frozen: Sequence[str] = ()):
  """Stacked copies of params, each with N(0, std^2) noise drawn from its member's seed.

  Members with the same seed get the same noise, so a grid cell differs from
  its neighbours only in what the cell varies.
  """
  copies = []
  for m in members:
    key = jax.random.fold_in(jax.random.PRNGKey(seed), m.seed)
    copies.append(tracr_bridge.add_weight_noise(params, key, std, skip=tuple(frozen)))
  return train.stack(copies)


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


def run_population(*, name: str, tm: tracr_bridge.TracrModel, members: Sequence[Member],
                   params_P, opt_cfg, total_steps: int, batch_fn, test_sets, eval_steps,
                   workdir: pathlib.Path, writer, save_every: int, log_every: int):
  """Trains every member for total_steps in one vmapped jit; resumable.

  Returns (final stacked params, History of test accuracies at eval_steps).
  """
  tx = optim.make_optimizer(opt_cfg, total_steps)
  lr_P = jnp.asarray([m.lr for m in members], jnp.float32)
  state = train.create_population(params_P, tx, lr_P)
  meta = checkpoint.make_meta(f'tracr_population/{name}', tm.config, tm.params,
                              members=[dataclasses.asdict(m) for m in members],
                              total_steps=total_steps)
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints' / name, meta=meta,
                                 save_every=save_every, max_to_keep=2)
  history = History(workdir / 'history' / f'{name}.jsonl', keep_until=ckpt.latest_step() or 0)
  if 0 in eval_steps and not any(r['step'] == 0 for r in history.rows):
    history.add(0, accuracies(tm.config, tm.readout_position, state.params, test_sets))

  def evaluate(params_P, step):
    if step not in eval_steps:
      return {}
    acc = accuracies(tm.config, tm.readout_position, params_P, test_sets)
    history.add(step, acc)
    return {k: v.mean() for k, v in acc.items()}  # Members' mean; per-member in history.

  state = train.train_loop(
      state=state, tx=tx, loss_fn=answer_loss_fn(tm.config, tm.readout_position),
      batch_fn=batch_fn, total_steps=total_steps, workdir=str(workdir), writer=writer,
      checkpointer=ckpt, log_every=log_every,
      evaluators={name: (sorted(s for s in eval_steps if s > 0), evaluate)}, vmap=True)
  ckpt.close()
  return state.params, history
