"""The PCFG study: a tiny run through the binary, one on a grammar of one's own; bad configs fail."""

import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import smoke_tables

from configs import pcfg_analysis as analysis_config
from configs import pcfg_study as pcfg_config
from wrapper_study import config_check
from wrapper_study import host_devices
from wrapper_study import metrics
from wrapper_study import population
from wrapper_study import run_record
from wrapper_study import tb_events
from wrapper_study.experiments import pcfg_analysis as pcfg_analysis_experiment
from wrapper_study.experiments import pcfg_study
from wrapper_study.pcfg import agreement as pcfg_agreement
from wrapper_study.pcfg import analysis as pcfg_analysis
from wrapper_study.pcfg import grammar as grammar_lib
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import paper as pcfg_paper
from wrapper_study.pcfg import report as pcfg_report
from wrapper_study.pcfg import sampler
from wrapper_study.pcfg import tasks
from wrapper_study.pcfg import train as pcfg_train
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import paper_agreement
from wrapper_study.report import tables

REPO = pathlib.Path(__file__).resolve().parents[1]


# The smoke record was made with each population in one vmap; pinned, since the default picks
# the mapping by member size (train.default_member_chunk; equal to float rounding).
RECORDED_MAPPING = '--config.member_chunk=0'


def _run(workdir, *overrides):
  return subprocess.run(
      [sys.executable, 'launch/main.py', '--config=configs/pcfg_study.py:smoke',
       f'--workdir={workdir}', *overrides], cwd=REPO, capture_output=True, text=True, timeout=900,
      env={'PATH': '/usr/bin:/bin', 'HOME': str(workdir), 'JAX_PLATFORMS': 'cpu',
           host_devices.ENV: '1'})  # The smoke record was made on one device.


def _check_tensorboard(workdir, config, invocations: int):
  """Issue 14: each population and member its own run (hyperparameters in the name), HParams."""
  tb = workdir / 'tb'
  assert tb_events.repeats(str(tb)) == {}  # No run holds a (tag, step) twice.
  assert {'eval/C_a', 'train/loss'} <= set(metrics.read_scalars(str(tb / 'pretrain_low')))
  f = config.finetune
  grid = population.grid(f.lrs, f.c_trs, f.seeds)
  runs, hp = metrics.list_runs(str(tb)), metrics.read_hparams(str(tb))
  for pop in ('finetune_low_3', 'finetune_low_6'):
    members = sorted(r.split('/', 1)[1] for r in runs if r.startswith(pop + '/'))
    assert members == sorted(m.run_name for m in grid)
    assert 'eval/c_te1/acc_o_ft' in hp[pop]['experiment']['metrics']
    for m in grid:
      assert hp[f'{pop}/{m.run_name}']['hparams']['c_tr'] == m.c_tr
      scalars = metrics.read_scalars(str(tb / pop / m.run_name))
      assert {'train/loss', 'eval/c_te1/acc_o_ft'} <= set(scalars)
  text = metrics.read_text(str(tb / 'report'))['report.md']
  assert [s for s, _ in text] == list(range(invocations))
  assert text[-1][1] == (workdir / 'report.md').read_text()
  assert set(metrics.read_images(str(tb / 'report'))) == {
      f'figures/{p.stem}' for p in (workdir / 'figures').glob('*.png')}


def _check_paper_agreement(workdir, config, rows, text):
  """Issue 29: Tables 5-8 against the paper per table and in total, in the report beside the
  verdicts and in tables/paper_agreement.csv; our cells keyed as the table rows pair them."""
  found = tables.read_csv(workdir / 'tables' / paper_agreement.CSV)
  assert [r['table'] for r in found] == ['Table 5', 'Table 6', 'Table 7', 'Table 8', 'total']
  assert found[0]['entries'] == '32' and found[0]['read_at'] == 'pretraining step 6'
  assert [{k: str(v) for k, v in r.items()} for r in
          pcfg_agreement.summary_rows(config, rows)] == found  # From the table read back.
  ref = pcfg_paper.TABLES[('counter', pcfg_paper.LONG_PRETRAIN_STEPS)]
  for r in rows:  # The agreement's cell is the one whose numbers the table prints beside ours.
    cell = ref[pcfg_agreement.paper_cell(config, r)]
    assert [float(r[f'paper {m}@{j}']) for m in pcfg_report.METRICS for j in (0, 1)] == list(cell)
  first = text.split('## ', 2)[1]  # The verdicts' section.
  assert "**Agreement with the paper's tables** (entries within 10 points): Table 5" in first
  assert 'Table 7: not compared (task indexer not run' in first
  print(pcfg_agreement.line(config, rows))


def test_binary_pretrains_fine_tunes_and_resumes(tmp_path):
  workdir = tmp_path / 'run'
  proc = _run(workdir, RECORDED_MAPPING)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Every number recorded before the move into wrapper_study/pcfg/ is reproduced, but claims.csv:
  # its schema changed with issue 11 (CLAIMS_COLUMNS, manipulation checks, controls, intervals).
  assert [d for d in smoke_tables.differences('pcfg_study', workdir / 'tables')
          if not d.startswith('claims.csv')] == []
  with (workdir / 'tables' / 'claims.csv').open() as f:
    assert tuple(f.readline().strip().split(',')) == claims_lib.CLAIMS_COLUMNS
  found = tables.read_csv(workdir / 'tables' / 'claims.csv')
  assert [c['claim_id'] for c in found] == ['T5.wrapper', 'T5.not_learned', 'T5.pt_kept']
  assert all(claims_lib.kind_of(c['verdict']) for c in found)  # Starts with one of VERDICTS.
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
  _check_tensorboard(workdir, config, invocations=1)
  assert 'c_te0n/acc_o_ft@4' in rows[0] and 'n_collapsed@4' in rows[0]  # Natural set, collapse.
  text = (workdir / 'report.md').read_text()
  assert 'Table 5 signatures' in text and 'wrapper_study/pcfg/paper.py' in text
  assert "REDUCED scale: 4 of the paper's 10,000 fine-tuning iterations" in text
  _check_paper_agreement(workdir, config, rows, text)

  run_record.forget(workdir)  # Go through the phases (a finished record would skip them).
  proc = _run(workdir, RECORDED_MAPPING)  # Everything finished: restored, not retrained.
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Resumed' in proc.stderr
  assert tables.read_csv(workdir / 'tables' / 'finetune_counter.csv') == rows
  _check_tensorboard(workdir, config, invocations=2)  # The resume wrote no (tag, step) twice.


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
    ('model.attention', 'flash', r"config.model: model.attention='flash' is unknown"),
    ('model.precision', 'fp16', r"config.model: model.precision='fp16' is unknown"),
])
def test_bad_config_fails_before_compute(field, value, match):
  config = pcfg_config.get_config('smoke')
  section, _, name = field.rpartition('.')
  node = config[section] if section else config
  node[name] = value
  with pytest.raises(config_check.ConfigError, match=match):
    pcfg_study.validate(config)



# The Table 5 signatures on made-up rows (hold / fail / not measured): tests/test_pcfg_claims.py.


def test_custom_grammar_and_families_reach_every_phase(tmp_path, monkeypatch):
  """A grammar file of one's own (its own terminals) and a family list, through config only."""
  path = tmp_path / 'mine.pcfg'
  path.write_text(CUSTOM_GRAMMAR)
  config = analysis_config.get_config('smoke')
  config.grammar = str(path)
  config.data.families = ('C', 'I', 'T')
  config.finetune.update(operand_pt='x', operand_ft='y')
  prior = (0.7, 0.2, 0.1, 0.0)  # Over the grammar's terminals x y z w.
  config.pretrain.update(priors=(prior,), steps=2, keep_steps=(2,), eval_every=2, save_every=2,
                         log_every=2)
  config.finetune.update(lrs=(1e-4,), seeds=(0,), steps=2, eval_steps=(2,), save_every=2)
  config.finetune.pt_fraction = 0.5  # App. E.1 mixing draws pretraining rows too.
  config.analysis.scr_ft_prior = (0.2, 0.7, 0.1, 0.0)
  pcfg_analysis_experiment.validate(config)
  mine = grammar_lib.load_grammar(str(path))
  seen = _spy(monkeypatch)
  out = pcfg_study.run(config, tmp_path / 'run')  # Pretraining, fine-tuning, evaluation.
  kept = tmp_path / 'run' / 'checkpoints' / 'pretrain_p0.7-0.2-0.1-0_C-I-T_kept' / '2'
  assert kept.exists()
  assert len(out['finetune']) == 2 and out['finetune'][0]['p_a'] == 0.7
  assert [r['prior'] for r in out['pretrained']] == ['p0.7-0.2-0.1-0']
  # The analysis phases' data (no training needed to see what they draw).
  members = [population.Member(1e-5, None, 0, pcfg_train.SCR)]
  batch = pcfg_train.reft_batch_fn(config, members, salt=7000)(0)  # reFT, Scr.+FT and Scr.
  assert batch['inputs'].max() < pcfg_model.vocab(config).size
  pcfg_analysis.probe_data(config, 8, salt=505)
  pcfg_analysis.prune_sets(config)
  assert seen['grammars'] and all(g == mine for g in seen['grammars'])
  assert seen['families'] == {('C', 'I', 'T')}


# Rules, probabilities and terminals unlike Fig. 14's.
CUSTOM_GRAMMAR = """\
%start s
%terminals x y z w
s -> p q [0.6] | q p p [0.4]
p -> x y | y z x | w w
q -> y x z | x x | z y y | w
"""


def _spy(monkeypatch) -> dict:
  """Records the grammar of every window drawn and the families of every pretraining batch."""
  seen = {'grammars': [], 'families': set()}
  windows, mixture = sampler.sample_windows, tasks.sample_pretraining_batch

  def sample_windows(g, *args, **kwargs):
    seen['grammars'].append(g)
    return windows(g, *args, **kwargs)

  def sample_pretraining_batch(rng, n, prior='low', families=tasks.FAMILIES, **kwargs):
    seen['families'].add(tuple(families))
    return mixture(rng, n, prior, families, **kwargs)
  monkeypatch.setattr(sampler, 'sample_windows', sample_windows)
  monkeypatch.setattr(tasks, 'sample_pretraining_batch', sample_pretraining_batch)
  return seen


def test_pretraining_draws_on_device_and_resumes(tmp_path):
  """Issue 12: data.on_device draws each batch in one jitted function of the step, so a run
  killed after a checkpoint resumes to bitwise the params of an unbroken one."""
  config = pcfg_config.get_config('smoke')
  host_batch = pcfg_train.pretrain_batch_fn(config, 'low', 0)(0)
  config.data.on_device = True
  pcfg_study.validate(config)
  device_batch = pcfg_train.pretrain_batch_fn(config, 'low', 0)(0)
  assert all(isinstance(v, jax.Array) for v in device_batch.values())
  assert {k: (v.shape, v.dtype) for k, v in device_batch.items()} == {
      k: (v.shape, v.dtype) for k, v in host_batch.items()}
  pcfg_train.pretrain(config, 'low', tmp_path / 'whole', None)
  pcfg_train.pretrain(config, 'low', tmp_path / 'broken', None)
  for run in ('pretrain_low', 'pretrain_low_kept'):  # As if killed right after step 3's save.
    shutil.rmtree(tmp_path / 'broken' / 'checkpoints' / run / '6')
  pcfg_train.pretrain(config, 'low', tmp_path / 'broken', None)
  whole, resumed = (pcfg_train.load_pretrained(config, 'low', 6, tmp_path / run)
                    for run in ('whole', 'broken'))
  assert jax.tree.all(jax.tree.map(np.array_equal, whole, resumed))
  first = pcfg_train.load_pretrained(config, 'low', 3, tmp_path / 'whole')
  assert not jax.tree.all(jax.tree.map(np.array_equal, whole, first))  # It did train.

