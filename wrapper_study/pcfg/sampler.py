"""Sampling strings and 250-token windows from a PCFG.

Two samplers of the same distribution:

- `sample_derivations` (vectorized): expands every nonterminal of a whole
  batch of ragged strings one level at a time. The batch is one flat array of
  symbol ids; each level picks a rule for every nonterminal at once (Vose alias
  tables, one uniform draw each), then writes all right-hand sides with one
  np.repeat/gather over a ragged production table. Terminals are copied
  through as one-symbol pseudo-productions, so order (the string) is kept.
  Non-recursive nonterminals with at most `table_size` distinct derivations
  (the paper grammar's j..f levels) are drawn in one step from a table of all
  their derivations with their probabilities: the same distribution, fewer
  levels. `table_size=0` gives the pure level-by-level sampler.
- `sample_recursive` (plain Python, depth-first): the baseline for the
  benchmark and an independent check in the tests.

Windows (paper App. B.2: "randomly subsample a string of 250 tokens from the
generated original sequence"). The paper is silent on derivations shorter
than the window; about 25% of single derivations of the paper grammar are
shorter than 250 tokens (possible lengths 138-432, mean ~275.5). Choice (default
`policy='concat'`, as the third-party reimplementation does): a string is
extended by concatenating further independent derivations, with no separator,
until it holds at least `length` tokens; the window is then a uniformly random
contiguous slice of it. `policy='reject'` instead redraws single derivations
until one is long enough (this biases windows towards long derivations, and
fails fast if `length` exceeds the grammar's longest possible derivation).

All randomness comes from the caller's np.random.Generator.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from wrapper_study.pcfg import grammar as grammar_lib

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_LENGTH = 100_000  # Mean sentential-form length per derivation.
WINDOW_LENGTH = 250
DEFAULT_TABLE_SIZE = 10_000  # The paper grammar's j/k/l have 512-8192 derivations.
POLICIES = ('concat', 'reject')


@dataclasses.dataclass(frozen=True)
class _Tables:
  """The grammar compiled to lookup tables.

  Symbol ids: terminals 0..T-1, then nonterminals. A "production" is what one
  symbol turns into in one level: ids 0..T-1 copy a terminal; then come the
  grammar's rules; then (if tabulated) one "macro" per full derivation of each
  tabulated nonterminal, whose right side is that derivation's terminal string.
  """
  num_terminals: int
  start_id: int
  # Alias tables (Vose) over each nonterminal's choices, concatenated: O(1) draws.
  choice_offset: np.ndarray  # [N] first choice of nonterminal i.
  choice_count: np.ndarray  # [N] number of choices of nonterminal i (float).
  alias_keep: np.ndarray  # [choices] probability of keeping the drawn column.
  alias_prod: np.ndarray  # [choices, 2] production id: (the column's own, its alias).
  prod_start: np.ndarray  # [P] offset of each production's right side in prod_rhs.
  prod_len: np.ndarray  # [P]
  prod_rhs: np.ndarray  # [sum prod_len] symbol ids, ragged.
  num_rules: int
  tabulated: tuple[str, ...]


def _derivation_counts(g: grammar_lib.Grammar) -> dict[str, float]:
  """Number of distinct derivations of each nonterminal (inf if recursive)."""
  counts = {t: 1 for t in g.terminals}

  def count(sym, stack):
    if sym in counts:
      return counts[sym]
    if sym in stack:
      return math.inf
    stack.add(sym)
    total = sum(math.prod(count(s, stack) for s in r.rhs)
                for r in g.alternatives(sym) if r.prob > 0)
    stack.discard(sym)
    counts[sym] = total
    return total

  return {nt: count(nt, set()) for nt in g.nonterminals}


@functools.lru_cache(maxsize=32)
def _compile(g: grammar_lib.Grammar, table_size: int) -> _Tables:
  T = len(g.terminals)
  sym_id = {s: i for i, s in enumerate(g.terminals)}
  sym_id.update({s: T + i for i, s in enumerate(g.nonterminals)})
  rules = rule_order(g)
  rhs_list = [[t] for t in range(T)] + [[sym_id[s] for s in r.rhs] for r in rules]
  rule_id = {r: T + j for j, r in enumerate(rules)}
  n_derivations = _derivation_counts(g)
  # Tabulate small non-recursive subtrees: one draw then replaces several levels.
  tabulated = tuple(nt for nt in g.nonterminals if n_derivations[nt] <= table_size)
  memo = {t: [((sym_id[t],), 1.0)] for t in g.terminals}

  def derivations(sym):  # [(terminal id tuple, probability)], one per derivation.
    if sym not in memo:
      out = []
      for r in g.alternatives(sym):
        if r.prob == 0:
          continue
        parts = [((), r.prob)]
        for child in r.rhs:
          parts = [(s + cs, p * cp) for s, p in parts for cs, cp in derivations(child)]
        out.extend(parts)
      memo[sym] = out
    return memo[sym]

  keep_parts, prod_parts, offsets, sizes = [], [], [], []
  for nt in g.nonterminals:
    if nt in tabulated:
      macros = derivations(nt)
      probs = [p for _, p in macros]
      prods = np.arange(len(rhs_list), len(rhs_list) + len(macros))
      rhs_list.extend(list(s) for s, _ in macros)
    else:
      probs = [r.prob for r in g.alternatives(nt)]
      prods = np.array([rule_id[r] for r in g.alternatives(nt)])
    keep, alias = _alias_table(np.array(probs) / math.fsum(probs))
    offsets.append(sum(sizes))
    sizes.append(len(probs))
    keep_parts.append(keep)
    prod_parts.append(np.stack([prods, prods[alias]], axis=1))
  prod_len = np.array([len(r) for r in rhs_list], np.int32)
  symbol_dtype = np.int8 if T + len(g.nonterminals) < 128 else np.int32
  return _Tables(
      num_terminals=T, start_id=sym_id[g.start], choice_offset=np.array(offsets, np.int64),
      choice_count=np.array(sizes, np.float64), alias_keep=np.concatenate(keep_parts),
      alias_prod=np.concatenate(prod_parts).astype(np.int32),
      prod_start=(np.cumsum(prod_len) - prod_len).astype(np.int32),
      prod_len=prod_len, prod_rhs=np.concatenate([np.asarray(r, symbol_dtype) for r in rhs_list]),
      num_rules=len(rules), tabulated=tabulated)


def _alias_table(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Vose's alias table: column i keeps itself w.p. keep[i], else gives alias[i]."""
  k = probs.size
  scaled = probs * k
  keep, alias = np.ones(k), np.arange(k)
  small = [i for i in range(k) if scaled[i] < 1.0]
  large = [i for i in range(k) if scaled[i] >= 1.0]
  while small and large:
    s, l = small.pop(), large.pop()
    keep[s], alias[s] = scaled[s], l
    scaled[l] -= 1.0 - scaled[s]
    (small if scaled[l] < 1.0 else large).append(l)
  # Leftovers are 1 up to round-off: they keep themselves.
  return keep, alias


def rule_order(g: grammar_lib.Grammar) -> tuple[grammar_lib.Rule, ...]:
  """Rules in the column order of `sample_derivations(..., return_rule_counts=True)`."""
  return tuple(r for nt in g.nonterminals for r in g.alternatives(nt))


@dataclasses.dataclass(frozen=True)
class Derivations:
  """A batch of terminal strings, ragged, stored flat.

  tokens: [sum(lengths)] terminal ids (indices into grammar.terminals).
  lengths: [n] string lengths; string i is tokens[starts[i]:starts[i] + lengths[i]].
  rule_counts: [n, num_rules] times each rule was used (None unless asked).
  """
  tokens: np.ndarray
  lengths: np.ndarray
  rule_counts: np.ndarray | None = None

  @property
  def starts(self) -> np.ndarray:
    return np.cumsum(self.lengths) - self.lengths

  def strings(self) -> list[np.ndarray]:
    return np.split(self.tokens, np.cumsum(self.lengths)[:-1])


def _depth_error(max_depth: int) -> ValueError:
  return ValueError(f'max_depth={max_depth} exceeded: the derivation is still unfinished after '
                    f'{max_depth} levels; the grammar is (too) recursive. Raise max_depth or '
                    'lower the probabilities of recursive rules.')


def sample_derivations(g: grammar_lib.Grammar, rng: np.random.Generator, n: int, *,
                       max_depth: int = DEFAULT_MAX_DEPTH,
                       max_length: int = DEFAULT_MAX_LENGTH,
                       return_rule_counts: bool = False,
                       table_size: int = DEFAULT_TABLE_SIZE) -> Derivations:
  """n independent full derivations from the start symbol, vectorized.

  Args:
    g: the grammar.
    rng: the only source of randomness.
    n: number of derivations.
    max_depth: levels of expansion allowed (a tabulated subtree is one level).
    max_length: guard on the mean sentential-form length per derivation.
    return_rule_counts: also count rule uses per derivation (disables tables).
    table_size: nonterminals with at most this many distinct derivations are
      sampled in one draw from a precomputed table of all their derivations
      (exactly the same distribution; 0 turns tables off).
  """
  _check_count('n', n)
  tab = _compile(g, 0 if return_rule_counts else table_size)
  T = tab.num_terminals
  symbols = np.full(n, tab.start_id, tab.prod_rhs.dtype)
  first = np.arange(n)  # Index of each derivation's first symbol.
  rule_counts = np.zeros(n * tab.num_rules, np.int64) if return_rule_counts else None
  depth = 0
  while True:
    nt_pos = np.flatnonzero(symbols >= T)
    if nt_pos.size == 0:
      break
    if depth == max_depth:
      raise _depth_error(max_depth)
    if symbols.size > max_length * n:
      raise ValueError(f'max_length={max_length} exceeded: sentential forms average more than '
                       f'{max_length} symbols per derivation at level {depth}; the grammar '
                       'keeps growing (is it supercritical?).')
    depth += 1
    # Alias method: u * K picks a column (integer part) and, with the fraction
    # as a second uniform, the column's own choice or its alias.
    nt = symbols[nt_pos] - T
    scaled = rng.random(nt_pos.size) * tab.choice_count[nt]
    column = tab.choice_offset[nt] + scaled.astype(np.int64)
    use_alias = (scaled % 1.0) >= tab.alias_keep[column]
    choice = tab.alias_prod[column, use_alias.view(np.int8)]
    if rule_counts is not None:
      row = np.searchsorted(first, nt_pos, side='right') - 1
      rule_counts += np.bincount(row * tab.num_rules + (choice - T), minlength=rule_counts.size)
    if nt_pos.size == symbols.size:
      prod = choice
    else:
      prod = symbols.astype(np.int32)  # Terminal t keeps pseudo-production t.
      prod[nt_pos] = choice
    counts = tab.prod_len[prod]
    ends = np.cumsum(counts, dtype=np.int64)
    index_dtype = np.int32 if ends[-1] < 2**31 else np.int64  # Halves memory traffic.
    starts = (ends - counts).astype(index_dtype)
    shift = np.repeat(tab.prod_start[prod] - starts, counts)
    shift += np.arange(ends[-1], dtype=index_dtype)
    symbols = tab.prod_rhs[shift]
    first = starts[first]
  lengths = np.diff(np.append(first, symbols.size))
  return Derivations(symbols.astype(np.int8 if T < 128 else np.int32), lengths,
                     None if rule_counts is None else rule_counts.reshape(n, tab.num_rules))


def sample_windows(g: grammar_lib.Grammar, rng: np.random.Generator, n: int,
                   length: int = WINDOW_LENGTH, *, policy: str = 'concat',
                   max_depth: int = DEFAULT_MAX_DEPTH,
                   table_size: int = DEFAULT_TABLE_SIZE) -> np.ndarray:
  """[n, length] terminal ids: uniformly random slices of generated strings.

  See the module docstring for strings shorter than `length`.
  """
  _check_count('n', n)
  _check_window(g, length, policy)
  total = np.zeros(n, np.int64)
  pieces = []  # (Derivations, rows they extend), in order of concatenation.
  need = np.arange(n)
  max_rounds = max(length, 1000)  # Each concat round adds >= 1 token per row.
  for _ in range(max_rounds):
    if policy == 'reject':
      # Oversample so that rare long strings fill all rows in few rounds.
      d = sample_derivations(g, rng, max(2 * need.size, 1024), max_depth=max_depth,
                             table_size=table_size)
      keep = d.lengths >= length
      keep &= np.cumsum(keep) <= need.size
      d = Derivations(d.tokens[np.repeat(keep, d.lengths)], d.lengths[keep])
      rows, need = need[:d.lengths.size], need[d.lengths.size:]
    else:
      d = sample_derivations(g, rng, need.size, max_depth=max_depth, table_size=table_size)
      rows = need
      need = need[total[need] + d.lengths < length]
    pieces.append((d, rows))
    total[rows] += d.lengths
    if need.size == 0:
      break
  else:
    raise ValueError(f'length={length}: {need.size} windows still lack a long enough string '
                     f"after {max_rounds} rounds of policy={policy!r} sampling; use "
                     "policy='concat' or a shorter window.")
  offset = rng.integers(0, total - length + 1)
  return _cut_windows(pieces, total, offset, length)


def _cut_windows(pieces, total: np.ndarray, offset: np.ndarray, length: int) -> np.ndarray:
  """windows[i] = concat(row i's pieces, in order)[offset[i]:offset[i] + length]."""
  n = total.size
  n_pieces = np.zeros(n, np.int64)
  for _, rows in pieces:
    n_pieces[rows] += 1
  multi = n_pieces > 1
  windows = np.empty((n, length), pieces[0][0].tokens.dtype)
  # Most strings are one derivation: copy their windows straight out of it.
  for d, rows in pieces:
    single = ~multi[rows]
    if single.any():
      view = np.lib.stride_tricks.sliding_window_view(d.tokens, length)
      windows[rows[single]] = view[d.starts[single] + offset[rows[single]]]
  if multi.any():  # Concatenate the pieces of the other strings, then slice.
    slot = np.cumsum(multi) - 1  # Row -> its position among the multi-piece rows.
    lengths = total[multi]
    text_start = np.cumsum(lengths) - lengths
    filled = np.zeros(lengths.size, np.int64)
    text = np.empty(int(lengths.sum()), windows.dtype)
    for d, rows in pieces:
      sel = multi[rows]
      if not sel.any():
        continue
      tokens, sel_lengths = d.tokens[np.repeat(sel, d.lengths)], d.lengths[sel]
      s = slot[rows[sel]]
      dest_start = text_start[s] + filled[s] - (np.cumsum(sel_lengths) - sel_lengths)
      text[np.repeat(dest_start, sel_lengths) + np.arange(tokens.size)] = tokens
      filled[s] += sel_lengths
    view = np.lib.stride_tricks.sliding_window_view(text, length)
    windows[multi] = view[text_start + offset[multi]]
  return windows.astype(np.int32)


def sample_recursive(g: grammar_lib.Grammar, rng: np.random.Generator, *,
                     max_depth: int = DEFAULT_MAX_DEPTH,
                     return_rule_counts: bool = False):
  """One derivation as a list of terminal ids, by plain depth-first recursion.

  Returns (tokens, rule_counts dict keyed by Rule) if return_rule_counts.
  """
  terminal_id = {t: i for i, t in enumerate(g.terminals)}
  alternatives = {nt: g.alternatives(nt) for nt in g.nonterminals}
  out, counts = [], {}

  def expand(symbol, depth):
    if symbol in terminal_id:
      out.append(terminal_id[symbol])
      return
    if depth == max_depth:
      raise _depth_error(max_depth)
    u, acc = rng.random(), 0.0
    rules = alternatives[symbol]
    for rule in rules:
      acc += rule.prob
      if u < acc:
        break
    else:
      rule = rules[-1]  # Float round-off: the cumulative sum fell short of u.
    if return_rule_counts:
      counts[rule] = counts.get(rule, 0) + 1
    for child in rule.rhs:
      expand(child, depth + 1)

  expand(g.start, 0)
  return (out, counts) if return_rule_counts else out


def sample_windows_recursive(g: grammar_lib.Grammar, rng: np.random.Generator, n: int,
                             length: int = WINDOW_LENGTH, *,
                             max_depth: int = DEFAULT_MAX_DEPTH) -> np.ndarray:
  """The 'concat' window policy with the recursive sampler (baseline)."""
  _check_count('n', n)
  _check_window(g, length, 'concat')
  out = np.empty((n, length), np.int64)
  for i in range(n):
    text = []
    while len(text) < length:
      text.extend(sample_recursive(g, rng, max_depth=max_depth))
    start = int(rng.integers(0, len(text) - length + 1))
    out[i] = text[start:start + length]
  return out


def _check_count(field: str, n) -> None:
  if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
    raise ValueError(f'{field}={n!r} must be a positive integer.')


def _check_window(g: grammar_lib.Grammar, length, policy: str) -> None:
  _check_count('length', length)
  if policy not in POLICIES:
    raise ValueError(f'policy={policy!r}: valid are {POLICIES}.')
  if policy == 'reject':
    longest = grammar_lib.length_bounds(g)[g.start][1]
    if length > longest:
      raise ValueError(f"length={length} is longer than any string the grammar generates "
                       f"(at most {longest:g} tokens) under policy='reject'.")
  # 'concat' can make any length; nothing else limits it.
