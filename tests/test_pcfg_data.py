"""Tests of the PCFG data layer: grammar, samplers, task labels, fine-tuning data.

Statistical checks use a bound fixed before looking: |mean - expected| < 5
standard errors per statistic (two-sided false-alarm rate ~6e-7 each), with
fixed seeds so the suite is deterministic.
"""

import dataclasses

import jax
import jax.numpy as jnp
import nltk
import numpy as np
import pytest

from wrapper_study.pcfg import device_sampler
from wrapper_study.pcfg import finetune_data
from wrapper_study.pcfg import grammar as grammar_lib
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import sampler
from wrapper_study.pcfg import tasks

Z_BOUND = 5.0

# Fig. 14 written by hand in NLTK's own format (quoted terminals), so the
# parser check does not go through our grammar parser.
NLTK_PAPER_GRAMMAR = """
s -> r q | q p
p -> m n o | n o m
q -> n m o | m n
r -> o m | m o n
m -> l j | j l k
n -> k j l | l j k
o -> l k j | k j
j -> h i | i h
k -> h g i | g h i
l -> i h g | h i g
g -> d f e | f e d
h -> e d f | d e f
i -> e f d | f d e
d -> 'c' 'a' | 'a' 'b' 'c'
e -> 'c' 'b' | 'c' 'a' 'b'
f -> 'c' 'b' 'a' | 'b' 'a'
"""

# A recursive grammar with unequal probabilities (exercises the alias tables).
RECURSIVE_GRAMMAR = """
%terminals x y z
s -> s x [0.3] | y w s [0.2] | z [0.5]
w -> x y [0.25] | z [0.75]
"""


@pytest.fixture(scope='module')
def paper():
  return grammar_lib.paper_grammar()


def _nltk_text(g):
  lines = []
  for nt in [g.start] + [s for s in g.nonterminals if s != g.start]:
    alts = [' '.join(f"'{s}'" if s in g.terminals else s for s in r.rhs)
            for r in g.alternatives(nt)]
    lines.append(f"{nt} -> {' | '.join(alts)}")
  return '\n'.join(lines)


def _expectations(g):
  """Exact expected terminal counts and rule uses per derivation (linear recursion)."""
  nts, ts = list(g.nonterminals), list(g.terminals)
  child_nt = np.zeros((len(nts), len(nts)))
  child_t = np.zeros((len(nts), len(ts)))
  for r in g.rules:
    for s in r.rhs:
      if s in ts:
        child_t[nts.index(r.lhs), ts.index(s)] += r.prob
      else:
        child_nt[nts.index(r.lhs), nts.index(s)] += r.prob
  # E[X] = child_t[X] + sum_Y child_nt[X, Y] E[Y]; visits v = e_start + v child_nt.
  inverse = np.linalg.inv(np.eye(len(nts)) - child_nt)
  terminals = (inverse @ child_t)[nts.index(g.start)]
  visits = inverse[nts.index(g.start)]
  rules = np.array([visits[nts.index(r.lhs)] * r.prob for r in sampler.rule_order(g)])
  return terminals, rules


def _assert_means(samples, expected, what):
  """Each column's mean within Z_BOUND standard errors of `expected`."""
  samples = np.asarray(samples, np.float64)
  mean = samples.mean(0)
  se = samples.std(0, ddof=1) / np.sqrt(len(samples))
  z = np.abs(mean - expected) / np.maximum(se, 1e-12)
  assert np.all(z < Z_BOUND), f'{what}: mean {mean}, expected {expected}, z {z}'


def _per_derivation_counts(d, num_terminals):
  row = np.repeat(np.arange(d.lengths.size), d.lengths)
  return np.bincount(row * num_terminals + d.tokens, minlength=d.lengths.size * num_terminals
                     ).reshape(-1, num_terminals)


# (a) Grammar against an independent parser.


def test_paper_grammar_matches_fig14_and_round_trips(paper):
  reference = nltk.CFG.fromstring(NLTK_PAPER_GRAMMAR)
  ours = nltk.CFG.fromstring(_nltk_text(paper))
  assert set(map(str, ours.productions())) == set(map(str, reference.productions()))
  assert all(r.prob == 0.5 for r in paper.rules)
  assert paper.start == 's' and paper.terminals == ('a', 'b', 'c')
  assert grammar_lib.parse_grammar(paper.to_text()) == paper


@pytest.mark.parametrize('table_size', [0, sampler.DEFAULT_TABLE_SIZE])
def test_vectorized_derivations_parse_with_nltk(paper, table_size):
  parser = nltk.ChartParser(nltk.CFG.fromstring(NLTK_PAPER_GRAMMAR))
  d = sampler.sample_derivations(paper, np.random.default_rng(1), 5, table_size=table_size)
  for string in d.strings():
    assert next(parser.parse([paper.terminals[i] for i in string]), None) is not None
  # The parser does reject non-strings: every terminal block holds b or c.
  assert next(parser.parse(['a'] * 30), None) is None


def test_recursive_grammar_derivations_parse_with_nltk():
  g = grammar_lib.parse_grammar(RECURSIVE_GRAMMAR)
  parser = nltk.ChartParser(nltk.CFG.fromstring(_nltk_text(g)))
  d = sampler.sample_derivations(g, np.random.default_rng(2), 10)
  for string in d.strings():
    assert next(parser.parse([g.terminals[i] for i in string]), None) is not None


# (b) Frequencies against exact expectations; vectorized vs recursive.


def test_rule_and_terminal_frequencies_match_expectations(paper):
  terminals, rules = _expectations(paper)
  assert terminals.sum() == pytest.approx(275.5, abs=0.5)  # Spec 3.1: mean ~275.
  rng = np.random.default_rng(3)
  counted = sampler.sample_derivations(paper, rng, 20_000, return_rule_counts=True)
  _assert_means(counted.rule_counts, rules, 'rule uses (no tables)')
  _assert_means(_per_derivation_counts(counted, 3), terminals, 'terminals (no tables)')
  tabled = sampler.sample_derivations(paper, rng, 20_000)
  _assert_means(_per_derivation_counts(tabled, 3), terminals, 'terminals (tables)')
  lo, hi = grammar_lib.length_bounds(paper)['s']
  assert lo <= tabled.lengths.min() and tabled.lengths.max() <= hi


def test_recursive_grammar_frequencies_match_expectations():
  g = grammar_lib.parse_grammar(RECURSIVE_GRAMMAR)
  terminals, rules = _expectations(g)
  rng = np.random.default_rng(4)
  counted = sampler.sample_derivations(g, rng, 20_000, return_rule_counts=True)
  _assert_means(counted.rule_counts, rules, 'rule uses')
  _assert_means(_per_derivation_counts(counted, 3), terminals, 'terminals')
  recursive = [sampler.sample_recursive(g, rng, return_rule_counts=True) for _ in range(4000)]
  _assert_means([[c.get(r, 0) for r in sampler.rule_order(g)] for _, c in recursive], rules,
                'rule uses (recursive sampler)')


def test_vectorized_and_recursive_samplers_agree(paper):
  rng = np.random.default_rng(5)
  vec = sampler.sample_derivations(paper, rng, 4000).lengths
  rec = np.array([len(sampler.sample_recursive(paper, rng)) for _ in range(1000)])
  se = np.sqrt(vec.var(ddof=1) / vec.size + rec.var(ddof=1) / rec.size)
  assert abs(vec.mean() - rec.mean()) < Z_BOUND * se
  # Windows: token and bigram frequencies per window (checks concatenation too).
  def stats(w):
    pairs = w[:, :-1] * 3 + w[:, 1:]
    return np.concatenate([(w[..., None] == np.arange(3)).mean(1),
                           (pairs[..., None] == np.arange(9)).mean(1)], axis=1)
  vec_w = stats(sampler.sample_windows(paper, rng, 2000))
  rec_w = stats(sampler.sample_windows_recursive(paper, rng, 300))
  se = np.sqrt(vec_w.var(0, ddof=1) / len(vec_w) + rec_w.var(0, ddof=1) / len(rec_w))
  assert np.all(np.abs(vec_w.mean(0) - rec_w.mean(0)) < Z_BOUND * se)


def test_windows_are_slices_of_concatenated_pieces():
  rng = np.random.default_rng(6)
  pieces, total = [], np.zeros(7, np.int64)
  for rows in (np.arange(7), np.array([1, 4, 5]), np.array([4])):
    lengths = rng.integers(1, 6, rows.size)
    pieces.append((sampler.Derivations(rng.integers(0, 3, lengths.sum()).astype(np.int8),
                                       lengths), rows))
    total[rows] += lengths
  length = 3
  total_ok = total >= length
  offset = rng.integers(0, np.maximum(total - length, 0) + 1)
  got = sampler._cut_windows(pieces, total, offset, length)
  for i in np.flatnonzero(total_ok):
    text = [t for d, rows in pieces if i in rows
            for t in d.strings()[list(rows).index(i)].tolist()]
    assert got[i].tolist() == text[offset[i]:offset[i] + length]


def test_windows_shape_and_policies(paper):
  rng = np.random.default_rng(7)
  w = sampler.sample_windows(paper, rng, 50)
  assert w.shape == (50, 250) and w.dtype == np.int32 and set(np.unique(w)) <= {0, 1, 2}
  assert sampler.sample_windows(paper, rng, 5, 350, policy='reject').shape == (5, 350)
  assert sampler.sample_windows(paper, rng, 3, 1000).shape == (3, 1000)  # Concat.


# (c) Labels recomputed with plain loops from the decoded tokens.


def _loop_label(family, operand, k, text):
  if family in ('C', 'T_J1', 'T_J2'):
    return sum(1 for t in text[-k:] if t == operand)
  if family == 'CC':
    tail = text[-k:]
    return sum(1 for i in range(len(tail) - 1) if tail[i] == operand == tail[i + 1])
  if family == 'T':
    return text[-k]
  seen = 0
  for index in range(1, len(text) + 1):  # The last text token has index 1.
    hit = text[-index] == operand
    if family == 'IC':
      hit = hit and index < len(text) and text[-index - 1] == operand
    seen += hit
    if seen == k:
      return index
  return 0


def _parse_row(names):
  assert names[0] == 'SOS' and names[4] == 'SOT'
  assert names[-4:] == ['EOT', 'ART', names[-2], 'EOS']
  return names[1], names[2], int(names[3]), names[5:-4], names[-2]


def test_every_family_label_recomputed_from_tokens():
  rng = np.random.default_rng(8)
  batch = tasks.sample_pretraining_batch(rng, 700, 'high', tasks.ALL_FAMILIES)
  assert batch.tokens.shape == (700, 259) and batch.answer_index == 257
  seen = set()
  for row in batch.tokens:
    family, operand, k, text, answer = _parse_row(tasks.VOCAB.decode(row))
    assert k == tasks.DEFAULT_O_PRIME[family]
    assert (operand == 'NULL') == (family == 'T')
    if family in tasks.JAILBREAK_FAMILIES:
      assert operand == 'a'
    assert answer == str(_loop_label(family, operand, k, text))
    seen.add(family)
  assert seen == set(tasks.ALL_FAMILIES)


def test_make_sequences_with_custom_o_prime(paper):
  windows = sampler.sample_windows(paper, np.random.default_rng(9), 60)
  for family, operand, k in [('C', 'c', 7), ('CC', 'b', 25), ('I', 'a', 3), ('IC', 'c', 2),
                             ('T', 'NULL', 1), ('T', None, 250)]:
    batch = tasks.make_sequences(windows, family, operand, k)
    for row in batch.tokens:
      fam, op, kk, text, answer = _parse_row(tasks.VOCAB.decode(row))
      assert (fam, kk) == (family, k)
      assert answer == str(_loop_label(fam, op, k, text))


def test_masks_and_vocab():
  vocab = tasks.VOCAB
  assert vocab.size == 268 and vocab.decode(vocab.encode(['SOS', 'a', 'NULL', '250'])) == [
      'SOS', 'a', 'NULL', '250']
  batch = tasks.make_sequences(np.zeros((2, 250), np.int64), 'C', 'a')
  assert batch.answer_mask.sum() == 2 and batch.answer_mask[:, 257].all()
  assert batch.loss_mask[:, 1:].all() and not batch.loss_mask[:, 0].any()
  assert batch.answers.tolist() == [vocab.id('40')] * 2


# (d) C_Tr exact; fine-tuning labels; App. E options.


def _loop_obeys(task, text, q=1):
  if task == 'counter':
    return _loop_label('C', 'b', 40, text) - _loop_label('C', 'a', 40, text) == q
  r_b, r_a = _loop_label('I', 'b', 6, text), _loop_label('I', 'a', 6, text)
  return r_b > 0 and r_a > 0 and r_b - r_a == q


@pytest.mark.parametrize('task', ['counter', 'indexer'])
def test_c_tr_is_exact(task):
  rng = np.random.default_rng(10)
  spec = finetune_data.FinetuneSpec(task=task)
  for c_tr in (0.0, 0.2, 0.5, 0.8, 0.9, 1.0):
    batch = finetune_data.sample_finetune_batch(rng, 101, c_tr, spec)
    obeys = []
    for row in batch.tokens:
      family, operand, k, text, answer = _parse_row(tasks.VOCAB.decode(row))
      assert (family, operand, k) == (spec.family, 'b', spec.k)
      assert answer == str(_loop_label(family, 'b', k, text))
      obeys.append(_loop_obeys(task, text))
    assert sum(obeys) == round(c_tr * 101) == batch.correlated.sum()
    assert np.array_equal(obeys, batch.correlated)


def test_test_sets_and_app_e_options():
  rng = np.random.default_rng(11)
  spec = finetune_data.FinetuneSpec()
  sets = finetune_data.make_test_sets(rng, 50, spec, pt_family='T_J1')
  for c_te, pair in sets.items():
    assert pair['ft'].correlated.mean() == c_te
    assert np.array_equal(pair['ft'].windows_tokens, pair['pt'].windows_tokens)
    for row in pair['pt'].tokens:
      family, operand, k, text, answer = _parse_row(tasks.VOCAB.decode(row))
      assert (family, operand) == ('T_J1', 'a') and answer == str(_loop_label('C', 'a', k, text))
  # E.4 randFT: asked about `a`, answers the count of `b`.
  rand = finetune_data.sample_finetune_batch(rng, 40, 0.5, spec, rand_ft=True)
  for row in rand.tokens:
    family, operand, k, text, answer = _parse_row(tasks.VOCAB.decode(row))
    assert operand == 'a' and answer == str(_loop_label('C', 'b', k, text))
  # E.1: a binomial number of pretraining rows; C_Tr exact among the fine-tuning rows.
  mixed = finetune_data.sample_finetune_batch(rng, 100, 0.6, spec, pt_fraction=0.25,
                                              operand_prior='high')
  n_pt = mixed.from_pretraining.sum()
  assert abs(n_pt - 25) < Z_BOUND * np.sqrt(100 * 0.25 * 0.75)
  assert mixed.correlated.sum() == round(0.6 * (100 - n_pt))
  # E.2: the jailbreak tokens only ever carry `a` in pretraining.
  pre = tasks.sample_pretraining_batch(rng, 300, 'high', tasks.ALL_FAMILIES)
  jail = np.isin(pre.family, [tasks.ALL_FAMILIES.index(f) for f in tasks.JAILBREAK_FAMILIES])
  assert jail.any() and (pre.tokens[jail, 2] == tasks.VOCAB.id('a')).all()


# (e) Label distribution barely moves with C_Tr (paper Fig. 16).


def _tv(x, y):
  size = max(x.max(), y.max()) + 1
  return 0.5 * np.abs(np.bincount(x, minlength=size) / x.size
                      - np.bincount(y, minlength=size) / y.size).sum()


@pytest.mark.parametrize('task,bound', [('counter', 0.05), ('indexer', 0.08)])
def test_label_distribution_similar_at_c_tr_0_and_1(task, bound):
  """TV(labels at C_Tr=0, at C_Tr=1), 4000 rows each; bounds fixed beforehand.

  Measured with these seeds: counter 0.003, indexer 0.022 (expected sampling
  noise ~0.02 / ~0.035). The paper-literal anchor='pt' moves the counter's
  labels by +1: TV 0.35 here, so the test can tell.
  """
  spec = finetune_data.FinetuneSpec(task=task)
  rng = np.random.default_rng(12)
  at0 = finetune_data.sample_finetune_batch(rng, 4000, 0.0, spec).values
  at1 = finetune_data.sample_finetune_batch(rng, 4000, 1.0, spec).values
  assert _tv(at0, at1) < bound
  if task == 'counter':
    literal = dataclasses.replace(spec, anchor='pt')
    at1_literal = finetune_data.sample_finetune_batch(rng, 4000, 1.0, literal).values
    assert _tv(at0, at1_literal) > 0.25


# (f) Bad input fails before compute, naming the field.

_G = '%terminals a b\n'
_BAD_GRAMMARS = [
    (_G + 's -> a zz', "undefined symbol 'zz'"),
    (_G + 's -> a\nt -> b', r"\['t'\] are unreachable"),
    (_G + 's -> a [0.5] | b [0.4]', "nonterminal 's': rule probabilities sum to"),
    (_G + 's -> a [1.5] | b [-0.5]', r'rule s -> b.*probability -0.5'),
    (_G + 's -> a | ', 'empty rule'),
    (_G, 'grammar.start: no start symbol'),
    (_G + '%start t\ns -> a', "grammar.start='t'"),
    ('s -> a b', 'grammar.terminals: missing %terminals'),
    (_G + 's -> a [0.5] | b', "nonterminal 's': give a"),
    (_G + 's -> s', r"\['s'\] can never derive"),
]


@pytest.mark.parametrize('text,message', _BAD_GRAMMARS)
def test_bad_grammar_rejected(text, message):
  with pytest.raises(ValueError, match=message):
    grammar_lib.load_grammar(text)


_SPEC = finetune_data.FinetuneSpec
_BAD_CALLS = [
    (lambda r: tasks.sample_pretraining_batch(r, 4, (0.5, 0.4, 0.2)), 'operand_prior=.*sums to'),
    (lambda r: tasks.sample_pretraining_batch(r, 4, (1.2, -0.2, 0)), 'operand_prior=.*>= 0'),
    (lambda r: tasks.sample_pretraining_batch(r, 4, 'mid'), "operand_prior='mid'"),
    (lambda r: tasks.sample_pretraining_batch(r, 4, 'low', ('C', 'X')), "families='X'"),
    (lambda r: tasks.sample_pretraining_batch(r, 4, 'low', o_primes={'C': 300}),
     r"o_primes\['C'\]=300.*larger than the text window"),
    (lambda r: tasks.sample_pretraining_batch(r, 4, window_length=300), 'window_length=300'),
    (lambda r: tasks.make_sequences(np.zeros((2, 10), int), 'C', 'd'), "operand='d'"),
    (lambda r: tasks.make_sequences(np.zeros((2, 10), int), 'T', 'a'), "operand='a'"),
    (lambda r: tasks.make_sequences(np.zeros((2, 10), int), 'I', 'a', 11), 'o_prime=11'),
    (lambda r: finetune_data.sample_finetune_batch(r, 4, 1.5), 'c_tr=1.5'),
    (lambda r: finetune_data.sample_finetune_batch(r, 4, -0.1), 'c_tr=-0.1'),
    (lambda r: finetune_data.sample_finetune_batch(r, 4, 0.5, pt_fraction=2), 'pt_fraction=2'),
    (lambda r: finetune_data.sample_finetune_batch(r, 4, 0.5, _SPEC(task='max')), "task='max'"),
    (lambda r: finetune_data.sample_finetune_batch(r, 4, 0.5, _SPEC(operand_ft='d')),
     "operand_ft='d'"),
    (lambda r: finetune_data.sample_finetune_batch(r, 4, 0.5, _SPEC(q=0)), 'q=0'),
    (lambda r: finetune_data.make_test_sets(r, 4, pt_family='I'), "pt_family='I'"),
    (lambda r: sampler.sample_windows(grammar_lib.paper_grammar(), r, 2, 500, policy='reject'),
     'length=500 is longer than any string'),
    (lambda r: sampler.sample_windows(grammar_lib.paper_grammar(), r, 0), 'n=0'),
    (lambda r: sampler.sample_derivations(
        grammar_lib.parse_grammar('%terminals a\ns -> s s [0.6] | a [0.4]'), r, 4, max_depth=30),
     'max_depth=30|max_length='),
    (lambda r: sampler.sample_recursive(
        grammar_lib.parse_grammar('%terminals a\ns -> s a [0.99] | a [0.01]'), r, max_depth=20),
     'max_depth=20'),
]


@pytest.mark.parametrize('call,message', _BAD_CALLS)
def test_bad_input_rejected(call, message):
  with pytest.raises(ValueError, match=message):
    call(np.random.default_rng(0))


def test_grammar_from_file_and_python(tmp_path):
  path = tmp_path / 'toy.pcfg'
  path.write_text(RECURSIVE_GRAMMAR)
  from_file = grammar_lib.load_grammar(str(path))
  assert from_file == grammar_lib.load_grammar(RECURSIVE_GRAMMAR)
  from_python = grammar_lib.Grammar.from_rules(
      {'s': [(('s', 'x'), 0.3), (('y', 'w', 's'), 0.2), (('z',), 0.5)],
       'w': [(('x', 'y'), 0.25), (('z',), 0.75)]}, terminals=('x', 'y', 'z'))
  assert from_python == from_file
  with pytest.raises(ValueError, match='grammar path'):
    grammar_lib.load_grammar(str(tmp_path / 'missing.pcfg'))


# (g) Same seed, same data.


def test_same_seed_same_data(paper):
  def draw(seed):
    rng = np.random.default_rng(seed)
    return (sampler.sample_windows(paper, rng, 30),
            tasks.sample_pretraining_batch(rng, 30, 'high').tokens,
            finetune_data.sample_finetune_batch(rng, 30, 0.5, pt_fraction=0.2).tokens,
            finetune_data.sample_finetune_batch(
                rng, 30, 0.5, finetune_data.FinetuneSpec(task='indexer')).tokens)
  first, again, other = draw(13), draw(13), draw(14)
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert not any(np.array_equal(a, b) for a, b in zip(first, other))


def test_mixed_pretraining_rows_use_the_configured_o_primes():
  """App. E.1 rows come from the pretraining mixture with the run's O' (not the paper's 40)."""
  spec = finetune_data.FinetuneSpec(o_prime=8, window_length=20)
  o_primes = {'C': 8, 'CC': 8, 'I': 2, 'IC': 2, 'T': 8}
  batch = finetune_data.sample_finetune_batch(np.random.default_rng(0), 40, 0.5, spec,
                                              pt_fraction=0.5, pt_o_primes=o_primes)
  rows = batch.from_pretraining
  assert 0 < rows.sum() < 40
  families = [tasks.ALL_FAMILIES[f] for f in batch.family[rows]]
  o_prime_tokens = batch.tokens[rows, 3] - tasks.VOCAB.first_number
  assert all(o == o_primes[f] for f, o in zip(families, o_prime_tokens))


@pytest.mark.parametrize('fraction', [0.001, 0.1, 0.5])
def test_mixing_fraction_over_the_run_is_the_configured_one(fraction):
  """Issue 11 item 1: rounding per batch gave 0 rows at 0.1% (batch 16 or 96) and 12.5% at 10%."""
  for n in (16, 96):
    rows = sum(finetune_data.pt_row_count(np.random.default_rng([3, step]), n, fraction)
               for step in range(2000))
    expected, sd = 2000 * n * fraction, np.sqrt(2000 * n * fraction * (1 - fraction))
    assert abs(rows - expected) < Z_BOUND * sd, (n, rows, expected)
    old = 2000 * int(round(fraction * n))  # The old allocation, which this bound rejects.
    assert fraction == 0.5 or abs(old - expected) >= Z_BOUND * sd, (n, old, expected)


def test_mixed_batches_carry_the_drawn_pretraining_rows():
  """The batches themselves: 0.1% of 96-row batches over a run has pretraining rows (was 0)."""
  spec = finetune_data.FinetuneSpec(o_prime=8, window_length=20)
  o_primes = {'C': 8, 'CC': 8, 'I': 2, 'IC': 2, 'T': 8}
  counts = {}
  for fraction, n, steps in ((0.001, 96, 150), (0.1, 16, 300)):
    got = 0
    for step in range(steps):
      rng = np.random.default_rng([5, step])
      b = finetune_data.sample_finetune_batch(rng, n, 0.5, spec, pt_fraction=fraction,
                                              pt_o_primes=o_primes)
      got += int(b.from_pretraining.sum())
      assert b.correlated.sum() == round(0.5 * (n - b.from_pretraining.sum()))
    counts[fraction] = (got, steps * n)
  got, total = counts[0.001]
  assert got > 0  # round(0.001 * 96) = 0 gave none at all.
  got, total = counts[0.1]
  assert abs(got - 0.1 * total) < Z_BOUND * np.sqrt(total * 0.09)  # 12.5% before: 600 of 4800.


def test_natural_c_te0_set_keeps_chance_agreement():
  """Issue 11 item 5: the C_Te = 0 set is anti-correlated; the natural set keeps chance rows."""
  spec = finetune_data.FinetuneSpec(o_prime=8, window_length=20)
  anti = finetune_data.make_test_sets(np.random.default_rng(1), 400, spec)[0.0]
  natural = finetune_data.natural_test_set(np.random.default_rng(1), 400, spec)
  obeys = lambda b: finetune_data.obeys_correlation(spec, b.windows_tokens
                                                    - tasks.VOCAB.first_terminal)
  assert not obeys(anti['ft']).any()
  chance = obeys(natural['ft']).mean()
  assert 0.05 < chance < 0.5 and np.array_equal(natural['ft'].correlated, obeys(natural['ft']))
  # A model answering count(a) + 1 to "count b": exactly 0 on the anti set, chance on the natural.
  plus_one = lambda s: (s['pt'].values + 1 == s['ft'].values).mean()
  assert plus_one(anti) == 0 and plus_one(natural) == pytest.approx(chance)


# (h) On the device (issue 12): the host sampler's law, drawn by jax.random.

# Bounded, with strings shorter than the window (so rows concatenate up to 6 pieces) and
# a nonterminal with several levels below it.
_SHORT_GRAMMAR = """
%terminals x y z
s -> x [0.5] | u z [0.3] | u u [0.2]
u -> y [0.6] | z u2 [0.4]
u2 -> x y [0.5] | y [0.5]
"""


def _window_stats(w):
  """Per window: the frequency of each terminal and of each bigram (of 3 terminals)."""
  w = np.asarray(w)
  pairs = w[:, :-1] * 3 + w[:, 1:]
  return np.concatenate([(w[..., None] == np.arange(3)).mean(1),
                         (pairs[..., None] == np.arange(9)).mean(1)], axis=1)


def _assert_same_law(a, b, what):
  """Two samples' column means within Z_BOUND standard errors of each other."""
  se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
  z = np.abs(a.mean(0) - b.mean(0)) / np.maximum(se, 1e-12)
  assert np.all(z < Z_BOUND), f'{what}: {a.mean(0)} vs {b.mean(0)}, z {z}'


@pytest.mark.parametrize('table_size', [0, sampler.DEFAULT_TABLE_SIZE])
def test_device_derivations_parse_and_match_expectations(paper, table_size):
  dg = device_sampler.compile_grammar(paper, table_size)
  # Six tiers of nonterminals (s; p q r; m n o; j k l; g h i; d e f); j k l tabulated: four.
  assert (dg.levels, dg.longest, dg.shortest) == ((4, 432, 138) if table_size else (6, 432, 138))
  strings, lengths = jax.jit(lambda k: device_sampler.derivations(dg, k, 20_000))(
      jax.random.key(11))
  strings, lengths = np.asarray(strings), np.asarray(lengths)
  filled = np.arange(strings.shape[1]) < lengths[:, None]
  assert np.array_equal(strings >= 0, filled)  # Each string, then only padding.
  parser = nltk.ChartParser(nltk.CFG.fromstring(NLTK_PAPER_GRAMMAR))
  for row, n in zip(strings[:5], lengths[:5]):
    assert next(parser.parse([paper.terminals[i] for i in row[:n]]), None) is not None
  counts = np.stack([(strings == t).sum(1) for t in range(3)], axis=1)
  _assert_means(counts, _expectations(paper)[0], f'device terminals (table_size {table_size})')


def test_device_windows_have_the_host_law(paper):
  short = grammar_lib.parse_grammar(_SHORT_GRAMMAR)
  for g, n, length in ((paper, 3000, 250), (short, 20_000, 6)):
    dg = device_sampler.compile_grammar(g)
    got = jax.jit(lambda k: device_sampler.windows(dg, k, n, length))(jax.random.key(12))
    assert got.shape == (n, length) and got.dtype == jnp.int32
    host = sampler.sample_windows(g, np.random.default_rng(12), n, length)
    _assert_same_law(_window_stats(got), _window_stats(host), f'windows of {length}')
    # The first token reads the offset's law and the concatenation.
    first = lambda w: np.asarray(w)[:, :1] == np.arange(3)
    _assert_same_law(first(got), first(host), f'first tokens of {length}')
  # The comparison can fail: the same statistics tell the prior-'b'-heavy grammar apart.
  skewed = grammar_lib.parse_grammar(_SHORT_GRAMMAR.replace('u -> y [0.6] | z u2 [0.4]',
                                                            'u -> y [0.4] | z u2 [0.6]'))
  host = sampler.sample_windows(skewed, np.random.default_rng(13), 20_000, 6)
  with pytest.raises(AssertionError, match='windows of 6'):
    _assert_same_law(_window_stats(got), _window_stats(host), 'windows of 6')


def test_device_pretraining_batch_labels_recomputed_from_tokens(paper):
  o_primes = {f: tasks.DEFAULT_O_PRIME[f] for f in tasks.ALL_FAMILIES}
  batch_fn = device_sampler.pretraining_batch_fn(
      jax.random.key(14), 700, 'high', tasks.ALL_FAMILIES, o_primes=o_primes, grammar=paper,
      window_length=250)
  b = batch_fn(3)
  host = pcfg_model.lm_batch(tasks.sample_pretraining_batch(
      np.random.default_rng(0), 2, 'high', tasks.ALL_FAMILIES), answer_only=False)
  assert {k: (v.shape[1:], v.dtype) for k, v in b.items()} == {
      k: (v.shape[1:], v.dtype) for k, v in host.items()}
  assert np.all(np.asarray(b['weights']) == 1)  # Every token but SOS is a target.
  tokens = np.concatenate([np.asarray(b['inputs']), np.asarray(b['targets'])[:, -1:]], axis=1)
  np.testing.assert_array_equal(tokens[:, 1:], np.asarray(b['targets']))
  seen, operands = set(), []
  for row in tokens:
    family, operand, k, text, answer = _parse_row(tasks.VOCAB.decode(row))
    assert k == tasks.DEFAULT_O_PRIME[family]
    assert (operand == 'NULL') == (family == 'T')
    if family in tasks.JAILBREAK_FAMILIES:
      assert operand == 'a'
    elif family != 'T':
      operands.append(tasks.VOCAB.terminals.index(operand))
    assert answer == str(_loop_label(family, operand, k, text))
    seen.add(family)
  assert seen == set(tasks.ALL_FAMILIES)
  _assert_means(np.asarray(operands)[:, None] == np.arange(3), np.array(tasks.PRIORS['high']),
                'operands under the high prior')
  # A pure function of (key, step): the same step again is the same batch, the next is not.
  np.testing.assert_array_equal(np.asarray(batch_fn(3)['inputs']), tokens[:, :-1])
  assert not np.array_equal(np.asarray(batch_fn(4)['inputs']), tokens[:, :-1])


def test_device_sampler_needs_a_bounded_grammar():
  with pytest.raises(ValueError, match='recursive.*data.on_device=False'):
    device_sampler.compile_grammar(grammar_lib.parse_grammar(RECURSIVE_GRAMMAR))
