"""The PCFG wrapper analysis: a tiny end-to-end run through the binary; bad input fails early."""

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import smoke_tables

from configs import pcfg_analysis as analysis_config
from wrapper_study import config_check
from wrapper_study import host_devices
from wrapper_study import metrics
from wrapper_study import run_record
from wrapper_study import tb_events
from wrapper_study.analysis import reft
from wrapper_study.experiments import pcfg_analysis
from wrapper_study.pcfg import analysis as pcfg_analysis_lib
from wrapper_study.pcfg import paper
from wrapper_study.pcfg import report as pcfg_report
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import tables

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(workdir, arg='smoke', *overrides):
  return subprocess.run(
      [sys.executable, 'launch/main.py', f'--config=configs/pcfg_analysis.py:{arg}',
       f'--workdir={workdir}', *overrides], cwd=REPO, capture_output=True, text=True, timeout=900,
      env={'PATH': '/usr/bin:/bin', 'HOME': str(workdir), 'JAX_PLATFORMS': 'cpu',
           host_devices.ENV: '1'})  # The smoke record was made on one device.


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('analysis') / 'run'
  # The smoke record was made with each population in one vmap; pinned, since the default
  # picks the mapping by member size (train.default_member_chunk; equal to float rounding).
  proc = _run(workdir, 'smoke', '--config.member_chunk=0')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_end_to_end_writes_every_figure_table_and_claim(smoke_run):
  workdir = smoke_run
  # Every number recorded before the move into wrapper_study/pcfg/ is reproduced, but the
  # claims table: its schema changed with issue 11 (CLAIMS_COLUMNS, checks, controls, and the
  # reFT claims no longer count a start above the threshold as a revival).
  assert [d for d in smoke_tables.differences('pcfg_analysis', workdir / 'tables')
          if not d.startswith('analysis_main_claims.csv')] == []
  with (workdir / 'tables' / 'analysis_main_claims.csv').open() as f:
    assert tuple(f.readline().strip().split(',')) == claims_lib.CLAIMS_COLUMNS
  for stem in pcfg_report.FIGURES['main'].values():
    assert (workdir / 'figures' / f'{stem}.png').stat().st_size > 1000, stem
  claims = tables.read_csv(workdir / 'tables' / 'analysis_main_claims.csv')
  names = ' '.join(c['claim_id'] for c in claims)
  for tag in ('P1a[low/ft]', 'P1b[low/ft]', 'P2[low/ft]', 'P3[low/ft]', 'P4.strong', 'P4.weak',
              'P4.scr_slower'):
    assert tag in names
  for c in claims:  # A verdict, with its reason where it is not a plain one.
    assert c['verdict'].split(' (')[0] in claims_lib.VERDICTS, c
    assert c['reason'] and c['world'] == 'pcfg', c
  reft_rows = tables.read_csv(workdir / 'tables' / 'analysis_main_reft.csv')
  assert tuple(reft_rows[0]) == reft.REVIVAL_COLUMNS  # The schema every world writes.
  sources = {r['source'] for r in reft_rows}
  assert {'scr+ft', 'scr', 'low/ft'} <= sources
  config = analysis_config.get_config('smoke')
  # Every reFT group has every seed, and one row per (source, C_Tr, lr).
  assert all(int(r['n_seeds']) == len(config.finetune.seeds) for r in reft_rows)
  prune = np.load(next((workdir / 'analysis').glob('*_prune_rand.npz')))
  n_members = len(config.finetune.lrs) * len(config.finetune.c_trs) * len(config.finetune.seeds)
  assert prune['acc_pt'].shape == (2, n_members, config.analysis.k_max + 1)
  # Issue 29: P2's control, K random units of each model over K = 0..15 (here k_max).
  assert prune['acc_pt_rand'].shape == (1, n_members, min(15, config.analysis.k_max) + 1)
  probes = np.load(next((workdir / 'analysis').glob('*_probes.npz')))['acc']
  assert probes.shape == (1 + n_members, config.model.n_layers + 1, 2)
  assert (probes >= 0).all() and (probes <= 100).all()
  text = (workdir / 'report_main.md').read_text()
  assert 'Claims, checked' in text and 'Time (s)' in text
  links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)  # Figures embedded, each resolving.
  assert {f'figures/{stem}.png' for stem in pcfg_report.FIGURES['main'].values()} == set(links)
  assert [l for l in links if not (workdir / l).is_file()] == []
  assert 'REDUCED scale' in text and 'reFT 4 iterations' in text
  tb = workdir / 'tb'  # Issue 14: a TensorBoard run per reFT member, named by source and hparams.
  runs = [r.split('/', 1)[1] for r in metrics.list_runs(str(tb)) if r.startswith('reft_main/')]
  assert len(runs) == len(set(runs)) == sum(int(r['n_seeds']) for r in reft_rows)
  assert {r.split(',')[0] for r in runs} >= {'source=low_ft', 'source=scr+ft', 'source=scr'}
  assert len(metrics.read_hparams(str(tb))['reft_main']['experiment']['metrics']) == 3
  assert tb_events.repeats(str(tb)) == {}
  assert metrics.read_text(str(tb / 'report_main'))['report_main.md'][-1][1] == text


def test_rerun_redoes_nothing_and_checkpoint_of_another_architecture_fails(smoke_run):
  before = tables.read_csv(smoke_run / 'tables' / 'analysis_main_claims.csv')
  cached = {p: p.stat().st_mtime_ns for p in (smoke_run / 'analysis').glob('*.npz')}
  run_record.forget(smoke_run)  # Go through the phases (a finished record would skip them).
  proc = _run(smoke_run, 'smoke', '--config.member_chunk=0')  # The fixture's config.
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Resumed' in proc.stderr and 'steps/s' not in proc.stderr  # No training step...
  # ...and no analysis recomputed: its cached results are read, not rewritten.
  assert cached and {p: p.stat().st_mtime_ns
                     for p in (smoke_run / 'analysis').glob('*.npz')} == cached
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


def test_units_to_restore_reads_its_thresholds_from_paper(monkeypatch):
  ks = [0, 1, 2, 5]
  curve_K = np.array([20.0, 30.0, 50.0, 80.0])  # Fine-tuning lost 60 of 80 points.
  assert pcfg_analysis_lib.units_to_restore(curve_K, 80.0, ks) == 2  # Back to >= 50.
  assert pcfg_analysis_lib.units_to_restore(curve_K, 25.0, ks) is None  # Only 5 points lost.
  monkeypatch.setattr(paper, 'RESTORE_FRACTION', 0.9)
  assert pcfg_analysis_lib.units_to_restore(curve_K, 80.0, ks) == 5


def test_prune_ks_are_one_by_one_up_to_the_few_neurons_of_fig7():
  config = analysis_config.get_config('')
  ks = pcfg_analysis_lib.prune_ks(config)
  assert ks[:paper.PRUNE_FEW_NEURONS + 1] == list(range(paper.PRUNE_FEW_NEURONS + 1))
  assert ks[-1] == config.analysis.k_max and ks[paper.PRUNE_FEW_NEURONS + 1] == 20
