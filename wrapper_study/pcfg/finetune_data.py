"""Fine-tuning data with a controlled spurious correlation (paper Sec. 5, App. C.2, E).

One (task, operand) pair: the Counter asks family C with O_FT (default b), the
Indexer family I with O_FT. The spurious correlation ties O_FT's answer to
O_PT's (default a): r(x, O_FT) - r(x, O_PT) = q.
- Counter: count(b) = count(a) + q in the counted window (the last O' = 40
  tokens); q = 1 as in the paper.
- Indexer: index(O'-th b) = index(O'-th a) + q (indices as in `tasks`,
  O' = 6). The paper leaves q open; we use q = 1 (the 6th b sits just before
  the 6th a), mirroring the Counter's +1.

Exactly round(C_Tr * n) rows obey the correlation, at random row positions;
the rest do not. The paper only says it "artificially adds the target tokens
O_FT". In the last O' = 40 tokens the counts barely vary (std ~1.1), so moving
O_FT's answer by q would shift the O_FT label distribution visibly (TV ~0.4
between C_Tr = 0 and 1 at q = 1), which Fig. 16 rules out. Hence (default
`anchor='ft'`) every row keeps the natural distribution of O_FT's answer (the
fine-tuning label), and correlated rows move O_PT's tokens instead:
- Counter: O_PT tokens are written over random filler tokens (neither a nor b)
  of the last O' tokens, or surplus ones become a random filler terminal,
  until count(a) = count(b) - q.
- Indexer: O_PT is written at index r_b - q, and the O_PT tokens among the
  non-b tokens at smaller indices are topped up / thinned to exactly O' - 1.
- Windows where this cannot work are replaced by fresh windows with the same
  O_FT answer (after 3 tries, by any fresh window, e.g. count(b) = 0, q = 1).
- Uncorrelated rows that obey by chance (~19% counter, ~15% indexer) are
  replaced by fresh non-obeying windows with the same O_FT answer (matched from
  pools of fresh windows; after 20 pools, by any non-obeying window), so no
  uncorrelated text is edited.
`anchor='pt'` swaps the roles (the paper's literal wording: O_FT tokens are
added; O_PT's answer keeps its distribution). Labels are always recomputed
from the final tokens.

App. E variants:
- E.1 `pt_fraction`: each row of a batch comes from the pretraining mixture
  (`tasks.sample_pretraining_batch`, `operand_prior`) with that probability
  (`pt_row_count`: a binomial draw from the batch's rng), so the fraction over
  the run is the configured one. Rounding per batch (issue 11) gave 0.1% of 16
  rows = 0 rows, and 10% = 2 of 16 = 12.5%.
- E.2 jailbreak: pretrain with families tasks.FAMILIES + tasks.JAILBREAK_FAMILIES
  (T_J1/T_J2 only ever see `a`); evaluate O_PT with `pt_family='T_J1'`.
- E.4 `rand_ft`: the prompt asks about O_PT but the target is O_FT's answer.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wrapper_study.pcfg import grammar as grammar_lib
from wrapper_study.pcfg import sampler
from wrapper_study.pcfg import tasks

TASK_FAMILY = {'counter': 'C', 'indexer': 'I'}
DEFAULT_Q = 1
TEST_C_TE = (0.0, 1.0)
_MAX_REDRAWS = 10_000
_SAME_ANSWER_TRIES = 3  # Rewrite attempts before an infeasible row may change answer.
_SAME_ANSWER_POOLS = 20  # Pools searched for a window with a given answer.


@dataclasses.dataclass(frozen=True)
class FinetuneSpec:
  """The fine-tuning task: which family, the two operands, O' and the offset q."""
  task: str = 'counter'
  operand_pt: str = 'a'
  operand_ft: str = 'b'
  o_prime: int | None = None  # None: the family default (40 counter, 6 indexer).
  q: int = DEFAULT_Q
  window_length: int = sampler.WINDOW_LENGTH
  anchor: str = 'ft'  # Whose answer correlated rows keep: 'ft' or 'pt' (see module doc).

  @property
  def family(self) -> str:
    return TASK_FAMILY[self.task]

  @property
  def k(self) -> int:
    return tasks.DEFAULT_O_PRIME[self.family] if self.o_prime is None else self.o_prime

  def validate(self, vocab: tasks.Vocab = tasks.VOCAB) -> FinetuneSpec:
    if self.task not in TASK_FAMILY:
      raise ValueError(f'task={self.task!r}: valid are {tuple(TASK_FAMILY)}.')
    if self.anchor not in ('ft', 'pt'):
      raise ValueError(f"anchor={self.anchor!r}: valid are 'ft', 'pt'.")
    for field in ('operand_pt', 'operand_ft'):
      if getattr(self, field) not in vocab.terminals:
        raise ValueError(f'{field}={getattr(self, field)!r}: unknown operand; valid are '
                         f'{vocab.terminals}.')
    if self.operand_pt == self.operand_ft:
      raise ValueError(f'operand_ft equals operand_pt ({self.operand_pt!r}): fine-tuning must '
                       'change the operand.')
    length = tasks.check_window_length(self.window_length, vocab)
    tasks.check_o_prime(self.family, self.k, length, vocab)
    if not isinstance(self.q, (int, np.integer)) or self.q == 0:
      raise ValueError(f'q={self.q!r} must be a non-zero integer: with q = 0 the two answers '
                       'coincide (counter) or the two occurrences share a position (indexer).')
    limit = self.k if self.task == 'counter' else length - 1
    if abs(self.q) > limit:
      raise ValueError(f'q={self.q} cannot hold inside the window (|q| <= {limit}).')
    if self.task == 'counter' and len(vocab.terminals) < 3:
      raise ValueError('vocab.terminals needs a third (filler) terminal to move b tokens.')
    return self


def answers(spec: FinetuneSpec, windows: np.ndarray, operand: str,
            vocab: tasks.Vocab = tasks.VOCAB) -> np.ndarray:
  """r(x, operand) of the spec's family on [n, L] terminal-id windows."""
  return tasks.compute_values(windows, spec.family, vocab.terminals.index(operand), spec.k)


def obeys_correlation(spec: FinetuneSpec, windows: np.ndarray,
                      vocab: tasks.Vocab = tasks.VOCAB) -> np.ndarray:
  r_ft = answers(spec, windows, spec.operand_ft, vocab)
  r_pt = answers(spec, windows, spec.operand_pt, vocab)
  valid = np.ones(len(r_ft), bool)
  if spec.task == 'indexer':  # "No O'-th occurrence" (label 0) is never an index.
    valid = (r_ft != tasks.NO_OCCURRENCE) & (r_pt != tasks.NO_OCCURRENCE)
  return valid & (r_ft - r_pt == spec.q)


def sample_windows(rng: np.random.Generator, n: int, c_tr: float, spec: FinetuneSpec,
                   grammar=None, vocab: tasks.Vocab = tasks.VOCAB):
  """([n, L] windows, [n] correlated flags): exactly round(c_tr * n) correlated."""
  spec.validate(vocab)
  _check_fraction('c_tr', c_tr)
  sampler._check_count('n', n)
  g = grammar_lib.load_grammar(grammar)
  tasks._check_grammar_window(g, spec.window_length, vocab)
  n_corr = int(round(c_tr * n))
  length = spec.window_length
  windows = sampler.sample_windows(g, rng, n, length)
  ids = [vocab.terminals.index(o) for o in (spec.operand_pt, spec.operand_ft)]
  fillers = np.array([i for i in range(len(vocab.terminals)) if i not in ids])
  # Keep the anchor's answer; move the other operand's tokens to answer + offset.
  keep, move, offset = (ids[1], ids[0], -spec.q) if spec.anchor == 'ft' else (*ids, spec.q)
  obeys = lambda w: obeys_correlation(spec, w, vocab)

  def redraw(rows, same_answer, reject=None):
    """Fresh windows for `rows`; with the same anchor answer while that is cheap."""
    if same_answer:
      rows = _redraw_same_answer(rng, g, spec, windows, rows, keep, reject)
    for _ in range(_MAX_REDRAWS):
      if rows.size == 0:
        return
      windows[rows] = sampler.sample_windows(g, rng, rows.size, length)
      rows = rows[reject(windows[rows])] if reject is not None else rows[:0]
    raise ValueError(f'spec={spec}: no acceptable window after {_MAX_REDRAWS} redraws.')

  impose = _impose_counter if spec.task == 'counter' else _impose_indexer
  todo = np.arange(n_corr)
  for attempt in range(_MAX_REDRAWS):
    if todo.size == 0:
      break
    fixed, ok = impose(spec, rng, windows[todo], keep, move, offset, fillers)
    windows[todo[ok]] = fixed[ok]
    todo = todo[~ok]
    # Some answers can never be made to obey (e.g. count(b) = 0 with q = 1).
    redraw(todo, same_answer=attempt < _SAME_ANSWER_TRIES)
  else:
    raise ValueError(f'spec={spec}: could not impose the correlation after {_MAX_REDRAWS} '
                     'redraws.')
  uncorrelated = np.arange(n_corr, n)
  redraw(uncorrelated[obeys(windows[uncorrelated])], same_answer=True, reject=obeys)
  correlated = np.arange(n) < n_corr
  perm = rng.permutation(n)
  return windows[perm], correlated[perm]


def sample_finetune_batch(rng: np.random.Generator, n: int, c_tr: float,
                          spec: FinetuneSpec = FinetuneSpec(), *, pt_fraction: float = 0.0,
                          operand_prior='low', pt_families=tasks.FAMILIES,
                          pt_o_primes=None, rand_ft: bool = False, grammar=None,
                          vocab: tasks.Vocab = tasks.VOCAB) -> tasks.Batch:
  """A fine-tuning batch: prompt (family, O_FT), answer r(x, O_FT).

  pt_fraction: Binomial(n, pt_fraction) rows from the pretraining mixture
    (App. E.1; `pt_row_count`), with `operand_prior`, `pt_families` and their
    O' values `pt_o_primes` (None: the family defaults); C_Tr holds exactly
    among the other rows.
  rand_ft: App. E.4: the prompt names O_PT but the answer is r(x, O_FT).
  """
  spec.validate(vocab)
  _check_fraction('c_tr', c_tr)
  _check_fraction('pt_fraction', pt_fraction)
  sampler._check_count('n', n)
  n_pt = pt_row_count(rng, n, pt_fraction)
  if n_pt:  # Validate the mixture's arguments before any sampling.
    tasks.resolve_prior(operand_prior, vocab.terminals)
    tasks._check_families(pt_families)
  parts = []
  if n - n_pt:
    windows, correlated = sample_windows(rng, n - n_pt, c_tr, spec, grammar, vocab)
    prompt = spec.operand_pt if rand_ft else spec.operand_ft
    parts.append(_prompt_batch(spec, windows, prompt, spec.operand_ft, vocab, correlated))
  if n_pt:
    parts.append(tasks.sample_pretraining_batch(
        rng, n_pt, operand_prior, pt_families, o_primes=pt_o_primes, grammar=grammar,
        window_length=spec.window_length, vocab=vocab, jailbreak_operand=spec.operand_pt))
  batch = tasks.concat_batches(parts)
  return batch.take(rng.permutation(n)) if n_pt else batch


def pt_row_count(rng: np.random.Generator, n: int, pt_fraction: float) -> int:
  """Pretraining rows of one batch of n: Binomial(n, pt_fraction), so the run's fraction is right.

  0 and 1 draw nothing from rng (plain fine-tuning sees the batches it always saw).
  """
  if pt_fraction <= 0.0 or pt_fraction >= 1.0:
    return n if pt_fraction >= 1.0 else 0
  return int(rng.binomial(n, pt_fraction))


def natural_test_set(rng: np.random.Generator, n: int, spec: FinetuneSpec = FinetuneSpec(), *,
                     pt_family: str | None = None, grammar=None,
                     vocab: tasks.Vocab = tasks.VOCAB) -> dict[str, tasks.Batch]:
  """A natural C_Te = 0 set: fresh windows, rows that obey the correlation by chance kept.

  `make_test_sets`' C_Te = 0 set replaces them (anti-correlated: a model answering
  count(a) + 1 scores exactly 0 there, ~18% by chance here); reports give both.
  """
  spec.validate(vocab)
  windows = sampler.sample_windows(grammar_lib.load_grammar(grammar), rng, n, spec.window_length)
  correlated = obeys_correlation(spec, windows, vocab)
  return {'ft': _prompt_batch(spec, windows, spec.operand_ft, spec.operand_ft, vocab, correlated),
          'pt': _prompt_batch(spec, windows, spec.operand_pt, spec.operand_pt, vocab, correlated,
                              family=pt_family)}


def make_test_sets(rng: np.random.Generator, n: int, spec: FinetuneSpec = FinetuneSpec(), *,
                   pt_family: str | None = None, grammar=None,
                   vocab: tasks.Vocab = tasks.VOCAB) -> dict[float, dict[str, tasks.Batch]]:
  """{C_Te: {'ft': ..., 'pt': ...}} for C_Te in (0, 1), on shared windows.

  'ft' asks r(x, O_FT) (Acc O_FT); 'pt' asks r(x, O_PT) (Acc O_PT) with the
  spec's family token, or `pt_family` (e.g. 'T_J1' for App. E.2).
  """
  spec.validate(vocab)
  if pt_family is not None:
    tasks.check_family(pt_family, 'pt_family')
    if tasks.FAMILY_RULE[pt_family] != tasks.FAMILY_RULE[spec.family]:
      raise ValueError(f'pt_family={pt_family!r} does not ask the {spec.task} task.')
  out = {}
  for c_te in TEST_C_TE:
    windows, correlated = sample_windows(rng, n, c_te, spec, grammar, vocab)
    out[c_te] = {
        'ft': _prompt_batch(spec, windows, spec.operand_ft, spec.operand_ft, vocab, correlated),
        'pt': _prompt_batch(spec, windows, spec.operand_pt, spec.operand_pt, vocab, correlated,
                            family=pt_family),
    }
  return out


def _prompt_batch(spec, windows, prompt_operand, answer_operand, vocab, correlated,
                  family=None) -> tasks.Batch:
  n = windows.shape[0]
  family = family or spec.family
  values = answers(spec, windows, answer_operand, vocab)
  return tasks.assemble(windows, np.full(n, tasks.ALL_FAMILIES.index(family)),
                        np.full(n, tasks.operand_id(family, prompt_operand, vocab)),
                        np.full(n, spec.k), values, vocab, correlated=correlated)


def _redraw_same_answer(rng, g, spec, windows, rows, operand, reject=None) -> np.ndarray:
  """Replaces windows[rows] by fresh windows with the same answer for `operand`.

  Windows come from pools of fresh samples (minus those `reject` flags) and are
  matched to rows by answer, so the answer's distribution is untouched. Returns
  the rows still unmatched after _SAME_ANSWER_POOLS pools (very rare answers).
  """
  need = tasks.compute_values(windows[rows], spec.family, operand, spec.k)
  for _ in range(_SAME_ANSWER_POOLS):
    if rows.size == 0:
      break
    pool = sampler.sample_windows(g, rng, max(4 * rows.size, 1024), spec.window_length)
    if reject is not None:
      pool = pool[~reject(pool)]
    have = tasks.compute_values(pool, spec.family, operand, spec.k)
    by_need, by_have = np.argsort(need, kind='stable'), np.argsort(have, kind='stable')
    need_sorted, have_sorted = need[by_need], have[by_have]
    rank = np.arange(need.size) - np.searchsorted(need_sorted, need_sorted, 'left')
    first = np.searchsorted(have_sorted, need_sorted, 'left')
    matched = rank < np.searchsorted(have_sorted, need_sorted, 'right') - first
    windows[rows[by_need[matched]]] = pool[by_have[first[matched] + rank[matched]]]
    rows, need = rows[by_need[~matched]], need_sorted[~matched]
  return rows


def _check_fraction(field: str, value) -> None:
  if not isinstance(value, (int, float, np.integer, np.floating)) or not 0.0 <= value <= 1.0:
    raise ValueError(f'{field}={value!r} must lie in [0, 1].')


def _random_pick(rng: np.random.Generator, eligible: np.ndarray, k: np.ndarray) -> np.ndarray:
  """Boolean [n, m]: k[i] positions chosen uniformly among eligible[i] (k <= count)."""
  keys = np.where(eligible, rng.random(eligible.shape), np.inf)
  rank = np.argsort(np.argsort(keys, axis=1), axis=1)
  return eligible & (rank < k[:, None])


def _rebalance(rng, region, tokens, ft, fillers, target):
  """Moves ft tokens inside `region` (bool [n, m]) so that each row holds `target`.

  Adds ft over filler tokens, or turns surplus ft into random fillers. Returns
  the new tokens and the rows where that was possible.
  """
  is_ft = region & (tokens == ft)
  is_filler = region & np.isin(tokens, fillers)
  have = is_ft.sum(1)
  ok = (target >= 0) & (target - have <= is_filler.sum(1))
  delta = np.where(ok, target - have, 0)
  out = tokens.copy()
  out[_random_pick(rng, is_filler, np.maximum(delta, 0))] = ft
  drop = _random_pick(rng, is_ft, np.maximum(-delta, 0))
  out[drop] = rng.choice(fillers, int(drop.sum()))
  return out, ok


def _impose_counter(spec, rng, windows, keep, move, offset, fillers):
  """Rows with count(move) = count(keep) + offset in the last O' tokens."""
  tail = windows[:, -spec.k:]
  region = np.ones(tail.shape, bool)
  new_tail, ok = _rebalance(rng, region, tail, move, fillers, (tail == keep).sum(1) + offset)
  out = windows.copy()
  out[:, -spec.k:] = new_tail
  return out, ok


def _impose_indexer(spec, rng, windows, keep, move, offset, fillers):
  """Rows with index(O'-th move) = index(O'-th keep) + offset."""
  rev = windows[:, ::-1].copy()  # rev[:, j] holds the token at index j + 1.
  n, length = rev.shape
  r_keep = tasks.compute_values(windows, 'I', keep, spec.k)
  target_index = r_keep + offset
  ok = (r_keep != tasks.NO_OCCURRENCE) & (target_index >= 1) & (target_index <= length)
  col = np.clip(target_index - 1, 0, length - 1)
  rows = np.arange(n)
  # Overwriting a kept token nearer EOT than its O'-th would move r(x, keep).
  ok &= ~((offset < 0) & (rev[rows, col] == keep))
  region = np.arange(length) < col[:, None]
  rev, fits = _rebalance(rng, region & ok[:, None], rev, move, fillers,
                         np.where(ok, spec.k - 1, 0))
  ok &= fits
  rev[rows[ok], col[ok]] = move
  return rev[:, ::-1], ok
