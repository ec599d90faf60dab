"""`wrapper-study audit` end to end: the PCFG world's own pair, exported to the Hugging Face
layout and audited through the CLI, gives the world's own probe accuracies and pruning curves;
bad input ends in one FATAL line, exit 2."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import pcfg_analysis as pcfg_analysis_config
from wrapper_study import host_devices
from wrapper_study import metrics
from wrapper_study import population
from wrapper_study import tb_events
from wrapper_study.hf import export
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import train as pcfg_train
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import tables

REPO = pathlib.Path(__file__).resolve().parents[1]
# The world's smoke analysis on a one-member grid (no reFT): what the audit must reproduce.
WORLD_OVERRIDES = ('--config.analysis.reft=False', '--config.member_chunk=0',
                   "--config.finetune.lrs=(1e-4,)", "--config.finetune.c_trs=(0.0,)",
                   "--config.finetune.seeds=(0,)")
CAPABILITY = 'wrapper_study/audit/worlds.py:pcfg_smoke_capability'


def _env(home):
  return {'PATH': '/usr/bin:/bin', 'HOME': str(home), 'JAX_PLATFORMS': 'cpu',
          'PYTHONPATH': str(REPO), host_devices.ENV: '1'}


def _cli(args, home, timeout=900):
  return subprocess.run([sys.executable, 'launch/main.py', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, env=_env(home))


def _world_config():
  config = pcfg_analysis_config.get_config('smoke')
  config.analysis.reft, config.member_chunk = False, 0
  config.finetune.lrs, config.finetune.c_trs, config.finetune.seeds = (1e-4,), (0.0,), (0,)
  return config


@pytest.fixture(scope='module')
def audited(tmp_path_factory):
  root = tmp_path_factory.mktemp('audit')
  world = root / 'world'
  proc = _cli(['--config=configs/pcfg_analysis.py:smoke', f'--workdir={world}',
               *WORLD_OVERRIDES], root)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The world's models, read back from its checkpoints (the fine-tuning run resumes: no steps).
  config = _world_config()
  pre = pcfg_train.load_pretrained(config, 'low', config.pretrain.steps, world)
  with metrics.MetricWriter(root / 'scratch') as writer:
    _, _, params_P = pcfg_train.finetune(config, 'low', config.pretrain.steps, pre, world, writer,
                                         name=f'finetune_low_{config.pretrain.steps}')
  cfg = pcfg_model.model_config(config)
  export.save_pretrained(cfg, pre, root / 'hf_pretrained')
  export.save_pretrained(cfg, population.member_params(params_P, 0), root / 'hf_finetuned')
  a = config.analysis
  ks = pcfg_analysis_lib_ks(config)
  proc = _cli(['audit', f'--pretrained={root / "hf_pretrained"}',
               f'--finetuned={root / "hf_finetuned"}', f'--capability={CAPABILITY}',
               f'--workdir={root / "audit"}', '--config=audit:smoke',
               # The world's probe protocol and pruning sweep.
               f'--config.probe.steps={a.probe_steps}', f'--config.probe.seeds=({config.seed},)',
               f'--config.probe.method={a.probe_method}',
               f'--config.eval.batch_size={config.eval.batch_size}',
               f'--config.pruning.eligible={a.prune_matrices}',
               f'--config.pruning.neuron_ks={tuple(ks)}'], root)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return world, root / 'audit'


def pcfg_analysis_lib_ks(config):
  from wrapper_study.pcfg import analysis as pcfg_analysis_lib  # pylint: disable=g-import-not-at-top
  return pcfg_analysis_lib.prune_ks(config)


def test_audit_of_the_exported_pcfg_pair_reproduces_the_worlds_analysis(audited):
  world, audit = audited
  ours = np.load(audit / 'audit_arrays.npz')
  probes = np.load(next((world / 'analysis').glob('*_probes.npz')))
  # [models (pretrained, member 0), blocks, targets (count O_PT, count O_FT)], one probe seed.
  np.testing.assert_allclose(ours['probe_acc'][0], probes['acc'][:2], atol=1e-4)
  np.testing.assert_allclose(ours['probe_majority'], probes['majority'], atol=1e-4)
  prune = np.load(next((world / 'analysis').glob('*_prune_rand.npz')))
  assert list(ours['pruning_neuron_candidate'][[0, -1]]) == ['finetuned', 'pretrained']
  # The fine-tuned model's grad x weight curves (Acc O_PT and O_FT at every K) ...
  np.testing.assert_allclose(ours['pruning_neuron_acc_pt'][0], prune['acc_pt'][0, 0], atol=1e-4)
  np.testing.assert_allclose(ours['pruning_neuron_acc_ft'][0], prune['acc_ft'][0, 0], atol=1e-4)
  # ... from the same ranking: the first units pruned are the world's, in its order.
  top = [r['unit'] for r in tables.read_csv(audit / 'tables' / 'top_units.csv')
         if r['granularity'] == 'neuron']
  assert top == list(prune['top_units_gw'][0][:len(top)]) and len(top) == 10
  assert 'Audit: pcfg count a -> b' in (audit / 'report.md').read_text()


def test_audit_writes_claims_tables_figures_and_tensorboard_runs(audited):
  _, audit = audited
  with (audit / 'tables' / 'claims.csv').open() as f:
    assert tuple(f.readline().strip().split(',')) == claims_lib.CLAIMS_COLUMNS
  claims = tables.read_csv(audit / 'tables' / 'claims.csv')
  assert [c['claim_id'] for c in claims] == ['decodable', 'pruning[weight]', 'pruning[neuron]',
                                             'reft', 'overall']
  for c in claims:
    assert c['verdict'].split(' (')[0] in claims_lib.VERDICTS
    assert c['world'] == 'audit' and c['reason'] and c['manipulation_check']
  # One probe seed never gives a decisive verdict, whatever the smoke models do.
  assert claims[0]['verdict'].split(' (')[0] not in ('holds', 'does not hold')
  for stem in ('probes', 'pruning_weight', 'pruning_neuron', 'reft', 'weight_change'):
    assert (audit / 'figures' / f'{stem}.png').stat().st_size > 1000, stem
  runs = tb_events.list_runs(audit / 'tb')
  assert {'pretrained', 'finetuned', 'reft/finetuned/seed=0', 'reft/control/seed=1',
          'report'} <= set(runs)
  probe = tb_events.read_scalars(audit / 'tb' / 'finetuned')
  assert 'probe/o_pt_count' in probe


@pytest.mark.parametrize('case', ['unsupported model_type', 'missing directory', 'bad flag',
                                  'bad capability'])
def test_bad_input_is_one_fatal_line_exit_2(tmp_path, case):
  bert = tmp_path / 'bert'
  bert.mkdir()
  (bert / 'config.json').write_text(json.dumps({'model_type': 'bert'}))
  spec = tmp_path / 'spec.json'
  spec.write_text(json.dumps({'o_pt': 'nope.jsonl'}))
  native = tmp_path / 'native'
  from wrapper_study import model as model_lib  # pylint: disable=g-import-not-at-top
  from wrapper_study.audit import models  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  cfg = model_lib.TransformerConfig(vocab_size=8, max_len=8, d_model=8, n_heads=2, d_head=4,
                                    d_mlp=8, causal=True)
  models.save_native(cfg, model_lib.init_params(cfg, jax.random.PRNGKey(0)), native)
  args, want = {
      'unsupported model_type': ([f'--pretrained={bert}', f'--finetuned={native}',
                                  f'--capability={spec}'], "model_type='bert'"),
      'missing directory': ([f'--pretrained={tmp_path / "nope"}', f'--finetuned={native}',
                             f'--capability={spec}'], '--pretrained='),
      'bad flag': ([f'--pretrained={native}', '--finetuned', str(native), '--capabilty=x'],
                   "does not take '--capabilty=x'"),
      'bad capability': ([f'--pretrained={native}', f'--finetuned={native}',
                          f'--capability={spec}'], 'capability.o_pt: no such file'),
  }[case]
  proc = _cli(['audit', *args, f'--workdir={tmp_path / "w"}'], tmp_path, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('FATAL')]
  assert len(lines) == 1 and want in lines[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr


def test_audit_subcommand_is_the_config_runner_with_overrides():
  from launch import audit as audit_cli  # pylint: disable=g-import-not-at-top
  argv = ['wrapper-study', 'audit', '--pretrained=a', '--finetuned', 'b', '--capability=c.py:f',
          '--workdir=w', '--config.reft.steps=5']
  assert audit_cli.is_audit(argv) and not audit_cli.is_audit(['wrapper-study', '--config=x'])
  assert audit_cli.to_runner_argv(argv) == [
      'wrapper-study', '--config=audit', '--config.pretrained=a', '--config.finetuned=b',
      '--config.capability=c.py:f', '--workdir=w', '--config.reft.steps=5']
  assert audit_cli.to_runner_argv(['x', 'audit', '--config=audit:smoke', '--workdir=w'])[1] == (
      '--config=audit:smoke')
