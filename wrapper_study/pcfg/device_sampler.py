"""The pretraining mixture drawn on the device: PCFG windows, families, operands, answers.

`data.on_device=True` makes pretraining draw each batch inside one jitted function of
(key, step) instead of with numpy on the host, so an accelerator never waits for the host
sampler and no batch crosses the host-device link. Same distribution as the host path
(`sampler.sample_windows(policy='concat')` + `tasks.sample_pretraining_batch`), another
random stream: a run on device does not reproduce a host run's batches, only their law.

Derivations: the host sampler's compiled tables (`sampler._compile`: alias tables, ragged
productions, small subtrees tabulated as one draw) expand a fixed [n, L] array of symbols one
level at a time, L the grammar's longest string (without empty rules no sentential form is
longer than the string it becomes), for as many levels as the tables' deepest derivation.
So the grammar must be bounded: a recursive one has no longest string and no last level,
and fails fast (keep `data.on_device=False` for it). Windows: as the host's 'concat' policy,
each row holds enough i.i.d. derivations to reach the window (ceil(window / shortest
string)); the row's text is those it needed, and the window a uniform slice of it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study.pcfg import grammar as grammar_lib
from wrapper_study.pcfg import sampler
from wrapper_study.pcfg import tasks

_NO_SYMBOL = -1  # Past the end of a sentential form.


@dataclasses.dataclass(frozen=True)
class DeviceGrammar:
  """A bounded grammar's tables as constants for a jitted sampler."""
  tables: sampler._Tables  # pylint: disable=protected-access
  levels: int  # Expansion steps until every derivation is all terminals.
  longest: int  # Longest string (and so longest sentential form).
  shortest: int


@functools.lru_cache(maxsize=16)
def compile_grammar(g: grammar_lib.Grammar,
                    table_size: int = sampler.DEFAULT_TABLE_SIZE) -> DeviceGrammar:
  """Tables and static sizes for `derivations`; ValueError for a recursive grammar."""
  shortest, longest = grammar_lib.length_bounds(g)[g.start]
  if math.isinf(longest):
    raise ValueError(
        f'the grammar is recursive (start symbol {g.start} derives strings of unbounded '
        'length), so no fixed-size array holds its derivations: drawing on the device needs a '
        'bounded grammar. Use data.on_device=False (the host sampler) for this grammar.')
  tables = sampler._compile(g, table_size)  # pylint: disable=protected-access
  depth = {t: 0 for t in g.terminals}

  def levels(sym):  # A tabulated subtree is drawn whole: one level.
    if sym not in depth:
      depth[sym] = 1 if sym in tables.tabulated else 1 + max(
          levels(s) for r in g.alternatives(sym) if r.prob > 0 for s in r.rhs)
    return depth[sym]

  return DeviceGrammar(tables, levels(g.start), int(longest), int(shortest))


def derivations(dg: DeviceGrammar, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
  """n independent strings from the start symbol: ([n, longest] terminal ids, padded with
  -1 after each string's end; [n] lengths)."""
  tab = dg.tables
  symbols = jnp.full((n, dg.longest), _NO_SYMBOL, jnp.int32).at[:, 0].set(tab.start_id)
  for level_key in jax.random.split(key, dg.levels):
    symbols = _expand(tab, symbols, level_key)
  return symbols, jnp.sum(symbols != _NO_SYMBOL, axis=1)


def _expand(tab, symbols, key):
  """One level: every nonterminal picks a production (alias method: a uniform column, then
  the column's own production or its alias); all right sides are written in order."""
  T, L = tab.num_terminals, symbols.shape[1]
  no_production = tab.prod_len.size  # Past the end: writes nothing.
  prod_len = jnp.asarray(np.append(tab.prod_len, 0), jnp.int32)
  prod_start = jnp.asarray(np.append(tab.prod_start, 0), jnp.int32)
  is_nonterminal = symbols >= T
  nt = jnp.where(is_nonterminal, symbols - T, 0)
  column_key, alias_key = jax.random.split(key)
  n_choices = jnp.asarray(tab.choice_count, jnp.int32)[nt]
  column = (jnp.asarray(tab.choice_offset, jnp.int32)[nt]
            + jax.random.randint(column_key, symbols.shape, 0, n_choices))
  use_alias = jax.random.uniform(alias_key, symbols.shape) >= jnp.asarray(
      tab.alias_keep, jnp.float32)[column]
  chosen = jnp.asarray(tab.alias_prod)[column, use_alias.astype(jnp.int32)]
  # A terminal t is its own one-symbol production t.
  prod = jnp.where(is_nonterminal, chosen,
                   jnp.where(symbols == _NO_SYMBOL, no_production, symbols))
  ends = jnp.cumsum(prod_len[prod], axis=1)
  j = jnp.arange(L)
  # The production that writes position j: the number of productions ending at or before j
  # (a scatter of ends and a running sum: O(L) per row, no search).
  ended = jnp.zeros((symbols.shape[0], L + 1), jnp.int32).at[
      jnp.arange(symbols.shape[0])[:, None], ends].add(1)
  source = jnp.minimum(jnp.cumsum(ended, axis=1)[:, :L], L - 1)
  p = jnp.take_along_axis(prod, source, axis=1)
  offset = j - (jnp.take_along_axis(ends, source, axis=1) - prod_len[p])
  written = jnp.asarray(tab.prod_rhs, jnp.int32)[prod_start[p] + offset]
  return jnp.where(j < ends[:, -1:], written, _NO_SYMBOL)


def windows(dg: DeviceGrammar, key: jax.Array, n: int, length: int) -> jax.Array:
  """[n, length] terminal ids: the host's 'concat' windows (module docstring)."""
  pieces = -(-length // dg.shortest)  # Enough derivations to reach `length` in every row.
  derive_key, offset_key = jax.random.split(key)
  strings, lengths = derivations(dg, derive_key, n * pieces)
  strings = strings.reshape(n, pieces * dg.longest)
  lengths = lengths.reshape(n, pieces)
  ends = jnp.cumsum(lengths, axis=1)
  text_length = jnp.min(jnp.where(ends >= length, ends, jnp.iinfo(jnp.int32).max), axis=1)
  offset = jax.random.randint(offset_key, (n,), 0, text_length - length + 1)
  position = offset[:, None] + jnp.arange(length)  # [n, length] in the row's text.
  piece = jnp.sum(ends[:, None, :] <= position[:, :, None], axis=-1)
  within = position - jnp.take_along_axis(ends - lengths, piece, axis=1)
  return jnp.take_along_axis(strings, piece * dg.longest + within, axis=1)


def pretraining_batch_fn(key: jax.Array, n: int, operand_prior, families: Sequence[str], *,
                         o_primes: Mapping[str, int], grammar: grammar_lib.Grammar,
                         window_length: int, vocab: tasks.Vocab = tasks.VOCAB,
                         jailbreak_operand: str = 'a') -> Callable[[int], dict]:
  """step -> the pretraining mixture's next-token batch ({'inputs', 'targets', 'weights'},
  as pcfg.model.lm_batch(..., answer_only=False)), drawn on the device from
  fold_in(key, step): the law of tasks.sample_pretraining_batch, checked as it checks."""
  dg = compile_grammar(grammar)
  prior = jnp.asarray(tasks.resolve_prior(operand_prior, vocab.terminals), jnp.float32)
  # pylint: disable=protected-access
  sampler._check_count('n', n)
  fams = tasks._check_families(families)
  window_length = tasks._check_grammar_window(grammar, window_length, vocab)
  o_by_family = tasks._o_primes(fams, o_primes, window_length, vocab)
  # pylint: enable=protected-access
  if jailbreak_operand not in vocab.terminals:
    raise ValueError(f'jailbreak_operand={jailbreak_operand!r}: valid are {vocab.terminals}.')
  family_ids = jnp.asarray([tasks.ALL_FAMILIES.index(f) for f in fams], jnp.int32)
  o_prime_of = jnp.asarray([o_by_family.get(f, 0) for f in tasks.ALL_FAMILIES], jnp.int32)
  jail = jnp.asarray([f in tasks.JAILBREAK_FAMILIES for f in tasks.ALL_FAMILIES])
  is_token = jnp.asarray([tasks.FAMILY_RULE[f] == 'token' for f in tasks.ALL_FAMILIES])
  jail_operand = vocab.terminals.index(jailbreak_operand)

  @jax.jit
  def batch(step):
    window_key, family_key, operand_key = jax.random.split(jax.random.fold_in(key, step), 3)
    w = windows(dg, window_key, n, window_length)
    family = family_ids[jax.random.randint(family_key, (n,), 0, len(fams))]
    operand = jax.random.choice(operand_key, prior.size, (n,), p=prior)
    operand = jnp.where(jail[family], jail_operand, operand)
    values = jnp.zeros(n, jnp.int32)
    for f in fams:
      values = jnp.where(family == tasks.ALL_FAMILIES.index(f),
                         tasks.compute_values(w, f, operand, o_by_family[f], xp=jnp), values)
    answer = jnp.where(is_token[family], vocab.first_terminal, vocab.first_number) + values
    operand_token = jnp.where(family == tasks.ALL_FAMILIES.index('T'), vocab.null_id,
                              vocab.first_terminal + operand)
    column = lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.int32), (n,))[:, None]
    tokens = jnp.concatenate(
        [column(vocab.id('SOS')), column(vocab.first_family + family), column(operand_token),
         column(vocab.first_number + o_prime_of[family]), column(vocab.id('SOT')),
         vocab.first_terminal + w, column(vocab.id('EOT')), column(vocab.id('ART')),
         column(answer), column(vocab.id('EOS'))], axis=1)
    # Every token but SOS is a pretraining target (tasks.assemble's loss_mask).
    return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
            'weights': jnp.ones((n, tokens.shape[1] - 1), jnp.float32)}

  return batch
