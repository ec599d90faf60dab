"""Audit a pretrained / fine-tuned pair: is the capability deleted, or wrapped?

Sequences the stages of `wrapper_study.audit` (load and check the pair and the
capability spec -> accuracy and loss -> weight change -> probes -> pruning per
granularity -> reverse fine-tuning beside the control -> verdicts -> figures,
tables, report.md, TensorBoard). Config: configs/audit.py; CLI:
`wrapper-study audit --pretrained=DIR --finetuned=DIR --capability=FILE --workdir=...`.
"""

from __future__ import annotations

import numpy as np

from wrapper_study import config_check
from wrapper_study import metrics
from wrapper_study.analysis import probing
from wrapper_study.audit import measure
from wrapper_study.audit import models
from wrapper_study.audit import prune
from wrapper_study.audit import report as audit_report
from wrapper_study.audit import revive
from wrapper_study.audit import spec as spec_lib
from wrapper_study.audit import verdicts
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import plots
from wrapper_study.report import tables


def validate(config) -> None:
  """Every check that needs no model weights: fields, directories, the spec's files.

  Also sets config.inputs_digest (the models' and the spec's files by name, size and time):
  the launcher's finished-run record is keyed by the config, so a checkpoint or data file
  changed under the same paths makes the audit run again.
  """
  for field in ('pretrained', 'finetuned', 'capability'):
    if not config_check.get(config, field):
      config_check.fail(field, config_check.get(config, field),
                        'must be given (--%s=... or --config.%s=...)' % (field, field))
  models.check(config.pretrained, 'pretrained')
  models.check(config.finetuned, 'finetuned')
  config_check.positive(config, 'eval.chunk', 'eval.batch_size', 'probe.steps',
                        'reft.batch_size', 'reft.eval_every', 'reft.steps', integer=True)
  config_check.positive(config, 'probe.lr', 'reft.lr', 'reft.control_ft_lr')
  config_check.non_negative_int(config, 'reft.control_ft_steps', 'seed',
                                'pruning.random_draws', 'pruning.chunk_size')
  config_check.one_of(config, 'probe.method', probing.METHODS)
  config_check.subset_of(config, 'pruning.granularities', ('weight', 'neuron'), allow_empty=True)
  config_check.one_of(config, 'pruning.eligible', ('blocks', 'attn', 'mlp', 'mlp_hidden'))
  config_check.seeds(config, 'probe.seeds')
  config_check.seeds(config, 'reft.seeds')
  if config.pruning.granularities and config.pruning.random_draws < 1:
    config_check.fail('pruning.random_draws', config.pruning.random_draws,
                      'must be >= 1 when pruning runs (the random-unit control)')
  config.inputs_digest = models.files_digest(config.pretrained, config.finetuned,
                                             *spec_lib.files_of(config.capability))
  if not 0 < config.verdicts.revival_fraction <= 1:
    config_check.fail('verdicts.revival_fraction', config.verdicts.revival_fraction,
                      'must be in (0, 1]')


def run(config, workdir) -> dict:
  validate(config)
  workdir = tables.make_workdir(workdir)
  cap = spec_lib.load(config.capability)
  cfg, pre, ft = models.load_pair(config.pretrained, config.finetuned)
  spec_lib.validate(cap, cfg.vocab_size, cfg.n_outputs, cfg.max_len)
  grains = tuple(config.pruning.granularities)
  probe_on = config.probe.enabled and cap.probe_train is not None
  plan = ['accuracy and loss', 'weight change'] + (['probes'] if probe_on else [])
  plan += [f'pruning {g}' for g in grains] + (['reFT + control'] if config.reft.enabled else [])
  times = metrics.PhaseTimes(workdir, 'timing_audit', plan=plan + ['report'])
  pair = {'pretrained': pre, 'finetuned': ft}
  chunk = config.eval.chunk
  with times.timed('accuracy and loss'):
    acc_rows = measure.set_metrics(cfg, pair, {'o_pt': cap.o_pt_eval, 'o_ft': cap.o_ft_eval},
                                   chunk)
  with times.timed('weight change'):
    w_rows = measure.weight_rows(pre, ft)
  probes_out = None
  if probe_on:
    with times.timed('probes'):
      probes_out = measure.probes(cfg, pair, cap, config.probe, config.eval.batch_size)
  prune_outs = {}
  for g in grains:
    with times.timed(f'pruning {g}'):
      prune_outs[g] = prune.sweep(cfg, pre, ft, cap, config.pruning, config.seed, chunk, g)
  reft_out = None
  if config.reft.enabled:
    with times.timed('reFT + control'):
      reft_out = revive.reft(cfg, ft, cap, config.reft, chunk)

  pre_acc = measure.lookup(acc_rows, 'pretrained', 'o_pt')
  ft_acc = measure.lookup(acc_rows, 'finetuned', 'o_pt')
  claims = verdicts.all_claims(pre_acc, ft_acc, probes_out, prune_outs, reft_out,
                               config.verdicts, config.reft.eval_every)
  threshold = config.verdicts.revival_fraction * pre_acc
  labels = probing.site_labels(cfg)
  probe_rows = (measure.probe_rows(cfg, pair, cap, probes_out, config.probe.seeds)
                if probes_out is not None else [])
  reft_rows = revive.reft_rows(reft_out, threshold) if reft_out is not None else []
  prune_rows = [r for g, o in prune_outs.items() for r in prune.curve_rows(g, o)]
  with times.timed('report'):
    with metrics.MetricWriter(workdir) as writer:
      audit_report.write_scalars(writer, labels, probes_out, cap.probe_targets, prune_outs,
                                 reft_out, acc_rows)
    makers = audit_report.figures(labels, probes_out, cap.probe_targets, prune_outs, reft_out,
                                  threshold, w_rows)
    for stem, make in makers.items():
      plots.save(make(), workdir / 'figures' / f'{stem}.png')
    out_dir = workdir / 'tables'
    tables.write_csv(out_dir / 'claims.csv', claims, claims_lib.CLAIMS_COLUMNS)
    tables.write_csv(out_dir / 'accuracy.csv', acc_rows)
    tables.write_csv(out_dir / 'weight_change.csv', w_rows)
    top_rows = [dict(granularity=g, rank=i, unit=str(u)) for g, o in prune_outs.items()
                for i, u in enumerate(o['top_units'])]
    for name, rows in (('probes', probe_rows), ('pruning', prune_rows), ('reft', reft_rows),
                       ('top_units', top_rows)):
      if rows:
        tables.write_csv(out_dir / f'{name}.csv', rows)
    np.savez(workdir / 'audit_arrays.npz', **_arrays(probes_out, prune_outs, reft_out))
  times.add_total()
  tables.write_csv(out_dir / 'timing.csv', times.rows)
  cap_summary = (f'O_PT {cap.o_pt_train.n} + {cap.o_pt_eval.n} held out'
                 + (f', O_FT {cap.o_ft_eval.n} held out' if cap.o_ft_eval is not None else '')
                 + (f', probe targets {list(cap.probe_targets)}' if probe_on else ''))
  pair_summary = (f'{config.pretrained} -> {config.finetuned} ({cfg.n_layers} blocks, '
                  f'd_model {cfg.d_model}, vocabulary {cfg.vocab_size})')
  path = tables.write_report(workdir / 'report.md', f'Audit: {cap.name}', audit_report.sections(
      cap.name, cap_summary, pair_summary, claims, acc_rows, probe_rows,
      audit_report.prune_summary(prune_outs), reft_rows, w_rows, times.rows, list(makers)))
  metrics.write_report(workdir, path)
  return {'claims': claims, 'accuracy': acc_rows, 'probes': probes_out, 'pruning': prune_outs,
          'reft': reft_out, 'report': path}


def _arrays(probes_out, prune_outs, reft_out) -> dict:
  """Every curve in one file, for tests and notebooks."""
  out = {}
  if probes_out is not None:
    out.update(probe_acc=probes_out['acc'], probe_majority=probes_out['majority'])
  for g, o in prune_outs.items():
    out.update({f'pruning_{g}_{k}': v for k, v in o.items() if k != 'top_units'})
  if reft_out is not None:
    out.update({f'reft_{k}': v for k, v in reft_out.items()})
  return out
