"""The capability spec (JSONL or a function; one-line errors naming the field), the worlds' tasks
written as specs, and the audit's verdict rules (checks, controls, seeds, censoring)."""

import json

import numpy as np
import pytest

from configs import audit as audit_config
from configs import pcfg_analysis as pcfg_analysis_config
from wrapper_study.audit import measure
from wrapper_study.audit import spec as spec_lib
from wrapper_study.audit import verdicts
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.report import claims as claims_lib


def _write_spec(tmp_path, rows_pt, rows_ft=None, **extra):
  (tmp_path / 'pt.jsonl').write_text('\n'.join(json.dumps(r) for r in rows_pt))
  spec = {'name': 'copy', 'o_pt': 'pt.jsonl', **extra}
  if rows_ft is not None:
    (tmp_path / 'ft.jsonl').write_text('\n'.join(json.dumps(r) for r in rows_ft))
    spec['o_ft'] = 'ft.jsonl'
  (tmp_path / 'spec.json').write_text(json.dumps(spec))
  return tmp_path / 'spec.json'


def test_jsonl_spec_becomes_next_token_sets_scored_at_the_answer(tmp_path):
  rows = [{'prompt': [1, 2, 3], 'answer': [4, 5]}, {'prompt': [6], 'answer': 7},
          {'prompt': [1, 1], 'answer': [2]}, {'prompt': [3, 3, 3, 3], 'answer': [9]}]
  cap = spec_lib.load(str(_write_spec(tmp_path, rows, rows)))
  assert cap.name == 'copy' and cap.o_pt_train.n + cap.o_pt_eval.n == 4
  whole = spec_lib.token_set([r['prompt'] for r in rows],
                             [[r['answer']] if isinstance(r['answer'], int) else r['answer']
                              for r in rows])
  # Row 0: inputs 1 2 3 4, targets 2 3 4 5; the answer tokens 4, 5 are scored at positions 2, 3.
  assert whole.inputs[0].tolist() == [1, 2, 3, 4] and whole.targets[0].tolist() == [2, 3, 4, 5]
  assert whole.weights[0].tolist() == [0, 0, 1, 1]
  assert whole.weights[1].tolist() == [1, 0, 0, 0] and whole.targets[1, 0] == 7
  # No probe file: the default target is the first O_PT answer token, as a class.
  assert cap.probe_targets == ('o_pt_answer',)
  spec_lib.validate(cap, vocab_size=10, n_outputs=10, max_len=8)


@pytest.mark.parametrize('rows,extra,match', [
    ([{'prompt': [1]}], {}, r'capability\.o_pt: .* line 1 needs an "answer"'),
    ([{'prompt': 'abc', 'answer': [1]}], {}, r'capability\.o_pt\.prompt row 1'),
    ([{'prompt': [1], 'answer': [-2]}], {}, r'capability\.o_pt\.answer row 1'),
    ([{'prompt': [1], 'answer': [2]}], {}, r'capability\.o_pt: needs at least 2 rows'),
    ([{'prompt': [1], 'answer': [2]}] * 3, {'eval_fraction': 1.5},
     r'capability\.eval_fraction=1\.5'),
    ([{'prompt': [1], 'answer': [2]}] * 3, {'tokenizer': 'gpt2'}, r'capability\.tokenizer is '
     r'unknown'),
])
def test_bad_spec_fails_in_one_line_naming_the_field(tmp_path, rows, extra, match):
  with pytest.raises(spec_lib.SpecError, match=match) as e:
    spec_lib.load(str(_write_spec(tmp_path, rows, **extra)))
  assert '\n' not in str(e.value)


def test_spec_outside_the_model_fails_before_compute(tmp_path):
  rows = [{'prompt': [1, 2], 'answer': [30]}] * 4
  cap = spec_lib.load(str(_write_spec(tmp_path, rows)))
  with pytest.raises(spec_lib.SpecError, match=r'o_pt_train\.targets: token ids must be .* '
                     r'0\.\.19'):
    spec_lib.validate(cap, vocab_size=20, n_outputs=20, max_len=8)
  with pytest.raises(spec_lib.SpecError, match='exceed the model\'s context of 1'):
    spec_lib.validate(cap, vocab_size=40, n_outputs=40, max_len=1)


def test_function_spec(tmp_path):
  (tmp_path / 'cap.py').write_text(
      'from wrapper_study.audit import spec\n'
      'def cap():\n'
      '  s = spec.token_set([[1, 2], [3, 4]], [[5], [6]])\n'
      '  return {"o_pt_train": s, "o_pt_eval": s}\n'
      'def broken():\n'
      '  raise RuntimeError("no data here")\n')
  cap = spec_lib.load(f'{tmp_path}/cap.py:cap')
  assert cap.name == 'cap' and cap.o_pt_eval.n == 2 and cap.probe_train is None
  with pytest.raises(spec_lib.SpecError, match='calling it failed: RuntimeError: no data here'):
    spec_lib.load(f'{tmp_path}/cap.py:broken')
  with pytest.raises(spec_lib.SpecError, match="has no function 'nope'"):
    spec_lib.load(f'{tmp_path}/cap.py:nope')
  # A JSON spec may point at the function (paths relative to the spec file).
  (tmp_path / 'spec.json').write_text(json.dumps({'data': 'cap.py:cap'}))
  assert spec_lib.load(str(tmp_path / 'spec.json')).o_pt_train.n == 2


def test_pcfg_task_is_a_spec_and_its_sets_are_the_analysis_sets():
  from wrapper_study.audit import worlds  # pylint: disable=g-import-not-at-top
  from wrapper_study.pcfg import analysis as pcfg_analysis  # pylint: disable=g-import-not-at-top
  config = pcfg_analysis_config.get_config('smoke')
  cap = worlds.pcfg_capability(config)
  cfg = pcfg_model.model_config(config)
  spec_lib.validate(cap, cfg.vocab_size, cfg.n_outputs, cfg.max_len)
  score, test = pcfg_analysis.prune_sets(config)
  ai = test['pt'].answer_index
  # Each row scores exactly the answer token after the ART token, as the analysis reads it.
  assert cap.o_pt_eval.inputs.tolist() == test['pt'].tokens[:, :ai].tolist()
  assert (cap.o_pt_eval.targets[:, ai - 1] == test['pt'].tokens[:, ai]).all()
  assert (cap.o_pt_eval.weights.sum(1) == 1).all() and (cap.o_pt_eval.weights[:, ai - 1] == 1).all()
  assert (cap.o_ft_eval.targets[:, ai - 1] == test['ft'].tokens[:, ai]).all()
  assert np.array_equal(cap.o_pt_train.inputs, score['inputs'][:, :ai])
  assert cap.probe_targets == ('o_pt_count', 'o_ft_count')
  assert cap.probe_train.n_classes == pcfg_model.n_answer_classes(config)


def test_tracr_task_is_a_spec_the_compiled_models_solve(tracr_cache):
  from configs import tracr_study  # pylint: disable=g-import-not-at-top
  from wrapper_study.audit import worlds  # pylint: disable=g-import-not-at-top
  from wrapper_study.tracr import tasks  # pylint: disable=g-import-not-at-top
  from wrapper_study.tracr import train  # pylint: disable=g-import-not-at-top
  spec = tasks.from_config(tracr_study.get_config('smoke'), 'counter')
  tm, ft_tm = train.compile_pair(spec, tracr_cache)
  cap = worlds.tracr_capability(train.TaskData(spec, tm), n=64)
  spec_lib.validate(cap, tm.config.vocab_size, tm.config.n_outputs, tm.config.max_len)
  # The model compiled for O_PT solves the O_PT rows and fails the O_FT rows (C_Te = 0: the
  # answers differ in every row), and the model compiled for O_FT the other way round.
  arrays = lambda s: measure.set_arrays(s, 64)
  acc = lambda m, s: float(measure.metrics_fn(m.config)(m.params, arrays(s))['acc'])
  assert acc(tm, cap.o_pt_eval) == 100 and acc(tm, cap.o_ft_eval) == 0
  assert acc(ft_tm, cap.o_ft_eval) == 100 and acc(ft_tm, cap.o_pt_eval) == 0


# ---------------------------------------------------------------------- verdict rules ----

SECTION = audit_config.get_config().verdicts


def _check(passed=True):
  return claims_lib.Check(passed, 'Acc O_PT fell', 'nothing to revive')


def test_decodable_needs_the_pretrained_probe_above_the_floor_and_two_seeds():
  acc = np.zeros((3, 2, 3, 1))
  acc[:, 0, 1, 0] = [90, 91, 89]  # Pretrained best block.
  acc[:, 1, 2, 0] = [88, 90, 87]  # Fine-tuned best block: within 10 points.
  row = verdicts.decodable(acc, np.array([30.0]), _check(), 10.0)
  assert row['verdict'] == claims_lib.HOLDS and row['control_value'] == 30.0
  floor = verdicts.decodable(acc, np.array([85.0]), _check(), 10.0)
  assert floor['verdict'].startswith(claims_lib.NOT_MEASURED)
  one = verdicts.decodable(acc[:1], np.array([30.0]), _check(), 10.0)
  # The shared layer's wording (issue 29): one seed decides nothing.
  assert one['verdict'] == claims_lib.not_measured('1 seed')


def test_pruning_claim_compares_top_k_with_random_k_at_the_same_k():
  out = {'candidate': np.array(['finetuned', 'random', 'random', 'pretrained']),
         'ks': np.array([0, 1, 2]),
         'acc_pt': np.array([[10., 60, 80], [10, 12, 11], [10, 9, 13], [95, 94, 90]])}
  row = verdicts.pruning('neuron', out, _check(), 10.0)
  assert row['verdict'] == claims_lib.HOLDS and 'K=2' in row['metric']
  assert row['control_value'] == -5.0  # The pretrained model lost 5 points under the same K.
  out['acc_pt'][0] = [10, 14, 15]
  assert verdicts.pruning('neuron', out, _check(), 10.0)['verdict'] != claims_lib.HOLDS
  assert verdicts.pruning('neuron', out, _check(False), 10.0)['verdict'].startswith(
      claims_lib.NOT_MEASURED)


def _reft_out(ft_curves, control_curves):
  steps = np.array([0, 10, 20, 30])
  return {'steps': steps, 'seeds': np.arange(len(ft_curves)),
          'acc_pt': np.stack([np.array(ft_curves).T, np.array(control_curves).T], 1)}


def test_reft_claim_censoring_and_both_arms_censored():
  fast, never, slow = [0, 95, 95, 95], [0, 5, 5, 5], [0, 5, 50, 95]
  row = verdicts.reft(_reft_out([fast, fast, fast], [never, never, slow]), 90, _check(), 0.25, 10)
  # Censored control counts as 40 iterations: (40 - 10) / 30 = 1.0; uncensored (30 - 10) / 30.
  assert row['verdict'] == claims_lib.HOLDS and row['n_seeds'] == 3
  both = verdicts.reft(_reft_out([never, never], [never, never]), 90, _check(), 0.25, 10)
  assert both['verdict'] == claims_lib.not_measured('both arms censored in every seed')
  one = verdicts.reft(_reft_out([fast, never], [never, never]), 90, _check(), 0.25, 10)
  assert one['verdict'].startswith(claims_lib.NOT_MEASURED) and 'left out' in one['reason']
  same = verdicts.reft(_reft_out([slow, slow, slow], [slow, slow, slow]), 90, _check(), 0.25, 10)
  assert same['verdict'] == claims_lib.DOES_NOT_HOLD


def test_overall_reading_is_never_stronger_than_its_claims():
  row = lambda cid, v: {'claim_id': cid, 'verdict': v}
  h, n, p = claims_lib.HOLDS, claims_lib.DOES_NOT_HOLD, claims_lib.PARTLY
  assert verdicts.overall([row('decodable', h), row('pruning[neuron]', n), row('reft', h)],
                          _check())['verdict'] == h
  assert verdicts.overall([row('decodable', n), row('pruning[neuron]', n), row('reft', n)],
                          _check())['verdict'] == n
  assert verdicts.overall([row('decodable', h), row('pruning[neuron]', h), row('reft', p)],
                          _check())['verdict'] == p
  assert verdicts.overall([row('decodable', h), row('reft', h)], _check(False))[
      'verdict'].startswith(claims_lib.NOT_MEASURED)
  assert set(verdicts.overall([row('reft', h)], _check())) == set(claims_lib.CLAIMS_COLUMNS)


def test_metrics_score_every_answer_token_and_ignore_padding():
  import jax  # pylint: disable=g-import-not-at-top
  from wrapper_study import model as model_lib  # pylint: disable=g-import-not-at-top
  cfg = model_lib.TransformerConfig(vocab_size=8, max_len=6, d_model=8, n_heads=2, d_head=4,
                                    d_mlp=8, causal=True)
  params = model_lib.init_params(cfg, jax.random.PRNGKey(0))
  s = spec_lib.token_set([[1, 2], [3], [4, 5, 6]], [[3, 4], [5], [7]])
  logits, _ = model_lib.Transformer(cfg).apply({'params': params}, s.inputs)
  pred = np.asarray(logits.argmax(-1))
  # Make row 1 right by construction: its one scored target is what the model predicts.
  s = spec_lib.TokenSet(s.inputs, np.where(s.weights > 0, s.targets, 0), s.weights)
  s.targets[1, 0] = pred[1, 0]
  want = np.mean([(pred[i][s.weights[i] > 0] == s.targets[i][s.weights[i] > 0]).all()
                  for i in range(3)]) * 100
  assert want > 33
  logp = np.asarray(jax.nn.log_softmax(logits))
  ce = -np.take_along_axis(logp, s.targets[..., None], -1)[..., 0]
  want_loss = (ce * s.weights).sum() / s.weights.sum()
  for chunk in (1, 2, 64):  # Chunking (and its padding rows) changes nothing.
    m = measure.metrics_fn(cfg)(params, measure.set_arrays(s, chunk))
    assert float(m['acc']) == pytest.approx(want)
    assert float(m['loss']) == pytest.approx(want_loss, rel=1e-5)
