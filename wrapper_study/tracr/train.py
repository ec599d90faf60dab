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
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from wrapper_study import losses
from wrapper_study import model as model_lib
from wrapper_study import population
from wrapper_study import tracr_bridge
from wrapper_study import tracr_tasks
from wrapper_study import train


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


def make_batch_fn(data: TaskData, members: Sequence[population.Member], batch_size: int, seed: int,
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
      rng = population.stream_rng(seed, s, c, step, salt)
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


def noisy_params(params, members: Sequence[population.Member], seed: int, std: float,
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


def run_population(*, name: str, tm: tracr_bridge.TracrModel, members, params_P, opt_cfg,
                   total_steps: int, batch_fn, test_sets, eval_steps, workdir, writer,
                   save_every: int, log_every: int):
  """population.run_population with the Tracr answer loss and test-set accuracies."""
  return population.run_population(
      name=name, model_config=tm.config, members=members, params_P=params_P, opt_cfg=opt_cfg,
      total_steps=total_steps, batch_fn=batch_fn,
      loss_fn=answer_loss_fn(tm.config, tm.readout_position),
      evaluate=lambda p: accuracies(tm.config, tm.readout_position, p, test_sets),
      eval_steps=eval_steps, workdir=workdir, writer=writer, save_every=save_every,
      log_every=log_every)
