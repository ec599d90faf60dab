"""The TinyStories study: the whole pipeline through the binary; bad input fails before compute."""

import json
import pathlib
import re
import subprocess
import sys

import jax
import pytest

from configs import tinystories_study as ts_config
import smoke_tables
from wrapper_study import config_check
from wrapper_study import host_devices
from wrapper_study import metrics
from wrapper_study import model as model_lib
from wrapper_study import run_record
from wrapper_study import tb_events
from wrapper_study.experiments import tinystories_study as study
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import paper_agreement
from wrapper_study.report import tables
from wrapper_study.tinystories import agreement as ts_agreement
from wrapper_study.tinystories import data
from wrapper_study.tinystories import instruct
from wrapper_study.tinystories import model as ts_model
from wrapper_study.tinystories import paper
from wrapper_study.tinystories import synthetic
from wrapper_study.tinystories import tokenizer as tokenizer_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


# The smoke record (tests/smoke_tables.py) was made on the first synthetic data (one twist
# template) with the explicit attention; pinned here, since the defaults are now 'v2' and
# 'fused' (issue 13; v2 has its own tests, 'fused' is the same function: the two-device run
# below uses it and matches the pinned run).
RECORDED_DATA = '--config.data.synthetic_version=v1'
RECORDED = (RECORDED_DATA, '--config.model.attention=explicit')


def _run(workdir, *overrides, devices: int = 1):
  # The smoke record was made on one device (host_devices: the launcher's default splits a CPU).
  env = {'PATH': '/usr/bin:/bin', 'HOME': str(workdir), 'JAX_PLATFORMS': 'cpu',
         host_devices.ENV: str(devices)}
  if devices > 1:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return subprocess.run(
      [sys.executable, 'launch/main.py', '--config=configs/tinystories_study.py:smoke',
       f'--workdir={workdir}', *overrides], cwd=REPO, capture_output=True, text=True,
      timeout=900, env=env)


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  """The smoke study through the binary on one device: (workdir, finished process)."""
  workdir = tmp_path_factory.mktemp('tinystories') / 'run'
  return workdir, _run(workdir, *RECORDED)


def test_binary_runs_the_whole_study(smoke_run):
  workdir, proc = smoke_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Every number recorded before the move into tinystories/ is reproduced, but claims.csv:
  # its schema changed with issue 11 (CLAIMS_COLUMNS, checks, controls, intervals).
  assert [d for d in smoke_tables.differences('tinystories_study', workdir / 'tables')
          if not d.startswith('claims.csv')] == []
  config = ts_config.get_config('smoke')
  n_deleted = len(config.deletion.protocols) * len(config.deletion.lrs)

  rows = tables.read_csv(workdir / 'tables' / 'table1.csv')
  assert len(rows) == n_deleted + 1  # Every (protocol, lr) and Not in PT.
  assert rows[-1]['deletion type'] == 'Not in PT' and rows[-1]['paper @3000'] == '81'
  assert rows[0]['paper @0'] == '44'  # F at eta_M: the paper's Table 1 beside ours.
  for s in (0,) + tuple(config.reft.score_steps):
    assert all(0.0 <= float(r[f'ours @{s}']) <= 100.0 for r in rows)
    for r in rows:  # Issue 13: each rate with its Wilson interval of num_generations samples.
      low, high = float(r[f'ours @{s} 95% low']), float(r[f'ours @{s} 95% high'])
      assert low <= float(r[f'ours @{s}']) <= high and high - low > 10  # 4 generations: wide.

  with (workdir / 'tables' / 'claims.csv').open() as f:
    assert tuple(f.readline().strip().split(',')) == claims_lib.CLAIMS_COLUMNS
  found = tables.read_csv(workdir / 'tables' / 'claims.csv')
  assert [c['claim_id'] for c in found] == list(paper.CLAIMS)
  assert all(c['world'] == 'tinystories' for c in found)
  assert all(claims_lib.kind_of(c['verdict']) for c in found)  # Starts with one of VERDICTS.

  text = (workdir / 'report.md').read_text()
  for heading in ('Table 1', 'Claims, checked', 'Twist classifier', 'Probe accuracy',
                  'Time (s)', 'TOY SCALE, SYNTHETIC DATA', 'Scale of these verdicts: REDUCED',
                  f"{config.reft.steps} of the paper's 4000 reFT iterations"):
    assert heading in text, heading
  for name in ('deletion_twist_loss', 'reft_twist_loss', 'reft_twist_fraction', 'probe_Twist',
               'probe_Foreshadowing', 'probe_MoralValue', 'probe_BadEnding'):
    assert (workdir / 'figures' / f'{name}.png').stat().st_size > 0, name
    assert f'](figures/{name}.png)' in text, name  # Embedded in report.md...
  links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
  assert links and [l for l in links if not (workdir / l).is_file()] == []  # ...and resolving.

  probes = tables.read_csv(workdir / 'tables' / 'probes.csv')
  assert len(probes) == (2 + n_deleted) * len(config.probe.features)
  assert {f'B{l}' for l in range(config.model.n_layers + 1)} <= set(probes[0])
  assert all(0 <= float(r['B1']) <= 100 for r in probes)

  tb = workdir / 'tb'  # Issue 14: one TensorBoard run per training run, plain tags inside.
  assert len(metrics.read_scalars(str(tb / 'present'))['train/loss']) >= 1
  twist = metrics.read_scalars(str(tb / 'reft_not_in_pt'))['eval/twist_loss']
  assert [s for s, _ in twist] == [0, 1, 2, 3]
  summary = metrics.read_scalars(str(tb / 'summary'))
  assert {'table1/not_in_pt/it0', 'classifier/accuracy', 'probe/Twist/present/B1'} <= set(summary)
  _check_report_run(workdir, invocations=1)
  # Issue 14: each grid in the HParams tab, a session per run named by its hyperparameters.
  config = ts_config.get_config('smoke')
  hp = metrics.read_hparams(str(workdir / 'tb'))
  n_del = len(config.deletion.protocols) * len(config.deletion.lrs)
  assert hp['deletion']['experiment']['metrics'] == ['final/twist_fraction', 'final/twist_loss']
  deletion = {r: v for r, v in hp.items() if r.startswith('deletion/')}
  assert len(deletion) == n_del and all(
      set(v['hparams']) == {'protocol', 'lr'} and v['status'] == 'STATUS_SUCCESS'
      for v in deletion.values())
  assert set(deletion) == {f'deletion/protocol={p},lr={lr:g}'
                           for p in config.deletion.protocols for lr in config.deletion.lrs}
  assert len([r for r in hp if r.startswith('reft/')]) == n_del + 1


def _check_report_run(workdir, invocations: int):
  """No run holds a (tag, step) twice; report.md and every figure in the run 'report'."""
  tb = workdir / 'tb'
  assert tb_events.repeats(str(tb)) == {}
  text = metrics.read_text(str(tb / 'report'))['report.md']
  assert [s for s, _ in text] == list(range(invocations))
  assert text[-1][1] == (workdir / 'report.md').read_text()
  assert set(metrics.read_images(str(tb / 'report'))) == {
      f'figures/{p.stem}' for p in (workdir / 'figures').glob('*.png')}


def test_report_states_agreement_with_the_papers_table1(smoke_run):
  """Issue 29: Table 1 against the paper entry by entry, in the verdicts' section and in
  tables/paper_agreement.csv, the same as a recomputation from table1.csv read back."""
  workdir, proc = smoke_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = ts_config.get_config('smoke')
  found = tables.read_csv(workdir / 'tables' / paper_agreement.CSV)
  assert [r['table'] for r in found] == ['Table 1', 'total']
  assert (found[0]['entries'], found[0]['not_compared_entries']) == ('28', '0')  # Every row run.
  assert found[0]['collapsed_cells'] == ''  # A twist rate has no distinct-answer collapse.
  rows = tables.read_csv(workdir / 'tables' / 'table1.csv')
  assert [{k: str(v) for k, v in r.items()} for r in
          ts_agreement.summary_rows(config, rows)] == found
  claims = (workdir / 'report.md').read_text().split('## Claims, checked')[1].split('\n## ')[0]
  assert "**Agreement with the paper's tables** (entries within 10 points): Table 1" in claims
  assert f"{found[0]['within']}/28" in claims
  print(ts_agreement.line(config, rows))


def test_rerun_restores_every_phase_without_retraining(smoke_run):
  workdir, first = smoke_run
  assert first.returncode == 0, first.stderr[-3000:]
  rows = tables.read_csv(workdir / 'tables' / 'table1.csv')
  probes = tables.read_csv(workdir / 'tables' / 'probes.csv')
  config = ts_config.get_config('smoke')
  n_runs = 2 + 2 * len(config.deletion.protocols) * len(config.deletion.lrs) + 1
  run_record.forget(workdir)  # Go through the phases (a finished record would skip them).
  proc = _run(workdir, *RECORDED)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.count('Resumed') == n_runs  # Every training run restored at its end...
  assert 'steps/s' not in proc.stderr  # ...and none took a step.
  assert tables.read_csv(workdir / 'tables' / 'table1.csv') == rows
  assert tables.read_csv(workdir / 'tables' / 'probes.csv') == probes
  timing = {r['phase']: r for r in tables.read_csv(workdir / 'tables' / 'timing.csv')}
  first = json.loads((workdir / 'results' / 'timing.json').read_text())
  assert float(timing['pretrain present']['seconds']) == first['pretrain present']  # Kept.
  _check_report_run(workdir, invocations=2)


def test_binary_runs_data_parallel_on_two_devices(smoke_run, tmp_path):
  """Two forced host devices: each training step is split over both; same training as one
  (which also runs the default fused attention against the pinned explicit one)."""
  workdir = tmp_path / 'dp'
  proc = _run(workdir, RECORDED_DATA, devices=2)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'CpuDevice(id=1)' in proc.stderr
  read = lambda w, run: json.loads((w / 'results' / f'{run}.json').read_text())['twist_loss']
  for run in ('present', 'not_in_pt', 'delete_F_lr0.0003', 'reft_not_in_pt'):
    one, two = read(smoke_run[0], run), read(workdir, run)
    assert one.keys() == two.keys()
    for step in one:  # The same losses up to the order of the gradient all-reduce.
      assert two[step] == pytest.approx(one[step], rel=1e-4), (run, step)


def test_replicates_run_each_seed_and_decide_over_them(smoke_run, tmp_path):
  """Issue 13: model_seeds=(0, 1) trains each replicate in its own folder; seed 0 is the
  single-seed run's model; the tables show the replicates' mean, the claims decide over them."""
  workdir = tmp_path / 'replicates'
  proc = _run(workdir, *RECORDED, '--config.model_seeds=(0,1)')
  assert proc.returncode == 0, proc.stderr[-3000:]
  read = lambda w, run: json.loads((w / 'results' / f'{run}.json').read_text())
  for run in ('present', 'delete_F_lr0.0003', 'reft_not_in_pt'):
    assert read(workdir / 'seed_0', run) == read(smoke_run[0], run), run  # The same model.
  assert read(workdir / 'seed_1', 'present') != read(workdir / 'seed_0', 'present')
  assert len(metrics.read_scalars(str(workdir / 'seed_1' / 'tb' / 'present'))['train/loss']) >= 1
  mean = {r['model']: r for r in tables.read_csv(workdir / 'tables' / 'table1.csv')}
  each = tables.read_csv(workdir / 'tables' / 'table1_seeds.csv')
  assert sorted({r['seed'] for r in each}) == ['0', '1'] and len(each) == 2 * len(mean)
  for model, row in mean.items():
    seeds = [float(r['ours @0']) for r in each if r['model'] == model]
    assert float(row['ours @0']) == pytest.approx(sum(seeds) / 2, abs=0.06), model
  found = tables.read_csv(workdir / 'tables' / 'claims.csv')
  assert {c['claim_id']: c['n_seeds'] for c in found if c['claim_id'] != 'classifier_accuracy'
          } == {c: '2' for c in paper.CLAIMS if c != 'classifier_accuracy'}
  phases = [r['phase'] for r in tables.read_csv(workdir / 'tables' / 'timing.csv')]
  assert 'seed 1: pretrain present' in phases and 'probes' in phases
  text = (workdir / 'report.md').read_text()
  assert '2 replicates (model_seeds (0, 1)' in text
  # The starting point of each replicate and of both, beside the paper's anchor.
  calibration = text.split('## Calibration, the starting point')[1].split('\n## ')[0]
  assert '| 0 |' in calibration and '| 1 |' in calibration and 'all (pooled)' in calibration
  assert f'>= {paper.PAPER_PRESENT_AT_LEAST:g}%' in calibration


def _config(**fields):
  config = ts_config.get_config('smoke')
  for path, value in fields.items():
    section, name = path.split('__')
    config[section][name] = value
  return config


@pytest.mark.parametrize('fields, match', [
    (dict(data__path='/no/such/folder'),
     r"config.data.path='/no/such/folder'.*does not exist.*roneneldan/TinyStoriesInstruct"),
    (dict(deletion__feature='Plot'), r"config.deletion.feature='Plot'.*not a story feature"),
    (dict(probe__features=('Twist', 'Rhyme')), r"config.probe.features\[1\]='Rhyme'"),
    (dict(model__vocab_size=512), r'config.model.vocab_size=512.*data.vocab_size=384'),
    (dict(eval__max_new_tokens=256), r'config.eval.max_new_tokens=256'),
    (dict(pretrain__batch_size=0), r'config.pretrain.batch_size=0'),
    (dict(deletion__protocols=('F', 'F+AT')), r'config.deletion.protocols'),
    (dict(reft__score_steps=(1, 2)), r'config.reft.score_steps'),
    (dict(model__n_heads=5), r'config.model.d_model=32 must be divisible by model.n_heads=5'),
])
def test_bad_config_fails_in_validate(fields, match):
  with pytest.raises(config_check.ConfigError, match=match):
    study.validate(_config(**fields))


@pytest.mark.parametrize('seeds', [(), (0, 0), (0, -1)])
def test_bad_model_seeds_fail_in_validate(seeds):
  config = ts_config.get_config('smoke')
  config.model_seeds = seeds
  with pytest.raises(config_check.ConfigError, match=r'config.model_seeds=.*distinct integers'):
    study.validate(config)


def test_paper_config_without_data_path_says_how_to_get_the_files():
  config = ts_config.get_config('paper')  # data.path is '' until the user names the files.
  with pytest.raises(config_check.ConfigError,
                     match=r"config.data.path=''.*TinyStories-Instruct-train.txt.*"
                           r'roneneldan/TinyStoriesInstruct.*--config.data.path=/that/folder'):
    study.validate(config)


def test_file_not_in_instruct_format_names_the_line(tmp_path):
  path = tmp_path / 'bad.txt'
  path.write_text('Features: Twist\nStory: A cat.\n<|endoftext|>\nTitle: oops\nStory: x\n')
  with pytest.raises(config_check.ConfigError, match=r'bad.txt:4: unknown instruction line'):
    study.validate(_config(data__path=str(path)))


def test_feature_absent_from_the_data_fails_after_loading(tmp_path):
  path = tmp_path / 'no_twist.txt'
  examples = [ex for ex in synthetic.generate_examples(200, seed=0) if not ex.has('Twist')]
  instruct.write_instruct(str(path), examples)
  config = _config(data__path=str(path))
  study.validate(config)  # Twist is a known feature name...
  with pytest.raises(config_check.ConfigError,
                     match=r"config.deletion.feature='Twist'.*occurs in no pretraining-split"):
    data.split_and_check(config, data.load_examples(config, tmp_path))  # ...absent here.


def test_saved_tokenizer_of_another_size_fails_before_compute(tmp_path):
  prefix = data.tokenizer_path(tmp_path)[:-len('.model')]
  texts = [instruct.format_example(ex) for ex in synthetic.generate_examples(200, seed=0)]
  tokenizer_lib.train_tokenizer(texts, 320, prefix)
  with pytest.raises(config_check.ConfigError,
                     match=r'config.model.vocab_size.*model.vocab_size=384.*320 pieces'):
    data.check_workdir(_config(), tmp_path)


def test_prompt_longer_than_the_context_fails_before_training(tmp_path):
  config = _config(eval__max_new_tokens=250)  # Passes validate; no prompt fits 256 - 250.
  study.validate(config)
  with pytest.raises(config_check.ConfigError, match=r'config.eval.max_new_tokens=250.*exceed'):
    data.prepare(config, tmp_path, metrics.PhaseTimes(tmp_path))
  assert not (tmp_path / 'checkpoints').exists()


def test_batch_not_divisible_by_devices_is_refused(monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda: 3)
  with pytest.raises(config_check.ConfigError, match=r'config.pretrain.batch_size=4.*3 devices'):
    study.validate(_config())


def test_model_factory_gives_the_architecture_checkpoints_were_saved_with():
  for arg in ('', 'paper', 'smoke'):
    m = ts_config.get_config(arg).model
    # attention is how to compute, not architecture (checkpoint meta leaves it out).
    assert ts_model.model_config(ts_config.get_config(arg)) == model_lib.llama_config(
        m.vocab_size, m.max_len, m.d_model, m.n_layers, m.n_heads, multiple_of=m.multiple_of,
        attention=m.attention)
