"""The Tracr attention maps per block (Figs 10, 40-45) and first-MLP maps (Figs 46, 53).

The inputs drawn contain the operands (issue 28: a Counter input with no a and
no b gives the count head nothing to attend to). Rendered once per content
(plots.save_once), each image also in TensorBoard.
"""

from __future__ import annotations

import sys

from absl import logging
import numpy as np

from wrapper_study import metrics
from wrapper_study import population
from wrapper_study import progress
from wrapper_study.report import plots
from wrapper_study.tracr import analysis


def map_rows(spec, tokens_NxL: np.ndarray, n: int) -> np.ndarray:
  """Indices of the n inputs the maps draw: when the operands are tokens (Counter), rows that
  contain both, so the count head has something to attend to (issue 28: an input with no a
  and no b showed nothing); rows that lack them only if too few have both. Otherwise the
  first n."""
  vocab = list(spec.vocab)
  ids = [vocab.index(o) for o in (spec.operand_pt, spec.operand_ft)
         if isinstance(o, str) and o in vocab]
  if not ids:
    return np.arange(min(n, len(tokens_NxL)))
  has_both = np.all([(tokens_NxL == i).any(1) for i in ids], axis=0)
  return np.concatenate([np.flatnonzero(has_both), np.flatnonzero(~has_both)])[:n]


def map_figures(config, data, members, params_P, test_sets, workdir, writer) -> list:
  """Attention maps per block (Figs 10, 40-45) and first-MLP maps (Figs 46, 53)."""
  n, tm, task = config.figures.num_inputs, data.tm, data.spec.task
  if not n:
    return []
  ts = test_sets['c_te0']
  inputs = ts.inputs[map_rows(data.spec, ts.tokens, n)]
  seed0 = config.finetune.seeds[0]
  shown = [('compiled', tm.params)]
  for lr in sorted(config.finetune.lrs):  # Ascending, as in every figure.
    for c in config.figures.c_trs:
      i = next(i for i, m in enumerate(members) if (m.lr, m.c_tr, m.seed) == (lr, c, seed0))
      shown.append((f'lr={lr:g} C_Tr={c:g}', population.member_params(params_P, i)))
  names = [f'blocks.{l}.attn.hook_pattern' for l in range(tm.config.n_layers)]
  mlp = 'blocks.0.mlp.hook_post'

  def compute():  # [n, S, L, T, T] attention (head 0) and [S, T, d_mlp] MLP of input 0.
    bar = progress.Progress(f'{task}: attention and MLP maps of {len(shown)} models',
                            (n + 1) * len(shown), every_s=3.0)
    pats = []
    for j in range(n):
      row = []
      for _, p in shown:
        row.append(np.stack([analysis.activations(tm, p, inputs[j:j + 1], names)[nm][0, 0]
                             for nm in names]))
        bar.update()
      pats.append(np.stack(row))
    acts = []
    for _, p in shown:
      acts.append(analysis.activations(tm, p, inputs[:1], [mlp])[mlp][0])
      bar.update()
    return {'attention': np.stack(pats), 'mlp': np.stack(acts)}

  key = metrics.digest([p for _, p in shown], inputs, str(tm.config))
  maps = metrics.cached_arrays(workdir / 'results' / f'maps_{task}_{key}.npz', compute)
  written = []
  labels = analysis.token_labels(tm, inputs)
  titles = [s for s, _ in shown]
  for j in range(n):
    path = workdir / 'figures' / f'attention_{task}_input{j}.png'
    fkey = plots.figure_key(metrics.digest(key, labels[j], titles), sys.modules[__name__])
    if not plots.rendered(path, fkey):  # A rerun keeps the figure (and its TensorBoard image).
      logging.info('%s: drawing %s (%d models x %d blocks)', task, path.name, len(shown),
                   tm.config.n_layers)
      fig = plots.attention_maps(maps['attention'][j], [labels[j]] * len(shown), titles,
                                 title=f'{task}: attention per block, input {j} '
                                       f'(O_PT={data.spec.operand_pt})')
      plots.save(fig, path, fkey)  # Rendered once: TensorBoard gets the file's PNG.
      writer.write_images(0, {f'{task}/attention/input{j}': path.read_bytes()})
    written.append(path)
  written.append(plots.save_once(
      lambda: plots.activation_map(maps['mlp'], [labels[0]] * len(shown), titles,
                                   title=f'{task}: first MLP activations (input 0)'),
      workdir / 'figures' / f'mlp_{task}.png', metrics.digest(key, labels[0], titles),
      sys.modules[__name__]))
  return written
