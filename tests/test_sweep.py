"""Sweeps: grid expansion, names, flag quoting, validation; real sweeps end to end."""

import pathlib
import subprocess
import sys
import textwrap

from absl import flags
from ml_collections import config_flags
import pytest

from wrapper_study.report import tables
from wrapper_study import sweep as sweep_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
TRACR_SMOKE = str(REPO / 'configs/tracr_study.py:smoke')
# The smallest Tracr study: one program, one pruning granularity.
TRACR_FIXED = {'tasks': ('counter',), 'pruning.granularities': ('weight',)}

TOY_CONFIG = '''
import ml_collections

def get_config(arg=''):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.name = 'x'
  c.flag = False
  c.anything = ml_collections.config_dict.placeholder(object)  # Any literal.
  c.unset = None  # ml_collections cannot override it from the command line.
  c.train = ml_collections.ConfigDict(dict(lr=0.1, lrs=(0.1,), tags=('a',)))
  return c
'''


@pytest.fixture
def toy(tmp_path):
  path = tmp_path / 'toy.py'
  path.write_text(TOY_CONFIG)
  return str(path)


def _parse(cmd):
  """Parses a run's command line as launch/main.py would."""
  fv = flags.FlagValues()
  argv = cmd[2:]  # cmd[1:3] is '-m launch.main': argv[0] is the module.
  config = config_flags.DEFINE_config_file('config', None, '', flag_values=fv, lock_config=True,
                                           sys_argv=argv)
  flags.DEFINE_string('workdir', None, '', flag_values=fv)
  fv(argv)
  return config.value


def test_expand_is_the_ordered_product():
  runs = sweep_lib.expand({'b': (1, 2), 'a': ('x', 'y', 'z')})
  assert runs[:2] == [{'b': 1, 'a': 'x'}, {'b': 1, 'a': 'y'}]
  assert len(runs) == 6 and list(runs[0]) == ['b', 'a']
  assert sweep_lib.expand({}) == [{}]
  with pytest.raises(sweep_lib.SweepError, match=r"grid\['a'\] is empty"):
    sweep_lib.expand({'b': (1,), 'a': ()})


def test_run_names_are_readable_safe_and_distinct():
  assert sweep_lib.run_name({'finetune.steps': 6, 'seed': 1}) == 'finetune.steps=6,seed=1'
  assert sweep_lib.run_name({'lr': 1e-05}) == 'lr=1e-05'
  assert sweep_lib.run_name({}) == 'default'
  odd = [sweep_lib.run_name({'s': v}) for v in ('a b', 'a/b', 'a_b', (1, 2))]
  assert len(set(odd)) == 4
  for name in odd:
    assert all(c.isalnum() or c in '._,=+-' for c in name), name
  long = sweep_lib.run_name({f'field{i}': 'v' * 20 for i in range(10)})
  assert len(long) <= 100
  assert long == sweep_lib.run_name({f'field{i}': 'v' * 20 for i in range(10)})


@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')  # In ml_collections.
def test_command_flags_parse_back_to_the_values(toy, tmp_path):
  grid = {'train.lrs': [(0.1, 0.01), (1e-5,)], 'name': ['7', 'a b'],
          'anything': ['hello', (1, 2)]}
  fixed = {'flag': True, 'train.tags': ('a', 'b c'), 'train.lr': 0, 'seed': 3}
  runs = sweep_lib.plan(sweep_lib.Sweep(toy, tmp_path / 'sw', grid, fixed))
  assert len(runs) == 8
  cmd = sweep_lib.command(runs[0])
  assert cmd[:3] == [sys.executable, '-m', 'launch.main']
  assert '--config.train.lrs=(0.1,0.01)' in cmd and '--config.name=7' in cmd
  assert cmd[4] == f'--workdir={runs[0].workdir}'
  assert runs[0].workdir == (tmp_path / 'sw' / 'runs' / runs[0].name).resolve()
  for run in runs:
    config = _parse(sweep_lib.command(run))
    for field, value in [*dict(run.values).items(), *fixed.items()]:
      got = config
      for part in field.split('.'):
        got = got[part]
      # train.lr is a float field given an int: ml_collections casts it.
      assert got == value and (type(got) is type(value) or field == 'train.lr'), (field, got)


@pytest.mark.parametrize('grid, fixed, match', [
    ({'train.lr': (0.1,), 'sed': (1,)}, {}, r"Unknown config field 'sed'. Did you mean seed"),
    ({'train.lrz': (0.1,)}, {}, r"'train.lrz'. Did you mean train.lr.*Valid fields in train: "),
    ({'seed.x': (1,)}, {}, r"'seed.x': seed is a int, not a section"),
    ({}, {'nope': 1}, r"Unknown config field 'nope'"),
    ({'seed': ()}, {}, r"grid\['seed'\] is empty"),
    ({'seed': 3}, {}, r"grid\['seed'\]=3 must be a list or tuple"),
    ({'seed': (1, 'a')}, {}, r"grid value seed='a' does not fit the field \(type int\)"),
    ({'seed': (1, 1)}, {}, r"the same name 'seed=1'"),
    ({'seed': (1,)}, {'seed': 2}, r'in both grid and fixed'),
    ({'unset': (1,)}, {}, r"'unset' is None in the base config"),
])
def test_bad_sweeps_fail_before_any_run(toy, tmp_path, grid, fixed, match):
  with pytest.raises(sweep_lib.SweepError, match=match):
    sweep_lib.launch(sweep_lib.Sweep(toy, tmp_path / 'sw', grid, fixed))
  assert not (tmp_path / 'sw').exists()


def test_unknown_backend_fails_before_any_run(toy, tmp_path):
  with pytest.raises(sweep_lib.SweepError, match=r"Unknown backend 'slurm'; valid: local, "):
    sweep_lib.launch(sweep_lib.Sweep(toy, tmp_path / 'sw', {'seed': (1,)}), backend='slurm')
  assert not (tmp_path / 'sw').exists()


def test_example_sweep_file_keeps_grid_order(tmp_path):
  for arg in ('', 'smoke'):
    spec = sweep_lib.load_spec(str(REPO / 'configs/sweeps/tracr_lr_seeds.py') + f':{arg}',
                               'get_sweep')
    runs = sweep_lib.plan(sweep_lib.from_config(spec, tmp_path))
    assert [r.name.split(',')[1] for r in runs] == ['seed=0', 'seed=1'] * 2
    assert runs[0].name.startswith('finetune.steps=')


def test_gather_adds_run_and_grid_columns(toy, tmp_path):
  sweep = sweep_lib.Sweep(toy, tmp_path / 'sw', {'seed': (0, 1, 2), 'name': ('p',)})
  runs = sweep_lib.plan(sweep)
  for i, run in enumerate(runs[:2]):  # Two finished runs; the third never ran.
    tables.write_csv(run.workdir / 'tables/t.csv', [{'seed': 10 + i, 'acc': i}])
    (run.workdir / 'report.md').write_text('x')
    (run.workdir / sweep_lib.DONE).write_text('')
  sweep_lib.gather(sweep, runs)
  rows = tables.read_csv(tmp_path / 'sw/tables/t.csv')
  # The table has its own 'seed' column, so the grid's becomes config.seed.
  assert list(rows[0]) == ['run', 'config.seed', 'name', 'seed', 'acc']
  assert [(r['run'], r['config.seed'], r['seed']) for r in rows] == [
      (runs[0].name, '0', '10'), (runs[1].name, '1', '11')]


# --- Real sweeps of the smallest Tracr study (each run ~20-30 s). ---


@pytest.fixture
def shared_cache(tracr_cache, monkeypatch):
  # Inherited by every run's process, so tracr compiles once per session.
  monkeypatch.setenv('WRAPPER_STUDY_CACHE', tracr_cache)


def _mtimes(run):
  return {p.name: p.stat().st_mtime_ns for p in run.workdir.iterdir()}


def test_local_sweep_isolates_a_failure_gathers_and_skips_on_relaunch(shared_cache, tmp_path):
  # seed=-1 fails the study's validation: exactly one of the three runs fails.
  sweep = sweep_lib.Sweep(TRACR_SMOKE, tmp_path / 'sw', {'seed': (-1, 0, 1)}, TRACR_FIXED)
  summary = sweep_lib.launch(sweep)
  bad, good = summary.failed, summary.done
  assert [r.name for r in bad] == ['seed=-1'] and [r.name for r in good] == ['seed=0', 'seed=1']
  assert not summary.skipped and not summary.ok
  failed = (bad[0].workdir / sweep_lib.FAILED).read_text()
  first = failed.split('\n')[0]  # One line: how it ended and the launcher's FATAL line.
  assert first.startswith('exit code 2: FATAL config error: config.seed=-1 is invalid'), failed
  assert not (bad[0].workdir / sweep_lib.DONE).exists()
  for run in good:  # The failure (run first) did not stop them.
    assert (run.workdir / sweep_lib.DONE).is_file() and (run.workdir / 'report.md').is_file()
  rows = tables.read_csv(tmp_path / 'sw/tables/table3_counter.csv')
  # The per-member tables (members_counter.csv) have a 'seed' column of their own, so the
  # grid's seed is gathered as 'config.seed' in every table.
  assert list(rows[0])[:2] == ['run', 'config.seed']
  assert {(r['run'], r['config.seed']) for r in rows} == {('seed=0', '0'), ('seed=1', '1')}
  index = (tmp_path / 'sw/report.md').read_text()
  assert '[seed=0](runs/seed=0/report.md)' in index and 'FAILED: exit code 2: FATAL config error' in index

  # Relaunch through the binary: finished runs untouched, the failed one retried.
  before = {r.name: _mtimes(r) for r in good}
  sweep_file = tmp_path / 'sweep.py'
  sweep_file.write_text(textwrap.dedent(f'''
      import ml_collections
      def get_sweep(arg=''):
        s = ml_collections.ConfigDict(convert_dict=False)
        s.base = {TRACR_SMOKE!r}
        s.grid = {{'seed': (-1, 0, 1)}}
        s.fixed = {TRACR_FIXED!r}
        s.slurm = {{}}
        return s
  '''))
  out = subprocess.run(
      [sys.executable, 'launch/sweep.py', f'--sweep={sweep_file}', f'--sweep_dir={tmp_path / "sw"}'],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 1, out.stderr[-2000:]
  assert '0 done, 2 skipped (finished earlier), 1 failed' in out.stdout, out.stdout
  assert {r.name: _mtimes(r) for r in good} == before
  assert (bad[0].workdir / sweep_lib.LOG).read_text().count('=== ') == 2
  assert (bad[0].workdir / sweep_lib.FAILED).is_file()


def test_submitit_local_backend(shared_cache, tmp_path):
  sweep = sweep_lib.Sweep(TRACR_SMOKE, tmp_path / 'sw', {'seed': (0, -1)}, TRACR_FIXED,
                          slurm={'timeout_min': 10, 'partition': 'ignored-locally'})
  summary = sweep_lib.launch(sweep, backend='submitit_local')
  assert [r.name for r in summary.done] == ['seed=0']
  assert [r.name for r in summary.failed] == ['seed=-1']
  assert (summary.done[0].workdir / sweep_lib.DONE).is_file()
  assert 'config.seed=-1 is invalid' in (summary.failed[0].workdir / sweep_lib.FAILED).read_text()
  assert list((tmp_path / 'sw/submitit').glob('*_result.pkl'))  # Went through submitit jobs.
  rows = tables.read_csv(tmp_path / 'sw/tables/table3_counter.csv')
  assert {r['run'] for r in rows} == {'seed=0'}


def test_submitit_job_that_dies_is_recorded_as_failed(shared_cache, tmp_path):
  # A 3 s job limit kills the job mid-run, so run_one cannot write FAILED itself.
  sweep = sweep_lib.Sweep(TRACR_SMOKE, tmp_path / 'sw', {'seed': (0,)}, TRACR_FIXED,
                          slurm={'timeout_min': 0.05, 'signal_delay_s': 1})
  summary = sweep_lib.launch(sweep, backend='submitit_local')
  assert [r.name for r in summary.failed] == ['seed=0']
  failed = (summary.failed[0].workdir / sweep_lib.FAILED).read_text()
  assert failed.startswith('submitit job ') and 'timed-out' in failed.split('\n')[0], failed


def test_a_killed_run_is_failed_with_its_signal_and_alone_rerun(toy, tmp_path, monkeypatch):
  # Each run's process stands in for the binary: 'kill' dies by SIGKILL, 'ok' writes a report.
  script = ('import os, pathlib, signal, sys\n'
            'workdir = pathlib.Path(sys.argv[1]); workdir.mkdir(parents=True, exist_ok=True)\n'
            'if sys.argv[2] == "kill": os.kill(os.getpid(), signal.SIGKILL)\n'
            '(workdir / "report.md").write_text("ok")\n')
  calls = []

  def command(run):
    calls.append(run.name)
    return [sys.executable, '-c', script, str(run.workdir), dict(run.values)['name']]

  monkeypatch.setattr(sweep_lib, 'command', command)
  sweep = sweep_lib.Sweep(toy, tmp_path / 'sw', {'name': ('ok', 'kill', 'ok2')})
  summary = sweep_lib.launch(sweep)
  assert [r.name for r in summary.done] == ['name=ok', 'name=ok2']
  assert [r.name for r in summary.failed] == ['name=kill']
  reason = (summary.failed[0].workdir / sweep_lib.FAILED).read_text().split('\n')[0]
  assert reason == 'killed by SIGKILL'
  calls.clear()
  again = sweep_lib.launch(sweep)  # The relaunch reruns only the killed run.
  assert calls == ['name=kill'] and len(again.skipped) == 2
