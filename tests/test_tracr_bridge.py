"""Tracr export -> Flax (tracr/model.py): parity with tracr, errors, cache, causal, own programs."""

from __future__ import annotations

import functools
import pathlib
import string
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from wrapper_study import model
from wrapper_study.tracr import compile as tracr_compile
from wrapper_study.tracr import export
from wrapper_study.tracr import model as tracr_model
from wrapper_study.tracr import programs as tracr_programs

COUNTER_VOCAB = tuple('abcdefghi')
MAXID_VOCAB = tuple(string.ascii_lowercase)
PAPER_CASES = (
    ('counter', {}, COUNTER_VOCAB, 10),
    ('max_identifier', {}, MAXID_VOCAB, 10),
)
ALL_CASES = PAPER_CASES + tuple(tracr_programs.LIB_CASES)
# Programs whose inputs must not repeat a token: ranks would tie.
DISTINCT_TOKENS = {'max_identifier', 'sort_unique'}
SHORTER_BY = 2  # The second input length tested, below max_seq_len.
N_SEQS = 3  # Sequences per length; tracr's apply runs one at a time.


@pytest.fixture(scope='session')
def cache_dir(tracr_cache):
  """conftest's session export cache, so each program compiles once."""
  return pathlib.Path(tracr_cache)


def _inputs(name, vocab, length, rng):
  replace = name not in DISTINCT_TOKENS
  return [list(rng.choice(np.array(vocab, dtype=object), length, replace=replace))
          for _ in range(N_SEQS)]


def _decisive(logits_BxTxO, margin=1e-3):
  """True where the top class beats the runner-up by more than float noise."""
  if logits_BxTxO.shape[-1] == 1:  # Numerical: no argmax to tie.
    return np.ones(logits_BxTxO.shape[:2], bool)
  top2_BxTx2 = np.sort(logits_BxTxO, axis=-1)[..., -2:]
  return top2_BxTx2[..., 1] - top2_BxTx2[..., 0] > margin


def _hook_names(n_layers):
  return [f'blocks.{l}.hook_resid_{k}' for l in range(n_layers) for k in ('mid', 'post')]


@pytest.mark.parametrize('name,kwargs,vocab,max_seq_len', ALL_CASES,
                         ids=[c[0] for c in ALL_CASES])
def test_parity_with_tracr(name, kwargs, vocab, max_seq_len, cache_dir):
  m = tracr_model.get_compiled(name, vocab, max_seq_len, kwargs, cache_dir=cache_dir)
  # The export fills exactly the tree the shared model would initialise.
  want = jax.eval_shape(lambda: model.init_params(m.config, jax.random.PRNGKey(0)))
  assert model.param_shapes(m.params) == model.param_shapes(want)

  rng = np.random.default_rng(0)
  names = _hook_names(m.config.n_layers)
  lengths = (max_seq_len, max_seq_len - SHORTER_BY)
  seqs_by_len = {n: _inputs(name, vocab, n, rng) for n in lengths}
  # One jitted call on a padded batch: PAD keys are masked, so each real
  # position sees exactly what tracr sees on the unpadded shorter sequence.
  seqs = [s for n in lengths for s in seqs_by_len[n]]
  tokens_BxT = m.encode(seqs)
  forward = jax.jit(functools.partial(model.run_with_cache, m.config, names=names))
  logits, cache = forward(m.params, tokens_BxT, pad_mask_BxT=m.pad_mask(tokens_BxT))
  decoded = m.decode(logits)
  for i, n in enumerate(lengths):
    rows, T = slice(i * N_SEQS, (i + 1) * N_SEQS), n + 1
    ref = tracr_compile.reference_forward(name, vocab, max_seq_len, kwargs, seqs_by_len[n])
    assert len(ref['residuals']) == len(names)
    for hook, want_BxTxD in zip(names, ref['residuals']):
      got_BxTxD = np.asarray(cache[hook])[rows, :T]
      diff = float(np.abs(got_BxTxD - want_BxTxD).max())
      np.testing.assert_allclose(got_BxTxD, want_BxTxD, atol=1e-5, rtol=0,
                                 err_msg=f'{name} len={n} {hook}: max|diff|={diff:.3g}')
    decisive_BxT = _decisive(np.asarray(logits)[rows, :T])
    if m.readout_position is not None:
      assert decisive_BxT[:, m.readout_position].all(), f'{name}: tied answer logits'
    for got, want, keep in zip(decoded[rows], ref['decoded'], decisive_BxT):
      got = got[:T]
      assert got[0] == want[0] == m.bos
      # Position 0 is excluded: tracr overwrites it with BOS. So are tied
      # positions (e.g. max_identifier's mean over 9 tokens at RASP index 0),
      # where float noise far below atol picks the argmax.
      pos = [t for t in range(1, T) if keep[t]]
      got, want = [got[t] for t in pos], [want[t] for t in pos]
      if m.numerical:
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f'{name} len={n}')
      else:
        assert got == want, f'{name} len={n} at positions {pos}: {got} != {want}'


def test_paper_programs_known_answers(cache_dir):
  counter = tracr_model.get_compiled('counter', COUNTER_VOCAB, 10, cache_dir=cache_dir)
  logits, _ = counter.apply(counter.encode([list('abacadaeaa')]))
  assert counter.readout_position == 2
  assert counter.decode(logits)[0][2] == 6
  assert counter.output_values[counter.answers(logits)[0]] == 6

  maxid = tracr_model.get_compiled('max_identifier', MAXID_VOCAB, 10, cache_dir=cache_dir)
  logits, _ = maxid.apply(maxid.encode([list('bdafhmxpqn')]))
  assert maxid.output_values[maxid.answers(logits)[0]] == 'h'
  assert maxid.decode(logits)[0][2] == 'h'


def test_unembedding_reads_output_directions(cache_dir):
  m = tracr_model.get_compiled('counter', COUNTER_VOCAB, 10, cache_dir=cache_dir)
  w_DxO = m.params['unembed']['kernel']
  assert m.output_label == 'counter_1'
  for o, value in enumerate(m.output_values):
    (row,) = np.flatnonzero(w_DxO[:, o])
    assert m.residual_labels[row] == f'counter_1:{value}'


@pytest.mark.parametrize('kwargs,match', [
    (dict(program='nope'), r"program='nope' is unknown; valid: \[.*'counter'"),
    (dict(vocab=[]), 'vocab is empty'),
    (dict(vocab=list('aab')), r"vocab has duplicate entries \['a'\]"),
    (dict(vocab=list('ab$')), r"vocab contains the compiler_bos token '\$'"),
    (dict(vocab=list('ab#')), "vocab contains the compiler_pad token '#'"),
    (dict(max_seq_len=0), 'max_seq_len=0 must be an integer >= 1'),
    (dict(max_seq_len=1), r"max_seq_len=1 is too small for 'counter'"),
    (dict(program_kwargs={'token': 'a'}), r"program_kwargs \['token'\] are unknown.*count_token"),
    (dict(program_kwargs={'count_token': 'z'}), r"program_kwargs\['count_token'\]='z' is not in"),
    (dict(program='max_identifier', vocab=list('abc')), 'vocab has 3 tokens but .*rank=5'),
    (dict(program='max_identifier', max_seq_len=4), r"max_seq_len=4 is too small.*need >= 5"),
])
def test_compile_rejects_bad_arguments(kwargs, match, tmp_path, monkeypatch):
  def no_compile(*args):
    raise AssertionError('validation must fail before compiling')
  monkeypatch.setattr(tracr_compile, '_compile_assembled', no_compile)
  args = dict(program='counter', vocab=COUNTER_VOCAB, max_seq_len=10, cache_dir=tmp_path)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    tracr_compile.compile_and_export(**args)
  assert not list(tmp_path.iterdir())


def test_encode_rejects_bad_tokens(cache_dir):
  m = tracr_model.get_compiled('counter', COUNTER_VOCAB, 10, cache_dir=cache_dir)
  with pytest.raises(ValueError, match=r"token 'z' at position 3 of sequence 1 .*vocabulary"):
    m.encode(['abc', 'abcz'])
  with pytest.raises(ValueError, match='sequence 0 has length 11 > max_seq_len=10'):
    m.encode(['a' * 11])
  tokens_BxT = m.encode(['ab', 'abcd'])
  assert tokens_BxT.dtype == np.int32 and tokens_BxT.shape == (2, 5)
  assert (tokens_BxT[:, 0] == m.bos_id).all() and (tokens_BxT[0, 3:] == m.pad_id).all()


def test_export_is_cached(cache_dir, monkeypatch):
  args = ('counter', COUNTER_VOCAB, 10)
  first = tracr_compile.compile_and_export(*args, cache_dir=cache_dir)
  def no_compile(*a):
    raise AssertionError('a cached export must not compile')
  monkeypatch.setattr(tracr_compile, '_compile_assembled', no_compile)
  # Vocab order does not change the key; no_compile proves nothing was compiled.
  again = tracr_compile.compile_and_export('counter', COUNTER_VOCAB[::-1], 10,
                                           cache_dir=cache_dir)
  assert again == first


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
  def boom(*args, **kwargs):
    raise OSError('disk full')
  monkeypatch.setattr(tracr_compile.np, 'savez', boom)
  with pytest.raises(OSError, match='disk full'):
    tracr_compile.compile_and_export('counter', COUNTER_VOCAB, 10, cache_dir=tmp_path)
  assert not list(tmp_path.iterdir())


def test_labels_do_not_depend_on_build_history():
  labels = []
  for _ in range(2):
    program = tracr_programs.build('counter', {'count_token': 'a'}, 10)
    labels.append(program.label)
  assert labels == ['counter_1', 'counter_1']


@pytest.mark.parametrize('rng', [np.random.default_rng(0), jax.random.PRNGKey(0)],
                         ids=['numpy', 'jax'])
def test_add_weight_noise(rng, cache_dir):
  m = tracr_model.get_compiled('counter', COUNTER_VOCAB, 10, cache_dir=cache_dir)
  noisy = tracr_model.add_weight_noise(m.params, rng, 0.01, skip=('unembed',))
  assert model.param_shapes(noisy) == model.param_shapes(m.params)
  kernel = m.params['blocks_0']['mlp']['fc_in']['kernel']
  delta = np.asarray(noisy['blocks_0']['mlp']['fc_in']['kernel']) - kernel
  assert 0.008 < delta.std() < 0.012  # std is a standard deviation.
  np.testing.assert_array_equal(noisy['unembed']['kernel'], m.params['unembed']['kernel'])


def test_bridge_does_not_import_tracr(cache_dir):
  tracr_model.get_compiled('counter', COUNTER_VOCAB, 10, cache_dir=cache_dir)  # Warm.
  code = textwrap.dedent(f"""
      import sys
      from wrapper_study.tracr import model as tracr_model
      assert 'tracr' not in sys.modules and 'haiku' not in sys.modules
      m = tracr_model.get_compiled('counter', {COUNTER_VOCAB!r}, 10, cache_dir={str(cache_dir)!r})
      assert 'tracr' not in sys.modules and 'haiku' not in sys.modules, 'warm cache imported tracr'
      """)
  subprocess.run([sys.executable, '-c', code], check=True, timeout=120)


def test_unknown_program_names_the_registry_and_the_file_form(cache_dir):
  with pytest.raises(ValueError, match=r"program='my_program' is unknown; valid: \[.*'counter'.*"
                                       r"'path/to/file.py:function'"):
    tracr_model.get_compiled('my_program', list('abc'), 5, cache_dir=cache_dir)


def test_causal_compile_matches_tracr_and_has_its_own_export(cache_dir):
  args = ('frac_prevs', tuple('abc'), 5, {'token': 'a'})
  causal = tracr_model.get_compiled(*args, cache_dir=cache_dir, causal=True)
  plain = tracr_model.get_compiled(*args, cache_dir=cache_dir)
  assert causal.config.causal and not plain.config.causal
  dirs = [export.export_dir(*args, cache_dir=cache_dir, causal=c) for c in (True, False)]
  assert dirs[0] != dirs[1] and all(export.is_complete_export(d) for d in dirs)
  seqs = [list('abca'), list('bbac')]
  logits, _ = causal.apply(causal.encode(seqs))
  ref = tracr_compile.reference_forward(*args, seqs, causal=True)
  np.testing.assert_allclose(np.asarray(logits)[..., 0][:, 1:],
                             np.asarray([r[1:] for r in ref['decoded']]), atol=1e-5)
  # Causal: position t's running fraction of 'a' ignores later tokens.
  np.testing.assert_allclose(np.asarray(logits)[0, 1:, 0], [1, 1 / 2, 1 / 3, 1 / 2], atol=1e-5)


def test_program_from_a_user_file(tmp_path, cache_dir):
  path = tmp_path / 'prog.py'
  path.write_text(textwrap.dedent("""
      from tracr.rasp import rasp
      def first_is(token='a'):
        same = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ)
        hit = rasp.Map(lambda t: t == token, rasp.tokens)
        return rasp.categorical(rasp.Aggregate(same, hit)), ('a', 'b'), 3
      """))
  m = tracr_model.get_compiled(f'{path}:first_is', cache_dir=cache_dir)
  assert m.vocab and set(m.vocab) == {'a', 'b'} and m.max_seq_len == 3
  logits, _ = m.apply(m.encode([list('aba')]))
  assert m.decode(logits)[0][1:] == [True, False, True]
  with pytest.raises(ValueError, match=r'max_seq_len=4 differs from the max_seq_len=3'):
    tracr_model.get_compiled(f'{path}:first_is', ('a', 'b'), 4, cache_dir=cache_dir)
  with pytest.raises(ValueError, match=r"defines no 'nope'"):
    tracr_model.get_compiled(f'{path}:nope', cache_dir=cache_dir)


def test_compile_pair_runs_the_compiled_models_at_the_configured_precision(cache_dir):
  from wrapper_study.tracr import tasks  # pylint: disable=g-import-not-at-top
  from wrapper_study.tracr import train  # pylint: disable=g-import-not-at-top
  from configs import tracr_study  # pylint: disable=g-import-not-at-top
  spec = tasks.from_config(tracr_study.get_config('smoke'), 'counter')
  fp32, _ = train.compile_pair(spec, str(cache_dir))
  bf16, ft_bf16 = train.compile_pair(spec, str(cache_dir), precision='bf16')
  assert (fp32.config.precision, bf16.config.precision, ft_bf16.config.precision) == (
      'fp32', 'bf16', 'bf16')
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(bf16.params))
  tokens = bf16.encode([list('abacadaeaa')[:spec.seq_len]])
  _, cache = model.Transformer(bf16.config).apply(
      {'params': bf16.params}, tokens, cache_names=['blocks.0.hook_resid_post'])
  assert cache['blocks.0.hook_resid_post'].dtype == jax.numpy.bfloat16
