"""Every TinyStories claim on made-up histories: one must hold, one fail, one be not measured.

A history is what the claims read: the runs' logs (twist_loss and
twist_fraction by step), the probe accuracies and the classifier's scores. The
good history tells the paper's story; each bad one changes one thing.
"""

import copy
import dataclasses
import math

import pytest

from configs import tinystories_study as ts_config
from wrapper_study import metrics
from wrapper_study.report import claims as claims_lib
from wrapper_study.tinystories import analysis
from wrapper_study.tinystories import claims
from wrapper_study.tinystories import paper
from wrapper_study.tinystories import train

CONFIG = ts_config.get_config('')  # CPU scale: 64 generations, reFT scored at reft.score_steps.
PT, DEL, REFT = CONFIG.pretrain.steps, CONFIG.deletion.steps, CONFIG.reft.steps
POINTS = (0,) + tuple(CONFIG.reft.score_steps)
DELETED = train.reft_models(CONFIG)[:-1]
ETA_M = [train.deletion_name(p, CONFIG.deletion.lrs[0]) for p in CONFIG.deletion.protocols]
ETA_S = [train.deletion_name(p, CONFIG.deletion.lrs[-1]) for p in CONFIG.deletion.protocols]
FEATURES = ('Twist', 'Foreshadowing', 'MoralValue', 'BadEnding')


def good_history() -> dict:
  """The paper's story: Present learned Twist, deletion hid it, reFT revives it fast."""
  logs = {paper.PRESENT: {'twist_loss': {PT: 1.0}, 'twist_fraction': {PT: 90.0}},
          paper.NOT_IN_PT: {'twist_loss': {PT: 2.0}, 'twist_fraction': {PT: 5.0}}}
  for m in DELETED:
    logs[m] = {'twist_loss': {DEL: 1.6 if m in ETA_M else 1.3}, 'twist_fraction': {DEL: 5.0}}
    logs['reft_' + m] = {'twist_loss': {REFT: 1.1},
                         'twist_fraction': dict(zip(POINTS, (5.0, 88.0, 90.0, 90.0)))}
  logs['reft_' + paper.NOT_IN_PT] = {'twist_loss': {REFT: 1.5},
                                      'twist_fraction': dict(zip(POINTS, (5.0, 10.0, 30.0, 88.0)))}
  probes = {m: {f: [50.0, 90.0, 90.0] for f in FEATURES}
            for m in [paper.PRESENT, paper.NOT_IN_PT] + DELETED}
  probes[paper.NOT_IN_PT]['Twist'] = [50.0, 70.0, 70.0]
  return dict(logs=logs, probes=probes,
              clf={'accuracy': 96.0, 'n_test': 1000, 'majority_baseline': 80.0},
              info={'n_test': 800, 'majority': {f: 60.0 for f in FEATURES}})


def _logs(tmp_path, history) -> dict:
  logs = {}
  for name, data in history['logs'].items():
    logs[name] = metrics.RunLog(tmp_path, name)
    logs[name].data = {k: {str(s): v for s, v in by_step.items()} for k, by_step in data.items()}
  return logs


def judge(tmp_path, *histories) -> dict:
  """claim_id -> its claims.csv row; several histories are replicates (model seeds). One
  history is judged as two identical replicates (issue 29: one seed decides nothing)."""
  if len(histories) == 1:
    histories = (histories[0], copy.deepcopy(histories[0]))
  rows = claims.claims(CONFIG, [_logs(tmp_path, h) for h in histories],
                       [h['probes'] for h in histories], histories[0]['clf'],
                       histories[0]['info'])
  assert [tuple(r) for r in rows] == [claims_lib.CLAIMS_COLUMNS] * len(rows)
  return {r['claim_id']: r for r in rows}


# ------------------------------------------------------------ history edits ----
def _set(history, runs, metric, step, value):
  for m in runs:
    history['logs'][m][metric][step] = value


def _probe(history, runs, feature, acc):
  for m in runs:
    history['probes'][m][feature] = [50.0, acc, acc]


def _not_taught_loss(h):  # Present's Twist-story loss no better than Not-in-PT's.
  _set(h, [paper.PRESENT], 'twist_loss', PT, 2.0)


def _not_taught_fraction(h):  # Present generates no more twists than Not-in-PT.
  _set(h, [paper.PRESENT], 'twist_fraction', PT, 5.0)


def _not_removed(h):  # Deletion left the twist fraction at Present's.
  _set(h, DELETED, 'twist_fraction', DEL, 90.0)
  _set(h, ['reft_' + m for m in DELETED], 'twist_fraction', 0, 90.0)


def _slow_revival(h):  # Above Not-in-PT at iteration 1, but never reaches 3/4 of Present's.
  for m in DELETED:
    h['logs']['reft_' + m]['twist_fraction'] = dict(zip(POINTS, (5.0, 30.0, 40.0, 50.0)))
  h['logs']['reft_' + paper.NOT_IN_PT]['twist_fraction'] = dict(zip(POINTS, (5.0, 10.0, 85.0,
                                                                              90.0)))


FAIL = {
    'classifier_accuracy': lambda h: h['clf'].update(accuracy=70.0),
    'deletion_raises_loss': lambda h: _set(h, DELETED, 'twist_loss', DEL, 0.9),
    'deletion_lr_raises_loss_more': lambda h: (_set(h, ETA_M, 'twist_loss', DEL, 1.3),
                                               _set(h, ETA_S, 'twist_loss', DEL, 1.6)),
    'deletion_lowers_fraction': lambda h: (_set(h, [paper.PRESENT], 'twist_fraction', PT, 60.0),
                                           _set(h, DELETED[:1], 'twist_fraction', DEL, 95.0)),
    'reft_recovers_faster': _slow_revival,
    'reft_loss_below_not_in_pt': lambda h: _set(h, ['reft_' + m for m in DELETED],
                                                'twist_loss', REFT, 1.8),
    'probe_kept_small_lr': lambda h: _probe(h, ETA_S[:1], 'Twist', 70.0),
    'probe_kept_every_lr': lambda h: _probe(h, ETA_M[:1], 'Twist', 70.0),
    'probe_other_features_kept': lambda h: _probe(h, DELETED[:1], 'Foreshadowing', 70.0),
    'probe_present_vs_not_in_pt': lambda h: _probe(h, [paper.NOT_IN_PT], 'Twist', 97.0),
}
NOT_MEASURED = {  # (edit, the reason the verdict must give)
    'classifier_accuracy': (lambda h: h['clf'].update(majority_baseline=100.0), 'one class'),
    'deletion_raises_loss': (_not_taught_loss, 'did not teach Present Twist'),
    'deletion_lr_raises_loss_more': (_not_taught_loss, 'did not teach Present Twist'),
    'deletion_lowers_fraction': (_not_taught_fraction, 'did not teach Present Twist'),
    'reft_recovers_faster': (_not_removed, 'deletion did not remove Twist'),
    'reft_loss_below_not_in_pt': (lambda h: _set(h, DELETED, 'twist_loss', DEL, 1.0),
                                  'deletion did not remove Twist'),
    'probe_kept_small_lr': (_not_removed, 'deletion did not remove Twist'),
    'probe_kept_every_lr': (_not_removed, 'deletion did not remove Twist'),
    'probe_other_features_kept': (_not_removed, 'deletion did not remove Twist'),
    'probe_present_vs_not_in_pt': (_not_taught_fraction, 'did not teach Present Twist'),
}


def test_every_claim_has_its_three_histories():
  assert set(FAIL) == set(NOT_MEASURED) == set(paper.CLAIMS)


def test_the_papers_story_holds_every_claim(tmp_path):
  rows = judge(tmp_path, good_history())
  assert list(rows) == list(paper.CLAIMS)
  for claim_id, row in rows.items():
    assert row['verdict'] == claims_lib.HOLDS, row
    assert row['world'] == 'tinystories'
    assert row['n_seeds'] == (1 if claim_id == 'classifier_accuracy' else 2), row
    assert row['ci_low'] != '' and row['ci_high'] != '', row
    assert row['ci_low'] <= row['value'] <= row['ci_high'], row
    if claim_id != 'deletion_lr_raises_loss_more':  # Compares two lrs: no other control.
      assert row['control_value'] != '', row
    if claim_id != 'classifier_accuracy':
      assert row['manipulation_check'].startswith('passed: '), row


@pytest.mark.parametrize('claim_id', list(paper.CLAIMS))
def test_claim_fails_on_a_history_against_it(tmp_path, claim_id):
  history = good_history()
  FAIL[claim_id](history)
  row = judge(tmp_path, history)[claim_id]
  assert row['verdict'] == claims_lib.DOES_NOT_HOLD, row


@pytest.mark.parametrize('claim_id', list(paper.CLAIMS))
def test_claim_is_not_measured_when_its_manipulation_check_fails(tmp_path, claim_id):
  history = good_history()
  edit, reason = NOT_MEASURED[claim_id]
  edit(history)
  row = judge(tmp_path, history)[claim_id]
  assert row['verdict'].startswith(claims_lib.NOT_MEASURED), row
  assert reason in row['verdict'] and row['manipulation_check'].startswith('failed: '), row


def test_reft_speed_is_not_read_at_the_first_iteration(tmp_path):
  """Issue 11 item 5: the old rule compared the twist fraction at reFT iteration 1."""
  history = good_history()
  _slow_revival(history)
  first = CONFIG.reft.score_steps[0]
  frac = lambda run: history['logs'][run]['twist_fraction'][first]
  # The old rule held here: every deleted model is above Not-in-PT at iteration 1...
  assert all(frac('reft_' + m) > frac('reft_' + paper.NOT_IN_PT) for m in DELETED)
  row = judge(tmp_path, history)['reft_recovers_faster']
  assert row['verdict'] == claims_lib.DOES_NOT_HOLD, row  # ...but it recovers more slowly.
  # Not-in-PT reaches 3/4 of Present's at the second Table 1 point (the paper's 300).
  assert row['control_value'] == CONFIG.reft.score_steps[1]


def test_twists_left_after_deletion_are_not_a_fast_recovery(tmp_path):
  """A model still above the recovery level after deletion is left out, never 'recovered at 0'."""
  history = good_history()
  _set(history, DELETED[:1], 'twist_fraction', DEL, 90.0)
  history['logs']['reft_' + DELETED[0]]['twist_fraction'][0] = 90.0
  row = judge(tmp_path, history)['reft_recovers_faster']
  assert row['verdict'] == claims_lib.HOLDS
  assert 'in 5 of 6 models; left out: F (eta_M)' in row['manipulation_check']


def test_one_replicate_decides_nothing(tmp_path):
  """Issue 29 point 1: one replicate's Wilson / Newcombe / band intervals are the sampling
  noise of one model, not a verdict over seeds: every claim but the classifier's (one object,
  no seeds) is 'not measured (1 seed)', its single observation kept in the reason."""
  h = good_history()
  rows = claims.claims(CONFIG, [_logs(tmp_path, h)], [h['probes']], h['clf'], h['info'])
  for row in rows:
    if row['claim_id'] == 'classifier_accuracy':
      assert row['verdict'] == claims_lib.HOLDS, row
    else:
      assert row['verdict'] == claims_lib.not_measured('1 seed'), row
      assert 'a single observation' in row['reason'], row


def test_replicates_straddling_the_threshold_are_inconclusive(tmp_path):
  """Two replicates, one clearly for and one against: the t-interval straddles."""
  a, b = good_history(), good_history()
  _set(b, ['reft_' + m for m in DELETED], 'twist_loss', REFT, 1.6)  # Above Not-in-PT's 1.5.
  row = judge(tmp_path, a, b)['reft_loss_below_not_in_pt']
  assert row['verdict'] == claims_lib.INCONCLUSIVE and 'straddles' in row['reason'], row


def test_recovery_censored_in_both_arms_is_not_measured(tmp_path):
  """Issue 29 point 2: neither a deleted model nor Not-in-PT reaches 3/4 of Present's within
  the budget: no gap (never - never was scored 0, 'does not hold')."""
  history = good_history()
  for m in DELETED + [paper.NOT_IN_PT]:
    history['logs']['reft_' + m]['twist_fraction'] = dict(zip(POINTS, (5.0, 10.0, 20.0, 30.0)))
  row = judge(tmp_path, history)['reft_recovers_faster']
  assert row['verdict'] == claims_lib.not_measured(f'censored: neither revived within {REFT}'), row
  # Only Not-in-PT censored: the deleted models' gaps are lower bounds, and they hold.
  history = good_history()
  history['logs']['reft_' + paper.NOT_IN_PT]['twist_fraction'] = dict(
      zip(POINTS, (5.0, 10.0, 20.0, 30.0)))
  assert judge(tmp_path, history)['reft_recovers_faster']['verdict'] == claims_lib.HOLDS


def test_recovery_is_scored_on_a_doubling_grid():
  """Issue 29 point 11: the recovery claim reads 1, 2, 4, ... up to the budget beside Table
  1's points, and deletion moves the model as far as the paper's (lr budget)."""
  points = claims.reft_points(CONFIG)
  grid = [s for s in points if s]
  assert grid[0] == 1 and grid[-1] == REFT
  assert all(b <= 2 * a for a, b in zip(grid, grid[1:])), grid
  assert set(CONFIG.reft.score_steps) <= set(points)
  assert train.lr_budget_ratio(CONFIG, 'deletion') == pytest.approx(
      paper.DELETION_BUDGET_RATIO, rel=0.05)


def test_one_model_clearly_failing_fails_an_every_model_claim(tmp_path):
  history = good_history()
  _set(history, DELETED[-1:], 'twist_loss', DEL, 0.5)
  assert judge(tmp_path, history)['deletion_raises_loss']['verdict'] == claims_lib.DOES_NOT_HOLD


def test_classifier_below_its_threshold_leaves_twist_fractions_unread(tmp_path):
  history = good_history()
  history['clf']['accuracy'] = 80.0
  rows = judge(tmp_path, history)
  for claim_id in ('deletion_lowers_fraction', 'reft_recovers_faster', 'probe_kept_every_lr'):
    assert rows[claim_id]['verdict'] == claims_lib.not_measured(
        'the twist classifier is too inaccurate to read'), claim_id


def test_missing_measurements_are_not_measured(tmp_path):
  history = good_history()
  history['logs'] = {k: v for k, v in history['logs'].items()
                     if k in (paper.PRESENT, paper.NOT_IN_PT)}
  rows = judge(tmp_path, history)
  for claim_id in ('deletion_raises_loss', 'deletion_lowers_fraction',
                   'deletion_lr_raises_loss_more'):
    assert rows[claim_id]['verdict'].startswith(claims_lib.NOT_MEASURED), rows[claim_id]


def test_thresholds_are_read_from_paper(tmp_path, monkeypatch):
  stricter = dataclasses.replace(paper.CLAIMS['classifier_accuracy'], threshold=99.0)
  monkeypatch.setitem(paper.CLAIMS, 'classifier_accuracy', stricter)
  row = judge(tmp_path, good_history())['classifier_accuracy']
  assert row['threshold'] == '>= 99' and row['verdict'] == claims_lib.DOES_NOT_HOLD


def test_intervals():
  assert claims.rate(50.0, 64)[1:] == pytest.approx((38.1, 61.9), abs=0.05)  # Wilson.
  d, low, high = claims.difference(90.0, 5.0, 64)
  assert d == pytest.approx(85.0) and low < d < high and low > 70
  assert all(math.isnan(x) for x in claims.rate(None, 64))
  assert claims.first_step({0: 5.0, 1: 50.0, 8: 90.0}, 64, 60.0, bound=0) == 8
  assert claims.first_step({0: 5.0, 1: 50.0, 8: 55.0}, 64, 60.0, bound=2) == 1  # May reach.
  assert claims.first_step({0: 5.0, 1: 50.0}, 64, 60.0, bound=1) == 2  # Never: after the last.


def test_replicates_decide_by_an_interval_over_seeds(tmp_path):
  """Three replicates of the paper's story: every claim holds, with n_seeds 3 and a t-interval
  over the replicates' values (their mean in the middle)."""
  histories = [good_history() for _ in range(3)]
  for i, h in enumerate(histories):  # Replicates differ a little.
    _set(h, DELETED, 'twist_loss', DEL, 1.6 + 0.05 * i)
  rows = judge(tmp_path, *histories)
  for claim_id, row in rows.items():
    assert row['verdict'] == claims_lib.HOLDS, row
    assert row['n_seeds'] == (1 if claim_id == 'classifier_accuracy' else 3), row
  row = rows['deletion_raises_loss']  # Every model 1.6 + 0.05 i above Present's 1.0.
  assert row['value'] == pytest.approx(0.65) and row['ci_low'] > 0.02, row
  assert row['ci_low'] < row['value'] < row['ci_high'], row


def test_one_replicate_against_a_claim_is_not_averaged_away(tmp_path):
  """The replicates' mean would hold; one replicate's deletion lowered the loss: straddles."""
  histories = [good_history() for _ in range(3)]
  _set(histories[2], DELETED, 'twist_loss', DEL, 0.8)  # Below its Present's 1.0.
  mean_rise = (2 * 0.3 - 0.2) / 3  # eta_S models: 1.3, 1.3, 0.8 against Present's 1.0.
  assert mean_rise > paper.LOSS_MARGIN  # A bare comparison of means would say 'holds'.
  row = judge(tmp_path, *histories)['deletion_raises_loss']
  assert row['verdict'] == claims_lib.PARTLY and row['n_seeds'] == 3, row
  # Against its own Present: a replicate whose Present is worse is read against that one.
  histories = [good_history() for _ in range(3)]
  for m in DELETED:
    histories[1]['logs'][m]['twist_loss'][DEL] += 0.5
  histories[1]['logs'][paper.PRESENT]['twist_loss'][PT] += 0.5
  row = judge(tmp_path, *histories)['deletion_raises_loss']
  assert row['verdict'] == claims_lib.HOLDS and row['ci_high'] - row['ci_low'] < 1e-6, row


def test_mean_log_keeps_only_what_every_replicate_has(tmp_path):
  a, b = metrics.RunLog(tmp_path, 'a'), metrics.RunLog(tmp_path, 'b')
  a.data = {'twist_fraction': {'0': 10.0, '5': 20.0}}
  b.data = {'twist_fraction': {'0': 30.0}}
  mean = analysis.MeanLog([a, b])
  assert mean.get('twist_fraction', 0) == 20.0 and mean.get('twist_fraction', 5) is None
  with pytest.raises(TypeError, match='replicates'):
    mean.record(1, {'twist_fraction': 1.0})
