"""What a PCFG config fixes before any training: the model, the grammar, O', the task spec.

Every phase (pretraining, fine-tuning, reFT, the analyses) reads the grammar,
its vocabulary (the grammar's terminals are the operands), the task families
and the model shape through these functions, so a grammar file or a family
list given in the config reaches all of them.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from wrapper_study import model as model_lib
from wrapper_study import model_factory
from wrapper_study.pcfg import finetune_data
from wrapper_study.pcfg import grammar as grammar_lib
from wrapper_study.pcfg import tasks


def model_config(config) -> model_lib.TransformerConfig:
  """The shared transformer sized for this world's vocabulary and sequence length."""
  return model_factory.from_config(
      config.model, vocab_size=vocab(config).size,
      max_len=config.data.window_length + tasks.N_EXTRA_TOKENS)


def template(config):
  """Parameter shapes of the model (no compute): for pruning units and restores."""
  cfg = model_config(config)
  return jax.eval_shape(lambda: model_lib.init_params(cfg, jax.random.PRNGKey(0)))


def grammar(config) -> grammar_lib.Grammar:
  """config.grammar: '' for the paper's Fig. 14 grammar, else grammar text or a file path."""
  return grammar_lib.load_grammar(config.grammar or None)


def vocab(config) -> tasks.Vocab:
  """The tokens: the grammar's terminals (a b c for Fig. 14) among fixed specials and numbers."""
  return _vocab(tuple(grammar(config).terminals))


@functools.lru_cache(maxsize=None)
def _vocab(terminals: tuple[str, ...]) -> tasks.Vocab:
  return tasks.VOCAB if terminals == tasks.VOCAB.terminals else tasks.Vocab(terminals=terminals)


def o_primes(config) -> dict[str, int]:
  """O' of every family: data.o_prime_index for I/IC, data.o_prime_count for the others."""
  count, index = config.data.o_prime_count, config.data.o_prime_index
  return {f: (index if tasks.FAMILY_RULE[f].startswith('index') else count)
          for f in tasks.ALL_FAMILIES}


def pretrain_o_primes(config) -> dict[str, int]:
  """O' of the pretraining families only (config.data.families)."""
  return {f: o for f, o in o_primes(config).items() if f in config.data.families}


def finetune_spec(config) -> finetune_data.FinetuneSpec:
  f = config.finetune
  family = finetune_data.TASK_FAMILY.get(f.task, 'C')
  return finetune_data.FinetuneSpec(
      task=f.task, operand_pt=f.operand_pt, operand_ft=f.operand_ft,
      o_prime=o_primes(config)[family], q=f.q, window_length=config.data.window_length)


def jailbreak_families(config) -> tuple[str, ...]:
  """The App. E.2 family tokens among the pretraining families."""
  return tuple(f for f in tasks.JAILBREAK_FAMILIES if f in config.data.families)


def n_answer_classes(config) -> int:
  """How many answers the task has: counts 0..O' (counter) or indices 0..L (indexer)."""
  spec = finetune_spec(config)
  return spec.k + 1 if spec.task == 'counter' else spec.window_length + 1


def prior_name(prior) -> str:
  """'low', or 'p0.7-0.2-0.1' for a prior given as probabilities (names dirs and rows)."""
  return prior if isinstance(prior, str) else 'p' + '-'.join(f'{float(x):g}' for x in prior)


def prior_probs(config, prior):
  """What a prior draws: config.pretrain.prior_values[name] for a name given there (a scale's
  own value of a named role: the CPU scale's 'low'), else the prior itself (a name of
  tasks.PRIORS or probabilities). Names (dirs, rows, claims) stay the role's."""
  values = config.pretrain.get('prior_values') or {}
  if isinstance(prior, str) and prior in values:
    return tuple(values[prior])
  return prior


def pretrain_name(config, prior) -> str:
  """Names a pretraining run: the prior, plus the families when they are not the default."""
  name = prior_name(prior)
  if tuple(config.data.families) != tasks.FAMILIES:
    name += '_' + '-'.join(config.data.families)
  return name


def lm_batch(b: tasks.Batch, answer_only: bool) -> dict:
  """Next-token inputs/targets; weights pick every token (pretraining) or the answer."""
  mask = b.answer_mask if answer_only else b.loss_mask
  return {'inputs': b.tokens[:, :-1], 'targets': b.tokens[:, 1:],
          'weights': mask[:, 1:].astype(np.float32)}
