"""The TinyStories study: pretrain, delete Twist, reverse fine-tune, score, probe, report.

Paper Sec. 5.2, App. B.3, F; Table 1 and Figs 11, 31-38. This module only
validates the config and sequences the world's phases (wrapper_study/tinystories/),
each resumable (checkpoints, plus results/<run>.json for every evaluation made):
  data       data.prepare: Instruct files (or the synthetic stand-in) -> splits,
             tokenizer, token arrays.
  classifier evaluate.fit_classifier: the local Twist classifier.
  pretrain   train.pretrain: Present and Not-in-PT.
  (pretrain, deletion and reft run once per replicate of config.model_seeds; the
  probes of every replicate's models are fitted together)
  deletion   train.delete: Present fine-tuned with F, F+MM, F+RR at each lr.
  reft       train.reverse_finetune: every deleted model and Not-in-PT on Twist.
  probes     analysis.probe_accuracies: per feature at B0..BL of every model.
  report     claims (each with its check, control and interval) and report: Table 1
             beside the paper, losses, probes, claims, timings.
Config: configs/tinystories_study.py.
"""

from __future__ import annotations

import jax

from wrapper_study import config_check as cc
from wrapper_study import host_devices
from wrapper_study import metrics
from wrapper_study import train as train_lib
from wrapper_study.report import tables
from wrapper_study.tinystories import analysis
from wrapper_study.tinystories import claims as ts_claims
from wrapper_study.tinystories import data
from wrapper_study.tinystories import evaluate
from wrapper_study.tinystories import model as ts_model
from wrapper_study.tinystories import protocols
from wrapper_study.tinystories import report
from wrapper_study.tinystories import tokenizer as tokenizer_lib
from wrapper_study.tinystories import train
from wrapper_study.tinystories.paper import NOT_IN_PT, PAPER_TABLE1_POINTS, PRESENT


def validate(config) -> None:
  """Everything that can be checked before compute; raises ConfigError naming the field."""
  cc.non_negative_int(config, 'seed', 'data.max_examples', 'data.tokenizer_examples',
                      'classifier.n_train', 'classifier.n_test')
  cc.positive(config, 'data.n_shards', 'data.vocab_size', 'model.vocab_size', 'model.max_len',
              'model.d_model', 'model.n_layers', 'model.n_heads', 'model.multiple_of',
              'pretrain.steps', 'pretrain.batch_size', 'pretrain.eval_every',
              'pretrain.save_every', 'pretrain.log_every', 'deletion.steps',
              'deletion.batch_size', 'deletion.save_every', 'deletion.log_every', 'reft.steps',
              'reft.batch_size', 'reft.save_every', 'reft.log_every', 'eval.num_generations',
              'eval.max_new_tokens', 'eval.loss_examples', 'eval.batch_size', 'probe.n_train',
              'probe.n_test', 'probe.steps', 'probe.batch_size', 'probe.feature_batch_size',
              integer=True)
  cc.seeds(config, 'model_seeds')
  cc.positive(config, 'pretrain.lr', 'reft.lr')
  cc.positive_list(config, 'deletion.lrs')
  cc.non_negative_int(config, 'pretrain.warmup_steps')
  cc.fractions(config, 'pretrain.min_lr_ratio')
  cc.fractions(config, 'deletion.rr_fraction')
  if not 0 <= config.pretrain.weight_decay:
    cc.fail('pretrain.weight_decay', config.pretrain.weight_decay, 'must be >= 0')
  if config.pretrain.warmup_steps > config.pretrain.steps:
    cc.fail('pretrain.warmup_steps', config.pretrain.warmup_steps,
            f'must be <= pretrain.steps={config.pretrain.steps}')
  if not 0 < config.eval.temperature:
    cc.fail('eval.temperature', config.eval.temperature, 'must be > 0 (the paper samples at 1.0)')
  if not isinstance(config.data.n_shards, int) or config.data.n_shards < 3:
    cc.fail('data.n_shards', config.data.n_shards,
            'must be an integer >= 3 (a test, a pretraining and a fine-tuning shard)')
  if config.data.vocab_size != config.model.vocab_size:
    cc.fail('model.vocab_size', config.model.vocab_size,
            f'must equal data.vocab_size={config.data.vocab_size} (one embedding row per '
            'tokenizer piece)')
  if config.data.vocab_size <= tokenizer_lib.PAD_ID + 256:
    cc.fail('data.vocab_size', config.data.vocab_size,
            f'must exceed {tokenizer_lib.PAD_ID + 256} (4 special ids and 256 byte pieces); '
            'the paper uses 8192')
  try:
    ts_model.model_config(config).validate()
  except ValueError as e:
    raise cc.ConfigError(f'config.{e}') from None
  if config.eval.max_new_tokens >= config.model.max_len:
    cc.fail('eval.max_new_tokens', config.eval.max_new_tokens,
            f'must leave room for the prompt in model.max_len={config.model.max_len}')
  n_dev = jax.device_count()  # Data parallelism splits every batch over all devices.
  for path in ('pretrain.batch_size', 'deletion.batch_size', 'reft.batch_size'):
    if cc.get(config, path) % n_dev:
      cc.fail(path, cc.get(config, path),
              f'must be divisible by the {n_dev} devices (training is data-parallel; on a '
              f'CPU, {host_devices.ENV}=1 keeps one device)')
  d = config.deletion
  if not d.protocols or any(p not in protocols.PROTOCOLS for p in d.protocols) or (
      len(set(d.protocols)) != len(d.protocols)):
    cc.fail('deletion.protocols', d.protocols,
            f'must be distinct names from {list(protocols.PROTOCOLS)}')
  if len(d.lr_names) != len(d.lrs) or len(set(d.lr_names)) != len(d.lr_names):
    cc.fail('deletion.lr_names', d.lr_names,
            f'must name each of deletion.lrs={tuple(d.lrs)} once (Table 1 uses eta_M, eta_S)')
  for path, total in (('deletion.loss_steps', d.steps), ('reft.loss_steps', config.reft.steps),
                      ('reft.score_steps', config.reft.steps),
                      ('reft.recovery_steps', config.reft.steps)):
    steps = cc.get(config, path)
    if not steps or any(isinstance(s, bool) or not isinstance(s, int) or not 0 < s <= total
                        for s in steps) or list(steps) != sorted(set(steps)):
      cc.fail(path, steps, f'must be a non-empty increasing tuple of steps in 1..{total}')
  if len(config.reft.score_steps) != len(PAPER_TABLE1_POINTS) - 1:
    cc.fail('reft.score_steps', config.reft.score_steps,
            f'must give {len(PAPER_TABLE1_POINTS) - 1} steps, standing for the paper\'s '
            f'{PAPER_TABLE1_POINTS[1:]}')
  data.check_sources(config)  # Data path, synthetic size, feature names (reads file heads).


def plan(config):
  """The training phases as shapes, for `--dry_run` (wrapper_study/dry_run.py)."""
  return train.dry_run_phases(config)


def run(config, workdir) -> dict:
  validate(config)
  workdir = tables.make_workdir(workdir)
  data.check_workdir(config, workdir)
  replicates = train.replicates(config, workdir)
  timing = metrics.PhaseTimes(workdir, plan=[
      'data', 'tokenizer + token arrays', 'classifier',
      *[p for _, _, tag in replicates for p in train.phase_names(config, tag)], 'probes',
      'report'])
  world = data.prepare(config, workdir, timing)
  with timing.timed('classifier'):
    evaluate.fit_classifier(config, workdir, world)
  logs_S, probed = [], {}  # One {run: RunLog} per replicate; the probed models of all.
  for seed, seed_dir, tag in replicates:
    logs, finals = {}, {}
    with metrics.MetricWriter(str(seed_dir)) as writer:
      ctx = train.Context(config=config, world=world,
                          evaluate=evaluate.Evaluator(config, world, seed), workdir=seed_dir,
                          writer=writer, mesh=train_lib.data_mesh(), timing=timing, seed=seed,
                          tag=tag)
      train.pretrain(ctx, finals, logs)
      train.delete(ctx, finals, logs)
      train.reverse_finetune(ctx, finals, logs)
      train.write_hparams(ctx, logs)  # The deletion and reFT grids in TensorBoard's HParams tab.
    logs_S.append(logs)
    probed[tag] = {m: finals[m] for m in [PRESENT, NOT_IN_PT] + train.reft_models(config)[:-1]}
  with timing.timed('probes'):  # Every replicate's models in one fit (one compile).
    every = analysis.probe_accuracies(config, world, {
        tag + m: params for tag, models in probed.items() for m, params in models.items()},
                                      workdir)
    probes_S = [{m: every[tag + m] for m in models} for tag, models in probed.items()]
  # Tables and figures show the mean over replicates (rates pooled over their generations);
  # the claims decide with intervals over replicates when there are several.
  logs = analysis.mean_logs(logs_S)
  probes = analysis.mean_probes(probes_S)
  with metrics.MetricWriter(str(workdir)) as writer, timing.timed('report'):
    rows = report.table1_rows(config, logs)
    found = ts_claims.claims(config, logs_S, probes_S, world.clf_scores,
                             ts_claims.probe_info(world))
    writer.run('summary').write_scalars(
        0, report.summary_scalars(config, rows, probes, world.clf_scores))
    report.figures(config, logs, probes, workdir)
    loss_rows = report.write_tables(config, workdir, world, logs, rows, found, probes,
                                    seed_rows=[report.table1_rows(config, l, seed=s)
                                               for (s, _, _), l in zip(replicates, logs_S)])
  timing.add_total()
  report.write_report(config, workdir, world, logs, rows, found, probes, loss_rows, timing,
                      logs_S)
  metrics.write_report(workdir, workdir / 'report.md')  # Text and figures in TensorBoard.
  return {'table1': rows, 'claims': found, 'probes': probes, 'classifier': world.clf_scores}
