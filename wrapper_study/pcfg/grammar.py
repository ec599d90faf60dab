"""A probabilistic context-free grammar (PCFG) held as data.

Text format (one grammar per string or file):

  # Comments run from '#' to the end of the line.
  %start s              # Optional; default: the left side of the first rule.
  %terminals a b c      # Required: every other right-side symbol must have rules.
  s -> r q | q p        # Alternatives separated by '|'; '→' works as the arrow.
  p -> m n o [0.3] | n o m [0.7]

- A symbol is any run of non-blank characters other than '|', '[', ']', '#'.
- `[p]` after an alternative gives its probability. Either every alternative
  of a nonterminal has one (they must sum to 1 within 1e-6) or none does
  (then the alternatives are equally likely).
- A line may hold several rules side by side (`d → c a | a b c   e → c b`), as
  the paper's Fig. 14 prints them; a nonterminal may also be continued on
  later lines, which append alternatives.
- Empty alternatives (epsilon rules) are not supported: every derivation
  yields at least one terminal per nonterminal.

`Grammar` validates itself on construction (from text or from Python), so a
bad grammar fails before any sampling with a message naming the symbol/rule.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Mapping, Sequence

PROB_TOLERANCE = 1e-6

# Fig. 14 of the paper (adapted from Allen-Zhu & Li 2023c), copied verbatim
# from paper_spec.md 3.1. Every nonterminal has two equally likely rules.
PAPER_GRAMMAR = """\
%start s
%terminals a b c
s → r q | q p
p → m n o | n o m        q → n m o | m n          r → o m | m o n
m → l j | j l k          n → k j l | l j k        o → l k j | k j
j → h i | i h            k → h g i | g h i        l → i h g | h i g
g → d f e | f e d        h → e d f | d e f        i → e f d | f d e
d → c a | a b c          e → c b | c a b          f → c b a | b a
"""

_ARROW_RE = re.compile(r'(\S+)\s*(?:->|→)')
_PROB_RE = re.compile(r'^(.*?)\s*\[([^\[\]]*)\]\s*$')
_BAD_SYMBOL_CHARS = set('|[]#')


@dataclasses.dataclass(frozen=True)
class Rule:
  """One production `lhs -> rhs` chosen with probability `prob` given lhs."""
  lhs: str
  rhs: tuple[str, ...]
  prob: float

  def __str__(self) -> str:
    return f"{self.lhs} -> {' '.join(self.rhs)} [{self.prob:g}]"


@dataclasses.dataclass(frozen=True)
class Grammar:
  """A validated PCFG.

  Attributes:
    start: the start (root) nonterminal.
    nonterminals: in order of first definition; ids len(terminals) + index.
    terminals: terminal symbols; their ids are their indices here.
    rules: all productions, grouped by lhs in `nonterminals` order.
  """
  start: str
  nonterminals: tuple[str, ...]
  terminals: tuple[str, ...]
  rules: tuple[Rule, ...]

  def __post_init__(self):
    _validate(self)

  def alternatives(self, nonterminal: str) -> tuple[Rule, ...]:
    return tuple(r for r in self.rules if r.lhs == nonterminal)

  def to_text(self) -> str:
    """Round-trips through `parse_grammar`."""
    lines = [f'%start {self.start}', f"%terminals {' '.join(self.terminals)}"]
    for nt in self.nonterminals:
      alts = ' | '.join(f"{' '.join(r.rhs)} [{r.prob!r}]" for r in self.alternatives(nt))
      lines.append(f'{nt} -> {alts}')
    return '\n'.join(lines) + '\n'

  @classmethod
  def from_rules(cls, rules: Mapping[str, Sequence], terminals: Sequence[str],
                 start: str | None = None) -> Grammar:
    """Python form: {lhs: [rhs_tuple, ...]} (uniform) or [(rhs_tuple, prob), ...]."""
    built = []
    for lhs, alts in rules.items():
      alts = list(alts)
      explicit = [isinstance(a, tuple) and len(a) == 2 and isinstance(a[1], (int, float))
                  and not isinstance(a[1], bool) for a in alts]
      if any(explicit) and not all(explicit):
        raise ValueError(f'grammar nonterminal {lhs!r}: give a probability for every '
                         'alternative or for none.')
      for a in alts:
        rhs, prob = (a if all(explicit) else (a, 1.0 / len(alts)))
        rhs = tuple(rhs.split()) if isinstance(rhs, str) else tuple(rhs)
        built.append(Rule(lhs, rhs, float(prob)))
    if start is None:
      if not built:
        raise ValueError('grammar.start: no start symbol (the grammar has no rules).')
      start = built[0].lhs
    return cls(start=start, nonterminals=tuple(dict.fromkeys(r.lhs for r in built)),
               terminals=tuple(terminals), rules=tuple(built))


def parse_grammar(text: str) -> Grammar:
  """Parses the text format in the module docstring."""
  start, terminals = None, None
  alts_by_lhs: dict[str, list[tuple[tuple[str, ...], float | None]]] = {}
  for line_no, raw in enumerate(text.splitlines(), 1):
    line = raw.split('#', 1)[0].strip()
    if not line:
      continue
    where = f'grammar line {line_no} ({raw.strip()!r})'
    if line.startswith('%'):
      key, _, value = line.partition(' ')
      if key == '%start':
        if len(value.split()) != 1:
          raise ValueError(f'{where}: %start takes exactly one symbol.')
        start = value.strip()
      elif key == '%terminals':
        terminals = tuple(value.split())
      else:
        raise ValueError(f'{where}: unknown directive {key!r} (known: %start, %terminals).')
      continue
    pieces = _ARROW_RE.split(line)
    if pieces[0].strip() or len(pieces) < 3:
      raise ValueError(f"{where}: expected 'lhs -> alternative | alternative ...'.")
    for lhs, body in zip(pieces[1::2], pieces[2::2]):
      for alt in body.split('|'):
        alts_by_lhs.setdefault(lhs, []).append(_parse_alternative(alt, lhs, where))
  if terminals is None:
    raise ValueError('grammar.terminals: missing %terminals line; declare the terminal '
                     'symbols so that undefined symbols can be told apart from terminals.')
  rules = []
  for lhs, alts in alts_by_lhs.items():
    given = [p is not None for _, p in alts]
    if any(given) and not all(given):
      raise ValueError(f'grammar nonterminal {lhs!r}: give a [probability] for every '
                       'alternative or for none.')
    for rhs, p in alts:
      rules.append(Rule(lhs, rhs, p if p is not None else 1.0 / len(alts)))
  if start is None:
    if not rules:
      raise ValueError('grammar.start: no start symbol (the grammar has no rules).')
    start = rules[0].lhs
  return Grammar(start=start, nonterminals=tuple(alts_by_lhs), terminals=terminals,
                 rules=tuple(rules))


def load_grammar(source: str | os.PathLike | Grammar | None = None) -> Grammar:
  """A Grammar from a Grammar, grammar text, a file path, or None (the paper's)."""
  if source is None:
    return paper_grammar()
  if isinstance(source, Grammar):
    return source
  if isinstance(source, os.PathLike) or not re.search(r'->|→|\n', str(source)):
    path = os.fspath(source)
    if not os.path.isfile(path):
      raise ValueError(f'grammar path {path!r} does not exist (and is not grammar text: no "->").')
    with open(path, encoding='utf-8') as f:
      return parse_grammar(f.read())
  return parse_grammar(source)


_PAPER = None


def paper_grammar() -> Grammar:
  """The paper's Fig. 14 grammar (parsed once)."""
  global _PAPER
  if _PAPER is None:
    _PAPER = parse_grammar(PAPER_GRAMMAR)
  return _PAPER


def length_bounds(grammar: Grammar) -> dict[str, tuple[float, float]]:
  """(min, max) number of terminals a nonterminal can derive; max may be inf.

  Only rules with non-zero probability count.
  """
  lo = {t: 1.0 for t in grammar.terminals}
  lo.update({nt: math.inf for nt in grammar.nonterminals})
  changed = True
  while changed:  # Bellman-Ford style relaxation; converges since lengths >= 1.
    changed = False
    for r in grammar.rules:
      if r.prob > 0 and sum(lo[s] for s in r.rhs) < lo[r.lhs]:
        lo[r.lhs] = sum(lo[s] for s in r.rhs)
        changed = True
  hi = {t: 1.0 for t in grammar.terminals}

  def longest(sym, stack):
    if sym in hi:
      return hi[sym]
    if sym in stack:  # A reachable cycle: unbounded length.
      return math.inf
    stack.add(sym)
    best = max(sum(longest(s, stack) for s in r.rhs)
               for r in grammar.alternatives(sym) if r.prob > 0)
    stack.discard(sym)
    hi[sym] = best
    return best

  return {nt: (lo[nt], longest(nt, set())) for nt in grammar.nonterminals}


def _parse_alternative(alt: str, lhs: str, where: str) -> tuple[tuple[str, ...], float | None]:
  prob = None
  m = _PROB_RE.match(alt)
  if m:
    alt = m.group(1)
    try:
      prob = float(m.group(2))
    except ValueError:
      raise ValueError(f'{where}: rule {lhs} -> {alt.strip()}: probability '
                       f'[{m.group(2)}] is not a number.') from None
  rhs = tuple(alt.split())
  for s in rhs:
    if _BAD_SYMBOL_CHARS & set(s):
      raise ValueError(f'{where}: rule {lhs} -> {alt.strip()}: bad symbol {s!r}.')
  return rhs, prob


def _validate(g: Grammar) -> None:
  if not g.start:
    raise ValueError('grammar.start: no start symbol.')
  if not g.rules:
    raise ValueError('grammar.rules: the grammar has no rules.')
  if not g.terminals:
    raise ValueError('grammar.terminals: no terminal symbols declared.')
  for field, names in (('terminals', g.terminals), ('nonterminals', g.nonterminals)):
    dup = sorted({s for s in names if names.count(s) > 1})
    if dup:
      raise ValueError(f'grammar.{field}: duplicated symbols {dup}.')
  both = sorted(set(g.terminals) & set(g.nonterminals))
  if both:
    raise ValueError(f'grammar: symbols {both} are declared terminals but also have rules.')
  if g.start not in g.nonterminals:
    raise ValueError(f'grammar.start={g.start!r}: the start symbol has no rules.')
  defined = set(g.terminals) | set(g.nonterminals)
  for r in g.rules:
    name = f"grammar rule {r.lhs} -> {' '.join(r.rhs) or '(empty)'}"
    if r.lhs not in g.nonterminals:
      raise ValueError(f'{name}: lhs {r.lhs!r} is not listed in grammar.nonterminals.')
    if not r.rhs:
      raise ValueError(f'{name}: empty rule (epsilon alternatives are not supported).')
    for s in r.rhs:
      if s not in defined:
        raise ValueError(f'{name}: undefined symbol {s!r} (no rules, and not in %terminals '
                         f'{list(g.terminals)}).')
    if not math.isfinite(r.prob) or r.prob < 0:
      raise ValueError(f'{name}: probability {r.prob} must be finite and >= 0.')
  for nt in g.nonterminals:
    alts = g.alternatives(nt)
    if not alts:
      raise ValueError(f'grammar nonterminal {nt!r} has no rules.')
    total = math.fsum(r.prob for r in alts)
    if abs(total - 1.0) > PROB_TOLERANCE:
      raise ValueError(f'grammar nonterminal {nt!r}: rule probabilities sum to {total!r}, '
                       f'not 1 (tolerance {PROB_TOLERANCE}).')
  reached, frontier = {g.start}, [g.start]
  while frontier:
    for r in g.alternatives(frontier.pop()):
      for s in r.rhs:
        if s in g.nonterminals and s not in reached:
          reached.add(s)
          frontier.append(s)
  unreachable = [nt for nt in g.nonterminals if nt not in reached]
  if unreachable:
    raise ValueError(f'grammar nonterminals {unreachable} are unreachable from the start '
                     f'symbol {g.start!r}.')
  # A nonterminal that can never finish would only surface as a depth error later.
  productive, changed = set(g.terminals), True
  while changed:
    changed = False
    for r in g.rules:
      if r.lhs not in productive and r.prob > 0 and all(s in productive for s in r.rhs):
        productive.add(r.lhs)
        changed = True
  barren = [nt for nt in g.nonterminals if nt not in productive]
  if barren:
    raise ValueError(f'grammar nonterminals {barren} can never derive a terminal string.')
