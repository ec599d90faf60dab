"""The TinyStories world's data stage: files -> splits -> tokenizer -> token arrays, one World.

Every bad input fails here with a ConfigError naming the field that supplies
it, before any training. The tokenizer (workdir/tokenizer), the synthetic
stand-in (workdir/data) and the token streams (workdir/data/streams/<hash>) are
written once and reused by a rerun.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Optional

from absl import logging
import numpy as np

from wrapper_study import config_check as cc
from wrapper_study import metrics
from wrapper_study.tinystories import classifier as classifier_lib
from wrapper_study.tinystories import instruct
from wrapper_study.tinystories import protocols
from wrapper_study.tinystories import synthetic
from wrapper_study.tinystories import tokenizer as tokenizer_lib
from wrapper_study.tinystories import tokens
from wrapper_study.tinystories.paper import NOT_IN_PT, PRESENT

GET_THE_DATA = (
    'Get the data (nothing is downloaded by the study): download TinyStories-Instruct-train.txt '
    'and TinyStories-Instruct-valid.txt of the Hugging Face dataset '
    'roneneldan/TinyStoriesInstruct into a local folder, then pass '
    "--config.data.path=/that/folder; or --config.data.path='' with "
    '--config.data.synthetic_examples=N for the synthetic stand-in (not the paper\'s data)')


# -------------------------------------------------------- config checks ----


def _head_of_file(path: str, max_chars: int = 1 << 16) -> str:
  """The first complete examples of an instruct file (up to the last separator seen)."""
  with open(path, encoding='utf-8') as f:
    head = f.read(max_chars)
  cut = head.rfind('\n' + instruct.SEPARATOR)
  return head if cut < 0 or len(head) < max_chars else head[:cut + len(instruct.SEPARATOR) + 1]


def _check_data_path(config) -> list[instruct.Example]:
  """The files exist and start in the Instruct format; returns their first examples."""
  path = config.data.path
  try:
    files = instruct.instruct_files(path)
    head = []
    for file in files:
      head += instruct.parse_instruct(_head_of_file(file), where=file)
    return head
  except (ValueError, UnicodeDecodeError) as e:
    raise cc.ConfigError(f'config.data.path={path!r}: {e} {GET_THE_DATA}.') from None


def _named_features(config) -> list[tuple[str, str]]:
  """(config field, feature name) of every feature the study names."""
  d = config.deletion
  return [('deletion.feature', d.feature)] + (
      [('deletion.unrelated', d.unrelated)] if 'F+MM' in d.protocols else []) + [
          (f'probe.features[{i}]', f) for i, f in enumerate(config.probe.features)]


def check_sources(config) -> None:
  """The data exists (files or a synthetic size) and knows every feature the config names.

  Without loading: known names, plus (with a data path) those present in the
  files' first examples.
  """
  if not config.data.path and (not isinstance(config.data.synthetic_examples, int)
                               or config.data.synthetic_examples < 1):
    cc.fail('data.path', config.data.path,
            f'names no data (and data.synthetic_examples={config.data.synthetic_examples!r} asks '
            f'for no synthetic stand-in). {GET_THE_DATA}')
  if not config.data.path:
    cc.one_of(config, 'data.synthetic_version', synthetic.VERSIONS)
  if not config.probe.features:
    cc.fail('probe.features', config.probe.features, 'must name at least one feature')
  head = _check_data_path(config) if config.data.path else []
  known = set(instruct.STORY_FEATURES) if config.data.path else set(synthetic.FEATURE_PROBS)
  known |= set(instruct.features_present(head))
  d = config.deletion
  for path, name in _named_features(config):
    if instruct.normalise_feature(name) not in known:
      cc.fail(path, name, f'is not a story feature of the data; valid: {sorted(known)}')
  if 'F+MM' in d.protocols and (instruct.normalise_feature(d.unrelated)
                                == instruct.normalise_feature(d.feature)):
    cc.fail('deletion.unrelated', d.unrelated, 'must differ from deletion.feature')


def tokenizer_path(workdir) -> str:
  return str(pathlib.Path(workdir) / 'tokenizer' / 'tokenizer.model')


def check_workdir(config, workdir: pathlib.Path) -> None:
  """A tokenizer saved by an earlier run must match model.vocab_size (before compute)."""
  path = tokenizer_path(workdir)
  if os.path.isfile(path):
    try:
      tokenizer_lib.check_vocab(tokenizer_lib.Tokenizer(path), config.model.vocab_size)
    except ValueError as e:
      raise cc.ConfigError(f'config.model.vocab_size: {e} It was saved in this --workdir by an '
                           'earlier run: use another --workdir, or the earlier vocab_size.'
                           ) from None


def data_error(config, problem: str) -> None:
  """ConfigError naming the field that supplies the data."""
  if config.data.path:
    cc.fail('data.path', config.data.path, f'{problem}; use more examples (data.max_examples=0 '
            'uses all)')
  cc.fail('data.synthetic_examples', config.data.synthetic_examples,
          f'{problem}; use more examples')


# ------------------------------------------------------------- examples ----


def load_examples(config, workdir: pathlib.Path) -> list[instruct.Example]:
  """The local Instruct files, or the synthetic stand-in written to workdir/data."""
  if config.data.path:
    try:
      examples = instruct.load_instruct(config.data.path)
    except ValueError as e:
      raise cc.ConfigError(f'config.data.path={config.data.path!r}: {e}') from None
  else:
    version = config.data.get('synthetic_version', 'v2')
    path = pathlib.Path(workdir) / 'data' / (
        f'synthetic_{version}_{config.data.synthetic_examples}_seed{config.seed}.txt')
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
      n = config.data.synthetic_examples
      if not isinstance(n, int) or n < 1:
        cc.fail('data.synthetic_examples', n, 'must be a positive integer')
      tmp = str(path) + '.tmp'
      synthetic.write_synthetic(tmp, n, seed=config.seed, version=version)
      os.replace(tmp, path)
    examples = instruct.load_instruct(str(path))
  if config.data.max_examples:
    examples = examples[:config.data.max_examples]
  return examples


def split_and_check(config, examples) -> protocols.Splits:
  """protocols.split, then every named feature must occur in the splits that need it."""
  try:
    splits = protocols.split(examples, n_shards=config.data.n_shards)
  except ValueError as e:
    raise cc.ConfigError(f'config.data.n_shards: {e}') from None
  present = instruct.features_present(splits.pretrain)
  for path, name in _named_features(config):
    if instruct.normalise_feature(name) not in present:
      cc.fail(path, name, f'occurs in no pretraining-split story; features present: {present}')
  feature = instruct.normalise_feature(config.deletion.feature)
  for split_name, need in (('test', 'the Twist-story loss and the generation prompts'),
                           ('finetune', 'reFT')):
    if not any(ex.has(feature) for ex in getattr(splits, split_name)):
      data_error(config, f'the {split_name} split has no {feature} story, needed by {need}')
  return splits


# --------------------------------------------------------------- tokens ----


@dataclasses.dataclass
class World:
  """Everything the phases share: splits, tokenizer, token arrays, classifier."""
  splits: protocols.Splits
  tok: tokenizer_lib.Tokenizer
  feature: str
  streams: dict  # Run data name -> token stream [S] int32.
  loss_arrays: tokens.LossArrays  # Test-split feature stories.
  prompts: tokens.PromptArrays
  probe_train: tokens.ProbeArrays
  probe_test: tokens.ProbeArrays
  clf: Optional[classifier_lib.StoryClassifier] = None  # Set by evaluate.fit_classifier.
  clf_scores: Optional[dict] = None


def train_tokenizer(config, workdir, pretrain) -> tokenizer_lib.Tokenizer:
  """SentencePiece BPE on the pretraining split (saved once, reused by a rerun)."""
  path = tokenizer_path(workdir)
  if os.path.isfile(path):
    tok = tokenizer_lib.Tokenizer(path)
  else:
    n = config.data.tokenizer_examples or len(pretrain)
    texts = [instruct.format_example(ex) for ex in pretrain[:n]]
    prefix = path[:-len('.model')]
    try:
      tok = tokenizer_lib.train_tokenizer(texts, config.data.vocab_size, prefix + '.tmp',
                                          seed=config.seed)
    except ValueError as e:
      raise cc.ConfigError(f'config.data.vocab_size: {e}') from None
    for ext in ('.model', '.vocab'):
      os.replace(prefix + '.tmp' + ext, prefix + ext)
    tok = tokenizer_lib.Tokenizer(path)
  try:
    tokenizer_lib.check_vocab(tok, config.model.vocab_size)
  except ValueError as e:
    raise cc.ConfigError(f'config.model.vocab_size: {e}') from None
  return tok


def _stream(examples, tok, cache: pathlib.Path, chunk: int = 20_000) -> np.ndarray:
  """tokens.lm_stream of the examples, built in chunks (flat memory) and cached as .npy."""
  if cache.exists():
    return np.load(cache)
  parts = [tokens.lm_stream(examples[i:i + chunk], tok) for i in range(0, len(examples), chunk)]
  stream = np.concatenate(parts).astype(np.int32)
  cache.parent.mkdir(parents=True, exist_ok=True)
  np.save(str(cache) + '.tmp.npy', stream)
  os.replace(str(cache) + '.tmp.npy', cache)
  return stream


def _fingerprint(config, tok) -> str:
  """Names the token-stream cache: the tokenizer's pieces and the data-shaping config."""
  with open(tok.path, 'rb') as f:
    h = hashlib.sha1(f.read())
  h.update(json.dumps([config.data.path, config.data.synthetic_examples, config.data.max_examples,
                       config.data.n_shards, config.seed, config.deletion.feature,
                       config.deletion.unrelated, config.deletion.rr_fraction]).encode())
  return h.hexdigest()[:12]


def _sample(examples, n: int, seed: int) -> list:
  """n examples in a seeded order (all if n >= len)."""
  order = np.random.default_rng(seed).permutation(len(examples))[:n]
  return [examples[i] for i in sorted(order)]


def _story_fits(examples, tok, context: int) -> list:
  """Examples whose BOS + story fits the context (probe inputs)."""
  ids = tok.encode_batch([ex.story for ex in examples])
  return [ex for ex, s in zip(examples, ids) if len(s) + 1 <= context]


def run_data(config, splits: protocols.Splits, feature: str) -> dict:
  """Stream name -> training examples: Present, Not-in-PT, reFT, and each deletion protocol."""
  d = config.deletion
  out = {PRESENT: splits.pretrain,
         NOT_IN_PT: protocols.filter_feature(splits.pretrain, feature),
         'reft': protocols.only_feature(splits.finetune, feature)}
  for p in d.protocols:
    out[p] = protocols.build_protocol(p, splits.finetune, feature=feature, unrelated=d.unrelated,
                                      fraction=d.rr_fraction, seed=config.seed)
  return out


def prepare(config, workdir: pathlib.Path, timing: metrics.PhaseTimes) -> World:
  """Data, tokenizer and token arrays; every bad input fails here, before any training.

  Generation prompts are the instruction lines of test-split feature stories
  (repeated in order when there are fewer than eval.num_generations).
  """
  with timing.timed('data'):
    examples = load_examples(config, workdir)
    splits = split_and_check(config, examples)
    feature = instruct.normalise_feature(config.deletion.feature)
  logging.info('data: %d examples -> test %d, pretrain %d, finetune %d (%s)', len(examples),
               len(splits.test), len(splits.pretrain), len(splits.finetune),
               config.data.path or 'SYNTHETIC stand-in')
  with timing.timed('tokenizer + token arrays'):
    tok = train_tokenizer(config, workdir, splits.pretrain)
    world = _token_arrays(config, workdir, splits, tok, feature)
  return world


def _token_arrays(config, workdir, splits, tok, feature: str) -> World:
  context = config.model.max_len
  streams = {}
  stream_dir = pathlib.Path(workdir) / 'data' / 'streams' / _fingerprint(config, tok)
  for name, exs in run_data(config, splits, feature).items():
    if not exs:
      data_error(config, f'the training data of {name!r} is empty')
    streams[name] = _stream(exs, tok, stream_dir / f'{name.replace("+", "")}.npy')
    if len(streams[name]) <= context:
      data_error(config, f'the {len(streams[name])} tokens of {name!r} do not fill one window of '
                 f'model.max_len + 1 = {context + 1}')

  test_feature = protocols.only_feature(splits.test, feature)
  loss_examples = tokens.within_context(test_feature, tok, context)[:config.eval.loss_examples]
  if not loss_examples:
    cc.fail('model.max_len', context, f'no test-split {feature} story fits the context')
  loss_arrays = tokens.story_loss_arrays(loss_examples, tok, context)
  n_gen = config.eval.num_generations
  prompt_examples = [test_feature[i % len(test_feature)] for i in range(n_gen)]
  try:
    prompts = tokens.prompt_arrays(prompt_examples, tok, context, request=feature,
                                   max_new_tokens=config.eval.max_new_tokens)
  except ValueError as e:
    raise cc.ConfigError(f'config.eval.max_new_tokens={config.eval.max_new_tokens}: {e}') from None

  probe_features = [instruct.normalise_feature(f) for f in config.probe.features]
  probe_sets = []
  for exs, n, salt in ((splits.pretrain, config.probe.n_train, 1),
                       (splits.test, config.probe.n_test, 2)):
    picked = _story_fits(_sample(exs, n, config.seed + salt), tok, context)
    probe_sets.append(right_padded(tokens.probe_arrays(picked, tok, context,
                                                       features=probe_features)))
  return World(splits=splits, tok=tok, feature=feature, streams=streams,
               loss_arrays=loss_arrays, prompts=prompts, probe_train=probe_sets[0],
               probe_test=probe_sets[1])


def right_padded(arrays: tokens.ProbeArrays) -> tokens.ProbeArrays:
  """The same rows with the padding moved to the end.

  probing.collect_features runs the model with pad_mask_BxT but without
  positions_BxT, so left-padded rows would get positions shifted by their
  padding. Right-padded, every real token sits at its true position and the
  causal mask keeps the trailing pads out of its view: exact, not just equal up
  to RoPE's relative-position invariance.
  """
  n_pad_N = (~arrays.mask_NxT).sum(1)
  T = arrays.mask_NxT.shape[1]
  idx_NxT = (np.arange(T)[None] + n_pad_N[:, None]) % T
  take = lambda a: np.take_along_axis(a, idx_NxT, axis=1)
  return dataclasses.replace(arrays, tokens_NxT=take(arrays.tokens_NxT),
                             mask_NxT=take(arrays.mask_NxT), weights_NxT=take(arrays.weights_NxT))


def lm_windows(stream, bos_id: int, context: int, batch_size: int, seed: int,
               align: bool) -> tokens.LMWindows:
  """The training windows: cut at multiples of the context (the authors' loader), or aligned.

  align=True starts one window at every example (its BOS), so each example is
  seen whole with its instructions when it fits the context. At toy scale
  (context 256, examples ~150 tokens) the authors' cuts split most examples
  from their Features line, and the model then sees twists it cannot condition
  on; at 1024 tokens far fewer are split.
  """
  windows = tokens.LMWindows(stream, context, batch_size, seed)
  if align:
    starts = np.flatnonzero(stream[:len(stream) - context] == bos_id)
    if len(starts):
      windows.windows_NxT1 = stream[starts[:, None] + np.arange(context + 1)]
  return windows
