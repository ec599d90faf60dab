"""Issue 13: PCFG fine-tuning lrs picked by behaviour (wrapper_study/pcfg/calibration.py)."""

import csv
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import pcfg_analysis as analysis_config
from configs import pcfg_study as pcfg_config
from wrapper_study import config_check
from wrapper_study.pcfg import calibration
from wrapper_study.pcfg import validate

REPO = pathlib.Path(__file__).resolve().parents[1]
GRID = (3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)


def _acc(by_lr: dict) -> list[float]:
  return [by_lr[lr] for lr in GRID]


def test_choose_picks_by_the_anchors():
  acc = _acc({3e-3: 100, 1e-3: 99.5, 3e-4: 98, 1e-4: 90, 3e-5: 70, 1e-5: 55, 3e-6: 30,
              1e-6: 20})
  got = calibration.choose(GRID, acc, learn_min=99, stay_max=60)
  # eta_L: the smallest lr >= 99; eta_S: the largest below it <= 60; eta_M: the grid lr
  # nearest sqrt(1e-3 * 1e-5) = 1e-4.
  assert (got['eta_L'], got['eta_M'], got['eta_S'], got['notes']) == (1e-3, 1e-4, 1e-5, [])


def test_choose_says_when_an_anchor_is_not_met():
  acc = _acc({3e-3: 95, 1e-3: 97, 3e-4: 90, 1e-4: 85, 3e-5: 80, 1e-5: 75, 3e-6: 70, 1e-6: 65})
  got = calibration.choose(GRID, acc, learn_min=99, stay_max=60)
  assert got['eta_L'] == 1e-3 and got['eta_S'] == 1e-6  # Best learner; smallest lr.
  assert len(got['notes']) == 2 and 'no lr reached 99%' in got['notes'][0]
  assert 'no lr below eta_L kept Acc O_FT <= 60%' in got['notes'][1]


def test_choose_takes_the_geometric_mean_when_no_grid_lr_lies_between():
  got = calibration.choose((1e-3, 1e-4), (100.0, 10.0), learn_min=99, stay_max=60)
  assert (got['eta_L'], got['eta_S']) == (1e-3, 1e-4)
  assert got['eta_M'] == pytest.approx(np.sqrt(1e-7), rel=1e-3)


def test_lr_budget_and_movement():
  # Unit-peak warmup + cosine: the budget scales with the lr and is below lr x steps.
  one = calibration.lr_budget(1.0, 0.2, 100)
  assert 0.4 * 100 < one < 0.7 * 100
  assert calibration.lr_budget(1e-3, 0.2, 100) == pytest.approx(1e-3 * one)
  assert calibration.paper_budget_ratio(1e-4) == pytest.approx(0.005)
  init = {'w': np.zeros(4)}
  pt = {'w': np.array([1.0, 0, 0, 0])}
  ft = {'w': np.array([1.0, 0.1, 0, 0])}
  assert calibration.movement(ft, pt, init) == pytest.approx(0.1)


def test_only_the_cpu_scale_calibrates():
  assert calibration.needed(pcfg_config.get_config(''))
  assert calibration.needed(analysis_config.get_config(''))
  for arg in ('paper', 'smoke'):
    assert not calibration.needed(pcfg_config.get_config(arg))
    assert tuple(analysis_config.get_config(arg).analysis.reft_lrs) == (1e-5, 1e-6)
  assert tuple(pcfg_config.get_config('paper').finetune.lrs) == (1e-4, 1e-5, 1e-6)


def test_the_calibration_prior_runs_first_and_reft_lrs_follow_the_choice():
  config = analysis_config.get_config('')
  config.pretrain.priors = ('high', 'low')
  assert calibration.ordered_priors(config) == ['low', 'high']
  chosen = calibration.with_lrs(config, dict(eta_L=1e-3, eta_M=1e-4, eta_S=1e-5, notes=[]))
  assert tuple(chosen.finetune.lrs) == (1e-3, 1e-4, 1e-5)
  assert tuple(chosen.analysis.reft_lrs) == (1e-4, 1e-5)  # eta_M, eta_S.
  assert tuple(config.finetune.lrs) == ()  # The caller's config is left alone.


@pytest.mark.parametrize('field,value,message', [
    ('calibration.stay_max', 99.0, 'must be below calibration.learn_min'),
    ('calibration.prior', 'medium', r"must be one of pretrain.priors \['low', 'high'\]"),
    ('calibration.seed', 1, 'must not be one of finetune.seeds'),
    ('calibration.lr_grid', (1e-3, 1e-4), 'at least 3 distinct lrs'),
    ('calibration.learn_min', 120.0, 'must be a percentage'),
])
def test_bad_calibration_fields_are_named(field, value, message):
  config = pcfg_config.get_config('')
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(config_check.ConfigError, match=message) as e:
    validate.study(config)
  assert f'config.{field}=' in str(e.value)


def test_a_run_calibrates_and_fine_tunes_at_the_chosen_lrs(tmp_path):
  """The smoke study with finetune.lrs=(): the calibration phase, its table, figure and report
  section, and the grid fine-tuned at exactly the lrs it chose."""
  proc = subprocess.run(
      [sys.executable, 'launch/main.py', '--config=configs/pcfg_study.py:smoke',
       f'--workdir={tmp_path}', '--config.finetune.lrs=()',
       '--config.calibration.lr_grid=(3e-3,1e-3,1e-4,1e-5)'],
      cwd=REPO, capture_output=True, text=True, timeout=900,
      env={'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path), 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '] calibrate lrs' in proc.stderr
  with open(tmp_path / 'tables' / 'calibration.csv') as f:
    cal = list(csv.DictReader(f))
  assert sorted(float(r['lr']) for r in cal) == [1e-5, 1e-4, 1e-3, 3e-3]
  acc = {float(r['lr']): float(r['acc_o_ft']) for r in cal}
  want = calibration.choose(list(acc), list(acc.values()), 99.0, 60.0)
  with open(tmp_path / 'tables' / 'finetune_counter.csv') as f:
    used = {float(r['lr']) for r in csv.DictReader(f)}
  assert used == {want['eta_L'], want['eta_M'], want['eta_S']}
  report = (tmp_path / 'report.md').read_text()
  assert '## Calibration, the starting point' in report
  assert f"**Chosen: eta_L {want['eta_L']:g}" in report
  assert (tmp_path / 'figures' / 'lr_calibration.png').stat().st_size > 1000
