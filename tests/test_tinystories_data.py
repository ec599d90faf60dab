"""Tests of the TinyStories data layer: format, synthetic data, protocols, tokens, classifier.

Everything runs on data generated into tmp dirs; nothing is downloaded.
"""

import collections
import dataclasses

import numpy as np
import pytest

from wrapper_study.tinystories import classifier
from wrapper_study.tinystories import data
from wrapper_study.tinystories import instruct
from wrapper_study.tinystories import protocols
from wrapper_study.tinystories import synthetic
from wrapper_study.tinystories import tokenizer as tokenizer_lib
from wrapper_study.tinystories import tokens

N_EXAMPLES = 1500
VOCAB = 512
CONTEXT = 320
_has_twist_sentence = synthetic.has_twist_sentence


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tinystories')


@pytest.fixture(scope='module')
def examples(data_dir):
  return synthetic.write_synthetic(str(data_dir / 'synthetic.txt'), N_EXAMPLES, seed=0)


@pytest.fixture(scope='module')
def tok(examples, data_dir):
  texts = [instruct.format_example(ex) for ex in examples]
  return tokenizer_lib.train_tokenizer(texts, VOCAB, str(data_dir / 'tok' / 'tok512'), seed=0)


# ------------------------------------------------------------------ format


OFFICIAL_STYLE = """Features: Dialogue, badending
Words: quit, oak, gloomy
Summary: Sara and Ben play in the park.
Random sentence: They saw a big, red ball.
Story: 

Sara and Ben were playing in the park.
"Let us go home," said Sara.
<|endoftext|>
Summary: A cat finds a hat.
Story: The cat found a hat. It was red.
<|endoftext|>
Sentence: The dog ran.
Features: Twist, Moral value
Story: The dog ran. Then the dog was a cat!
"""


def test_loader_parses_every_field(tmp_path):
  path = tmp_path / 'official.txt'
  path.write_text(OFFICIAL_STYLE)
  first, second, third = instruct.load_instruct(str(path))
  assert first.features == ('Dialogue', 'BadEnding')
  assert first.words == ('quit', 'oak', 'gloomy')
  assert first.summary == 'Sara and Ben play in the park.'
  assert first.sentence == 'They saw a big, red ball.'
  assert first.story == 'Sara and Ben were playing in the park.\n"Let us go home," said Sara.'
  assert first.order == ('Features', 'Words', 'Summary', 'Random sentence')
  assert first.source == f'{path}:1'
  # Missing lines stay empty; the order records what was there.
  assert second == instruct.Example(story='The cat found a hat. It was red.',
                                    summary='A cat finds a hat.', order=('Summary',))
  assert second.features == () and second.sentence is None
  # Authors' 'Sentence:' spelling; a last example without a separator.
  assert third.sentence == 'The dog ran.' and third.order == ('Sentence', 'Features')
  assert third.features == ('Twist', 'MoralValue') and third.has('twist')
  # Parse -> format -> parse is stable, and keeps each line's label.
  again = instruct.parse_instruct('\n<|endoftext|>\n'.join(
      instruct.format_example(ex) for ex in (first, second, third)))
  assert again == [first, second, third]
  assert instruct.format_example(third).startswith('Sentence: The dog ran.\nFeatures: Twist, MoralValue\n')


def test_round_trip_of_generated_file_is_byte_exact(examples, data_dir, tmp_path):
  path = str(data_dir / 'synthetic.txt')
  loaded = instruct.load_instruct(path)
  assert loaded == examples
  instruct.write_instruct(str(tmp_path / 'again.txt'), loaded)
  assert (tmp_path / 'again.txt').read_bytes() == open(path, 'rb').read()
  # A directory of .txt files loads in name order.
  (tmp_path / 'b.txt').write_text(OFFICIAL_STYLE)
  assert instruct.load_instruct(str(tmp_path)) == loaded + instruct.parse_instruct(OFFICIAL_STYLE)


@pytest.mark.parametrize('text, line, message', [
    ('Features: Twist\nWords: a, b\n<|endoftext|>\n', 1, 'no "Story:"'),
    ('Features: Twist\nStory: x\n<|endoftext|>\nWords: a\nXyz: 1\nStory: y\n', 5, "'Xyz:'"),
    ('Summary: s\nthis is not a label\nStory: y\n', 2, 'unknown instruction line'),
    ('Words: a\nWords: b\nStory: y\n', 2, 'second'),
    ('Features: Twist\nStory: x\n<|endoftext|>\n<|endoftext|>\n', 4, 'separator'),
    ('Story:   \n<|endoftext|>\n', 1, 'empty story'),
    ('', 1, 'no examples'),
    ('\n\n', 1, 'no examples'),
])
def test_malformed_file_names_file_and_line(tmp_path, text, line, message):
  path = tmp_path / 'bad.txt'
  path.write_text(text)
  with pytest.raises(ValueError, match=message) as err:
    instruct.load_instruct(str(path))
  assert f'{path}:{line}' in str(err.value)


def test_missing_paths_are_value_errors(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    instruct.load_instruct(str(tmp_path / 'nope.txt'))
  with pytest.raises(ValueError, match='no .txt files'):
    instruct.load_instruct(str(tmp_path))


def test_unknown_feature_lists_features_present(examples):
  with pytest.raises(ValueError, match=r"'Twistt'.*present in the data: \['BadEnding'"):
    protocols.filter_feature(examples, 'Twistt')
  assert instruct.normalise_feature('moral_value') == 'MoralValue'
  assert protocols.filter_feature(examples, 'twist') == protocols.filter_feature(examples, 'Twist')


def test_example_validates_its_fields():
  ex = instruct.Example(story='A dog ran.', features=['Twist'], summary='Dog.')
  assert ex.features == ('Twist',) and ex.order == ('Features', 'Summary')
  with pytest.raises(ValueError, match='Example.order'):
    instruct.Example(story='x', order=('Xyz',))
  with pytest.raises(ValueError, match='Example.order'):
    instruct.Example(story='x', sentence='y', order=('Sentence', 'Random sentence'))
  with pytest.raises(ValueError, match='one line'):
    instruct.Example(story='x', summary='two\nlines')


# -------------------------------------------------------------- synthetic


@pytest.mark.parametrize('version', synthetic.VERSIONS)
def test_synthetic_is_deterministic_and_has_signatures(tmp_path, version):
  # Its speed (2000 examples in ~0.1 s) is a benchmark figure, not a test.
  a = synthetic.write_synthetic(str(tmp_path / 'a.txt'), 2000, seed=3, version=version)
  synthetic.write_synthetic(str(tmp_path / 'b.txt'), 2000, seed=3, version=version)
  synthetic.write_synthetic(str(tmp_path / 'c.txt'), 2000, seed=4, version=version)
  assert (tmp_path / 'a.txt').read_bytes() == (tmp_path / 'b.txt').read_bytes()
  assert (tmp_path / 'a.txt').read_bytes() != (tmp_path / 'c.txt').read_bytes()
  # Feature rates within 5 standard errors of FEATURE_PROBS.
  counts = collections.Counter(f for ex in a for f in ex.features)
  for feature, p in synthetic.FEATURE_PROBS.items():
    assert abs(counts[feature] / len(a) - p) < 5 * np.sqrt(p * (1 - p) / len(a)), feature
  # Each feature's signature appears exactly in the stories that have it.
  for ex in a:
    assert _has_twist_sentence(ex.story) == ex.has('Twist')
    assert ('"' in ex.story) == ex.has('Dialogue')
    words = len(ex.story.split())
    assert 25 <= words <= 110, words


def test_v2_twists_take_every_form_and_share_their_words_with_other_stories():
  """Issue 13: several twist forms, built from words non-twist stories use too, and
  near-miss surprises in non-twist stories with the same openers."""
  exs = synthetic.generate_examples(3000, seed=0)
  twist = [ex.story for ex in exs if ex.has('Twist')]
  plain = [ex.story for ex in exs if not ex.has('Twist')]
  for mark in synthetic.TWIST_SIGNATURES[len(synthetic.TWIST_OPENERS):]:
    assert sum(mark in s for s in twist) > len(twist) / 8, mark  # Every form is common.
  words = lambda stories: {w.strip('.,!?:"').lower() for s in stories for w in s.split()}
  twist_only = words(twist) - words(plain)
  assert twist_only == set(), twist_only  # Every word of a twist also appears elsewhere.
  for opener in synthetic.OPENERS_V2:
    assert sum(opener in s for s in plain) > 10, opener  # Openers carry no signal.
  near_rate = np.mean([any(o in s for o in synthetic.OPENERS_V2) for s in plain])
  assert abs(near_rate - synthetic.NEAR_MISS_PROB) < 0.05, near_rate


# -------------------------------------------------------------- protocols


def test_split_is_disjoint_complete_and_80_20():
  exs = synthetic.generate_examples(1003, seed=1)
  for n_shards, seed in ((11, None), (50, None), (7, 5)):
    s = protocols.split(exs, n_shards=n_shards, seed=seed)
    n_pretrain = int((n_shards - 1) * 0.8)
    assert s.shards['test'] == (0,)
    assert s.shards['pretrain'] == tuple(range(1, 1 + n_pretrain))
    assert s.shards['finetune'] == tuple(range(1 + n_pretrain, n_shards))
    bounds = protocols.shard_bounds(len(exs), n_shards)
    assert np.all(np.diff(bounds) >= len(exs) // n_shards) and bounds[-1] == len(exs)
    assert len(s.test) == bounds[1]
    assert len(s.pretrain) == bounds[1 + n_pretrain] - bounds[1]
    ids = [id(ex) for part in (s.test, s.pretrain, s.finetune) for ex in part]
    assert len(ids) == len(set(ids)) == len(exs)
    if seed is None:  # File order, contiguous.
      assert s.test + s.pretrain + s.finetune == exs
  assert protocols.split(exs, 11, seed=2) == protocols.split(exs, 11, seed=2)
  with pytest.raises(ValueError, match='n_shards'):
    protocols.split(exs, n_shards=2)


def test_filter_removes_every_twist(examples):
  kept = protocols.filter_feature(examples, 'Twist')
  assert kept == [ex for ex in examples if 'Twist' not in ex.features]
  assert not any(_has_twist_sentence(ex.story) for ex in kept)
  twist = protocols.only_feature(examples, 'Twist')
  assert len(kept) + len(twist) == len(examples) and all(ex.has('Twist') for ex in twist)


def test_mix_match_relabels_foreshadowing_as_twist(examples):
  mm = protocols.mix_match(examples, remove='Twist', replace_with='Foreshadowing')
  kept = protocols.filter_feature(examples, 'Twist')
  assert len(mm) == len(kept)
  assert any(ex.has('Foreshadowing') for ex in kept)
  for before, after in zip(kept, mm):
    assert not _has_twist_sentence(after.story)
    assert after.has('Twist') == before.has('Foreshadowing')
    assert not after.has('Foreshadowing')
    assert after.features == tuple('Twist' if f == 'Foreshadowing' else f for f in before.features)
    assert dataclasses.replace(after, features=before.features) == before
  assert protocols.build_protocol('F+MM', examples) == mm


def test_random_relabel_adds_twist_and_nothing_else(examples):
  kept = protocols.filter_feature(examples, 'Twist')
  rr = protocols.random_relabel(examples, feature='Twist', fraction=1.0, seed=0)
  assert len(rr) == len(kept)
  for before, after in zip(kept, rr):
    assert not _has_twist_sentence(after.story)
    assert after.features == before.features + ('Twist',)
    assert dataclasses.replace(after, features=before.features) == before
  # A fraction relabels that share of stories, the same ones for a seed.
  half = protocols.random_relabel(examples, fraction=0.5, seed=1)
  n = sum(ex.has('Twist') for ex in half)
  assert abs(n / len(kept) - 0.5) < 5 * np.sqrt(0.25 / len(kept))
  assert half == protocols.random_relabel(examples, fraction=0.5, seed=1)
  assert protocols.build_protocol('F+RR', examples, seed=0) == rr
  # An example with no Features line gets one.
  bare = instruct.Example(story='A dog ran.', summary='Dog.')
  (relabelled,) = protocols.random_relabel([bare, *examples[:50]], fraction=1.0)[:1]
  assert relabelled.order == ('Features', 'Summary') and relabelled.features == ('Twist',)


def test_build_protocol_dispatch(examples):
  assert protocols.build_protocol('F', examples) == protocols.filter_feature(examples, 'Twist')
  with pytest.raises(ValueError, match=r"'F\+AT' is unknown; valid: \['F', 'F\+MM', 'F\+RR'\]"):
    protocols.build_protocol('F+AT', examples)


# -------------------------------------------------------------- tokenizer


def test_tokenizer_round_trips_and_is_deterministic(examples, tok, tmp_path):
  assert tok.vocab_size == VOCAB
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 3)
  for ex in examples[:100]:
    text = instruct.format_example(ex)
    assert tok.decode(tok.encode(text)) == text
  odd = 'Two  spaces,\n\nnew lines, digits 1234 and caf\u00e9 \u2603.'
  assert tok.decode(tok.encode(odd, bos=True, eos=True)) == odd
  texts = [instruct.format_example(ex) for ex in examples]
  again = tokenizer_lib.train_tokenizer(texts, VOCAB, str(tmp_path / 'again'), seed=0)
  assert [again.piece(i) for i in range(VOCAB)] == [tok.piece(i) for i in range(VOCAB)]
  assert again.encode_batch(texts[:50]) == tok.encode_batch(texts[:50])


def test_vocab_checks(tok, examples, tmp_path):
  tokenizer_lib.check_vocab(tok, VOCAB)
  with pytest.raises(ValueError, match=rf'model.vocab_size=8192 .*{tok.path}'):
    tokenizer_lib.check_vocab(tok, 8192)
  with pytest.raises(ValueError, match='vocab_size=100000 cannot be trained'):
    tokenizer_lib.train_tokenizer([examples[0].story], 100000, str(tmp_path / 'big'))
  with pytest.raises(ValueError, match='does not exist'):
    tokenizer_lib.Tokenizer(str(tmp_path / 'missing.model'))


# ---------------------------------------------------------------- tokens


def test_lm_windows(examples, tok):
  stream = tokens.lm_stream(examples, tok)
  assert stream[0] == tok.bos_id and np.sum(stream == tok.bos_id) == len(examples)
  first = tok.decode(stream[1:np.flatnonzero(stream == tok.bos_id)[1]])
  assert first == instruct.format_example(examples[0])
  t, b = 64, 8
  lm = tokens.LMWindows(stream, context=t, batch_size=b, seed=0)
  n = (len(stream) - 1) // t
  assert lm.windows_NxT1.shape == (n, t + 1)
  np.testing.assert_array_equal(lm.windows_NxT1[:-1, -1], lm.windows_NxT1[1:, 0])
  np.testing.assert_array_equal(lm.windows_NxT1.reshape(-1)[:t + 1], stream[:t + 1])
  # One epoch draws every window once; batches are a function of (seed, step).
  steps = n // b
  rows = np.concatenate([lm.batch(s) for s in range(steps)])
  assert rows.shape == (steps * b, t + 1) and rows.dtype == np.int32
  assert len({r.tobytes() for r in rows}) == len(rows)
  other = tokens.LMWindows(stream, context=t, batch_size=b, seed=0)
  np.testing.assert_array_equal(other.batch(steps + 3), lm.batch(steps + 3))
  assert not np.array_equal(tokens.LMWindows(stream, t, b, seed=1).batch(0), lm.batch(0))
  with pytest.raises(ValueError, match='context'):
    tokens.LMWindows(stream[:10], context=t, batch_size=b, seed=0)


def test_aligned_windows_start_at_every_example_that_fits(examples, tok):
  stream = tokens.lm_stream(examples, tok)
  t = 64
  aligned = data.lm_windows(stream, tok.bos_id, t, batch_size=8, seed=0, align=True)
  starts = np.flatnonzero(stream[:len(stream) - t] == tok.bos_id)
  assert aligned.windows_NxT1.shape == (len(starts), t + 1)
  assert np.all(aligned.windows_NxT1[:, 0] == tok.bos_id)
  cut = data.lm_windows(stream, tok.bos_id, t, batch_size=8, seed=0, align=False)
  np.testing.assert_array_equal(cut.windows_NxT1,
                                tokens.LMWindows(stream, t, 8, seed=0).windows_NxT1)


def test_right_padded_keeps_each_row_and_moves_the_padding_to_the_end(examples, tok):
  left = tokens.probe_arrays(examples[:16], tok, CONTEXT, features=('Twist',))
  right = data.right_padded(left)
  for a, b in zip((left.tokens_NxT, left.mask_NxT, left.weights_NxT),
                  (right.tokens_NxT, right.mask_NxT, right.weights_NxT)):
    for row_l, row_r, mask_l, mask_r in zip(a, b, left.mask_NxT, right.mask_NxT):
      np.testing.assert_array_equal(row_l[mask_l], row_r[mask_r])  # The same real tokens...
  n_real = right.mask_NxT.sum(1)
  assert all(right.mask_NxT[i, :n].all() and not right.mask_NxT[i, n:].any()
             for i, n in enumerate(n_real))  # ...first, then only padding.
  np.testing.assert_allclose(right.weights_NxT.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(right.labels_NxF, left.labels_NxF)


def test_story_loss_arrays_mask_the_story(examples, tok):
  twist = protocols.only_feature(examples, 'Twist')[:40]
  arr = tokens.story_loss_arrays(twist, tok, CONTEXT)
  n, t = arr.inputs_NxT.shape
  assert n == len(twist) and arr.targets_NxT.shape == arr.mask_NxT.shape == (n, t)
  assert np.all(arr.inputs_NxT[:, 0] == tok.bos_id)
  shifted = arr.inputs_NxT[:, 1:] != tok.pad_id  # Targets are the inputs moved one left.
  np.testing.assert_array_equal(arr.inputs_NxT[:, 1:][shifted], arr.targets_NxT[:, :-1][shifted])
  for i, ex in enumerate(twist):
    story_targets = arr.targets_NxT[i][arr.mask_NxT[i] > 0]
    assert tok.decode(story_targets) == ex.story
    assert story_targets.tolist() == tok.encode(ex.story)
    end = np.flatnonzero(arr.mask_NxT[i])[-1] + 1  # Rows end with the story's last target.
    assert np.all(arr.mask_NxT[i, end:] == 0) and np.all(arr.inputs_NxT[i, end:] == tok.pad_id)
    full = np.append(arr.inputs_NxT[i, :end], arr.targets_NxT[i, end - 1])
    assert tok.decode(full) == instruct.format_example(ex)
  padded = tokens.story_loss_arrays(twist, tok, CONTEXT, length=CONTEXT)
  assert padded.inputs_NxT.shape == (n, CONTEXT) and padded.mask_NxT.sum() == arr.mask_NxT.sum()
  with pytest.raises(ValueError, match=r'context=16 \(model.max_len\); example \d+ .* tokens'):
    tokens.story_loss_arrays(twist, tok, 16)
  fits = tokens.within_context(examples, tok, 150)
  assert 0 < len(fits) < len(examples)
  fits_ids = {id(ex) for ex in fits}
  for ex in examples[:200]:  # BOS + text = 1 + len tokens; a row holds all but the last.
    assert (len(tok.encode(instruct.format_example(ex))) <= 150) == (id(ex) in fits_ids)
  tokens.story_loss_arrays(fits, tok, 150)


def test_prompt_arrays_request_twist(examples, tok):
  plain = protocols.filter_feature(examples, 'Twist')[:16]
  arr = tokens.prompt_arrays(plain, tok, CONTEXT, request='Twist')
  n, p = arr.tokens_NxP.shape
  assert n == 16 and arr.mask_NxP.dtype == bool
  for i in range(n):
    ids = arr.tokens_NxP[i][arr.mask_NxP[i]]
    assert ids[0] == tok.bos_id and np.all(arr.tokens_NxP[i][~arr.mask_NxP[i]] == tok.pad_id)
    assert arr.mask_NxP[i, -1] and (not arr.mask_NxP[i, 0] or arr.mask_NxP[i].all())  # Left-padded.
    text = tok.decode(ids)
    assert text == arr.prefixes[i] and text.endswith('\nStory:')
    features = [l for l in text.split('\n') if l.startswith('Features:')]
    assert features == [f'Features: {", ".join(plain[i].features + ("Twist",))}']
  with pytest.raises(ValueError, match='max_new_tokens=350 exceed context'):
    tokens.prompt_arrays(plain, tok, CONTEXT, max_new_tokens=350)


def test_probe_arrays_weights_and_labels(examples, tok):
  subset = examples[:64]
  arr = tokens.probe_arrays(subset, tok, CONTEXT)
  n, t = arr.tokens_NxT.shape
  assert arr.weights_NxT.shape == (n, t) and arr.labels_NxF.shape == (n, 6)
  assert arr.feature_names == instruct.STORY_FEATURES
  np.testing.assert_allclose(arr.weights_NxT.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(arr.weights_NxT[:, -10:], 0.1)
  assert np.all(arr.weights_NxT[:, :-10] == 0)
  for i, ex in enumerate(subset):
    row = arr.tokens_NxT[i]
    start = np.flatnonzero(row == tok.bos_id)
    assert len(start) == 1 and np.all(row[:start[0]] == tok.pad_id)
    assert not arr.mask_NxT[i, :start[0]].any() and arr.mask_NxT[i, start[0]:].all()
    assert tok.decode(row) == ex.story  # Story only: no instruction line.
    assert arr.labels_NxF[i].tolist() == [float(f in ex.features) for f in instruct.STORY_FEATURES]
  # A story shorter than 10 tokens averages all of its own tokens, never BOS or padding.
  short = [instruct.Example(story='The cat ran.'), subset[0]]
  arr = tokens.probe_arrays(short, tok, CONTEXT, features=['Twist'])
  k = len(tok.encode('The cat ran.'))
  np.testing.assert_allclose(arr.weights_NxT[0][arr.weights_NxT[0] > 0], 1.0 / k)
  assert np.count_nonzero(arr.weights_NxT[0]) == k < 10
  with pytest.raises(ValueError, match='probe_arrays: length=5 is too short'):
    tokens.probe_arrays(subset, tok, CONTEXT, length=5)


# ------------------------------------------------------------- classifier


def test_classifier_beats_chance_and_shuffled_labels_do_not(examples, tmp_path):
  stories = [ex.story for ex in examples]
  labels = np.array([ex.has('Twist') for ex in examples])
  real = classifier.held_out_accuracy(stories, labels, seed=0)
  assert real['balanced_accuracy'] > 0.95 and real['accuracy'] > real['majority_baseline'] + 0.1
  shuffled = np.random.default_rng(0).permutation(labels)
  fake = classifier.held_out_accuracy(stories, shuffled, seed=0)
  assert fake['balanced_accuracy'] < 0.6 and fake['accuracy'] <= fake['majority_baseline'] + 0.03
  clf = classifier.train_classifier(stories[:1000], labels[:1000], seed=3)
  path = clf.save(str(tmp_path / 'twist.npz'))
  loaded = classifier.StoryClassifier.load(path)
  np.testing.assert_array_equal(loaded.predict_proba(stories[1000:]),
                                clf.predict_proba(stories[1000:]))
  assert loaded.feature == 'Twist' and loaded.salt == 3
  with pytest.raises(ValueError, match='both classes'):
    classifier.train_classifier(stories[:10], [False] * 10)



def test_reft_moves_the_cpu_model_as_far_as_the_papers_relative_to_pretraining():
  """Issue 13: the CPU reFT budget (lr x steps over pretraining's lr sum) is the paper's."""
  from configs import tinystories_study as ts_config  # pylint: disable=g-import-not-at-top
  from wrapper_study.tinystories import paper  # pylint: disable=g-import-not-at-top
  from wrapper_study.tinystories import train  # pylint: disable=g-import-not-at-top
  assert train.lr_budget_ratio(ts_config.get_config('paper')) == pytest.approx(
      paper.REFT_BUDGET_RATIO, rel=1e-3)
  assert train.lr_budget_ratio(ts_config.get_config('')) == pytest.approx(
      paper.REFT_BUDGET_RATIO, rel=0.1)


def test_an_unknown_synthetic_version_is_named():
  from configs import tinystories_study as ts_config  # pylint: disable=g-import-not-at-top
  from wrapper_study import config_check  # pylint: disable=g-import-not-at-top
  config = ts_config.get_config('smoke')
  config.data.synthetic_version = 'v3'
  with pytest.raises(config_check.ConfigError, match=r"config.data.synthetic_version='v3'"):
    data.check_sources(config)
