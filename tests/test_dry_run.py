"""`--dry_run`: every training phase compiled on abstract inputs; nothing trained or written."""

import importlib
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import tracr_study as tracr_config
from wrapper_study import dry_run
from wrapper_study import experiments
from wrapper_study import host_devices
from wrapper_study import losses
from wrapper_study import model as model_lib
from wrapper_study import optim

# Every training phase each smoke config plans (wrapper_study/<world>/train.py dry_run_phases).
PHASES = {
    'tracr_study:smoke': ['counter/finetune', 'counter/reft + Scr.+FT',
                          'max_identifier/finetune', 'max_identifier/reft + Scr.+FT'],
    'pcfg_study:smoke': ['pretrain (each prior)', 'fine-tune grid (each prior, kept step)'],
    'pcfg_analysis:smoke': ['pretrain (each prior, Scr.+FT base)',
                            'fine-tune grid (each prior, arm)', 'reFT + Scr.+FT + Scr.'],
    'tinystories_study:smoke': ['pretrain (Present, Not-in-PT)', 'deletion (each protocol x lr)',
                                'reFT (each deleted model, Not-in-PT)'],
}


def _table(stdout: str) -> dict[str, list[str]]:
  """phase -> its cells, from the printed markdown table."""
  rows = [l.strip('|').split('|') for l in stdout.splitlines() if l.startswith('| ')]
  return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[1:]}


def _check_table(stdout: str, phases: list[str]) -> None:
  table = _table(stdout)
  assert list(table) == phases, stdout
  for phase, cells in table.items():
    params, members, runs, gflop, memory, steps, pflop, *times = cells
    assert float(gflop) > 0 and float(pflop) > 0 and int(steps) > 0, (phase, cells)
    assert re.fullmatch(r'[\d.]+ [MG]B', memory), cells
    assert times and all(re.fullmatch(r'[\d.]+ (ms|s|min|h)', t) for t in times), cells
  assert 'Not knowable without the device' in stdout


def test_the_binary_plans_every_phase_and_trains_nothing(tmp_path, tracr_cache):
  env = {**os.environ, host_devices.ENV: '1', 'JAX_PLATFORMS': 'cpu',
         'WRAPPER_STUDY_CACHE': tracr_cache}
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.main', '--config=tracr_study:smoke', f'--workdir={workdir}',
       '--dry_run', '--dry_run_memory_gb=0.004'], env=env, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _check_table(proc.stdout, PHASES['tracr_study:smoke'])
  assert '1 device(s)' in proc.stdout and '| time H100 SXM | time TPU v5e |' in proc.stdout
  # The smoke grids need a few MB: named in one line per target.
  assert 'Does not fit TPU v5e (0.004 GB): max_identifier/finetune (' in proc.stdout
  assert not workdir.exists()  # No checkpoint, no event file, no workdir at all.
  assert 'steps/s' not in proc.stderr and 'Resumed' not in proc.stderr  # No training step.


@pytest.mark.parametrize('name', ['pcfg_study', 'pcfg_analysis', 'tinystories_study'])
def test_every_world_plans_its_phases(name, tmp_path):
  """The other worlds' smoke plans, in this process (the binary's path is tested above)."""
  config = importlib.import_module(f'configs.{name}').get_config('smoke')
  experiment = experiments.get(config.experiment)
  experiment.validate(config)
  rows = dry_run.plan(experiment.plan(config), devices=jax.devices()[:1], progress=lambda _: None)
  _check_table(dry_run.report(rows, title=name, targets=('v5e',)), PHASES[f'{name}:smoke'])
  assert not list(tmp_path.iterdir())


def test_a_step_costs_what_xla_counts_for_a_known_model():
  """The plan's FLOPs of a one-model phase: about 6 x params x tokens (the matmuls)."""
  cfg = model_lib.TransformerConfig(vocab_size=64, max_len=32, d_model=64, n_layers=2,
                                    n_heads=4, d_mlp=256)
  params = jax.eval_shape(lambda: model_lib.init_params(cfg, jax.random.PRNGKey(0)))
  batch = jax.ShapeDtypeStruct((8, 33), np.int32)
  tx = optim.make_optimizer(dict(name='sgd', lr=1.0, schedule='constant'), 10)
  phase = dry_run.Phase('lm', params, batch, losses.next_token_loss_fn(cfg), tx, steps=10,
                        data_parallel=False)
  row = dry_run.measure(phase, devices=jax.devices()[:1])
  six_nd = 6 * dry_run.n_params(params) * 8 * 32 * 1e-9
  assert six_nd < row.gflop_per_step < 3 * six_nd  # Plus attention scores and elementwise ops.
  assert row.seconds(1.0, 0.5) == pytest.approx(row.gflop_per_step * 1e9 / 0.5e12 * 10)
  assert row.peak_gb > row.args_gb > 0
  # A population of 4 costs 4 members' steps.
  pop = dry_run.measure(dry_run.Phase('pop', params, batch, losses.next_token_loss_fn(cfg), tx,
                                      steps=10, members=4),
                        devices=jax.devices()[:1])
  assert pop.gflop_per_step == pytest.approx(4 * row.gflop_per_step, rel=0.05)


def test_the_tracr_grid_is_planned_at_its_size():
  config = tracr_config.get_config('smoke')
  config.tasks = ('counter',)
  phases = {p.name: p for p in train_phases(config)}
  f = config.finetune
  assert phases['counter/finetune'].members == len(f.lrs) * len(f.c_trs) * len(f.seeds)
  assert phases['counter/finetune'].steps == f.steps


def train_phases(config):
  from wrapper_study.experiments import tracr_study  # pylint: disable=g-import-not-at-top
  return tracr_study.plan(config)
