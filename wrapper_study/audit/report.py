"""The audit's figures, TensorBoard scalars and report.md sections.

Figures: probe accuracy per block (both models, band over probe seeds), pruning
curves per granularity (fine-tuned top-K, random K with its band, pretrained
top-K), reFT curves (fine-tuned vs control, band over seeds), relative weight
change per matrix. TensorBoard: one run per model (`pretrained`, `finetuned`)
with its probe accuracy by block (step = block) and pruning curves (step = K),
one run per reFT arm and seed (`reft/finetuned/seed=0`), and `report`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from wrapper_study.report import plots
from wrapper_study.report import tables

VERDICTS_MEANING = """\
- **decodable**: a linear probe on some block of the fine-tuned model still reads the O_PT
  target about as well as on the pretrained model (within the margin). O_PT's information is
  still in the residual stream; says nothing about whether the model uses it.
- **pruning[weight] / pruning[neuron]**: removing the K units that most support the O_PT loss
  (grad x weight) brings Acc O_PT back, beyond removing K random units: a small set of units
  suppresses a capability that is still there (the paper's "wrapper").
- **reft**: training on O_PT brings it back much sooner than in a matched model that never had
  it (fresh init fine-tuned on O_FT): the capability was hidden, not relearned from scratch.
- **overall**: holds (a wrapper) when reFT holds and probes or pruning hold; does not hold
  (consistent with deletion) when all three do not hold; inconclusive (mixed evidence)
  otherwise. "Not measured" when fine-tuning did not lower Acc O_PT (the manipulation check)
  or the data cannot decide (fewer than 2 seeds, both reFT arms censored)."""


def probe_figure(labels, acc_SxMxLxT, targets, majority_T):
  fig, axes = plt.subplots(1, len(targets), figsize=(4.5 * len(targets), 3.6),
                           layout='constrained', squeeze=False)
  for t, (ax, target) in enumerate(zip(axes[0], targets)):
    for m, model in enumerate(('pretrained', 'finetuned')):
      mean, (lo, hi) = plots.seed_band(acc_SxMxLxT[:, m, :, t])
      line, = ax.plot(labels, mean, marker='o', label=model)
      ax.fill_between(labels, lo, hi, color=line.get_color(), alpha=0.2)
    ax.axhline(majority_T[t], color='grey', ls=':', label='majority class')
    ax.set_title(f'probe target {target}', fontsize=plots.LABEL)
    ax.set_xlabel('block', fontsize=plots.LABEL)
    ax.set_ylabel('held-out probe accuracy (%)', fontsize=plots.LABEL)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=plots.TICK)
  return fig


def prune_figure(granularity: str, out: dict):
  cand = np.asarray(out['candidate'])
  ks = out['ks']
  fig, ax = plt.subplots(figsize=(5.5, 3.8), layout='constrained')
  ax.plot(ks, out['acc_pt'][cand == 'finetuned'][0], marker='.', label='fine-tuned, top-K')
  mean, (lo, hi) = plots.seed_band(out['acc_pt'][cand == 'random'])
  line, = ax.plot(ks, mean, marker='.', label='fine-tuned, random K')
  ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.2)
  ax.plot(ks, out['acc_pt'][cand == 'pretrained'][0], marker='.', label='pretrained, top-K')
  if 'acc_ft' in out:
    ax.plot(ks, out['acc_ft'][cand == 'finetuned'][0], ls='--', label='fine-tuned top-K: Acc O_FT')
  ax.set_xlabel(f'K ({granularity}s pruned)', fontsize=plots.LABEL)
  ax.set_ylabel('Acc O_PT (%)', fontsize=plots.LABEL)
  ax.set_ylim(-3, 103)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=plots.TICK)
  return fig


def reft_figure(out: dict, threshold: float):
  fig, ax = plt.subplots(figsize=(5.5, 3.8), layout='constrained')
  for arm, name in enumerate(('fine-tuned', 'control (fresh init + O_FT)')):
    mean, (lo, hi) = plots.seed_band(out['acc_pt'][:, arm, :].T)
    line, = ax.plot(out['steps'], mean, marker='.', label=name)
    ax.fill_between(out['steps'], lo, hi, color=line.get_color(), alpha=0.2)
  ax.axhline(threshold, color='grey', ls=':', label='revival threshold')
  ax.set_xlabel('reFT iterations on O_PT', fontsize=plots.LABEL)
  ax.set_ylabel('Acc O_PT (%)', fontsize=plots.LABEL)
  ax.set_ylim(-3, 103)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=plots.TICK)
  return fig


def weight_figure(rows):
  fig, ax = plt.subplots(figsize=(6, 0.22 * len(rows) + 1), layout='constrained')
  ax.barh([r['matrix'] for r in rows], [r['relative_change'] for r in rows])
  ax.invert_yaxis()
  ax.set_xlabel('||theta_FT - theta_PT|| / ||theta_PT||', fontsize=plots.LABEL)
  ax.tick_params(labelsize=6)
  return fig


def figures(cfg_labels, probes_out, targets, prune_outs, reft_out, threshold, w_rows) -> dict:
  """stem -> a function drawing it (only for the phases that ran)."""
  out = {}
  if probes_out is not None:
    out['probes'] = lambda: probe_figure(cfg_labels, probes_out['acc'], targets,
                                         probes_out['majority'])
  for g, o in prune_outs.items():
    out[f'pruning_{g}'] = (lambda g=g, o=o: prune_figure(g, o))
  if reft_out is not None:
    out['reft'] = lambda: reft_figure(reft_out, threshold)
  out['weight_change'] = lambda: weight_figure(w_rows)
  return out


def write_scalars(writer, cfg_labels, probes_out, targets, prune_outs, reft_out,
                  acc_rows) -> None:
  """Every curve as TensorBoard scalars (steps: block index, K, reFT iteration)."""
  for r in acc_rows:
    writer.run(r['model']).write_scalars(0, {f'{r["set"]}/acc': r['acc'],
                                             f'{r["set"]}/loss': r['loss']})
  if probes_out is not None:
    for m, model in enumerate(('pretrained', 'finetuned')):
      for b, _ in enumerate(cfg_labels):
        writer.run(model).write_scalars(b, {
            f'probe/{t}': float(probes_out['acc'][:, m, b, i].mean())
            for i, t in enumerate(targets)})
  for g, o in prune_outs.items():
    cand = np.asarray(o['candidate'])
    for j, k in enumerate(o['ks']):
      writer.run('finetuned').write_scalars(int(k), {
          f'pruning_{g}/acc_o_pt_topk': float(o['acc_pt'][cand == 'finetuned'][0, j]),
          f'pruning_{g}/acc_o_pt_random': float(o['acc_pt'][cand == 'random'][:, j].mean())})
      writer.run('pretrained').write_scalars(int(k), {
          f'pruning_{g}/acc_o_pt_topk': float(o['acc_pt'][cand == 'pretrained'][0, j])})
  if reft_out is not None:
    for arm_i, arm in enumerate(('finetuned', 'control')):
      for j, seed in enumerate(reft_out['seeds']):
        run = writer.run(f'reft/{arm}/seed={int(seed)}')
        for i, step in enumerate(reft_out['steps']):
          vals = {'acc_o_pt': float(reft_out['acc_pt'][i, arm_i, j])}
          if 'acc_ft' in reft_out:
            vals['acc_o_ft'] = float(reft_out['acc_ft'][i, arm_i, j])
          run.write_scalars(int(step), vals)
  writer.flush()


def sections(name: str, cap_summary: str, pair_summary: str, claims, acc_rows, probe_rows,
             prune_summary, reft_rows, w_rows, times, stems) -> list[tuple[str, str]]:
  """(heading, markdown) of report.md."""
  overall = claims[-1]
  out = [('Reading', f'**{overall["statement"]}: {overall["verdict"]}.** {overall["reason"]}.\n\n'
          f'Capability: {name} ({cap_summary}). Models: {pair_summary}.'),
         ('Claims, checked', tables.markdown_table(
             claims, ('claim_id', 'verdict', 'value', 'ci_low', 'ci_high', 'n_seeds',
                      'threshold', 'control_value', 'reason'))
          + '\n\nManipulation check: ' + overall['manipulation_check']),
         ('What each verdict means', VERDICTS_MEANING),
         ('Accuracy and loss', tables.markdown_table(acc_rows))]
  if probe_rows:
    out.append(('Probes (held-out accuracy %, every block)', tables.markdown_table(probe_rows)
                + '\n\n![probes](figures/probes.png)'))
  if prune_summary:
    figs = ' '.join(f'![{s}](figures/{s}.png)' for s in stems if s.startswith('pruning_'))
    out.append(('Pruning (Acc O_PT %)', tables.markdown_table(prune_summary) + '\n\n' + figs))
  if reft_rows:
    out.append(('Reverse fine-tuning', tables.markdown_table(reft_rows)
                + '\n\n![reft](figures/reft.png)'))
  top = sorted(w_rows, key=lambda r: -r['relative_change'])[:10]
  out.append(('Weight change (largest 10; all in tables/weight_change.csv)',
              tables.markdown_table(top) + '\n\n![weight change](figures/weight_change.png)'))
  out.append(('Time (s)', tables.markdown_table(times)))
  return out


def prune_summary(prune_outs: dict) -> list[dict]:
  """Per granularity and candidate: Acc O_PT unpruned, best over K, and that K."""
  rows = []
  for g, o in prune_outs.items():
    cand = np.asarray(o['candidate'])
    for name in ('finetuned', 'random', 'pretrained'):
      curve = o['acc_pt'][cand == name].mean(0)
      j = int(np.argmax(curve))
      rows.append(dict(granularity=g, candidate=name, n_units=int(o['n_units']),
                       acc_o_pt_unpruned=float(curve[0]), acc_o_pt_best=float(curve[j]),
                       best_k=int(o['ks'][j])))
  return rows
