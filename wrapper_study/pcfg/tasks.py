"""Sequences, task families and the pretraining mixture (paper App. B.2, C.2).

Sequence format (Eq. 1), one row per sample, no padding needed:

  position  0    1  2  3   4    5 .. 5+L-1  5+L  6+L  7+L  8+L
  token     SOS  T  O  O'  SOT  Txt (L)     EOT  ART  Ans  EOS

so a row has L + 9 tokens (259 for the paper's L = 250 text window) and the
answer sits at `answer_index` = L + 7. It is predicted from position L + 6 (ART).

Vocabulary (`VOCAB`, ids in this order):

  0-5    PAD SOS SOT EOT ART EOS       special tokens (PAD only for consumers that pad)
  6-12   C CC I IC T T_J1 T_J2          task-family tokens; T_J1/T_J2 are extra
                                        counting tokens (App. E.2 jailbreak)
  13-15  a b c                          grammar terminals, also the operands O
  16     NULL                           the operand of family T
  17-267 0 1 ... 250                    numbers: O', counts and indices

Task families, on the L-token text window `w` with operand O and number O':
- C:  count of O in the last O' tokens.                       Default O' = 40.
- CC: count of the composition OO in the last O' tokens: adjacent pairs with
      both tokens inside those O' tokens, overlapping (`aaa` holds 2).  O' = 40.
- I:  index of the O'-th occurrence of O counted backwards from EOT, as the
      distance to EOT (the last text token has index 1).             O' = 6.
- IC: the same for the composition OO (overlapping pairs); an occurrence's
      index is that of its token nearer EOT.                         O' = 6.
- T:  the token at index O' before EOT (index as for I); O = NULL.  O' = 40.
- T_J1, T_J2: counting, exactly as C (used only with operand `a`).
If the text holds fewer than O' occurrences (I, IC) the label is 0, a value no
real index takes. The answer of T is a terminal token; all others are numbers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence

import numpy as np

from wrapper_study.pcfg import grammar as grammar_lib
from wrapper_study.pcfg import sampler

SPECIALS = ('PAD', 'SOS', 'SOT', 'EOT', 'ART', 'EOS')
FAMILIES = ('C', 'CC', 'I', 'IC', 'T')  # The paper's five pretraining families.
JAILBREAK_FAMILIES = ('T_J1', 'T_J2')  # App. E.2: counting tokens seen only with `a`.
ALL_FAMILIES = FAMILIES + JAILBREAK_FAMILIES
NULL = 'NULL'
NO_OCCURRENCE = 0  # Label of I/IC when there are fewer than O' occurrences.
DEFAULT_O_PRIME = {'C': 40, 'CC': 40, 'I': 6, 'IC': 6, 'T': 40, 'T_J1': 40, 'T_J2': 40}
FAMILY_RULE = {'C': 'count', 'CC': 'count_pair', 'I': 'index', 'IC': 'index_pair',
               'T': 'token', 'T_J1': 'count', 'T_J2': 'count'}

# Operand priors P_T over (a, b, c) (Sec. 5 and App. C.2).
PRIORS = {
    'low': (0.999, 0.001, 0.0),
    'medium': (0.9, 0.1, 0.0),
    'high': (0.5, 0.3, 0.2),
    'a=0.999': (0.999, 0.001, 0.0),
    'a=0.99': (0.99, 0.01, 0.0),
    'a=0.9': (0.9, 0.1, 0.0),
    'a=0.7': (0.7, 0.2, 0.1),
    'a=0.5': (0.5, 0.3, 0.2),
}
APPENDIX_C_PRIORS = ('a=0.999', 'a=0.99', 'a=0.9', 'a=0.7', 'a=0.5')
PRIOR_TOLERANCE = 1e-6
_N_PROMPT = 5  # SOS T O O' SOT.
N_EXTRA_TOKENS = _N_PROMPT + 4  # Sequence length = window + these (EOT ART Ans EOS).


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Token names and ids; the layout is in the module docstring."""
  terminals: tuple[str, ...] = ('a', 'b', 'c')
  max_number: int = 250

  def __post_init__(self):
    if self.max_number < 1:
      raise ValueError(f'vocab.max_number={self.max_number} must be >= 1.')
    names = self.names
    dup = sorted({s for s in names if names.count(s) > 1})
    if dup:
      raise ValueError(f'vocab.terminals={self.terminals}: names {dup} clash with other tokens.')

  @functools.cached_property
  def names(self) -> tuple[str, ...]:
    return (SPECIALS + ALL_FAMILIES + tuple(self.terminals) + (NULL,)
            + tuple(str(v) for v in range(self.max_number + 1)))

  @property
  def size(self) -> int:
    return len(self.names)

  @property
  def first_family(self) -> int:
    return len(SPECIALS)

  @property
  def first_terminal(self) -> int:
    return len(SPECIALS) + len(ALL_FAMILIES)

  @property
  def null_id(self) -> int:
    return self.first_terminal + len(self.terminals)

  @property
  def first_number(self) -> int:
    return self.null_id + 1

  def id(self, name: str) -> int:
    try:
      return self._index[name]
    except KeyError:
      raise ValueError(f'token {name!r} is not in the vocabulary.') from None

  @functools.cached_property
  def _index(self) -> dict[str, int]:
    return {s: i for i, s in enumerate(self.names)}

  def encode(self, names: Sequence[str]) -> np.ndarray:
    index = self._index
    return np.array([index[s] for s in names], np.int32)

  def decode(self, ids) -> list[str]:
    names = self.names
    return [names[i] for i in np.asarray(ids).ravel().tolist()]

  def number_ids(self, values) -> np.ndarray:
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() > self.max_number):
      raise ValueError(f'numbers {values.min()}..{values.max()} fall outside the vocabulary '
                       f'0..{self.max_number}.')
    return (self.first_number + values).astype(np.int32)


VOCAB = Vocab()


@dataclasses.dataclass(frozen=True)
class Batch:
  """Sequences and their answers.

  tokens: [n, L + 9] int32 token ids.
  values: [n] the answer before encoding: a count/index, or for T a terminal id.
  answer_index: column of the answer token in `tokens` (L + 7).
  loss_mask: [n, L + 9] bool, next-token pretraining targets (every token but SOS).
  answer_mask: [n, L + 9] bool, only the answer (the fine-tuning loss).
  family: [n] index into ALL_FAMILIES.
  correlated: [n] bool, fine-tuning rows built to obey the spurious correlation.
  from_pretraining: [n] bool, rows drawn from the pretraining mixture (App. E.1).
  """
  tokens: np.ndarray
  values: np.ndarray
  answer_index: int
  loss_mask: np.ndarray
  answer_mask: np.ndarray
  family: np.ndarray
  correlated: np.ndarray
  from_pretraining: np.ndarray

  @property
  def answers(self) -> np.ndarray:
    return self.tokens[:, self.answer_index]

  @property
  def windows_tokens(self) -> np.ndarray:
    """[n, L] the text window as vocabulary token ids."""
    return self.tokens[:, _N_PROMPT:self.answer_index - 2]

  def take(self, rows) -> Batch:
    return Batch(**{f.name: (getattr(self, f.name) if f.name == 'answer_index'
                             else getattr(self, f.name)[rows])
                    for f in dataclasses.fields(self)})


def concat_batches(batches: Sequence[Batch]) -> Batch:
  if len({b.answer_index for b in batches}) != 1:
    raise ValueError('batches have different window lengths.')
  return Batch(**{f.name: (batches[0].answer_index if f.name == 'answer_index'
                           else np.concatenate([getattr(b, f.name) for b in batches]))
                  for f in dataclasses.fields(Batch)})


def resolve_prior(prior, operands: Sequence[str] = VOCAB.terminals,
                  field: str = 'operand_prior') -> np.ndarray:
  """A named prior (PRIORS) or a sequence of probabilities over `operands`."""
  if isinstance(prior, str):
    if prior not in PRIORS:
      raise ValueError(f'{field}={prior!r}: unknown name; known are {sorted(PRIORS)} '
                       'or a sequence of probabilities.')
    prior = PRIORS[prior]
  p = np.asarray(prior, np.float64)
  if p.shape != (len(operands),):
    raise ValueError(f'{field}={list(np.ravel(p))}: need {len(operands)} probabilities, '
                     f'one per operand {tuple(operands)}.')
  if not np.all(np.isfinite(p)) or (p < 0).any():
    raise ValueError(f'{field}={p.tolist()}: entries must be finite and >= 0.')
  if abs(p.sum() - 1.0) > PRIOR_TOLERANCE:
    raise ValueError(f'{field}={p.tolist()}: sums to {p.sum()!r}, not 1 '
                     f'(tolerance {PRIOR_TOLERANCE}).')
  return p


def check_family(family: str, field: str = 'family') -> str:
  if family not in ALL_FAMILIES:
    raise ValueError(f'{field}={family!r}: unknown task family; valid are {ALL_FAMILIES}.')
  return family


def check_o_prime(family: str, o_prime, window_length: int, vocab: Vocab = VOCAB,
                  field: str = 'o_prime') -> int:
  if not isinstance(o_prime, (int, np.integer)) or isinstance(o_prime, bool) or o_prime < 1:
    raise ValueError(f'{field}={o_prime!r} (family {family}) must be a positive integer.')
  if o_prime > window_length:
    raise ValueError(f'{field}={o_prime} (family {family}) is larger than the text window '
                     f'(window_length={window_length}).')
  if o_prime > vocab.max_number:
    raise ValueError(f'{field}={o_prime} has no number token (vocab.max_number='
                     f'{vocab.max_number}).')
  return int(o_prime)


def check_window_length(window_length, vocab: Vocab = VOCAB) -> int:
  if (not isinstance(window_length, (int, np.integer)) or isinstance(window_length, bool)
      or window_length < 1):
    raise ValueError(f'window_length={window_length!r} must be a positive integer.')
  if window_length > vocab.max_number:
    # Indices run up to the window length and must be number tokens.
    raise ValueError(f'window_length={window_length} is longer than the vocabulary allows: '
                     f'index labels need numbers up to it (vocab.max_number={vocab.max_number}).')
  return int(window_length)


def operand_id(family: str, operand, vocab: Vocab = VOCAB, field: str = 'operand') -> int:
  """The operand's token id, checking it fits the family (T takes NULL)."""
  if family == 'T':
    if operand not in (None, NULL):
      raise ValueError(f"{field}={operand!r}: family T takes operand {NULL!r}.")
    return vocab.null_id
  if operand not in vocab.terminals:
    raise ValueError(f'{field}={operand!r}: unknown operand for family {family}; valid are '
                     f'{vocab.terminals}.')
  return vocab.first_terminal + vocab.terminals.index(operand)


def compute_values(windows, family: str, operand, o_prime: int, xp=np):
  """[n] answers of one family on [n, L] terminal-id windows, vectorized.

  operand: a terminal id or an [n] array of them (ignored for T). xp: the array library
  (numpy on the host; jax.numpy inside the device sampler, pcfg/device_sampler.py).
  """
  w = xp.asarray(windows)
  k = int(o_prime)
  rule = FAMILY_RULE[family]
  if rule == 'token':
    return w[:, -k].astype(np.int64) if xp is np else w[:, -k]
  is_op = w == xp.reshape(xp.asarray(operand), (-1, 1))
  if rule == 'count':
    return is_op[:, -k:].sum(axis=1)
  if rule == 'count_pair':
    tail = is_op[:, -k:]
    return (tail[:, 1:] & tail[:, :-1]).sum(axis=1)
  hits = is_op[:, ::-1]  # hits[:, j] is the token at index j + 1.
  if rule == 'index_pair':
    hits = hits[:, :-1] & hits[:, 1:]  # Pair whose nearer-EOT token has index j + 1.
  seen = xp.cumsum(hits, axis=1)
  found = seen[:, -1] >= k
  return xp.where(found, xp.argmax(seen >= k, axis=1) + 1, NO_OCCURRENCE)


def assemble(windows: np.ndarray, family_idx: np.ndarray, operand_ids: np.ndarray,
             o_primes: np.ndarray, values: np.ndarray, vocab: Vocab = VOCAB, *,
             correlated=None, from_pretraining=None) -> Batch:
  """Builds rows SOS T O O' SOT Txt EOT ART Ans EOS from per-row parts."""
  w = np.asarray(windows)
  n, length = w.shape
  check_window_length(length, vocab)
  family_idx = np.asarray(family_idx)
  is_token_task = np.array([FAMILY_RULE[f] == 'token' for f in ALL_FAMILIES])[family_idx]
  values = np.asarray(values, np.int64)
  if values.size and (values.min() < 0 or values[~is_token_task].max(initial=0) > vocab.max_number):
    raise ValueError(f'values {values.min()}..{values.max()} have no number token.')
  answer = np.where(is_token_task, vocab.first_terminal + values, vocab.first_number + values)
  tokens = np.empty((n, length + 9), np.int32)
  tokens[:, 0] = vocab.id('SOS')
  tokens[:, 1] = vocab.first_family + family_idx
  tokens[:, 2] = operand_ids
  tokens[:, 3] = vocab.number_ids(o_primes)
  tokens[:, 4] = vocab.id('SOT')
  tokens[:, _N_PROMPT:_N_PROMPT + length] = vocab.first_terminal + w
  answer_index = length + 7
  tokens[:, answer_index - 2] = vocab.id('EOT')
  tokens[:, answer_index - 1] = vocab.id('ART')
  tokens[:, answer_index] = answer
  tokens[:, answer_index + 1] = vocab.id('EOS')
  loss_mask = np.ones(tokens.shape, bool)
  loss_mask[:, 0] = False  # Nothing predicts SOS.
  answer_mask = np.zeros(tokens.shape, bool)
  answer_mask[:, answer_index] = True
  false = np.zeros(n, bool)
  return Batch(tokens=tokens, values=values, answer_index=answer_index,
               loss_mask=loss_mask, answer_mask=answer_mask, family=family_idx.astype(np.int32),
               correlated=false if correlated is None else np.asarray(correlated, bool),
               from_pretraining=false if from_pretraining is None else np.asarray(from_pretraining,
                                                                                  bool))


def make_sequences(windows: np.ndarray, family: str, operand=None, o_prime: int | None = None,
                   vocab: Vocab = VOCAB) -> Batch:
  """One family and operand for every row of [n, L] terminal-id windows."""
  w = np.asarray(windows)
  if w.ndim != 2:
    raise ValueError(f'windows has shape {w.shape}; expected [n, window_length].')
  length = check_window_length(w.shape[1], vocab)
  check_family(family)
  op = operand_id(family, operand, vocab)
  o_prime = check_o_prime(family, DEFAULT_O_PRIME[family] if o_prime is None else o_prime,
                          length, vocab)
  values = compute_values(w, family, op - vocab.first_terminal, o_prime)
  n = w.shape[0]
  return assemble(w, np.full(n, ALL_FAMILIES.index(family)), np.full(n, op),
                  np.full(n, o_prime), values, vocab)


def sample_pretraining_batch(rng: np.random.Generator, n: int, operand_prior='low',
                             families: Sequence[str] = FAMILIES, *,
                             o_primes: Mapping[str, int] | None = None,
                             grammar: grammar_lib.Grammar | str | None = None,
                             window_length: int = sampler.WINDOW_LENGTH,
                             vocab: Vocab = VOCAB, jailbreak_operand: str = 'a') -> Batch:
  """The pretraining mixture.

  The family is uniform over `families`; the operand is drawn from
  `operand_prior` over vocab.terminals for C, CC, I and IC (the paper says
  only "P_T"; applying it to all four is our choice), is NULL for T, and is
  always `jailbreak_operand` for T_J1/T_J2 (App. E.2).
  """
  g = grammar_lib.load_grammar(grammar)
  prior = resolve_prior(operand_prior, vocab.terminals)
  fams = _check_families(families)
  length = _check_grammar_window(g, window_length, vocab)
  o_by_family = _o_primes(fams, o_primes, length, vocab)
  if jailbreak_operand not in vocab.terminals:
    raise ValueError(f'jailbreak_operand={jailbreak_operand!r}: valid are {vocab.terminals}.')
  sampler._check_count('n', n)
  windows = sampler.sample_windows(g, rng, n, length)
  family_idx = np.array([ALL_FAMILIES.index(f) for f in fams])[rng.integers(len(fams), size=n)]
  operand = rng.choice(len(vocab.terminals), size=n, p=prior)
  jail = np.isin(family_idx, [ALL_FAMILIES.index(f) for f in JAILBREAK_FAMILIES])
  operand[jail] = vocab.terminals.index(jailbreak_operand)
  o_prime = np.array([o_by_family.get(f, 0) for f in ALL_FAMILIES])[family_idx]
  values = np.zeros(n, np.int64)
  for f in fams:
    rows = family_idx == ALL_FAMILIES.index(f)
    if rows.any():
      values[rows] = compute_values(windows[rows], f, operand[rows], o_by_family[f])
  operand_tok = np.where(family_idx == ALL_FAMILIES.index('T'), vocab.null_id,
                         vocab.first_terminal + operand)
  return assemble(windows, family_idx, operand_tok, o_prime, values, vocab,
                  from_pretraining=np.ones(n, bool))


def _check_families(families: Sequence[str]) -> tuple[str, ...]:
  if isinstance(families, str):
    families = (families,)
  fams = tuple(families)
  if not fams:
    raise ValueError('families is empty.')
  for f in fams:
    check_family(f, 'families')
  if len(set(fams)) != len(fams):
    raise ValueError(f'families={fams} repeats a family.')
  return fams


def _o_primes(fams, o_primes, length, vocab) -> dict[str, int]:
  o_primes = dict(o_primes or {})
  for f in o_primes:
    if f not in fams:
      raise ValueError(f'o_primes has family {f!r}, which is not in families={fams}.')
  return {f: check_o_prime(f, o_primes.get(f, DEFAULT_O_PRIME[f]), length, vocab,
                           f'o_primes[{f!r}]') for f in fams}


def _check_grammar_window(g: grammar_lib.Grammar, window_length, vocab: Vocab) -> int:
  if tuple(g.terminals) != tuple(vocab.terminals):
    raise ValueError(f'grammar.terminals={g.terminals} differ from vocab.terminals='
                     f'{vocab.terminals}.')
  return check_window_length(window_length, vocab)
