"""The Tracr study: compiled Counter and Max-identifier in Flax.

Compile (cached) -> load into the shared transformer -> accuracy on fresh inputs
-> attention maps -> tables, TensorBoard, checkpoint of the loaded weights and
report.md. Config: configs/tracr_study.py.
"""

from __future__ import annotations

import functools
import pathlib
import time

from absl import logging
import jax
import numpy as np

from wrapper_study import checkpoint
from wrapper_study import config_check as cc
from wrapper_study import metrics
from wrapper_study import model as model_lib
from wrapper_study import plots
from wrapper_study import report
from wrapper_study import tracr_bridge
from wrapper_study import tracr_tasks

PROGRAMS = ('counter', 'max_identifier')
# The program kwarg that sets the compiled operand.
_OPERAND_KWARG = {'counter': 'count_token', 'max_identifier': 'rank'}


def task_spec(config, program: str) -> tracr_tasks.TaskSpec:
  t = config[program]
  return tracr_tasks.TaskSpec(program=program, vocab=t.vocab, seq_len=t.seq_len,
                              operand_pt=t.operand_pt, operand_ft=t.operand_ft, q=t.q)


def validate(config) -> None:
  """Everything that can be checked without compute; raises ConfigError."""
  cc.subset_of(config, 'programs', PROGRAMS)
  cc.non_negative_int(config, 'seed', 'figures.num_inputs')
  cc.positive(config, 'eval.num_samples', 'eval.batch_size', integer=True)
  for program in config.programs:
    try:
      task_spec(config, program).validate(prefix=program)
    except ValueError as e:
      raise cc.ConfigError(f'config.{e}') from None


def compile_model(config, program: str, operand=None) -> tracr_bridge.TracrModel:
  """The program compiled for `operand` (default: the pretraining operand)."""
  spec = task_spec(config, program)
  operand = spec.operand_pt if operand is None else operand
  return tracr_bridge.get_compiled(
      program, vocab=list(spec.vocab), max_seq_len=spec.seq_len,
      program_kwargs={_OPERAND_KWARG[program]: operand},
      cache_dir=config.cache_dir or None)


def labels(spec: tracr_tasks.TaskSpec, tm: tracr_bridge.TracrModel, tokens_NxL, operand):
  """Class ids of r(x, operand) in the compiled model's output space.

  -1 where the value is not an output class (cannot be predicted).
  """
  values = tracr_tasks.result(spec, tokens_NxL, operand)
  if spec.program == 'max_identifier':
    values = np.array([spec.vocab[v] for v in values])
  return tracr_tasks.label_ids(values, tm.output_values)


def model_inputs(spec, tm, tokens_NxL) -> np.ndarray:
  return tm.encode(tracr_tasks.to_strings(spec, tokens_NxL))


@functools.lru_cache(maxsize=None)
def _forward_fn(config: model_lib.TransformerConfig, names: tuple[str, ...] = ()):
  """One jitted forward per (architecture, cached names): compiled once, reused."""
  def fwd(params, tokens_BxT):
    return model_lib.run_with_cache(config, params, tokens_BxT, names=names)
  return jax.jit(fwd)


def predict(tm: tracr_bridge.TracrModel, params, inputs_BxT, batch_size: int) -> np.ndarray:
  """Predicted class ids at the read-out position, batch by batch."""
  fwd = _forward_fn(tm.config)
  out = []
  for i in range(0, len(inputs_BxT), batch_size):
    logits, _ = fwd(params, inputs_BxT[i:i + batch_size])
    out.append(np.asarray(logits[:, tm.readout_position].argmax(-1)))
  return np.concatenate(out)


def attention_patterns(tm, params, inputs_BxT) -> np.ndarray:
  """[B, n_layers, T, T] attention of head 0 (the paper's programs have one head)."""
  names = tuple(f'blocks.{l}.attn.hook_pattern' for l in range(tm.config.n_layers))
  _, cache = _forward_fn(tm.config, names)(params, inputs_BxT)
  return np.stack([np.asarray(cache[n][:, 0]) for n in names], axis=1)


def token_labels(tm, inputs_BxT) -> list[list[str]]:
  inv = {i: str(v) for v, i in tm.input_encoding.items()}
  inv[tm.input_encoding[tm.bos]] = tm.bos
  return [[inv[int(t)] for t in row] for row in inputs_BxT]


def run(config, workdir) -> dict:
  workdir = pathlib.Path(workdir)
  validate(config)
  for sub in ('figures', 'tables'):
    (workdir / sub).mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(config.seed)
  rows, sections = [], []
  with metrics.MetricWriter(workdir) as writer:
    for step, program in enumerate(config.programs):
      ######## Compile and load ########
      spec = task_spec(config, program)
      t0 = time.time()
      tm = compile_model(config, program)
      logging.info('%s: loaded into Flax in %.1fs: %s', program, time.time() - t0, tm.config)
      ckpt = checkpoint.Checkpointer(workdir / 'checkpoints' / f'{program}_compiled',
                                     meta=tracr_meta(tm), save_every=1, max_to_keep=1)
      ckpt.save(0, {'params': tm.params}, force=True)
      ckpt.wait()
      ckpt.close()

      ######## Accuracy on fresh inputs ########
      tokens = tracr_tasks.sample(spec, rng, config.eval.num_samples, c_tr=0.0)
      inputs = model_inputs(spec, tm, tokens)
      pred = predict(tm, tm.params, inputs, config.eval.batch_size)
      acc_pt = float((pred == labels(spec, tm, tokens, spec.operand_pt)).mean() * 100)
      acc_ft = float((pred == labels(spec, tm, tokens, spec.operand_ft)).mean() * 100)
      rows.append(dict(program=program, seq_len=spec.seq_len, d_model=tm.config.d_model,
                       n_layers=tm.config.n_layers, d_mlp=tm.config.d_mlp,
                       n_samples=len(tokens), acc_o_pt=acc_pt, acc_o_ft=acc_ft))
      writer.write_scalars(step, {f'compiled/{program}/acc_o_pt': acc_pt,
                                  f'compiled/{program}/acc_o_ft': acc_ft})
      logging.info('%s: Acc O_PT %.1f%%, Acc O_FT %.1f%% on %d fresh inputs',
                   program, acc_pt, acc_ft, len(tokens))

      ######## Attention maps ########
      n_fig = config.figures.num_inputs
      if n_fig:
        fig_inputs = inputs[:n_fig]
        pats = attention_patterns(tm, tm.params, fig_inputs)
        fig = plots.attention_maps(
            pats, token_labels(tm, fig_inputs),
            row_titles=[f'input {i}' for i in range(n_fig)],
            title=f'Compiled {program} (O_PT={spec.operand_pt}): attention per block')
        writer.write_images(step, {f'compiled/{program}/attention': fig})
        plots.save(fig, workdir / 'figures' / f'attention_compiled_{program}.png')

  columns = ['program', 'seq_len', 'd_model', 'n_layers', 'd_mlp', 'n_samples', 'acc_o_pt', 'acc_o_ft']
  report.write_csv(workdir / 'tables' / 'compiled_accuracy.csv', rows, columns)
  sections.append(('Compiled models (no training)', report.markdown_table(rows, columns) + '\n\n'
                   'Acc O_PT should be 100: the Flax port runs tracr\'s weights unchanged. '
                   'Acc O_FT is the chance-level agreement with the fine-tuning task.'))
  figs = sorted(p.name for p in (workdir / 'figures').glob('*.png'))
  sections.append(('Figures', '\n'.join(f'![{f}](figures/{f})' for f in figs) or 'none'))
  report.write_report(workdir / 'report.md', 'Tracr study', sections)
  return {'compiled': rows}


def tracr_meta(tm: tracr_bridge.TracrModel) -> dict:
  """What a checkpoint of this model must match to be restored into it."""
  return {'kind': 'tracr', 'program': tm.name, 'model': tm.config.to_dict(),
          'param_shapes': {k: list(v) for k, v in model_lib.param_shapes(tm.params).items()}}
