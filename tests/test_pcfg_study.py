"""The PCFG study: a tiny pretrain + fine-tune through the binary; bad configs fail early."""

import pathlib
import subprocess
import sys

import pytest

from configs import pcfg_study as pcfg_config
from wrapper_study import config_check
from wrapper_study import metrics
from wrapper_study.report import tables
from wrapper_study.experiments import pcfg_study

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(workdir, *overrides):
  return subprocess.run(
      [sys.executable, 'launch/main.py', '--config=configs/pcfg_study.py:smoke',
       f'--workdir={workdir}', *overrides], cwd=REPO, capture_output=True, text=True, timeout=900,
      env={'PATH': '/usr/bin:/bin', 'HOME': str(workdir), 'JAX_PLATFORMS': 'cpu'})


def test_binary_pretrains_fine_tunes_and_resumes(tmp_path):
  workdir = tmp_path / 'run'
  proc = _run(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = tables.read_csv(workdir / 'tables' / 'finetune_counter.csv')
  config = pcfg_config.get_config('smoke')
  f = config.finetune
  # One row per (kept checkpoint, lr, C_Tr), with both evaluation points and the paper beside.
  assert len(rows) == len(config.pretrain.keep_steps) * len(f.lrs) * len(f.c_trs)
  for key in ('c_te0/acc_o_pt@2', 'c_te1/acc_o_ft@4', 'paper c_te1/acc_o_ft@1'):
    assert key in rows[0]
  assert rows[0]['paper c_te0/acc_o_ft@1'] != ''  # Low prior rows match the paper's Table 5.
  assert (workdir / 'checkpoints' / 'pretrain_low_kept' / '3').exists()
  assert (workdir / 'checkpoints' / 'pretrain_low_kept' / '6').exists()
  scalars = metrics.read_scalars(str(workdir))
  assert 'pretrain_low/C_a' in scalars
  text = (workdir / 'report.md').read_text()
  assert 'Table 5 signatures' in text

  proc = _run(workdir)  # Everything finished: restored, not retrained.
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Resumed' in proc.stderr
  assert tables.read_csv(workdir / 'tables' / 'finetune_counter.csv') == rows


@pytest.mark.parametrize('field, value, match', [
    ('pretrain.priors', ((0.5, 0.6, 0.0),), r'pretrain.priors\[0\].*sums to'),
    ('pretrain.priors', ((0.9, 0.2, -0.1),), r'pretrain.priors\[0\].*>= 0'),
    ('pretrain.priors', ('lowest',), r"pretrain.priors\[0\].*'lowest': unknown name"),
    ('data.families', ('C', 'X'), r'data.families'),
    ('finetune.operand_ft', 'z', r"config.finetune: operand_ft='z': unknown operand"),
    ('finetune.c_trs', (0.0, 1.2), r'config.finetune.c_trs'),
    ('data.window_length', 500, r'config.data.window_length'),
    ('data.o_prime_count', 30, r'config.data.o_prime_count'),
    ('grammar', 's -> s s\n%terminals a', r'config.grammar'),
    ('finetune.task', 'sorter', r"config.finetune: task='sorter'"),
])
def test_bad_config_fails_before_compute(field, value, match):
  config = pcfg_config.get_config('smoke')
  section, _, name = field.rpartition('.')
  node = config[section] if section else config
  node[name] = value
  with pytest.raises(config_check.ConfigError, match=match):
    pcfg_study.validate(config)

