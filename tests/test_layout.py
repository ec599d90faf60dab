"""The layout's rules: small modules, thin experiments, data flowing one way, installable."""

import pathlib
import subprocess
import sys
import venv

import pytest

import configs
import import_graph

REPO = import_graph.REPO
MAX_LINES = 500  # Per module of wrapper_study/: one job each.


def test_no_module_of_the_library_is_over_the_size_limit():
  sizes = {p.relative_to(REPO): len(p.read_text().splitlines())
           for p in (REPO / 'wrapper_study').rglob('*.py')}
  assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_no_import_cycle():
  assert import_graph.cycles(import_graph.graph()) == []


def test_experiments_only_sequence_worlds():
  g = import_graph.graph()
  experiments = {m for m in g if m.startswith('wrapper_study.experiments.')}
  assert experiments >= {'wrapper_study.experiments.tracr_study',
                         'wrapper_study.experiments.pcfg_study'}
  for m in experiments:
    assert not g[m] & experiments, f'{m} imports another experiment: {g[m] & experiments}'
  # Data flows one way: nothing below the experiments reaches up into them.
  for m, deps in g.items():
    if m.startswith('wrapper_study.') and not m.startswith('wrapper_study.experiments'):
      assert not deps & experiments, f'{m} imports an experiment'
  # The shared layers know no world.
  worlds = ('wrapper_study.tracr', 'wrapper_study.pcfg', 'wrapper_study.tinystories')
  for m, deps in g.items():
    if m.startswith(('wrapper_study.analysis', 'wrapper_study.report')):
      assert not {d for d in deps if d.startswith(worlds)}, f'{m} imports a world'


def test_benchmarks_import_no_experiment():
  for path in (REPO / 'benchmarks').glob('*.py'):
    assert 'wrapper_study.experiments' not in path.read_text(), path.name
    assert 'from wrapper_study import experiments' not in path.read_text(), path.name


def test_config_names_resolve_to_packaged_files(tmp_path):
  assert {'tracr_study', 'pcfg_study', 'pcfg_analysis', 'tinystories_study'} <= set(configs.names())
  assert configs.resolve('tracr_study:smoke') == f'{configs.DIR / "tracr_study.py"}:smoke'
  assert configs.resolve('configs/pcfg_study.py') == 'configs/pcfg_study.py'  # An existing file.
  assert configs.resolve('tracr_lr_seeds', 'sweeps') == str(configs.DIR / 'sweeps' /
                                                            'tracr_lr_seeds.py')
  assert configs.resolve('nope:x') == 'nope:x'  # Left for the loader to report.
  own = tmp_path / 'tracr_study.py'  # A user's file of the same name wins when it exists.
  own.write_text('')
  assert configs.resolve(str(own)) == str(own)


def _collected(cmd):
  out = subprocess.run(cmd + ['--collect-only', '-q', 'tests'], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return sorted(line for line in out.stdout.splitlines() if '::' in line)


def test_plain_pytest_collects_what_python_m_pytest_collects():
  plain = _collected([str(pathlib.Path(sys.executable).parent / 'pytest')])
  module = _collected([sys.executable, '-m', 'pytest'])
  assert plain == module and len(plain) > 50


def test_ci_runs_exactly_the_readme_test_command():
  readme = (REPO / 'README.md').read_text()
  block = readme.split('# 2. Install, then run the tests (what CI runs):', 1)[1].split('```', 1)[0]
  readme_cmd = block.strip().splitlines()[0].split('&&', 1)[1].strip()
  ci_lines = [l.strip() for l in (REPO / '.ci' / 'run').read_text().splitlines()
              if l.strip() and not l.lstrip().startswith('#')]
  assert ci_lines[-1] == readme_cmd


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_a_non_editable_install_runs_a_study_from_another_directory(tmp_path, tracr_cache):
  # A fresh venv that sees this interpreter's packages (jax & co. are not
  # downloaded again) gets wrapper_study, configs and launch from `pip install .`.
  env_dir = tmp_path / 'venv'
  venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
  py = env_dir / 'bin' / 'python'
  build = tmp_path / 'src'  # A copy, so the build leaves nothing in the checkout.
  subprocess.run(['git', 'clone', '-q', '--no-hardlinks', str(REPO), str(build)], check=True)
  for rel in subprocess.run(['git', 'ls-files', '-m', '-o', '--exclude-standard'], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split():
    src = REPO / rel  # Uncommitted work is part of what is tested.
    if src.is_file():
      (build / rel).parent.mkdir(parents=True, exist_ok=True)
      (build / rel).write_bytes(src.read_bytes())
  subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                  str(build)], check=True, timeout=300, capture_output=True)
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  where = subprocess.run([str(py), '-c', 'import wrapper_study, configs, launch;'
                          'print(wrapper_study.__file__, configs.__file__, launch.__file__)'],
                         cwd=elsewhere, capture_output=True, text=True, check=True).stdout
  assert str(REPO) not in where and str(env_dir) in where, where
  env = {'PATH': f'{env_dir / "bin"}:/usr/bin:/bin', 'WRAPPER_STUDY_CACHE': tracr_cache,
         'HOME': str(tmp_path)}
  proc = subprocess.run([str(env_dir / 'bin' / 'wrapper-study'), '--config=tracr_study:smoke',
                         '--config.tasks=("counter",)', f'--workdir={tmp_path / "run"}'],
                        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert (tmp_path / 'run' / 'report.md').is_file()
