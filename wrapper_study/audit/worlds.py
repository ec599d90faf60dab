"""The worlds' own tasks written as capability specs: what a user writes, made from a config.

`pcfg_capability(config)` draws exactly the sets the PCFG analysis uses
(`pcfg.analysis`: probe prompts, pruning scores and test sets, same rng salts),
so an audit of a PCFG pair reproduces that analysis' probes and pruning
curves; `tracr_capability(data, ...)` is a Tracr task's O_PT / O_FT read at the
compiled model's answer position. Each is also reachable as a spec file's
`file.py:function` (see `pcfg_smoke_capability`).
"""

from __future__ import annotations

import numpy as np

from wrapper_study.audit import spec as spec_lib
from wrapper_study.pcfg import analysis as pcfg_analysis
from wrapper_study.pcfg import finetune_data
from wrapper_study.pcfg import model as pcfg_model


def trim(s: spec_lib.TokenSet) -> spec_lib.TokenSet:
  """The set without the columns after its last scored position (a causal model's logits
  there are not read; dropping them makes the forward the world's own, shape for shape)."""
  last = int(np.nonzero(np.asarray(s.weights).any(0))[0].max()) + 1
  return spec_lib.TokenSet(s.inputs[:, :last], s.targets[:, :last], s.weights[:, :last])


def _lm_set(batch) -> spec_lib.TokenSet:
  b = pcfg_model.lm_batch(batch, answer_only=True)
  return trim(spec_lib.TokenSet(np.asarray(b['inputs'], np.int32),
                                np.asarray(b['targets'], np.int32),
                                np.asarray(b['weights'], np.float32)))


def _probe_set(config, n: int, salt: int) -> spec_lib.ProbeSet:
  tokens, labels_TxN, pos = pcfg_analysis.probe_data(config, n, salt)
  return spec_lib.ProbeSet(np.asarray(tokens, np.int32), np.full(len(tokens), pos, np.int32),
                           {'o_pt_count': labels_TxN[0], 'o_ft_count': labels_TxN[1]},
                           pcfg_model.n_answer_classes(config))


def pcfg_capability(config) -> spec_lib.Capability:
  """A PCFG config's O_PT (count operand_pt) and O_FT (count operand_ft) as a capability.

  o_pt_train: the pruning scoring prompts (count O_PT, C_Te = 0); o_pt_eval and
  o_ft_eval: the C_Te = 0 test sets the pruning curves are read on; o_ft_train: a
  fine-tuning batch at C_Tr = 0 (what the reFT control is trained on); probes:
  fine-tuning prompts labelled with both counts. Salts are the analysis' own.
  """
  a = config.analysis
  score, test = pcfg_analysis.prune_sets(config)
  o_pt_train = trim(spec_lib.TokenSet(*(np.asarray(score[k]) for k in
                                        ('inputs', 'targets', 'weights'))))
  ft = finetune_data.sample_finetune_batch(
      np.random.default_rng([config.seed, 4242]), a.prune_samples, 0.0,
      pcfg_model.finetune_spec(config), grammar=pcfg_model.grammar(config),
      vocab=pcfg_model.vocab(config))
  return spec_lib.Capability(
      name=f'pcfg count {config.finetune.operand_pt} -> {config.finetune.operand_ft}',
      o_pt_train=o_pt_train, o_pt_eval=_lm_set(test['pt']),
      o_ft_train=_lm_set(ft), o_ft_eval=_lm_set(test['ft']),
      probe_train=_probe_set(config, a.probe_train_samples, pcfg_analysis._PROBE_TRAIN_SALT),  # pylint: disable=protected-access
      probe_test=_probe_set(config, a.probe_test_samples, pcfg_analysis._PROBE_TEST_SALT))  # pylint: disable=protected-access


def pcfg_smoke_capability() -> spec_lib.Capability:
  """`--capability=wrapper_study/audit/worlds.py:pcfg_smoke_capability`: the smoke config's."""
  from configs import pcfg_analysis as pcfg_analysis_config  # pylint: disable=g-import-not-at-top
  return pcfg_capability(pcfg_analysis_config.get_config('smoke'))


def _answer_set(inputs_NxT, labels_N, position: int) -> spec_lib.TokenSet:
  """Tracr reads the answer at a model position (no shift): targets there, weight 1."""
  n, t = inputs_NxT.shape
  targets = np.zeros((n, t), np.int32)
  weights = np.zeros((n, t), np.float32)
  targets[:, position] = labels_N
  weights[:, position] = 1.0
  return spec_lib.TokenSet(np.asarray(inputs_NxT, np.int32), targets, weights)


def tracr_capability(data, n: int = 256, seed: int = 0) -> spec_lib.Capability:
  """A Tracr task (`tracr.train.TaskData`: spec + compiled model) as a capability.

  O_PT rows: r(x, O_PT) at the readout position on C_Te = 0 inputs (no row obeys
  the spurious correlation); O_FT: r(x, O_FT) on the same inputs. Rows where the two
  answers agree (they would not tell the capabilities apart) and rows whose label the
  compiled model cannot output (-1) are dropped. Probe targets: both labels, read at
  the answer position.
  """
  from wrapper_study.tracr import tasks  # pylint: disable=g-import-not-at-top
  pos = data.position
  if pos is None:
    raise spec_lib.SpecError(f'tracr task {data.spec.task!r} has no single answer position; '
                             f'a capability needs one.')
  sets = {}
  for split, salt in (('train', 1), ('eval', 2)):
    toks = tasks.sample(data.spec, np.random.default_rng([seed, 31, salt]), n, 0.0)
    pt, ft = data.labels(toks, data.spec.operand_pt), data.labels(toks, data.spec.operand_ft)
    ok = (pt >= 0) & (ft >= 0) & (pt != ft)  # Rows where O_PT and O_FT answers differ.
    inputs = data.inputs(toks)[ok]
    sets[f'o_pt_{split}'] = _answer_set(inputs, pt[ok], pos)
    sets[f'o_ft_{split}'] = _answer_set(inputs, ft[ok], pos)
    n_classes = len(data.tm.output_values)
    sets[f'probe_{"train" if split == "train" else "test"}'] = spec_lib.ProbeSet(
        inputs, np.full(len(inputs), pos, np.int32), {'o_pt': pt[ok], 'o_ft': ft[ok]},
        n_classes)
  return spec_lib.Capability(name=f'tracr {data.spec.task}', **sets)
