"""The PCFG wrapper analysis: a tiny end-to-end run through the binary; bad input fails early."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import pcfg_analysis as analysis_config
from wrapper_study import config_check
from wrapper_study.report import tables
from wrapper_study.experiments import pcfg_analysis

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(workdir, arg='smoke', *overrides):
  return subprocess.run(
      [sys.executable, 'launch/main.py', f'--config=configs/pcfg_analysis.py:{arg}',
       f'--workdir={workdir}', *overrides], cwd=REPO, capture_output=True, text=True, timeout=900,
      env={'PATH': '/usr/bin:/bin', 'HOME': str(workdir), 'JAX_PLATFORMS': 'cpu'})


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('analysis') / 'run'
  proc = _run(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_end_to_end_writes_every_figure_table_and_claim(smoke_run):
  workdir = smoke_run
  for stem in pcfg_analysis.FIGURES['main'].values():
    assert (workdir / 'figures' / f'{stem}.png').stat().st_size > 1000, stem
  claims = tables.read_csv(workdir / 'tables' / 'analysis_main_claims.csv')
  names = ' '.join(c['claim'] for c in claims)
  for tag in ('P1a', 'P1b', 'P2', 'P3', 'P4'):
    assert tag in names
  for c in claims:  # A verdict, with its reason where it is not a plain one.
    assert c['verdict'].split(' (')[0] in ('holds', 'partly', 'does not hold', 'not measured'), c
  reft = tables.read_csv(workdir / 'tables' / 'analysis_main_reft.csv')
  sources = {r['source'] for r in reft}
  assert {'scr+ft', 'scr', 'low/ft'} <= sources
  config = analysis_config.get_config('smoke')
  # Every reFT group has every seed, and one row per (source, C_Tr, lr).
  assert all(int(r['n_seeds']) == len(config.finetune.seeds) for r in reft)
  prune = np.load(next((workdir / 'analysis').glob('*_prune.npz')))
  n_members = len(config.finetune.lrs) * len(config.finetune.c_trs) * len(config.finetune.seeds)
  assert prune['acc_pt'].shape == (2, n_members, config.analysis.k_max + 1)
  probes = np.load(next((workdir / 'analysis').glob('*_probes.npz')))['acc']
  assert probes.shape == (1 + n_members, config.model.n_layers + 1, 2)
  assert (probes >= 0).all() and (probes <= 100).all()
  text = (workdir / 'report_main.md').read_text()
  assert 'Claims, checked' in text and 'Time (s)' in text


def test_rerun_redoes_nothing_and_checkpoint_of_another_architecture_fails(smoke_run):
  before = tables.read_csv(smoke_run / 'tables' / 'analysis_main_claims.csv')
  proc = _run(smoke_run)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Resumed' in proc.stderr
  assert tables.read_csv(smoke_run / 'tables' / 'analysis_main_claims.csv') == before
  # The workdir's checkpoints are of a d_model=16 model: refused, naming the field.
  proc = _run(smoke_run, 'smoke', '--config.model.d_model=32', '--config.model.d_mlp=64')
  assert proc.returncode != 0
  assert 'model.d_model: saved 16, expected 32' in proc.stderr


@pytest.mark.parametrize('field, value, match', [
    ('analysis.k_max', 10_000, r'analysis.k_max=10000 exceeds'),
    ('analysis.probe_test_samples', 0, r'analysis.probe_test_samples'),
    ('analysis.prune_samples', 0, r'analysis.prune_samples'),
    ('analysis.prune_matrices', 'heads', r'analysis.prune_matrices'),
    ('analysis.reft_source_c_trs', (0.3,), r'analysis.reft_source_c_trs'),
    ('analysis.scr_ft_prior', (0.5, 0.6, 0.0), r'analysis.scr_ft_prior'),
    ('analysis.reft_eval_steps', (1, 99), r'analysis.reft_eval_steps'),
    ('analysis.variant', 'mixed', r'analysis.variant'),
    ('analysis.probe_layers', (0, 5), r'analysis.probe_layers.*0\.\.1'),
])
def test_bad_config_fails_before_compute(field, value, match):
  config = analysis_config.get_config('smoke')
  section, _, name = field.rpartition('.')
  config[section][name] = value
  with pytest.raises(config_check.ConfigError, match=match):
    pcfg_analysis.validate(config)


def test_variants_configure_their_figures():
  for variant in analysis_config.VARIANTS:
    config = analysis_config.get_config(f'smoke,{variant}')
    pcfg_analysis.validate(config)
    assert config.analysis.variant == variant
  assert 'T_J1' in analysis_config.get_config('cpu,jailbreak').data.families
  with pytest.raises(ValueError, match='unknown variant'):
    analysis_config.get_config('cpu,everything')


def test_revival_step_is_the_first_evaluation_over_threshold():
  steps = np.array([0, 10, 20, 50])
  assert pcfg_analysis.revival_step(steps, [10, 95, 80, 99], 90) == 10
  assert pcfg_analysis.revival_step(steps, [10, 20, 30, 40], 90) is None


def test_weight_change_is_relative_per_matrix():
  pre = {'w': np.ones((2, 2), np.float32), 'b': np.full((2,), 2.0, np.float32)}
  post = {'w': np.stack([np.ones((2, 2)), 2 * np.ones((2, 2))]).astype(np.float32),
          'b': np.stack([np.full((2,), 2.0), np.full((2,), 2.0)]).astype(np.float32)}
  out = pcfg_analysis.weight_change(pre, post)
  np.testing.assert_allclose(out['w'], [0.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(out['b'], [0.0, 0.0], atol=1e-6)
