"""Every Tracr claim fails, is not measured, or holds on synthetic evidence; issue 11's fixes.

The claims read per-member rows (tables members_/pruning_members_/reft_members_
of a run); these tests build them by hand, so a claim's logic is checked
without training anything.
"""

import math

import numpy as np
import pytest

from wrapper_study import population
from wrapper_study.report import claims as claims_lib
from wrapper_study.tracr import claims as tc
from wrapper_study.tracr import paper
from wrapper_study.tracr import report

SEEDS = (0, 1, 2)
SETS = ('c_te1', paper.ANTI, paper.NATURAL)


def member(lr, c_tr, seed, *, pt=(100, 100), ft=(0, 0), attn=1.0, kind='fine-tuned',
           diverged=False):
  """A members-table row: (start, end) Acc O_PT and O_FT on every test set."""
  row = dict(kind=kind, lr=lr, c_tr=c_tr, seed=seed, diverged=diverged, attn0_corr=attn,
             n_distinct=5)
  for s in SETS:
    row[f'start/{s}/acc_o_pt'], row[f'end/{s}/acc_o_pt'] = pt
    row[f'start/{s}/acc_o_ft'], row[f'end/{s}/acc_o_ft'] = ft
  return row


def noised_rows(attn=1.0):
  return [member('', '', s, kind=paper.NOISED, attn=attn) for s in SEEDS]


def cell_rows(lr, c_tr, end_ft, *, moved=True, attn=1.0):
  """One cell over SEEDS; moved=False: fine-tuning changed nothing (the check fails)."""
  return [member(lr, c_tr, s, pt=(100, 0 if moved else 100), ft=(0, v if moved else 0),
                 attn=a) for s, v, a in zip(SEEDS, end_ft, np.broadcast_to(attn, 3))]


def judged(ev, task='counter'):
  rows, _ = tc.claims(task, task if task in paper.TASK_CLAIMS else None, ev)
  assert all(tuple(r) == claims_lib.CLAIMS_COLUMNS for r in rows)
  return {r['claim_id'].split('/', 1)[1]: r for r in rows}


HOLD, FAIL = 'holds', 'does not hold'

# claim id -> (task, lr, C_Tr, end Acc O_FT that holds, that fails).
ACCURACY = {
    'wrapper_high_c_te1': ('counter', paper.LR_M, 1.0, (99, 98, 99.5), (20, 25, 22)),
    'wrapper_low_c_te0': ('counter', paper.LR_M, 1.0, (0, 1, 0.5), (60, 70, 65)),
    'cannot_learn_lr_s': ('counter', paper.LR_S, 0.0, (5, 8, 6), (95, 96, 97)),
    'learns_lr_l': ('counter', paper.LR_L, 0.0, (99, 98, 99), (10, 12, 11)),
    'readout_learned_lr_vs': ('max_identifier', paper.LR_VS, 0.0, (99, 98, 99), (10, 12, 11)),
}


@pytest.mark.parametrize('claim_id', sorted(ACCURACY))
@pytest.mark.parametrize('case', ['fail', 'not measured', 'hold'])
def test_accuracy_claims(claim_id, case):
  task, lr, c, good, bad = ACCURACY[claim_id]
  rows = cell_rows(lr, c, bad if case == 'fail' else good, moved=case != 'not measured')
  row = judged(tc.Evidence(rows + noised_rows()), task)[claim_id]
  want = {'fail': FAIL, 'not measured': 'not measured (fine-tuning did not change O_PT or '
          'O_FT)', 'hold': HOLD}[case]
  assert row['verdict'] == want, row
  assert row['n_seeds'] == 3
  # A verdict on the configured C_Te=0 set (eval.c_te0_set) also shows the natural set's value.
  configured = paper.CLAIMS_C_TE0 in row['metric']
  assert ('natural C_Te=0 set' in row['reason']) == configured


@pytest.mark.parametrize('claim_id, lr, c_trs, good, bad', [
    ('sorting_kept_lr_vs', paper.LR_VS, (0.0, 1.0), 0.99, 0.4),
    ('sorting_distorted_lr_m', paper.LR_M, (0.0,), 0.4, 0.99),
])
@pytest.mark.parametrize('case', ['fail', 'not measured', 'hold'])
def test_sorting_claims_read_block0_attention(claim_id, lr, c_trs, good, bad, case):
  attn = bad if case == 'fail' else good
  rows = [r for c in c_trs for r in cell_rows(lr, c, (95, 96, 97), moved=case != 'not measured',
                                              attn=(attn, attn + 0.001, attn - 0.001))]
  row = judged(tc.Evidence(rows + noised_rows()), 'max_identifier')[claim_id]
  assert row['verdict'] == {'fail': FAIL, 'hold': HOLD}.get(case, 'not measured (fine-tuning '
                                                            'did not change O_PT or O_FT)'), row
  assert 'attention' in row['metric'] and row['control_value'] == 100.0


def test_sorting_kept_is_judged_on_the_worst_c_tr():
  rows = (cell_rows(paper.LR_VS, 0.0, (95, 95, 95), attn=(0.99, 0.98, 0.99)) +
          cell_rows(paper.LR_VS, 1.0, (95, 95, 95), attn=(0.3, 0.35, 0.32)))
  row = judged(tc.Evidence(rows + noised_rows()), 'max_identifier')['sorting_kept_lr_vs']
  assert row['verdict'] == FAIL and 'worst: C_Tr=1' in row['reason']


def pruned(kind, lr, c_tr, seed, k0, k1, diverged=False):
  return dict(kind=kind, granularity='weight', lr=lr, c_tr=c_tr, seed=seed, diverged=diverged,
              acc_o_pt_k0=k0, acc_o_pt_k1=k1)


def pruning_evidence(ft_k0, ft_k1, noised_gain=0.0, c0_gain=0.0):
  rows = [pruned(paper.NOISED, '', '', s, 60, 60 + noised_gain) for s in SEEDS]
  rows += [pruned('fine-tuned', paper.LR_M, 0.0, s, 10, 10 + c0_gain) for s in SEEDS]
  rows += [pruned('fine-tuned', paper.LR_M, 1.0, s, ft_k0, k1)
           for s, k1 in zip(SEEDS, ft_k1)]
  return tc.Evidence(noised_rows(), rows)


@pytest.mark.parametrize('case, ev, want', [
    ('fail', pruning_evidence(0, (40, 45, 42)), FAIL),
    ('not measured', pruning_evidence(55, (99, 99, 99)),
     'not measured (fine-tuning did not remove O_PT)'),
    ('hold', pruning_evidence(0, (90, 92, 95)), HOLD),
])
def test_pruning_claim(case, ev, want):
  row = judged(ev)['pruning_single_weight']
  assert row['verdict'] == want, (case, row)


def test_pruning_gain_is_measured_over_the_controls():
  """Regression (issue 11 item 4): a +70 gain that the noised-only control also makes
  (+50) is +20 over the control, and does not hold; the old claim (best K, no control,
  gain > 60) held."""
  row = judged(pruning_evidence(0, (70, 71, 69), noised_gain=50.0))['pruning_single_weight']
  assert row['verdict'] == FAIL, row
  assert math.isclose(row['value'], 20.0) and row['control_value'] == 25.0  # Mean of 50 and 0.
  row = judged(pruning_evidence(0, (70, 71, 69), c0_gain=65.0))['pruning_single_weight']
  assert row['verdict'] == FAIL and math.isclose(row['value'], 5.0), row


def test_pruning_rows_report_k1_not_the_best_k():
  """Regression (issue 11 item 4): K=1 gains 10 even when K=3 gains 80."""
  members = population.grid([paper.LR_M], [0.0, 1.0], [0])
  pruned_ms = members + [population.Member(0.0, 0.0, 0, paper.NOISED)]
  curve = lambda *acc: [[a, 0, 3] for a in acc]
  curves = {'weight': np.array([curve(0, 10, 40, 80), curve(10, 12, 12, 12),
                                curve(60, 90, 90, 90)], float)}

  class Config:
    class finetune:  # pylint: disable=invalid-name
      lrs = (paper.LR_M,)

    class pruning:  # pylint: disable=invalid-name
      c_trs = (1.0,)
  top = {'weight': [['u0']] * 3}
  rows = report.pruning_rows(Config, 'counter', [pruned_ms[1], pruned_ms[0], pruned_ms[2]],
                             curves, top, 1, [True] * 3)
  (row,) = rows
  assert row['gain_k1'] == 10.0 and row['gain_o_pt'] == 80.0 and row['best_k'] == 3
  assert row['control_noised_gain_k1'] == 30.0 and row['control_c_tr0_gain_k1'] == 2.0
  ev_rows = report.pruning_member_rows('counter', [pruned_ms[1], pruned_ms[0], pruned_ms[2]],
                                       curves, [True] * 3)
  assert [r['acc_o_pt_k1'] for r in ev_rows] == [10.0, 12.0, 90.0]
  assert judged(tc.Evidence(noised_rows(), ev_rows))['pruning_single_weight']['value'] == -20.0
  assert ev_rows[-1]['kind'] == paper.NOISED


def reft_row(source_lr, seed, start, peak, revived_at, reft_lr=1e-3):
  src = paper.SCRATCH if source_lr is None else f'FT lr={source_lr:g} C_Tr=1'
  return dict(source=src, source_lr='' if source_lr is None else source_lr, source_c_tr=1.0,
              reft_lr=reft_lr, seed=seed, diverged=False, acc_o_pt_start=start,
              acc_o_pt_max=peak, revived_at=revived_at)


def reft_evidence(source_lr, start, peak, revived, scratch_at, scratch_lr=1e-3,
                  lr_m_peak=None):
  """reFT at 1e-3 from `source_lr`, Scr.+FT at `scratch_lr` (matched: the same 1e-3);
  lr_m_peak: also reFT of lr 1e-2 models (no_revival_lr_l's positive control) peaking there."""
  rows = [reft_row(source_lr, s, start, peak, r) for s, r in zip(SEEDS, revived)]
  rows += [reft_row(None, s, 2, 95 if a != '' else 30, a, scratch_lr)
           for s, a in zip(SEEDS, scratch_at)]
  if lr_m_peak is not None:
    rows += [reft_row(paper.LR_M, s, 5, lr_m_peak, 50 if lr_m_peak >= 90 else '')
             for s in SEEDS]
  return tc.Evidence(noised_rows(), (), rows, reft_steps=500, revival_threshold=90.0)


@pytest.mark.parametrize('case, ev, want', [
    ('fail', reft_evidence(paper.LR_M, 5, 95, (200, 200, 190), (20, 10, 20)), FAIL),
    ('not measured', reft_evidence(paper.LR_M, 95, 99, (0, 0, 0), ('', '', '')),
     'not measured (fine-tuning did not remove O_PT: nothing to revive)'),
    ('hold', reft_evidence(paper.LR_M, 5, 95, (10, 20, 10), ('', '', '')), HOLD),
])
def test_reft_faster_than_scratch(case, ev, want):
  row = judged(ev)['reft_faster_than_scratch']
  assert row['verdict'] == want, (case, row)


def test_reft_faster_counts_never_as_a_bound():
  # Scr.+FT never revives within 500: the gaps are lower bounds (>= 481), and they hold.
  row = judged(reft_evidence(paper.LR_M, 5, 95, (10, 20, 10), ('', '', '')))[
      'reft_faster_than_scratch']
  assert row['verdict'] == HOLD and 'bounds from one censored arm' in row['reason'], row
  # reFT never revives, Scr.+FT does: upper bounds, below the margin: does not hold.
  row = judged(reft_evidence(paper.LR_M, 5, 30, ('', '', ''), (20, 10, 20)))[
      'reft_faster_than_scratch']
  assert row['verdict'] == FAIL, row


@pytest.mark.parametrize('case, ev, want', [
    ('fail', reft_evidence(paper.LR_L, 5, 99, (10, 20, 10), ('', '', ''), lr_m_peak=99), FAIL),
    ('not measured', reft_evidence(paper.LR_L, 95, 99, (0, 0, 0), ('', '', ''), lr_m_peak=99),
     'not measured (fine-tuning did not remove O_PT: nothing to revive)'),
    ('hold', reft_evidence(paper.LR_L, 5, 20, ('', '', ''), (20, 10, 20), lr_m_peak=99), HOLD),
])
def test_no_revival_after_large_lr(case, ev, want):
  row = judged(ev)['no_revival_lr_l']
  assert row['verdict'] == want, (case, row)


def test_claims_absent_from_the_grid_are_not_measured_and_other_tasks_skipped():
  rows, skipped = tc.claims('mine', None, tc.Evidence(noised_rows()))
  assert [r['claim_id'] for r in rows] == [f'mine/{c}' for c in paper.GENERAL_CLAIMS]
  assert all(r['verdict'] == 'not measured (cell not in the grid)' for r in rows)
  assert {s['claim'] for s in skipped} == {paper.CLAIMS[c].statement for ids in
                                           paper.TASK_CLAIMS.values() for c in ids}
  every = set(paper.GENERAL_CLAIMS).union(*paper.TASK_CLAIMS.values())
  assert every == set(paper.CLAIMS)  # Every claim is judged somewhere (and tested above).


def test_diverged_seeds_are_left_out_and_counted():
  rows = cell_rows(paper.LR_L, 0.0, (99, 98, 99))
  rows[2]['diverged'] = True
  row = judged(tc.Evidence(rows + noised_rows()))['learns_lr_l']
  assert row['n_seeds'] == 2 and '1 diverged seed(s) left out' in row['reason']


# ------------------------------------------------------------ issue 11 fix 3 ----


def test_median_counts_seeds_that_never_revived():
  """Regression (issue 11 item 3): 1 of 3 revived at 20 is 'never', not 20."""
  assert report.median_iterations([20, None, None]) == 'never'
  assert report.median_iterations([10, 20, None]) == 20.0
  assert report.median_iterations([None]) == 'never'


class _History:
  def __init__(self, steps, acc_SxP):
    self.steps, self.acc = np.asarray(steps), np.asarray(acc_SxP, float)

  def curve(self, key):
    assert key == 'c_te0/acc_o_pt'
    return self.steps, self.acc


def test_reft_rows_median_over_all_seeds_and_diverged():
  members = [population.Member(1e-3, None, s, 'FT lr=0.01 C_Tr=1') for s in SEEDS]
  members += [population.Member(1e-3, None, 0, paper.SCRATCH)]
  acc = [[0, 0, 0, 0], [95, 0, 0, 0], [95, 50, 0, 0]]  # Steps 0, 20, 50.
  rows = report.reft_rows('counter', members, _History([0, 20, 50], acc), 90.0,
                          [True, True, True, False])
  assert rows[0]['revived'] == '1/3' and rows[0]['iters_to_revival_median'] == 'never'
  assert rows[0]['iters_to_revival_each'] == '20 - -'
  assert rows[1]['source'] == paper.SCRATCH and rows[1]['iters_to_revival_median'] == 'diverged'
  assert rows[1]['diverged'] == 1


# ---------------------------------------------------- Table 3 marks ----


def test_table3_marks_collapsed_and_diverged_cells():
  members = population.grid([1e-2], [0.6, 0.8], [0, 1])
  final = {m: np.array([21.8, 21.8, 50.0, 60.0]) for m in report.METRICS}

  class Config:
    class finetune:  # pylint: disable=invalid-name
      lrs, c_trs = (1e-2,), (0.6, 0.8)
  rows = report.table3_rows(Config, 'counter', members, final, [True, True, False, False],
                            distinct=[1, 1, 7, 7])
  assert rows[0]['n_distinct'] == 1 and rows[0]['collapsed']
  assert rows[1]['diverged'] == 2 and rows[1]['n_distinct'] == ''
  md = report.table3_markdown(rows)
  assert '1 COLLAPSED' in md and '2/2 diverged' in md and 'diverged |' in md


# ------------------------------------------------------------------ issue 29 ----


def test_scratch_control_runs_at_the_reft_lrs_only():
  """Point 5: Scr.+FT at 1e-2 (a larger lr than any reFT's) revived fast and made reFT at 1e-3
  look slow; the matched control is Scr.+FT at the reFT lr 1e-3 (slower than reFT)."""
  rows = [reft_row(paper.LR_M, s, 5, 95, 200) for s in SEEDS]
  rows += [reft_row(None, s, 2, 95, 10, 1e-2) for s in SEEDS]  # Unmatched: larger lr.
  rows += [reft_row(None, s, 2, 95, 400, 1e-3) for s in SEEDS]  # Matched.
  row = judged(tc.Evidence(noised_rows(), (), rows, reft_steps=500))['reft_faster_than_scratch']
  assert row['verdict'] == HOLD and row['value'] == 200.0, row
  assert row['control_value'] == 400.0 and 'matched lrs 0.001' in row['reason'], row


def test_no_revival_needs_its_positive_control_to_revive():
  """Point 5: reFT after lr 1e-2 (which should revive) is no_revival_lr_l's matched control;
  when it does not revive either and lr 1e-1's models do not revive, the budget cannot tell."""
  ev = reft_evidence(paper.LR_L, 5, 20, ('', '', ''), (20, 10, 20), lr_m_peak=40)
  row = judged(ev)['no_revival_lr_l']
  assert row['verdict'] == claims_lib.not_measured(
      'the matched control (reFT after lr 1e-2) did not revive either: the budget cannot '
      'tell'), row
  row = judged(reft_evidence(paper.LR_L, 5, 20, ('', '', ''), (20, 10, 20), lr_m_peak=99))[
      'no_revival_lr_l']
  assert row['verdict'] == HOLD and row['control_value'] == 99.0, row


def test_no_revival_contradicted_by_its_own_revival_without_the_control():
  """The positive control guards "holds" only: lr 1e-1's models reviving show by themselves
  that the budget can revive, so the claim does not hold even where lr 1e-2's did not (the
  :claims run: lr 1e-1 peaks at 99.8, lr 1e-2 at 81.7)."""
  ev = reft_evidence(paper.LR_L, 5, 99, (10, 20, 10), ('', '', ''), lr_m_peak=40)
  row = judged(ev)['no_revival_lr_l']
  assert row['verdict'] == FAIL and '3 of 3 seeds did' in row['manipulation_check'], row


def test_readout_threshold_is_the_papers_cell_within_its_span():
  """Point 6: the paper's own cell is 91.1 and its 1e-4 cells span 88.6-97.1; 90 would fail a
  faithful reproduction at 89-90."""
  assert paper.READOUT_PAPER_CELL == 91.1 and paper.READOUT_PAPER_SPAN == (88.6, 97.1)
  assert paper.CLAIMS['readout_learned_lr_vs'].threshold == 88.6
  rows = cell_rows(paper.LR_VS, 0.0, (89.6, 89.8, 89.7)) + noised_rows()
  row = judged(tc.Evidence(rows), 'max_identifier')['readout_learned_lr_vs']
  assert row['verdict'] == HOLD, row


def test_scratch_at_no_reft_lr_is_no_control():
  """Point 5: Scr.+FT only at 1e-2, reFT at 1e-3: nothing matched, nothing decided."""
  rows = [reft_row(paper.LR_M, s, 5, 95, 200) for s in SEEDS]
  rows += [reft_row(None, s, 2, 95, 10, 1e-2) for s in SEEDS]
  row = judged(tc.Evidence(noised_rows(), (), rows, reft_steps=500))['reft_faster_than_scratch']
  assert row['verdict'] == claims_lib.not_measured('no Scr.+FT at the reFT lrs'), row
