"""The PCFG world: pretrain on the grammar, fine-tune the lr x C_Tr x seed grid.

Per operand prior: pretrain (`pcfg.train.pretrain`, checkpoints kept at
pretrain.keep_steps) -> with finetune.lrs=(), after the calibration prior's
pretraining, pick eta_L/M/S by behaviour (`pcfg.calibration`) -> for each kept
checkpoint, fine-tune the grid as one
population (`pcfg.train.finetune`) -> Acc O_PT / Acc O_FT at C_Te = 0 and 1 at
the two evaluation points in the layout of Tables 5-8 beside the paper
(`pcfg.report`) -> the Table 5 signatures with verdicts (`pcfg.claims`).
Config: configs/pcfg_study.py.
"""

from __future__ import annotations

from wrapper_study import metrics
from wrapper_study.pcfg import agreement as pcfg_agreement
from wrapper_study.pcfg import calibration as pcfg_calibration
from wrapper_study.pcfg import claims as pcfg_claims
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import report as pcfg_report
from wrapper_study.pcfg import train as pcfg_train
from wrapper_study.pcfg import validate as pcfg_validate
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import paper_agreement
from wrapper_study.report import tables


def validate(config) -> None:
  """Everything that can be checked without compute; raises ConfigError."""
  pcfg_validate.study(config)


def plan(config):
  """The training phases as shapes, for `--dry_run` (wrapper_study/dry_run.py)."""
  return pcfg_train.dry_run_phases(config)


def run(config, workdir) -> dict:
  validate(config)
  workdir = tables.make_workdir(workdir)
  priors = pcfg_calibration.ordered_priors(config)
  plan = [p for prior in priors for p in
          [f'pretrain {pcfg_model.prior_name(prior)}'] +
          pcfg_calibration.phases(config, prior) +
          [f'finetune {pcfg_model.prior_name(prior)}@{s}' for s in config.pretrain.keep_steps]]
  times = metrics.PhaseTimes(workdir, 'timing_pcfg_study', plan=plan)
  rows, pre_rows, calibration = [], [], None
  with metrics.MetricWriter(workdir) as writer:
    for prior in priors:
      name = pcfg_model.prior_name(prior)
      with times.timed(f'pretrain {name}'):
        acc = pcfg_train.pretrain(config, prior, workdir, writer)
      config, found_lrs = pcfg_calibration.maybe_calibrate(config, prior, workdir, writer, times)
      calibration = calibration or found_lrs
      pre_rows.append(dict(prior=name, steps=config.pretrain.steps,
                           **{k: round(v, 1) for k, v in acc.items()}))
      for pt_step in config.pretrain.keep_steps:
        with times.timed(f'finetune {name}@{pt_step}'):
          params = pcfg_train.load_pretrained(config, prior, pt_step, workdir)
          members, history, _ = pcfg_train.finetune(config, prior, pt_step, params, workdir,
                                                    writer)
        # The pretrained accuracy belongs to the final checkpoint only.
        pre = tuple(acc.values())[:2] if pt_step == config.pretrain.steps else (float('nan'),) * 2
        rows += pcfg_report.table_rows(config, prior, pt_step, members, history, pre)
  found = pcfg_claims.study(config, rows, calibrated=calibration is not None)
  tables_dir = workdir / 'tables'
  tables.write_csv(tables_dir / 'pretrained_accuracy.csv', pre_rows)
  tables.write_csv(tables_dir / f'finetune_{config.finetune.task}.csv', rows)
  tables.write_csv(tables_dir / 'claims.csv', found, claims_lib.CLAIMS_COLUMNS)
  tables.write_csv(tables_dir / paper_agreement.CSV, pcfg_agreement.summary_rows(config, rows))
  if calibration is not None:
    tables.write_csv(tables_dir / 'calibration.csv', calibration['rows'])
  times.add_total()
  tables.write_csv(tables_dir / 'timing.csv', times.rows)
  tables.write_report(workdir / 'report.md', 'PCFG study', pcfg_report.study_sections(
      config, pre_rows, rows, found, times.rows, calibration,
      f'figures/{pcfg_calibration.FIGURE}.png'))
  metrics.write_report(workdir, workdir / 'report.md')  # Text and figures in TensorBoard.
  return {'pretrained': pre_rows, 'finetune': rows, 'claims': found, 'calibration': calibration}
