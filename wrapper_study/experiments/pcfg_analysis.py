"""Is the capability still inside? Probes, pruning, reFT and weight change on PCFG models.

Per operand prior: pretrain (resumable; shared with pcfg_study's workdir
layout) -> fine-tune the lr x C_Tr x seed grid for each arm of the variant
(plain fine-tuning; PT+FT mixing; randFT) as one population -> weight change,
linear probes and grad x weight / learned-mask pruning of every member
(`pcfg.analysis`, cached in workdir/analysis/*.npz) -> reverse fine-tuning of
the eta_L models against Scr.+FT and Scr. (`pcfg.train.reft`) -> figures,
tables and claims P1-P4 (`pcfg.report`, `pcfg.claims`) in report_<variant>.md.
Config: configs/pcfg_analysis.py.
"""

from __future__ import annotations

from wrapper_study import metrics
from wrapper_study.pcfg import analysis as pcfg_analysis
from wrapper_study.pcfg import calibration as pcfg_calibration
from wrapper_study.pcfg import claims as pcfg_claims
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import report as pcfg_report
from wrapper_study.pcfg import train as pcfg_train
from wrapper_study.pcfg import validate as pcfg_validate
from wrapper_study.report import plots
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import tables


def validate(config) -> None:
  """pcfg_study's checks plus the analysis fields; raises ConfigError before compute."""
  pcfg_validate.analysis(config)


def _plan(config) -> list[str]:
  """The phases run() times, in order (the `[i/n] phase` headers)."""
  a, plan = config.analysis, []
  for prior in pcfg_calibration.ordered_priors(config):
    name = pcfg_model.prior_name(prior)
    plan.append(f'pretrain {name}')
    plan += pcfg_calibration.phases(config, prior)
    for arm in pcfg_train.arms(config):
      label = f'{name}/{arm.name}'
      plan += [f'fine-tune {label}', f'weight change {label}', f'probes {label}']
      plan += [f'pruning + learned mask {label}'] if a.pruning else []
  plan += ['pretrain Scr.+FT base', 'reFT + Scr.+FT + Scr.'] if a.reft else []
  # figures() only wraps its makers in lambdas: their names are known before any result.
  return plan + [f'figure {stem}.png' for stem in pcfg_report.figures(config, {}, a.reft, [])]


def plan(config):
  """The training phases as shapes, for `--dry_run` (wrapper_study/dry_run.py)."""
  return pcfg_train.dry_run_phases(config, analysis=True)


def run(config, workdir) -> dict:
  validate(config)
  workdir = tables.make_workdir(workdir)
  a = config.analysis
  pt_step = config.pretrain.steps
  # Seconds of the run that completed each phase are kept: a rerun restores
  # finished phases in a moment, and the report still says what they cost.
  times = metrics.PhaseTimes(workdir, f'timing_analysis_{a.variant}', plan=_plan(config))
  results, pre_rows, calibration = {}, [], None
  config = pcfg_calibration.fill_reft_lrs(config)
  with metrics.MetricWriter(workdir) as writer:
    for prior in pcfg_calibration.ordered_priors(config):
      name = pcfg_model.prior_name(prior)
      with times.timed(f'pretrain {name}'):
        acc = pcfg_train.pretrain(config, prior, workdir, writer)
      config, found_lrs = pcfg_calibration.maybe_calibrate(config, prior, workdir, writer, times)
      calibration = calibration or found_lrs
      pre_rows.append(dict(prior=name, steps=pt_step, **{k: round(v, 1) for k, v in acc.items()}))
      pre_params = pcfg_train.load_pretrained(config, prior, pt_step, workdir)
      for arm in pcfg_train.arms(config):
        pop = f'finetune_{pcfg_model.pretrain_name(config, prior)}_{pt_step}'
        pop += '' if arm.name == 'ft' else f'_{arm.name}'
        with times.timed(f'fine-tune {name}/{arm.name}'):
          members, history, params_P = pcfg_train.finetune(
              pcfg_train.arm_config(config, arm), prior, pt_step, pre_params, workdir, writer,
              name=pop, extra_pt_families=pcfg_model.jailbreak_families(config))
        r = dict(members=members, history=history, params_P=params_P, pre_acc=tuple(acc.values()))
        r.update(pcfg_analysis.analyse(config, pop, pre_params, params_P, workdir, times,
                                       f'{name}/{arm.name}'))
        results[(name, arm)] = r

    reft_out = None
    if a.reft:
      scr_prior = tuple(a.scr_ft_prior)
      with times.timed('pretrain Scr.+FT base'):  # Its own init and data seed.
        pcfg_train.pretrain(config, scr_prior, workdir, writer,
                            prior_index=len(config.pretrain.priors))
      scr_params = pcfg_train.load_pretrained(config, scr_prior, pt_step, workdir)
      sources = {f'{p}/{arm.name}': (r['members'], r['params_P'])
                 for (p, arm), r in results.items()}
      with times.timed('reFT + Scr.+FT + Scr.'):
        reft_out = pcfg_train.reft(config, sources, scr_params, workdir, writer)

  w_rows = pcfg_report.weight_rows(config, results)
  # A rerun draws a figure again only if its data or the plotting code changed.
  data_key = metrics.digest(str(config), [(str(k), r['params_P'], r['probes'], r.get('prune'),
                                           r['weights']) for k, r in results.items()],
                            reft_out and (str(reft_out[0]), reft_out[1].curve('c_te0/acc_o_pt')))
  for stem, make in pcfg_report.figures(config, results, reft_out, w_rows).items():
    path = workdir / 'figures' / f'{stem}.png'
    with times.timed(f'figure {path.name}'):
      plots.save_once(make, path, data_key, pcfg_report)
  found = pcfg_claims.analysis(config, results, reft_out)
  p_rows = pcfg_report.probe_rows(config, results)
  m_rows = pcfg_report.mask_rows(config, results) if a.pruning else None
  r_rows = pcfg_report.reft_rows(config, *reft_out) if reft_out else None
  out_dir, v = workdir / 'tables', a.variant
  tables.write_csv(out_dir / f'analysis_{v}_claims.csv', found, claims_lib.CLAIMS_COLUMNS)
  tables.write_csv(out_dir / f'analysis_{v}_weight_change.csv', w_rows)
  tables.write_csv(out_dir / f'analysis_{v}_probes.csv', p_rows)
  if m_rows is not None:
    tables.write_csv(out_dir / f'analysis_{v}_learned_mask.csv', m_rows)
  if r_rows is not None:
    tables.write_csv(out_dir / f'analysis_{v}_reft.csv', r_rows)
  if calibration is not None:
    tables.write_csv(out_dir / 'calibration.csv', calibration['rows'])
  times.add_total()
  tables.write_csv(out_dir / f'analysis_{v}_timing.csv', times.rows)
  path = tables.write_report(workdir / f'report_{v}.md', f'PCFG wrapper analysis ({v})',
                             pcfg_report.analysis_sections(config, found, pre_rows, p_rows,
                                                           m_rows, r_rows, w_rows, times.rows,
                                                           calibration))
  metrics.write_report(workdir, path)  # Text and figures in TensorBoard.
  return {'claims': found, 'timing': times.rows, 'probes': p_rows, 'report': path}
