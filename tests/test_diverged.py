"""A diverged member of a population is marked `diverged`, never shown as 0%; the rest go on."""

import subprocess
import sys

import numpy as np

from wrapper_study import population
from wrapper_study.report import plots
from wrapper_study.report import tables


def test_diverged_members_become_nan_and_are_left_out_of_bands():
  params_P = {'w': np.array([[1.0, 2.0], [np.nan, 1.0], [np.inf, 0.0]])}
  out = population.diverged_as_nan({'acc': np.array([50.0, 0.0, 0.0])}, params_P)
  assert out['acc'][0] == 50.0 and np.isnan(out['acc'][1:]).all()
  mean, (lo, hi) = plots.seed_band(np.array([[10.0, 1.0], [20.0, np.nan], [30.0, np.nan]]))
  assert mean.tolist() == [20.0, 1.0] and lo[1] == hi[1] == 1.0


def test_a_pcfg_grid_with_a_diverging_lr_marks_it_and_finishes(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'launch.main', '--config=pcfg_study:smoke',
                         '--config.finetune.lrs=(1e-4,1e30)', f'--workdir={tmp_path}'],
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = tables.read_csv(tmp_path / 'tables' / 'finetune_counter.csv')
  last = 'c_te0/acc_o_pt@4'
  bad = [r for r in rows if float(r['lr']) == 1e30]
  good = [r for r in rows if float(r['lr']) == 1e-4]
  assert bad and all(r[last] == tables.DIVERGED and r['n_diverged@4'] == r['n_seeds'] for r in bad)
  assert good and all(r['n_diverged@4'] == '0' and float(r[last]) >= 0 for r in good)
  assert '[2/2 diverged]' in (tmp_path / 'report.md').read_text()


def test_the_pcfg_analysis_marks_diverged_members_in_every_table(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'launch.main', '--config=pcfg_analysis:smoke',
                         '--config.finetune.lrs=(1e-5,1e30)', f'--workdir={tmp_path}'],
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for path in (tmp_path / 'tables').glob('analysis_*.csv'):
    if 'claims' not in path.name:  # Claims give their reasons in words.
      assert 'nan' not in path.read_text().lower(), path.name
  probes = tables.read_csv(tmp_path / 'tables' / 'analysis_main_probes.csv')
  assert any(r['accuracy'] == tables.DIVERGED for r in probes)
  assert any(r['accuracy'] not in ('', tables.DIVERGED) for r in probes)
  reft = tables.read_csv(tmp_path / 'tables' / 'analysis_main_reft.csv')
  assert any('diverged' in r['revived'] for r in reft)  # reFT starts from the eta_L models.
