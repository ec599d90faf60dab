"""The one error surface: a user's mistake ends in one line on stderr, exit code 2, no traceback."""

import os
import subprocess
import sys

import pytest

from wrapper_study import config_check
from wrapper_study import host_devices

CASES = {  # What a user typed -> a piece the one line must contain.
    'missing file': (['--config=configs/nope.py'], 'configs/nope.py: no such file'),
    'unknown :arg': (['--config=configs/pcfg_study.py:smok'], "unknown config argument 'smok'"),
    'unknown name': (['--config=pcfg_stdy'], 'packaged configs'),
    'unknown experiment': (['--config=tracr_study:smoke', '--config.experiment=nosuch'],
                           "config.experiment='nosuch' is unknown"),
    'field typo': (['--config=tracr_study:smoke', '--config.finetune.lr=1e-2'],
                   'Did you mean "lrs"'),
    'unknown program': (['--config=tracr_study:smoke', '--config.counter.program=counterr'],
                        "config.counter.program='counterr' is unknown; valid: ['count',"),
    'unknown field, no close match': (
        ['--config=tracr_study:smoke', '--config.programs=("counter",)'],
        "unknown field --config.programs: the config has no field 'programs'; its fields: "
        "['cache_dir', 'calibration', 'counter',"),
    'unknown field of a section': (
        ['--config=tracr_study:smoke', '--config.finetune.zzz=1'],
        "section config.finetune has no field 'zzz'; its fields: ['batch_size', 'c_trs',"),
    'wrong type': (['--config=tracr_study:smoke', '--config.finetune.steps=many'], 'steps'),
    'nan lr': (['--config=pcfg_study:smoke', '--config.pretrain.lr=nan'],
               'config.pretrain.lr=nan is not a finite number'),
    'inf lr': (['--config=pcfg_study:smoke', '--config.pretrain.lr=inf'],
               'config.pretrain.lr=inf'),
    '1e999 in a grid': (['--config=pcfg_study:smoke', '--config.finetune.lrs=(1e-4,1e999)'],
                        'config.finetune.lrs[1]=inf'),
    'nan noise': (['--config=tracr_study:smoke', '--config.finetune.noise_std=nan'],
                  'config.finetune.noise_std=nan'),
    'recursive grammar on device': (
        ['--config=pcfg_study:smoke', '--config.data.on_device=True',
         '--config.grammar=%terminals a b c\ns -> s a [0.5] | b [0.3] | c [0.2]'],
        'config.data.on_device: the grammar is recursive'),
}


def _run(args, workdir):
  return subprocess.run([sys.executable, '-m', 'launch.main', *args, f'--workdir={workdir}'],
                        capture_output=True, text=True, timeout=120)


def _assert_one_line(proc, piece, after_start=False):
  """Exit 2, no traceback, one FATAL line; the only line unless the run had started logging."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  fatal = [line for line in lines if line.startswith('FATAL ')]
  assert len(fatal) == 1 and lines[-1] == fatal[0], proc.stderr[-2000:]
  assert after_start or len(lines) == 1, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr + proc.stdout
  assert piece in fatal[0], fatal[0]


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_is_one_line_before_any_compute(case, tmp_path):
  args, piece = CASES[case]
  proc = _run(args, tmp_path / 'run')
  _assert_one_line(proc, piece)
  assert not (tmp_path / 'run').exists()  # Refused before anything was written.


def test_a_missing_workdir_is_one_line(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'launch.main', '--config=tracr_study:smoke'],
                        capture_output=True, text=True, timeout=120, cwd=tmp_path,
                        env={**os.environ, 'PYTHONPATH': os.pathsep.join(sys.path)})
  _assert_one_line(proc, 'Flag --workdir must have a value')
  assert not list(tmp_path.iterdir())


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
  not_a_dir = tmp_path / 'file'
  not_a_dir.write_text('x')
  _assert_one_line(_run(['--config=tracr_study:smoke'], not_a_dir), 'is a file')


@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf'), 1e999])
def test_checks_refuse_non_finite_numbers(value):
  config = {'a': {'lr': value, 'lrs': (1e-3,)}}
  with pytest.raises(config_check.ConfigError, match='config.a.lr'):
    config_check.positive(config, 'a.lr')
  with pytest.raises(config_check.ConfigError, match='not a finite number'):
    config_check.all_finite(config)
  config = {'a': {'lr': 1.0, 'lrs': (1e-3, value)}}
  with pytest.raises(config_check.ConfigError, match='config.a.lrs'):
    config_check.positive_list(config, 'a.lrs')
  with pytest.raises(config_check.ConfigError, match=r'config.a.lrs\[1\]'):
    config_check.all_finite(config)
  config_check.all_finite({'a': {'lr': 1.0, 'name': 'x', 'n': 3, 'lrs': (1e-3,)}})


def test_a_bad_device_count_is_one_line_before_any_compute(tmp_path):
  env = dict(os.environ, **{host_devices.ENV: 'two'})
  proc = subprocess.run([sys.executable, '-m', 'launch.main', '--config=tracr_study:smoke',
                         f'--workdir={tmp_path / "run"}'], capture_output=True, text=True,
                        timeout=120, env=env)
  _assert_one_line(proc, f"FATAL environment error: {host_devices.ENV}='two' is not valid")
  assert not (tmp_path / 'run').exists()


def test_help_lists_the_packaged_configs_and_their_variants():
  proc = subprocess.run([sys.executable, '-m', 'launch.main', '--help'], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for name in ('tracr_study', 'pcfg_study', 'pcfg_analysis', 'tinystories_study'):
    assert f'  {name}: ' in proc.stdout
  assert "'smoke'" in proc.stdout and '--workdir' in proc.stdout


def _tree_bytes(root):
  return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_a_workdir_of_another_architecture_is_one_line_and_left_intact(tmp_path):
  workdir = tmp_path / 'run'
  first = subprocess.run([sys.executable, '-m', 'launch.main', '--config=pcfg_study:smoke',
                          f'--workdir={workdir}'], capture_output=True, text=True, timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  if host_devices.count() > 1:  # The launcher split the CPU before JAX started (issue 12).
    assert 'CpuDevice(id=1)' in first.stderr, first.stderr[-3000:]
  before = _tree_bytes(workdir / 'checkpoints')
  proc = _run(['--config=pcfg_study:smoke', '--config.model.d_model=32'], workdir)
  _assert_one_line(proc, 'different architecture', after_start=True)
  assert 'model.d_model' in proc.stderr
  assert _tree_bytes(workdir / 'checkpoints') == before


def test_a_diverged_single_run_ends_in_one_line(tmp_path):
  proc = _run(['--config=tinystories_study:smoke', '--config.pretrain.lr=1e30'], tmp_path / 'run')
  _assert_one_line(proc, 'FATAL training diverged: Non-finite', after_start=True)


def test_an_unknown_precision_names_the_field_and_the_choices(tmp_path):
  from configs import tracr_study  # pylint: disable=g-import-not-at-top
  from wrapper_study.experiments import tracr_study as study  # pylint: disable=g-import-not-at-top
  config = tracr_study.get_config('smoke')
  config.precision = 'fp16'
  with pytest.raises(config_check.ConfigError, match=r"config.precision='fp16'.*'fp32'.*'bf16'"):
    study.validate(config)
