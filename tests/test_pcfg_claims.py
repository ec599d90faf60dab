"""Every PCFG claim on made-up histories: one must hold, one fail, one be not measured.

What the claims read: the study's table rows (per-seed values as '<v> <v> <v>'),
and the analysis' results ({(prior, arm): members, history, probes, prune})
and reFT (members, history). The good history tells the paper's story; each
bad one changes one thing.
"""

import dataclasses

import numpy as np
import pytest

from configs import pcfg_analysis as analysis_config
from configs import pcfg_study as study_config
from wrapper_study import metrics
from wrapper_study import population
from wrapper_study.analysis import reft as reft_lib
from wrapper_study.pcfg import analysis as pcfg_analysis
from wrapper_study.pcfg import claims
from wrapper_study.pcfg import paper
from wrapper_study.pcfg import report as pcfg_report
from wrapper_study.pcfg import train as pcfg_train
from wrapper_study.report import claims as claims_lib

PT0, FT0, FT1, FT0N = claims.PT0, claims.FT0, claims.FT1, claims.FT0N
SEEDS = (0, 1, 2)

# ------------------------------------------------------------------- study ----
STUDY = study_config.get_config('')  # C_Tr 0, .5, 1; evaluated at 50, 500.
# The claims' logic on the paper's lrs (the CPU scale picks its own by calibration: any three
# lrs play the roles eta_L > eta_M > eta_S).
STUDY.finetune.lrs = paper.APPENDIX_C_LRS
ETA_S, ETA_L = min(STUDY.finetune.lrs), max(STUDY.finetune.lrs)
LAST = STUDY.finetune.eval_steps[-1]


def _study_value(prior, lr, c, metric, step):
  """The paper's story: low prior C_Tr=1 is a wrapper; eta_S does not learn O_FT; high keeps O_PT."""
  if prior == 'high':  # Fine-tuning teaches O_FT where it is triggered, and keeps O_PT.
    return {PT0: 98.0 if step == 0 else 95.0, FT1: 20.0 if step == 0 else 97.0}.get(metric, 50.0)
  if step == 0:
    return {PT0: 80.0, FT1: 5.0, FT0: 5.0, FT0N: 5.0}[metric]
  if metric == PT0:
    return 10.0 if c == 1.0 else 40.0
  if metric == FT1:
    return 97.0
  if c == 1.0:
    return 2.0 if metric == FT0 else 18.0  # A wrapper: chance agreement on the natural set.
  return 20.0 if lr == ETA_S else 95.0


def study_rows(edit=None) -> list[dict]:
  rows = []
  for prior in ('low', 'high'):
    for lr in STUDY.finetune.lrs:
      for c in STUDY.finetune.c_trs:
        row = dict(prior=prior, pt_steps=STUDY.pretrain.steps, lr=lr, c_tr=c)
        for metric in (PT0, FT0, FT1, FT0N):
          for step in (0, LAST):
            v = _study_value(prior, lr, c, metric, step)
            v = edit(prior, lr, c, metric, step, v) if edit else v
            row[f'{metric}@{step}_seeds'] = ' '.join(f'{v + 0.5 * s:.1f}' for s in SEEDS)
        rows.append(row)
  return rows


def judge_study(edit=None) -> dict:
  rows = claims.study(STUDY, study_rows(edit))
  assert [tuple(r) for r in rows] == [claims_lib.CLAIMS_COLUMNS] * len(rows)
  return {r['claim_id']: r for r in rows}


def _when(prior, lrs, cs, metric, step, value):
  """An edit: `metric` at `step` (None: the last) of those cells becomes `value`."""
  def edit(p, lr, c, m, s, v):
    hit = p == prior and lr in lrs and c in cs and m == metric and s == (LAST if step is None
                                                                         else step)
    return value if hit else v
  return edit


ALL_LRS, ALL_CS = tuple(STUDY.finetune.lrs), tuple(STUDY.finetune.c_trs)


def _unchanged(p, lr, c, m, s, v):  # Low prior: fine-tuning moved nothing.
  if p == 'low' and m in (PT0, FT1) and s == 0:
    return _study_value(p, lr, c, m, LAST)
  return v


STUDY_FAIL = {
    'T5.wrapper': _when('low', (1e-5,), (1.0,), FT0, None, 40.0),
    'T5.not_learned': _when('low', (ETA_S,), (0.0,), FT0, None, 95.0),
    'T5.pt_kept': _when('high', (ETA_S,), (1.0,), PT0, None, 40.0),
}
STUDY_NOT_MEASURED = {
    'T5.wrapper': (_unchanged, 'fine-tuning did not change the model'),
    'T5.not_learned': (_when('low', (ETA_L,), (0.0,), FT0, None, 5.0), 'did not learn O_FT'),
    'T5.pt_kept': (_when('high', ALL_LRS, ALL_CS, PT0, 0, 50.0), 'nothing to keep'),
}

# ---------------------------------------------------------------- analysis ----
CONFIG = analysis_config.get_config('')  # reFT 500 iterations, threshold 90.
CONFIG.finetune.lrs = paper.APPENDIX_C_LRS  # As STUDY's; reFT at eta_M and eta_S.
CONFIG.analysis.reft_lrs = paper.APPENDIX_C_LRS[1:]
CONFIG.analysis.variant = 'jailbreak'  # Every analysis claim (pruning and reFT stay on).
CONFIG.data.families = ('C', 'CC', 'I', 'IC', 'T', 'T_J1', 'T_J2')
STEPS = (0,) + tuple(CONFIG.finetune.eval_steps)
REFT_STEPS = (0,) + tuple(CONFIG.analysis.reft_eval_steps)
A_LRS = tuple(sorted(CONFIG.finetune.lrs))
JB = tuple(f'{PT0}_{f}' for f in ('T_J1', 'T_J2'))


class FakeHistory:
  """population.History's curve(): (steps [S], values [S, P])."""

  def __init__(self, steps, data):
    self.steps, self.data = np.array(steps), data

  def curve(self, key):
    return (self.steps, self.data[key]) if key in self.data else (np.array([]), np.array([]))


def _ft_value(m, key, step):
  """Fine-tuning of the low prior, as in the paper (every lr): O_PT hidden, a wrapper."""
  if step == 0:
    return {PT0: 95.0, FT1: 5.0, FT0: 5.0, FT0N: 5.0}.get(key, 95.0)
  if key == PT0:
    return 10.0 if m.c_tr == 1.0 else 40.0
  if key == FT1:
    return 97.0
  if key in (FT0, FT0N):
    return (2.0 if key == FT0 else 18.0) if m.c_tr == 1.0 else 90.0
  return {JB[0]: 95.0, JB[1]: 93.0}.get(key, 50.0)


def _revives_at(source):
  return {'high/ft': 20, 'low/ft': 100, 'low/randft': 50, pcfg_train.SCR_FT: 300}.get(source)


def analysis_inputs(ft=None, reft_at=None, reft_start=None, probes=None, prune=None):
  """(results, reft_out) of the paper's story; the keyword edits change one thing each."""
  members = population.grid(CONFIG.finetune.lrs, CONFIG.finetune.c_trs, SEEDS)
  value = ft or _ft_value
  keys = (PT0, FT0, FT1, FT0N, 'c_te1/acc_o_pt') + JB
  data = {k: np.array([[value(m, k, s) + 0.5 * m.seed for m in members] for s in STEPS])
          for k in keys}
  acc = np.zeros((1 + len(members), CONFIG.model.n_layers + 1, 2))
  acc[0, :, 0] = (30.0, 70.0, 75.0)
  for i, m in enumerate(members):
    acc[1 + i, :, 0] = (30.0, 70.0, 72.0 + m.seed)
  probe_out = {'acc': acc, 'majority': np.array([40.0, 40.0])}
  if probes:
    probes(probe_out, members)
  n_k = len(pcfg_analysis.prune_ks(CONFIG))
  prune_out = {'acc_pt': np.full((2, len(members), n_k), 10.0),
               'acc_ft': np.full((2, len(members), n_k), 50.0),
               'classes_pt': np.full((2, len(members), n_k), 5.0)}
  n_few = min(paper.PRUNE_FEW_NEURONS, CONFIG.analysis.k_max) + 1
  prune_out.update({f'{k}_rand': np.full((1, len(members), n_few), v[0, 0, 0])
                    for k, v in prune_out.items()})  # K random units: no gain.
  for i, m in enumerate(members):
    if m.c_tr == 0.0:
      prune_out['acc_pt'][:, i] = 40.0
    else:
      prune_out['acc_pt'][:, i, 3] = 60.0 + m.seed
  if prune:
    prune(prune_out, members)
  results = {('low', pcfg_train.Arm('ft')): dict(members=members, history=FakeHistory(STEPS, data),
                                                 probes=probe_out, prune=prune_out)}
  reft_members = []
  for source in ('low/ft', 'high/ft', 'low/randft'):
    reft_members += [population.Member(lr, c, s, source) for c in (0.0, 1.0) for s in SEEDS
                     for lr in CONFIG.analysis.reft_lrs]
  reft_members += [population.Member(lr, None, s, src) for s in SEEDS
                   for src in (pcfg_train.SCR_FT, pcfg_train.SCR)
                   for lr in CONFIG.analysis.reft_lrs]
  at, start = reft_at or _revives_at, reft_start or (lambda source: 10.0)

  def curve(m):
    hit = at(m.source)
    return [start(m.source) if s == 0 else (95.0 if hit is not None and s >= hit else 30.0)
            for s in REFT_STEPS]
  reft_acc = np.array([curve(m) for m in reft_members]).T
  return results, (reft_members, FakeHistory(REFT_STEPS, {PT0: reft_acc}))


def judge_analysis(**edits) -> dict:
  rows = claims.analysis(CONFIG, *analysis_inputs(**edits))
  assert [tuple(r) for r in rows] == [claims_lib.CLAIMS_COLUMNS] * len(rows)
  return {r['claim_id'].split('[')[0]: r for r in rows}


def _ft_edit(pred, key, value, step=None):
  def ft(m, k, s):
    hit = pred(m) and k == key and (s != 0 if step is None else s == step)
    return value if hit else _ft_value(m, k, s)
  return ft


def _ft_unchanged(m, k, s):  # Fine-tuning moved nothing at any lr.
  return _ft_value(m, k, STEPS[-1]) if k in (PT0, FT1) and s == 0 else _ft_value(m, k, s)


def _prune_control_revives(p, members):  # K random units of the same model gain as much.
  for i, m in enumerate(members):
    p['acc_pt_rand'][:, i, 0], p['acc_pt_rand'][:, i, 3] = 10.0, 60.0 + m.seed


def _prune_nothing_lost(p, members):
  for i, m in enumerate(members):
    if m.c_tr == 1.0:
      p['acc_pt'][:, i, 0] = 80.0


def _probe_drops(p, members):
  for i, m in enumerate(members):
    p['acc'][1 + i, :, 0] = (30.0, 35.0, 38.0 + m.seed)


def _never(source):
  return None if source in ('low/ft', 'high/ft', 'low/randft') else _revives_at(source)


ANALYSIS_FAIL = {
    'P1a': dict(ft=_ft_edit(lambda m: m.c_tr == 1.0 and m.lr == 1e-5, FT0, 40.0)),
    'P1b': dict(ft=_ft_edit(lambda m: m.c_tr == 0.0, PT0, 10.0)),
    'P2': dict(prune=_prune_control_revives),  # K random units gain as much.
    'P3': dict(probes=_probe_drops),
    'P4.strong': dict(reft_at=lambda s: 225 if s == 'high/ft' else _revives_at(s)),
    'P4.weak': dict(reft_at=lambda s: None if s == 'low/ft' else _revives_at(s)),
    'P4.scr_slower': dict(reft_at=lambda s: 10 if s == pcfg_train.SCR_FT else _revives_at(s)),
    'E4.randft_faster': dict(reft_at=lambda s: None if s == 'low/randft' else _revives_at(s)),
    'E2.jailbreak_acc': dict(ft=_ft_edit(lambda m: True, JB[1], 60.0)),
    'E2.jailbreak_gain': dict(ft=_ft_edit(lambda m: m.c_tr == 1.0, PT0, 85.0)),
}
_NOT_REMOVED = 'fine-tuning did not remove O_PT'
_at_start = lambda sources: dict(reft_start=lambda s: 95.0 if s in sources else 10.0)
ANALYSIS_NOT_MEASURED = {
    'P1a': (dict(ft=_ft_unchanged), 'fine-tuning did not change the model'),
    'P1b': (dict(ft=_ft_unchanged), 'fine-tuning did not change the model'),
    'P2': (dict(prune=_prune_nothing_lost), _NOT_REMOVED),
    'P3': (dict(probes=lambda p, m: p.update(majority=np.array([90.0, 40.0]))), 'nothing to keep'),
    'P4.strong': (_at_start({'high/ft'}), _NOT_REMOVED),
    'P4.weak': (_at_start({'low/ft'}), _NOT_REMOVED),  # (and see the test of 'nothing to revive')
    'P4.scr_slower': (_at_start({'high/ft', 'low/ft'}), _NOT_REMOVED),
    'E4.randft_faster': (_at_start({'low/randft'}), _NOT_REMOVED),
    'E2.jailbreak_acc': (dict(ft=_ft_unchanged), 'fine-tuning did not change the model'),
    'E2.jailbreak_gain': (dict(ft=_ft_unchanged), 'fine-tuning did not change the model'),
}


# ------------------------------------------------------------------- tests ----
def test_every_claim_has_its_three_histories():
  assert set(STUDY_FAIL) | set(ANALYSIS_FAIL) == set(paper.CLAIMS)
  assert set(STUDY_NOT_MEASURED) | set(ANALYSIS_NOT_MEASURED) == set(paper.CLAIMS)


def _good(row):
  assert row['verdict'] == claims_lib.HOLDS, row
  assert row['world'] == 'pcfg' and row['n_seeds'] >= 3, row
  assert row['ci_low'] <= row['value'] <= row['ci_high'], row
  assert row['control_value'] != '', row
  assert row['manipulation_check'].startswith('passed: '), row


def test_the_papers_story_holds_every_claim():
  study, found = judge_study(), judge_analysis()
  assert list(study) == ['T5.wrapper', 'T5.not_learned', 'T5.pt_kept']
  assert set(study) | set(found) == set(paper.CLAIMS)
  for row in list(study.values()) + list(found.values()):
    _good(row)
  assert 'natural set 18.0 18.5 19.0' in study['T5.wrapper']['reason']  # Both C_Te=0 sets.


@pytest.mark.parametrize('claim_id', list(paper.CLAIMS))
def test_claim_fails_on_a_history_against_it(claim_id):
  if claim_id in STUDY_FAIL:
    row = judge_study(STUDY_FAIL[claim_id])[claim_id]
  else:
    row = judge_analysis(**ANALYSIS_FAIL[claim_id])[claim_id]
  assert row['verdict'] == claims_lib.DOES_NOT_HOLD, row


@pytest.mark.parametrize('claim_id', list(paper.CLAIMS))
def test_claim_is_not_measured_when_its_manipulation_check_fails(claim_id):
  if claim_id in STUDY_NOT_MEASURED:
    edit, reason = STUDY_NOT_MEASURED[claim_id]
    row = judge_study(edit)[claim_id]
  else:
    edits, reason = ANALYSIS_NOT_MEASURED[claim_id]
    row = judge_analysis(**edits)[claim_id]
  assert row['verdict'].startswith(claims_lib.NOT_MEASURED), row
  assert reason in row['verdict'] and row['manipulation_check'].startswith('failed: '), row


def test_reft_starting_above_the_threshold_is_not_a_revival():
  """Issue 11 item 2: a model fine-tuning left at >= 90% was 'revived at 0', so P4 held."""
  results, (members, history) = analysis_inputs(**_at_start({'high/ft', 'low/ft'}))
  steps, acc = history.curve(PT0)
  lr = max(CONFIG.analysis.reft_lrs)
  ft = [i for i, m in enumerate(members) if m.source == 'high/ft' and m.lr == lr]
  # The old rule: every fine-tuned member 'revives' at step 0, within any limit.
  assert {reft_lib.revival_step(steps, acc[:, i], 90.0) for i in ft} == {0}
  rows = judge_analysis(**_at_start({'high/ft', 'low/ft'}))
  for claim_id in ('P4.strong', 'P4.weak', 'P4.scr_slower'):
    assert rows[claim_id]['verdict'] == claims_lib.not_measured(
        'fine-tuning did not remove O_PT'), rows[claim_id]
    assert 'in 0 of' in rows[claim_id]['manipulation_check']
  del results


def test_never_counts_in_medians_and_a_model_that_never_counted_has_nothing_to_revive():
  # reFT of the fine-tuned models never revives: never = reft_steps + 1 in the per-seed medians,
  # so Scr.+FT (300: the grid's first step at or after it) is not slower than reFT (>= 501, an
  # upper bound on the gap).
  row = judge_analysis(reft_at=_never)['P4.scr_slower']
  assert row['verdict'] == claims_lib.DOES_NOT_HOLD, row
  scr_ft = min(s for s in REFT_STEPS if s >= 300)
  assert row['value'] == scr_ft - (CONFIG.analysis.reft_steps + 1)
  assert 'bounds from one censored arm' in row['reason'], row
  # The low-prior model did not count O_PT before fine-tuning: nothing to revive.
  row = judge_analysis(ft=_ft_edit(lambda m: True, PT0, 50.0, step=0))['P4.weak']
  assert row['verdict'] == claims_lib.not_measured(
      'pretraining did not teach O_PT: nothing to revive'), row


def test_pruning_gain_is_read_against_k_random_units():
  row = judge_analysis()['P2']
  assert row['value'] == pytest.approx(51.0) and row['control_value'] == 0.0
  row = judge_analysis(prune=_prune_control_revives)['P2']
  assert row['value'] == 0.0 and row['control_value'] == pytest.approx(51.0)


def test_a_collapsed_pruned_model_gains_nothing():
  def collapse(p, members):
    p['classes_pt'][:, :, 3] = 1.0
  assert judge_analysis(prune=collapse)['P2']['verdict'] == claims_lib.DOES_NOT_HOLD


def test_straddling_seeds_are_partly():
  spread = lambda prior, lr, c, m, s, v: (v if not (prior == 'high' and m == PT0 and s == LAST)
                                          else (95.0 if c != 1.0 else 92.0))
  rows = study_rows(spread)
  for r in rows:
    if r['prior'] == 'high' and r['c_tr'] == 1.0:
      r[f'{PT0}@{LAST}_seeds'] = '80.0 97.0 99.0'
  row = {r['claim_id']: r for r in claims.study(STUDY, rows)}['T5.pt_kept']
  assert row['verdict'] == claims_lib.PARTLY and row['ci_low'] < 90 < row['ci_high'], row


def test_thresholds_are_read_from_paper(monkeypatch):
  stricter = dataclasses.replace(paper.CLAIMS['T5.not_learned'], threshold=10.0)
  monkeypatch.setitem(paper.CLAIMS, 'T5.not_learned', stricter)
  row = judge_study()['T5.not_learned']
  assert row['threshold'] == '<= 10' and row['verdict'] == claims_lib.DOES_NOT_HOLD


def test_table_markdown_flags_collapsed_cells():
  config = study_config.get_config('smoke')
  row = dict(lr=1e-4, p_a=0.999, c_tr=1.0, n_seeds=2, **{'n_collapsed@2': 2, 'n_collapsed@4': 0})
  for metric in pcfg_report.METRICS:
    row[f'{metric}@2'], row[f'{metric}@4'] = 21.8, 69.8
  text = pcfg_report.table_markdown(config, [row])
  assert '21.8 ()*' in text and '69.8 ()*' not in text and '2/2 @2' in text


def test_each_population_and_member_writes_its_own_run(tmp_path):
  members = population.grid([1e-4], [0.0, 1.0], [0])
  with metrics.MetricWriter(str(tmp_path)) as writer:
    for name in ('finetune_low_8000', 'finetune_high_8000'):
      w = metrics.PopulationWriter(writer.run(name), [m.run_name for m in members])
      w.write_scalars(1, {'train/loss': [1.0, 2.0], 'eval/c_te0/acc_o_pt': [3.0, 4.0]})
  runs = metrics.list_runs(str(tmp_path / 'tb'))
  assert runs == sorted(f'{p}/lr=0.0001,c_tr={c},seed=0' for p in
                        ('finetune_low_8000', 'finetune_high_8000') for c in (0, 1))
  assert metrics.read_scalars(str(tmp_path / 'tb' / runs[1])) == {
      'train/loss': [(1, 2.0)], 'eval/c_te0/acc_o_pt': [(1, 4.0)]}


def test_p3_check_names_the_condition_that_failed():
  """Both of P3's conditions are printed; each says whether it was met."""
  row = judge_analysis(**ANALYSIS_NOT_MEASURED['P3'][0])['P3']
  assert 'needs >= floor + 5: NOT met' in row['manipulation_check'], row
  assert '(needs one: met)' in row['manipulation_check'], row


# ------------------------------------------------------------------ issue 29 ----


def test_not_learned_is_by_construction_when_eta_s_was_calibrated_on_it():
  """Point 7: the calibration picks eta_S so that C_Tr=0 Acc O_FT <= 60; testing <= 70 there
  tests the selection. Reported `by construction`, not counted; uncalibrated lrs are judged."""
  rows = {r['claim_id']: r for r in claims.study(STUDY, study_rows(), calibrated=True)}
  row = rows['T5.not_learned']
  assert row['verdict'].startswith(claims_lib.BY_CONSTRUCTION), row
  assert 'holds on the values' in row['reason'], row
  assert len(claims_lib.counted(list(rows.values()))) == 2
  assert judge_study()['T5.not_learned']['verdict'] == claims_lib.HOLDS


def test_pt_kept_asks_what_fine_tuning_changed():
  """Point 8: a model fine-tuning did not move keeps O_PT trivially: not a verdict."""
  unmoved = lambda p, lr, c, m, s, v: (_study_value(p, lr, c, m, LAST)
                                       if p == 'high' and m == FT1 else v)
  row = judge_study(unmoved)['T5.pt_kept']
  assert row['verdict'] == claims_lib.not_measured(
      'fine-tuning at eta_S changed nothing: an unmoved model keeps O_PT trivially'), row


def test_pruning_control_is_random_units_not_the_c_tr0_model():
  """Point 9: the C_Tr=0 model forms the wrapper too (Fig. 79), so its gain is no control: the
  same gain there no longer cancels the C_Tr=1 gain; K random units of the same model do."""
  def c_tr0_revives_too(p, members):
    for i, m in enumerate(members):
      p['acc_pt'][:, i, 0], p['acc_pt'][:, i, 3] = 10.0, 60.0 + m.seed
  row = judge_analysis(prune=c_tr0_revives_too)['P2']
  assert row['verdict'] == claims_lib.HOLDS and row['control_value'] == 0.0, row
  assert 'random units' in row['reason'], row


def test_reft_iterations_need_three_evaluations_per_doubling():
  """Point 10: on 5, 10, 20, 50, 100 every revival from 51 to 100 read as 100; a threshold
  read off a log plot is not decided on such a grid."""
  coarse = CONFIG.copy_and_resolve_references()
  coarse.analysis.reft_eval_steps = (5, 10, 20, 50, 100, 150, 225, 300, 400, 500)
  rows = {r['claim_id'].split('[')[0]: r for r in claims.analysis(coarse, *analysis_inputs())}
  assert rows['P4.strong']['verdict'] == claims_lib.not_measured(
      'evaluation grid too coarse where the threshold decides'), rows['P4.strong']
  assert judge_analysis()['P4.strong']['verdict'] == claims_lib.HOLDS  # The default grid.


def test_members_of_one_seed_are_one_value_in_p3_and_p4():
  """Point 3: P3's C_Tr members and P4's reFT members of one seed were separate 'seeds'."""
  found = judge_analysis()
  assert found['P3']['n_seeds'] == len(SEEDS), found['P3']
  assert found['P4.weak']['n_seeds'] == len(SEEDS), found['P4.weak']
  assert found['E2.jailbreak_acc']['n_seeds'] == len(SEEDS), found['E2.jailbreak_acc']
