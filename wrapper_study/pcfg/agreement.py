"""The PCFG run against the paper's Tables 5-8, entry by entry (issue 29).

A row of ours (pcfg.report.table_rows) stands for the paper's cell of the same
role, as the table layout pairs them: the lr of the same rank (App. C's eta_L,
eta_M, eta_S, when the run has three), the named prior's P(a), the same C_Tr;
our first two evaluation points for the paper's 1K and 10K. Each paper table is
read at our longest kept checkpoint that stands for its pretraining length
(paper.table_steps). A paper entry with no counterpart at our scale (a C_Tr,
prior, lr or evaluation point not run, no checkpoint for the table, the other
task's tables) is counted as not compared and named. Scored by
report.agreement: within 10 points, a cell collapsed when a seed's model gives
<= COLLAPSED_MAX distinct answers.
"""

from __future__ import annotations

from wrapper_study.pcfg import claims as pcfg_claims
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import paper
from wrapper_study.pcfg import tasks
from wrapper_study.pcfg import train as pcfg_train
from wrapper_study.report import agreement as agreement_lib
from wrapper_study.report import paper_agreement

# The paper's column order within a cell (paper.TABLES): metric-major, then 1K, 10K.
METRICS = ('c_te0/acc_o_pt', 'c_te1/acc_o_pt', 'c_te0/acc_o_ft', 'c_te1/acc_o_ft')
POINTS = ('1K', '10K')
NAMES = {('counter', paper.LONG_PRETRAIN_STEPS): 'Table 5',
         ('counter', paper.SHORT_PRETRAIN_STEPS): 'Table 6',
         ('indexer', paper.LONG_PRETRAIN_STEPS): 'Table 7',
         ('indexer', paper.SHORT_PRETRAIN_STEPS): 'Table 8'}


def _key(x) -> float:
  return float(f'{x:g}')


def paper_lrs(config) -> dict:
  """Our lr -> the paper's lr of the same rank (itself unless the run has three)."""
  lrs = sorted(config.finetune.lrs, reverse=True)
  if len(lrs) != len(paper.APPENDIX_C_LRS):
    return {lr: lr for lr in lrs}
  return dict(zip(lrs, sorted(paper.APPENDIX_C_LRS, reverse=True)))


def paper_p_a(config) -> dict:
  """Our prior's name -> the paper's P(a) of its role (the named prior's, not this scale's)."""
  terminals = pcfg_model.vocab(config).terminals
  return {pcfg_model.prior_name(p): float(tasks.resolve_prior(p, terminals)[0])
          for p in config.pretrain.priors}


def paper_cell(config, row) -> tuple:
  """(lr, P(a), C_Tr) of the paper's table that our row (a dict, or a CSV row) stands for."""
  lr = float(row['lr'])  # Floats, or the strings of a table read back.
  return (_key(paper_lrs(config).get(lr, lr)), paper_p_a(config)[row['prior']],
          _key(float(row['c_tr'])))


def mapping(config, rows, table_steps: int) -> tuple[dict, dict, str]:
  """Ours keyed as the paper's table: ((lr, P(a), C_Tr, column) -> value, cell -> fewest
  distinct answers of any seed at the compared points, the checkpoint read ('' = none))."""
  steps = sorted({int(r['pt_steps']) for r in rows
                  if paper.table_steps(int(r['pt_steps'])) == table_steps})
  if not steps:
    return {}, {}, ''
  evals = tuple(config.finetune.eval_steps)[:len(POINTS)]
  ours, distinct = {}, {}
  for r in rows:
    if int(r['pt_steps']) != steps[-1]:
      continue
    cell = paper_cell(config, r)
    for metric in METRICS:
      for j, s in enumerate(evals):
        ours[cell + (f'{metric}@{POINTS[j]}',)] = r.get(f'{metric}@{s}')
    seen = [x for s in evals for x in pcfg_claims.seeds_of(r, f'{pcfg_claims.DISTINCT}@{s}')]
    distinct[cell] = min(seen) if seen else None
  return ours, distinct, f'pretraining step {steps[-1]}'


def paper_table(task: str, table_steps: int) -> dict:
  """The paper's table keyed as `mapping`: (lr, P(a), C_Tr, column) -> value."""
  return {cell + (f'{m}@{p}',): values[2 * k + j]
          for cell, values in paper.table(task, table_steps).items()
          for k, m in enumerate(METRICS) for j, p in enumerate(POINTS)}


def _not_compared(ours: dict, ref: dict, read_at: str, steps: int) -> dict:
  """Reason -> paper entries without a counterpart of ours, named by what was not run."""
  if not read_at:
    return {f'no checkpoint for its {steps // 1000}K pretraining iterations': len(ref)}
  missing = [k for k in ref if k not in ours]
  out = {}
  for i, what in ((2, 'C_Tr'), (1, 'P(a)'), (0, 'lr')):
    ran = {k[i] for k in ours}
    absent = sorted({k[i] for k in missing} - ran)
    n = sum(1 for k in missing if k[i] in absent)
    missing = [k for k in missing if k[i] not in absent]
    if n:
      out[f'{what} {", ".join(f"{v:g}" for v in absent)} not run'] = n
  if missing:  # Every cell dimension ran: a column (evaluation point) did not.
    out['its 10K evaluation point (the run has one)'] = len(missing)
  return out


def summary_rows(config, rows) -> list[dict]:
  """tables/paper_agreement.csv: one row per paper table (Tables 5-8) and the total."""
  out = []
  for (task, steps), name in NAMES.items():
    ref = paper_table(task, steps)
    if task != config.finetune.task:
      out.append(paper_agreement.row(
          name, None, len(ref), {f'task {task} not run': len(ref)}))
      continue
    ours, distinct, read_at = mapping(config, rows, steps)
    compared = {k: v for k, v in ref.items() if k in ours}  # Ours diverged: in, disagrees.
    found = agreement_lib.compare(ours, compared, distinct=distinct,
                                  max_distinct=pcfg_train.COLLAPSED_MAX) if read_at else None
    out.append(paper_agreement.row(name, found, len(ref),
                                   _not_compared(ours, ref, read_at, steps), read_at))
  return paper_agreement.with_total(out)


def line(config, rows) -> str:
  """The report line beside the verdicts."""
  return paper_agreement.line(summary_rows(config, rows))
