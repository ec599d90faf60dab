"""The TinyStories world: pretrain, delete Twist, reverse fine-tune, score, probe.

Paper Sec. 5.2, App. B.3, F; Table 1 and Figs 11, 31-38. Phases, each
resumable (checkpoints, plus results/<run>.json for every evaluation made):
  data       TinyStories-Instruct files (or the synthetic stand-in) -> test /
             pretrain / fine-tune splits (protocols.split).
  tokenizer  SentencePiece BPE on the pretraining split (workdir/tokenizer).
  classifier the local Twist classifier that scores generations.
  pretrain   Present (whole pretraining split) and Not-in-PT (Twist filtered).
  deletion   Present fine-tuned with F, F+MM, F+RR at each deletion lr.
  reft       every deleted model and Not-in-PT trained on Twist stories.
  probes     binary probes per feature at B0..BL of every model, one fit.
  report     Table 1 beside the paper, losses, probes, claims, timings.
Every training run is data-parallel over all devices (train.data_mesh()).
Config: configs/tinystories_study.py.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
import time
from typing import Callable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import checkpoint
from wrapper_study import config_check as cc
from wrapper_study import losses
from wrapper_study import metrics
from wrapper_study import model as model_lib
from wrapper_study import optim
from wrapper_study.report import plots
from wrapper_study.analysis import probing
from wrapper_study.report import tables
from wrapper_study import sampling
from wrapper_study import train
from wrapper_study.tinystories import classifier as classifier_lib
from wrapper_study.tinystories import instruct
from wrapper_study.tinystories import protocols
from wrapper_study.tinystories import synthetic
from wrapper_study.tinystories import tokenizer as tokenizer_lib
from wrapper_study.tinystories import tokens

PRESENT = 'present'
NOT_IN_PT = 'not_in_pt'

# Paper Table 1 (% of generations with a twist during reFT), rows (protocol,
# lr name) and Not in PT; columns reFT iterations 0, 30, 300, 3000.
PAPER_TABLE1_POINTS = (0, 30, 300, 3000)
PAPER_TABLE1 = {
    ('F', 'eta_M'): (44, 81, 81, 82),
    ('F+RR', 'eta_M'): (12, 56, 69, 75),
    ('F+MM', 'eta_M'): (31, 88, 50, 75),
    ('F', 'eta_S'): (69, 88, 75, 94),
    ('F+RR', 'eta_S'): (12, 44, 81, 81),
    ('F+MM', 'eta_S'): (50, 81, 62, 81),
    NOT_IN_PT: (12, 31, 44, 81),
}
PAPER_CLASSIFIER_ACCURACY = 92.0  # The paper's GPT-3.5 twist classifier, held out.

# Claim thresholds, fixed before any run.
PROBE_TOLERANCE = 5.0  # Points of probe accuracy that count as "no information removed".
CLASSIFIER_MIN_ACCURACY = 90.0  # The generation score is only read if the classifier is this good.

GET_THE_DATA = (
    'Get the data (nothing is downloaded by the study): download TinyStories-Instruct-train.txt '
    'and TinyStories-Instruct-valid.txt of the Hugging Face dataset '
    'roneneldan/TinyStoriesInstruct into a local folder, then pass '
    "--config.data.path=/that/folder; or --config.data.path='' with "
    '--config.data.synthetic_examples=N for the synthetic stand-in (not the paper\'s data)')


# ---------------------------------------------------------------- config ----


def model_config(config) -> model_lib.TransformerConfig:
  m = config.model
  return model_lib.llama_config(m.vocab_size, m.max_len, m.d_model, m.n_layers, m.n_heads,
                                multiple_of=m.multiple_of)


def deletion_runs(config) -> list[tuple[str, float, str]]:
  """(protocol, lr, lr name) of every deletion run, lr-major as Table 1's rows."""
  d = config.deletion
  return [(p, lr, name) for lr, name in zip(d.lrs, d.lr_names) for p in d.protocols]


def deletion_name(protocol: str, lr: float) -> str:
  """('F+MM', 1e-4) -> 'delete_FMM_lr0.0001', the run's name (safe in paths)."""
  return f"delete_{protocol.replace('+', '')}_lr{lr:g}"


def row_label(protocol: str, lr_name: str, lr: float) -> str:
  return f'{protocol.replace("+", " + ")} ({lr_name}={lr:g})'


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


def validate(config) -> None:
  """Everything that can be checked before compute; raises ConfigError naming the field."""
  cc.non_negative_int(config, 'seed', 'data.max_examples', 'data.tokenizer_examples',
                      'classifier.n_train', 'classifier.n_test')
  cc.positive(config, 'data.n_shards', 'data.vocab_size', 'model.vocab_size', 'model.max_len',
              'model.d_model', 'model.n_layers', 'model.n_heads', 'model.multiple_of',
              'pretrain.steps', 'pretrain.batch_size', 'pretrain.eval_every',
              'pretrain.save_every', 'pretrain.log_every', 'deletion.steps',
              'deletion.batch_size', 'deletion.save_every', 'deletion.log_every', 'reft.steps',
              'reft.batch_size', 'reft.save_every', 'reft.log_every', 'eval.num_generations',
              'eval.max_new_tokens', 'eval.loss_examples', 'eval.batch_size', 'probe.n_train',
              'probe.n_test', 'probe.steps', 'probe.batch_size', 'probe.feature_batch_size',
              integer=True)
  cc.positive(config, 'pretrain.lr', 'reft.lr')
  cc.positive_list(config, 'deletion.lrs')
  cc.non_negative_int(config, 'pretrain.warmup_steps')
  cc.fractions(config, 'pretrain.min_lr_ratio')
  cc.fractions(config, 'deletion.rr_fraction')
  if not 0 <= config.pretrain.weight_decay:
    cc.fail('pretrain.weight_decay', config.pretrain.weight_decay, 'must be >= 0')
  if config.pretrain.warmup_steps > config.pretrain.steps:
    cc.fail('pretrain.warmup_steps', config.pretrain.warmup_steps,
            f'must be <= pretrain.steps={config.pretrain.steps}')
  if not 0 < config.eval.temperature:
    cc.fail('eval.temperature', config.eval.temperature, 'must be > 0 (the paper samples at 1.0)')
  if not isinstance(config.data.n_shards, int) or config.data.n_shards < 3:
    cc.fail('data.n_shards', config.data.n_shards,
            'must be an integer >= 3 (a test, a pretraining and a fine-tuning shard)')
  if config.data.vocab_size != config.model.vocab_size:
    cc.fail('model.vocab_size', config.model.vocab_size,
            f'must equal data.vocab_size={config.data.vocab_size} (one embedding row per '
            'tokenizer piece)')
  if config.data.vocab_size <= tokenizer_lib.PAD_ID + 256:
    cc.fail('data.vocab_size', config.data.vocab_size,
            f'must exceed {tokenizer_lib.PAD_ID + 256} (4 special ids and 256 byte pieces); '
            'the paper uses 8192')
  try:
    model_config(config).validate()
  except ValueError as e:
    raise cc.ConfigError(f'config.{e}') from None
  if config.eval.max_new_tokens >= config.model.max_len:
    cc.fail('eval.max_new_tokens', config.eval.max_new_tokens,
            f'must leave room for the prompt in model.max_len={config.model.max_len}')
  # Data parallelism splits every batch over all devices.
  n_dev = jax.device_count()
  for path in ('pretrain.batch_size', 'deletion.batch_size', 'reft.batch_size'):
    if cc.get(config, path) % n_dev:
      cc.fail(path, cc.get(config, path),
              f'must be divisible by the {n_dev} devices (training is data-parallel)')
  d = config.deletion
  if not d.protocols or any(p not in protocols.PROTOCOLS for p in d.protocols) or (
      len(set(d.protocols)) != len(d.protocols)):
    cc.fail('deletion.protocols', d.protocols,
            f'must be distinct names from {list(protocols.PROTOCOLS)}')
  if len(d.lr_names) != len(d.lrs) or len(set(d.lr_names)) != len(d.lr_names):
    cc.fail('deletion.lr_names', d.lr_names,
            f'must name each of deletion.lrs={tuple(d.lrs)} once (Table 1 uses eta_M, eta_S)')
  for path, total in (('deletion.loss_steps', d.steps), ('reft.loss_steps', config.reft.steps),
                      ('reft.score_steps', config.reft.steps)):
    steps = cc.get(config, path)
    if not steps or any(isinstance(s, bool) or not isinstance(s, int) or not 0 < s <= total
                        for s in steps) or list(steps) != sorted(set(steps)):
      cc.fail(path, steps, f'must be a non-empty increasing tuple of steps in 1..{total}')
  if len(config.reft.score_steps) != len(PAPER_TABLE1_POINTS) - 1:
    cc.fail('reft.score_steps', config.reft.score_steps,
            f'must give {len(PAPER_TABLE1_POINTS) - 1} steps, standing for the paper\'s '
            f'{PAPER_TABLE1_POINTS[1:]}')
  if not config.data.path and (not isinstance(config.data.synthetic_examples, int)
                               or config.data.synthetic_examples < 1):
    cc.fail('data.path', config.data.path,
            f'names no data (and data.synthetic_examples={config.data.synthetic_examples!r} asks '
            f'for no synthetic stand-in). {GET_THE_DATA}')
  if not config.probe.features:
    cc.fail('probe.features', config.probe.features, 'must name at least one feature')
  # Feature names: known names, or (with a data path) present in the files' first examples.
  head = _check_data_path(config) if config.data.path else []
  known = set(instruct.STORY_FEATURES) if config.data.path else set(synthetic.FEATURE_PROBS)
  known |= set(instruct.features_present(head))
  names = [('deletion.feature', d.feature)]
  if 'F+MM' in d.protocols:
    names.append(('deletion.unrelated', d.unrelated))
  names += [(f'probe.features[{i}]', f) for i, f in enumerate(config.probe.features)]
  for path, name in names:
    if instruct.normalise_feature(name) not in known:
      cc.fail(path, name, f'is not a story feature of the data; valid: {sorted(known)}')
  if 'F+MM' in d.protocols and (instruct.normalise_feature(d.unrelated)
                                == instruct.normalise_feature(d.feature)):
    cc.fail('deletion.unrelated', d.unrelated, 'must differ from deletion.feature')


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


def tokenizer_path(workdir) -> str:
  return str(pathlib.Path(workdir) / 'tokenizer' / 'tokenizer.model')


# ------------------------------------------------------------------ data ----


def load_examples(config, workdir: pathlib.Path) -> list[instruct.Example]:
  """The local Instruct files, or the synthetic stand-in written to workdir/data."""
  if config.data.path:
    try:
      examples = instruct.load_instruct(config.data.path)
    except ValueError as e:
      raise cc.ConfigError(f'config.data.path={config.data.path!r}: {e}') from None
  else:
    path = pathlib.Path(workdir) / 'data' / (
        f'synthetic_{config.data.synthetic_examples}_seed{config.seed}.txt')
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
      n = config.data.synthetic_examples
      if not isinstance(n, int) or n < 1:
        cc.fail('data.synthetic_examples', n, 'must be a positive integer')
      tmp = str(path) + '.tmp'
      synthetic.write_synthetic(tmp, n, seed=config.seed)
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
  d = config.deletion
  present = instruct.features_present(splits.pretrain)
  names = [('deletion.feature', d.feature)] + (
      [('deletion.unrelated', d.unrelated)] if 'F+MM' in d.protocols else []) + [
          (f'probe.features[{i}]', f) for i, f in enumerate(config.probe.features)]
  for path, name in names:
    if instruct.normalise_feature(name) not in present:
      cc.fail(path, name, f'occurs in no pretraining-split story; features present: {present}')
  feature = instruct.normalise_feature(d.feature)
  for split_name, need in (('test', 'the Twist-story loss and the generation prompts'),
                           ('finetune', 'reFT')):
    if not any(ex.has(feature) for ex in getattr(splits, split_name)):
      data_error(config, f'the {split_name} split has no {feature} story, needed by {need}')
  return splits


def data_error(config, problem: str) -> None:
  """ConfigError naming the field that supplies the data."""
  if config.data.path:
    cc.fail('data.path', config.data.path, f'{problem}; use more examples (data.max_examples=0 '
            'uses all)')
  cc.fail('data.synthetic_examples', config.data.synthetic_examples,
          f'{problem}; use more examples')


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
  clf: Optional[classifier_lib.StoryClassifier] = None
  clf_scores: Optional[dict] = None


def train_tokenizer(config, workdir, pretrain) -> tokenizer_lib.Tokenizer:
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


def prepare(config, workdir: pathlib.Path, timing: 'PhaseTimes') -> World:
  """Data, tokenizer and token arrays; every bad input fails here, before any training.

  Generation prompts are the instruction lines of test-split feature stories
  (repeated in order when there are fewer than eval.num_generations).
  """
  t0 = time.time()
  examples = load_examples(config, workdir)
  splits = split_and_check(config, examples)
  feature = instruct.normalise_feature(config.deletion.feature)
  timing.add('data', time.time() - t0)
  logging.info('data: %d examples -> test %d, pretrain %d, finetune %d (%s)', len(examples),
               len(splits.test), len(splits.pretrain), len(splits.finetune),
               config.data.path or 'SYNTHETIC stand-in')

  t0 = time.time()
  tok = train_tokenizer(config, workdir, splits.pretrain)
  context = config.model.max_len
  d = config.deletion
  run_data = {PRESENT: splits.pretrain,
              NOT_IN_PT: protocols.filter_feature(splits.pretrain, feature),
              'reft': protocols.only_feature(splits.finetune, feature)}
  for p in d.protocols:
    run_data[p] = protocols.build_protocol(p, splits.finetune, feature=feature,
                                           unrelated=d.unrelated, fraction=d.rr_fraction,
                                           seed=config.seed)
  streams = {}
  stream_dir = workdir / 'data' / 'streams' / _fingerprint(config, tok)
  for name, exs in run_data.items():
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
  timing.add('tokenizer + token arrays', time.time() - t0)
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


def fit_classifier(config, workdir: pathlib.Path, world: World) -> None:
  """The Twist classifier (saved, reused) and its held-out accuracy on the test split."""
  path = pathlib.Path(workdir) / 'classifier' / 'classifier.npz'
  train_ex = world.splits.pretrain[:config.classifier.n_train or None]
  if path.exists():
    clf = classifier_lib.StoryClassifier.load(str(path))
  else:
    clf = classifier_lib.train_classifier([ex.story for ex in train_ex],
                                          [ex.has(world.feature) for ex in train_ex],
                                          seed=config.seed, feature=world.feature)
    path.parent.mkdir(parents=True, exist_ok=True)
    clf.save(str(path))
  test_ex = world.splits.test[:config.classifier.n_test or None]
  y = np.array([ex.has(world.feature) for ex in test_ex])
  pred = clf.predict([ex.story for ex in test_ex])
  recalls = [float(np.mean(pred[y == c] == c)) for c in (False, True) if np.any(y == c)]
  world.clf = clf
  world.clf_scores = dict(
      accuracy=100 * float(np.mean(pred == y)), balanced_accuracy=100 * float(np.mean(recalls)),
      majority_baseline=100 * float(max(y.mean(), 1 - y.mean())), n_train=len(train_ex),
      n_test=len(test_ex), paper_accuracy=PAPER_CLASSIFIER_ACCURACY)


# ------------------------------------------------------------ evaluation ----


@functools.lru_cache(maxsize=None)
def _story_nll_fn(cfg: model_lib.TransformerConfig):
  """jit: (params, inputs, targets, mask) -> (sum of masked nll, sum of mask)."""
  def nll(params, inputs_BxT, targets_BxT, mask_BxT):
    # Right-padded rows: the causal mask hides the trailing pads; positions are exact.
    logits_BxTxV, _ = model_lib.Transformer(cfg).apply({'params': params}, inputs_BxT)
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32))
    nll_BxT = -jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    return (nll_BxT * mask_BxT).sum(), mask_BxT.sum()
  return jax.jit(nll)


class Evaluator:
  """The Twist-story loss and the generation score of a model's params."""

  def __init__(self, config, world: World):
    self.config, self.world = config, world
    self.cfg = model_config(config)

  def story_loss(self, params) -> float:
    """Mean nll per story token of the test-split feature stories (instructions given)."""
    a, B = self.world.loss_arrays, self.config.eval.batch_size
    fn = _story_nll_fn(self.cfg)
    total, count = 0.0, 0.0
    for i in range(0, len(a.inputs_NxT), B):
      chunk = [x[i:i + B] for x in (a.inputs_NxT, a.targets_NxT, a.mask_NxT)]
      pad = B - len(chunk[0])
      if pad:  # One shape for every chunk: one compile.
        chunk = [np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) for x in chunk]
      s, n = fn(params, *chunk)
      total, count = total + float(s), count + float(n)
    return total / count

  def generations(self, params, point: int) -> list[str]:
    """Stories sampled after the prompts; the rng depends on the point only, not the model."""
    p, e = self.world.prompts, self.config.eval
    rng = jax.random.fold_in(jax.random.key(self.config.seed), 7000 + point)
    bos = self.world.tok.bos_id
    out_BxN = np.asarray(sampling.generate(self.cfg, params, p.tokens_NxP, p.mask_NxP,
                                           e.max_new_tokens, rng, temperature=e.temperature,
                                           eos_id=bos))
    texts = []
    for row in out_BxN:
      stop = np.flatnonzero(row == bos)
      texts.append(self.world.tok.decode(row[:stop[0]] if stop.size else row).strip())
    return texts

  def twist_fraction(self, params, point: int, save_as: Optional[pathlib.Path] = None) -> float:
    """% of generations the classifier calls the feature (the paper's generation score)."""
    texts = self.generations(params, point)
    pred = self.world.clf.predict(texts)
    if save_as is not None:
      save_as.parent.mkdir(parents=True, exist_ok=True)
      save_as.write_text('\n\n'.join(f'[{"TWIST" if y else "no twist"}] {t}'
                                     for y, t in zip(pred, texts)))
    return 100.0 * float(np.mean(pred))


class RunLog:
  """Evaluations of one run, {metric: {step: value}}, persisted after every record."""

  def __init__(self, workdir: pathlib.Path, name: str):
    self.path = pathlib.Path(workdir) / 'results' / f'{name}.json'
    self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

  def get(self, metric: str, step: int) -> Optional[float]:
    return self.data.get(metric, {}).get(str(step))

  def series(self, metric: str, steps: Sequence[int]) -> list[float]:
    return [float('nan') if self.get(metric, s) is None else self.get(metric, s) for s in steps]

  def record(self, step: int, values: dict) -> None:
    for k, v in values.items():
      self.data.setdefault(k, {})[str(step)] = float(v)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = self.path.with_suffix('.tmp')
    tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
    os.replace(tmp, self.path)


class PhaseTimes:
  """Seconds per phase: in this invocation, and in the one that first completed it.

  A rerun restores finished phases in seconds; the report keeps the time the
  work took (results/timing.json), beside this invocation's.
  """

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / 'results' / 'timing.json'
    self.first = json.loads(self.path.read_text()) if self.path.exists() else {}
    self.rows = []

  def add(self, phase: str, seconds: float) -> None:
    first = self.first.setdefault(phase, round(seconds, 1))
    self.rows.append({'phase': phase, 'seconds': first, 'this invocation': round(seconds, 1)})
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.path.write_text(json.dumps(self.first, indent=1))

  def add_total(self) -> None:
    self.rows.append({'phase': 'total', 'seconds': round(sum(r['seconds'] for r in self.rows), 1),
                      'this invocation': round(sum(r['this invocation'] for r in self.rows), 1)})

  def note(self) -> str:
    return ('seconds: the invocation that completed the phase (a phase resumed after a kill '
            'counts only its last part); this invocation: restored phases take ~0.')


class PrefixedWriter:
  """A MetricWriter view that puts every scalar under `prefix/` (one TB tag space per run)."""

  def __init__(self, writer: metrics.MetricWriter, prefix: str):
    self.writer, self.prefix = writer, prefix

  def write_scalars(self, step: int, scalars) -> None:
    self.writer.write_scalars(step, {f'{self.prefix}/{k}': v for k, v in scalars.items()})

  def flush(self) -> None:
    self.writer.flush()


# -------------------------------------------------------------- training ----


@functools.lru_cache(maxsize=None)
def lm_loss_fn(cfg: model_lib.TransformerConfig) -> Callable:
  """Next-token loss on every position of a [B, T + 1] window (one object per cfg: one compile)."""
  def loss_fn(params, windows_BxT1):
    logits_BxTxV, _ = model_lib.Transformer(cfg).apply({'params': params}, windows_BxT1[:, :-1])
    loss, m = losses.weighted_cross_entropy(logits_BxTxV, windows_BxT1[:, 1:])
    return loss, {'accuracy': m['accuracy']}
  return loss_fn


@functools.lru_cache(maxsize=None)
def finetune_tx(weight_decay: float):
  """Constant-lr AdamW shared by every deletion and reFT run (the lr lives in its state)."""
  return optim.make_optimizer(dict(name='adamw', lr=1.0, b1=0.9, b2=0.95,
                                   weight_decay=weight_decay, schedule='constant',
                                   grad_clip_norm=1.0), 1)


def pretrain_tx(config):
  p = config.pretrain
  return optim.make_optimizer(dict(name='adamw', lr=p.lr, b1=0.9, b2=0.95,
                                   weight_decay=p.weight_decay, schedule='warmup_cosine',
                                   warmup_steps=p.warmup_steps, min_lr_ratio=p.min_lr_ratio,
                                   grad_clip_norm=1.0), p.steps)


def host(params):
  """A host copy: later states are built from fresh device copies, so donation never bites."""
  return jax.tree.map(np.asarray, jax.device_get(params))


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


@dataclasses.dataclass
class Phase:
  """One training run of the study."""
  name: str
  data: str  # Key of World.streams.
  init: dict  # Host params to start from.
  tx: object
  lr: Optional[float]  # Peak lr set into the state (None: tx's own).
  steps: int
  batch_size: int
  eval_steps: tuple  # Where the Twist-story loss is measured.
  score_steps: tuple  # Where the generation score is measured.
  save_every: int
  log_every: int
  salt: int  # Seeds the batch order.


def run_phase(config, world: World, evaluator: Evaluator, phase: Phase, workdir, writer,
              mesh, step0: Optional[dict] = None):
  """Trains one run data-parallel (resuming), recording evaluations; returns (host params, log).

  step0: metrics of the starting model, recorded at step 0 (not recomputed).
  """
  cfg = model_config(config)
  log = RunLog(workdir, phase.name)
  if step0:
    new = {k: v for k, v in step0.items() if v is not None and log.get(k, 0) is None}
    if new:
      log.record(0, new)
      writer.write_scalars(0, {f'{phase.name}/eval/{k}': v for k, v in new.items()})
  windows = lm_windows(world.streams[phase.data], world.tok.bos_id, config.model.max_len,
                       phase.batch_size, config.seed * 1000 + phase.salt,
                       config.data.align_windows)
  state = train.create_state(jax.tree.map(jnp.array, phase.init), phase.tx)
  if phase.lr is not None:
    state = state.replace(opt_state=optim.set_learning_rate(state.opt_state, phase.lr))
  gen_dir = pathlib.Path(workdir) / 'generations'

  def evaluate(params, step):
    out = {}
    if step in phase.eval_steps:
      out['twist_loss'] = evaluator.story_loss(params)
    if step in phase.score_steps:
      out['twist_fraction'] = evaluator.twist_fraction(
          params, step, save_as=gen_dir / f'{phase.name}_{step}.txt')
    log.record(step, out)
    return out

  meta = checkpoint.make_meta(f'tinystories/{phase.name}', cfg, phase.init,
                              lr=phase.lr, steps=phase.steps)
  with checkpoint.Checkpointer(pathlib.Path(workdir) / 'checkpoints' / phase.name, meta=meta,
                               save_every=phase.save_every, max_to_keep=1) as ckpt:
    logging.info('%s: %d steps on %s (batch %d)', phase.name, phase.steps, phase.data,
                 phase.batch_size)
    state = train.train_loop(
        state=state, tx=phase.tx, loss_fn=lm_loss_fn(cfg), batch_fn=windows.batch,
        total_steps=phase.steps, workdir=str(workdir), writer=PrefixedWriter(writer, phase.name),
        checkpointer=ckpt, log_every=phase.log_every,
        evaluators={'eval': (tuple(sorted(set(phase.eval_steps) | set(phase.score_steps))),
                             evaluate)},
        mesh=mesh)
  params = host(state.params)
  # Resumed after the end with results/ lost: the final evaluations once more.
  final = phase.steps
  missing = [k for k, steps in (('twist_loss', phase.eval_steps),
                                ('twist_fraction', phase.score_steps))
             if final in steps and log.get(k, final) is None]
  if missing:
    evaluate(params, final)
  return params, log


# ---------------------------------------------------------------- probes ----


def probe_accuracies(config, world: World, models: dict, workdir) -> dict:
  """{model: {feature: [acc % per site B0..BL]}}: every model x site x feature in ONE fit."""
  path = pathlib.Path(workdir) / 'results' / 'probes.json'
  if path.exists():
    saved = json.loads(path.read_text())
    if list(saved) == list(models):
      return saved
  cfg = model_config(config)
  p = config.probe
  collect = lambda params, a, name: probing.collect_features(
      cfg, params, a.tokens_NxT, positions=a.weights_NxT, pad_mask_NxT=a.mask_NxT,
      batch_size=p.feature_batch_size, set_name=name)
  train_f = np.concatenate([collect(params, world.probe_train, f'probe train ({name})')
                            for name, params in models.items()])
  test_f = np.concatenate([collect(params, world.probe_test, f'probe test ({name})')
                           for name, params in models.items()])
  probe_cfg = probing.ProbeConfig(method='adamw', steps=p.steps, lr=p.lr, boundaries=(),
                                  batch_size=p.batch_size, seed=config.seed)
  acc_SxF = probing.fit_and_score(
      train_f, world.probe_train.labels_NxF.T.astype(np.int32), test_f,
      world.probe_test.labels_NxF.T.astype(np.int32), n_classes=2, cfg=probe_cfg)
  n_sites = cfg.n_layers + 1
  acc_MxSxF = acc_SxF.reshape(len(models), n_sites, -1)
  out = {m: {f: [float(a) for a in acc_MxSxF[i, :, j]]
             for j, f in enumerate(world.probe_train.feature_names)}
         for i, m in enumerate(models)}
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out, indent=1))
  return out


# ---------------------------------------------------------------- report ----


def table1_rows(config, logs: dict) -> list[dict]:
  """Table 1's layout: twist % at reFT points 0 and reft.score_steps, ours beside the paper."""
  points = (0,) + tuple(config.reft.score_steps)
  rows = []
  entries = [(row_label(p, name, lr), deletion_name(p, lr), (p, name))
             for p, lr, name in deletion_runs(config)] + [('Not in PT', NOT_IN_PT, NOT_IN_PT)]
  for label, model, key in entries:
    ours = logs['reft_' + model].series('twist_fraction', points)
    paper = PAPER_TABLE1.get(key)
    row = {'deletion type': label, 'model': model}
    for j, (s, ps) in enumerate(zip(points, PAPER_TABLE1_POINTS)):
      row[f'ours @{s}'] = round(ours[j], 1)
      row[f'paper @{ps}'] = '' if paper is None else paper[j]
    rows.append(row)
  return rows


def table1_markdown(config, rows) -> str:
  points = (0,) + tuple(config.reft.score_steps)
  cells = []
  for r in rows:
    cell = {'Deletion type': r['deletion type']}
    for s, ps in zip(points, PAPER_TABLE1_POINTS):
      cell[f'it {s} (paper it {ps})'] = f"{r[f'ours @{s}']:.0f} ({r[f'paper @{ps}']})"
    cells.append(cell)
  return tables.markdown_table(cells)


def _mean_over_blocks(accs: Sequence[float]) -> float:
  """Mean over B1..BL (B0, the embeddings, cannot carry story-level information)."""
  return float(np.mean(accs[1:]))


def claims(config, logs: dict, probes: dict, clf_scores: dict) -> list[dict]:
  """The paper's TinyStories claims as checks; thresholds fixed in this module before any run."""
  runs = deletion_runs(config)
  names = {deletion_name(p, lr): row_label(p, n, lr) for p, lr, n in runs}
  d_end, r_end = config.deletion.steps, config.reft.steps
  first = config.reft.score_steps[0]
  present_loss = logs[PRESENT].get('twist_loss', config.pretrain.steps)
  present_frac = logs[PRESENT].get('twist_fraction', config.pretrain.steps)
  out = []

  def add(claim, pairs, test, fmt, paper=''):
    pairs = [(k, v) for k, v in pairs if v is not None and not np.any(np.isnan(v))]
    verdict = 'not measured'
    if pairs:
      verdict = 'holds' if all(test(v) for _, v in pairs) else 'does not hold'
    out.append(dict(claim=claim, measured='; '.join(f'{names.get(k, k)}: {fmt(v)}'
                                                    for k, v in pairs),
                    verdict=verdict, paper=paper))

  add('classifier: held-out accuracy >= '
      f'{CLASSIFIER_MIN_ACCURACY:g}% (paper: {PAPER_CLASSIFIER_ACCURACY:g}%)',
      [('classifier', clf_scores['accuracy'])], lambda v: v >= CLASSIFIER_MIN_ACCURACY,
      lambda v: f'{v:.1f}%')
  add(f'deletion raises the Twist-story loss above Present\'s ({present_loss:.3f}) '
      '(Fig. 31)', [(deletion_name(p, lr), logs[deletion_name(p, lr)].get('twist_loss', d_end))
                    for p, lr, _ in runs], lambda v: v > present_loss, lambda v: f'{v:.3f}')
  lrs = sorted(config.deletion.lrs, reverse=True)
  if len(lrs) > 1:
    pairs = []
    for p in config.deletion.protocols:
      hi = logs[deletion_name(p, lrs[0])].get('twist_loss', d_end)
      lo = logs[deletion_name(p, lrs[-1])].get('twist_loss', d_end)
      pairs.append((p, None if hi is None or lo is None else (hi, lo)))
    add(f'the larger deletion lr ({lrs[0]:g}) raises the Twist-story loss more than the '
        f'smaller ({lrs[-1]:g}) (Fig. 31)', pairs, lambda v: v[0] > v[1],
        lambda v: f'{v[0]:.3f} vs {v[1]:.3f}')
  add(f'deletion lowers the twist fraction below Present\'s ({present_frac:.0f}%) (Fig. 32)',
      [(deletion_name(p, lr), logs[deletion_name(p, lr)].get('twist_fraction', d_end))
       for p, lr, _ in runs], lambda v: v < present_frac, lambda v: f'{v:.0f}%')
  nip = logs['reft_' + NOT_IN_PT].get('twist_fraction', first)
  paper_ok = all(PAPER_TABLE1[k][1] > PAPER_TABLE1[NOT_IN_PT][1] for k in PAPER_TABLE1
                 if k != NOT_IN_PT)
  add(f'reFT recovers the twist fraction faster than Not-in-PT: at reFT iteration {first} every '
      f'deleted model is above Not-in-PT ({nip if nip is None else round(nip)}%) (Table 1)',
      [(deletion_name(p, lr), logs['reft_' + deletion_name(p, lr)].get('twist_fraction', first))
       for p, lr, _ in runs], lambda v: nip is not None and v > nip, lambda v: f'{v:.0f}%',
      paper=f'paper Table 1 at it 30: {"holds" if paper_ok else "does not hold"}')
  nip_loss = logs['reft_' + NOT_IN_PT].get('twist_loss', r_end)
  add('after reFT every deleted model has a lower Twist-story loss than Not-in-PT '
      f'({nip_loss if nip_loss is None else round(nip_loss, 3)}) (Figs 11 right, 33)',
      [(deletion_name(p, lr), logs['reft_' + deletion_name(p, lr)].get('twist_loss', r_end))
       for p, lr, _ in runs], lambda v: nip_loss is not None and v < nip_loss,
      lambda v: f'{v:.3f}')
  if probes:
    feature = instruct.normalise_feature(config.deletion.feature)
    present = probes[PRESENT]
    small = config.deletion.lr_names[-1]
    gap = lambda m, f: _mean_over_blocks(present[f]) - _mean_over_blocks(probes[m][f])
    add(f'probes: at {small} no protocol removes {feature} information (Present minus deleted, '
        f'mean over B1..B{config.model.n_layers}, <= {PROBE_TOLERANCE:g} points) (Fig. 11 left)',
        [(deletion_name(p, lr), gap(deletion_name(p, lr), feature))
         for p, lr, n in runs if n == small], lambda v: v <= PROBE_TOLERANCE,
        lambda v: f'{v:+.1f}')
    add('probes: the same at every deletion lr (paper: "the same trend, less strongly")',
        [(deletion_name(p, lr), gap(deletion_name(p, lr), feature)) for p, lr, _ in runs],
        lambda v: v <= PROBE_TOLERANCE, lambda v: f'{v:+.1f}')
    others = [f for f in present if f != feature]
    if others:
      add(f'probes: other features ({", ".join(others)}) differ negligibly from Present '
          f'(|mean gap| <= {PROBE_TOLERANCE:g} points, every model) (Figs 36-38)',
          [(deletion_name(p, lr), max(abs(gap(deletion_name(p, lr), f)) for f in others))
           for p, lr, _ in runs], lambda v: v <= PROBE_TOLERANCE, lambda v: f'max {v:.1f}')
    add(f'probes: Present decodes {feature} at least as well as Not-in-PT (the bounds of '
        'Fig. 11 left)', [(NOT_IN_PT, gap(NOT_IN_PT, feature))], lambda v: v >= 0,
        lambda v: f'Present minus Not-in-PT {v:+.1f}')
  return out


def probe_table(config, probes: dict, world: World) -> str:
  sites = [f'B{l}' for l in range(config.model.n_layers + 1)]
  rows = []
  y = world.probe_test.labels_NxF
  for j, f in enumerate(world.probe_test.feature_names):
    base = 100 * max(y[:, j].mean(), 1 - y[:, j].mean())
    for m, accs in probes.items():
      rows.append({'feature': f, 'model': m, **{s: round(a, 1) for s, a in zip(sites, accs[f])},
                   'mean B1..': round(_mean_over_blocks(accs[f]), 1),
                   'majority baseline': round(base, 1)})
  return tables.markdown_table(rows)


def figures(config, logs: dict, probes: dict, workdir) -> None:
  fig_dir = pathlib.Path(workdir) / 'figures'
  runs = deletion_runs(config)
  label = {deletion_name(p, lr): row_label(p, n, lr) for p, lr, n in runs}
  label[NOT_IN_PT] = 'Not in PT'
  label[PRESENT] = 'Present'
  d_steps = (0,) + tuple(config.deletion.loss_steps)
  plots.save(plots.curves(
      d_steps, {label[m]: logs[m].series('twist_loss', d_steps) for m in label
                if m.startswith('delete_')},
      'deletion iteration', 'loss on Twist stories',
      'Fig. 31: Twist-story loss during deletion'), fig_dir / 'deletion_twist_loss.png')
  r_steps = (0,) + tuple(config.reft.loss_steps)
  models = [m for m in label if m != PRESENT]
  plots.save(plots.curves(
      r_steps, {label[m]: logs['reft_' + m].series('twist_loss', r_steps) for m in models},
      'reFT iteration', 'loss on Twist stories', 'Figs 11 right, 33: reFT Twist-story loss',
      logx=True), fig_dir / 'reft_twist_loss.png')
  s_steps = (0,) + tuple(config.reft.score_steps)
  plots.save(plots.curves(
      s_steps, {label[m]: logs['reft_' + m].series('twist_fraction', s_steps) for m in models},
      'reFT iteration', '% generations with a twist', 'Table 1 / Fig. 34: reFT twist fraction',
      logx=True, ylim=(-3, 103)), fig_dir / 'reft_twist_fraction.png')
  sites = list(range(config.model.n_layers + 1))
  for f in next(iter(probes.values())):
    plots.save(plots.curves(
        sites, {label[m]: probes[m][f] for m in probes}, 'block (B0 = embeddings)',
        f'{f} probe accuracy (%)', f'Figs 11 left, 35-38: {f} probe'),
        fig_dir / f'probe_{f}.png')


# ------------------------------------------------------------------- run ----


def run(config, workdir) -> dict:
  validate(config)
  workdir = tables.make_workdir(workdir)
  check_workdir(config, workdir)
  timing = PhaseTimes(workdir)
  world = prepare(config, workdir, timing)
  t0 = time.time()
  fit_classifier(config, workdir, world)
  timing.add('classifier', time.time() - t0)
  cfg = model_config(config)
  evaluator = Evaluator(config, world)
  mesh = train.data_mesh()
  p, d, r = config.pretrain, config.deletion, config.reft
  logs, finals = {}, {}
  with metrics.MetricWriter(str(workdir)) as writer:
    init = host(model_lib.init_params(cfg, jax.random.key(config.seed)))
    tx = pretrain_tx(config)
    for salt, name in enumerate((PRESENT, NOT_IN_PT)):
      t0 = time.time()
      eval_steps = tuple(range(p.eval_every, p.steps + 1, p.eval_every)) + (p.steps,)
      finals[name], logs[name] = run_phase(config, world, evaluator, Phase(
          name=name, data=name, init=init, tx=tx, lr=None, steps=p.steps,
          batch_size=p.batch_size, eval_steps=eval_steps, score_steps=(p.steps,),
          save_every=p.save_every, log_every=p.log_every, salt=salt), workdir, writer, mesh)
      timing.add(f'pretrain {name}', time.time() - t0)

    ft_tx = finetune_tx(float(p.weight_decay))
    start = {k: logs[PRESENT].get(k, p.steps) for k in ('twist_loss', 'twist_fraction')}
    for i, (protocol, lr, _) in enumerate(deletion_runs(config)):
      t0 = time.time()
      name = deletion_name(protocol, lr)
      finals[name], logs[name] = run_phase(config, world, evaluator, Phase(
          name=name, data=protocol, init=finals[PRESENT], tx=ft_tx, lr=lr, steps=d.steps,
          batch_size=d.batch_size, eval_steps=tuple(d.loss_steps) + (d.steps,),
          score_steps=(d.steps,), save_every=d.save_every, log_every=d.log_every,
          salt=10 + i), workdir, writer, mesh, step0=start)
      timing.add(f'deletion {name}', time.time() - t0)

    reft_models = [deletion_name(pr, lr) for pr, lr, _ in deletion_runs(config)] + [NOT_IN_PT]
    for i, model in enumerate(reft_models):
      t0 = time.time()
      end = p.steps if model == NOT_IN_PT else d.steps
      step0 = {k: logs[model].get(k, end) for k in ('twist_loss', 'twist_fraction')}
      name = 'reft_' + model
      _, logs[name] = run_phase(config, world, evaluator, Phase(
          name=name, data='reft', init=finals[model], tx=ft_tx, lr=r.lr, steps=r.steps,
          batch_size=r.batch_size, eval_steps=tuple(r.loss_steps), score_steps=tuple(r.score_steps),
          save_every=r.save_every, log_every=r.log_every, salt=100 + i), workdir, writer, mesh,
          step0=step0)
      timing.add(f'reFT {model}', time.time() - t0)

    t0 = time.time()
    probe_models = {m: finals[m] for m in [PRESENT, NOT_IN_PT] + reft_models[:-1]}
    probes = probe_accuracies(config, world, probe_models, workdir)
    timing.add('probes', time.time() - t0)

    t0 = time.time()
    rows = table1_rows(config, logs)
    found = claims(config, logs, probes, world.clf_scores)
    summary = {'classifier/accuracy': world.clf_scores['accuracy']}
    for row in rows:
      for s in (0,) + tuple(r.score_steps):
        summary[f'table1/{row["model"]}/it{s}'] = row[f'ours @{s}']
    for m, by_feature in probes.items():
      for f, accs in by_feature.items():
        summary.update({f'probe/{f}/{m}/B{l}': a for l, a in enumerate(accs)})
    writer.write_scalars(0, {k: v for k, v in summary.items() if not np.isnan(v)})
    figures(config, logs, probes, workdir)
  write_outputs(config, workdir, world, logs, rows, found, probes, timing, t0)
  return {'table1': rows, 'claims': found, 'probes': probes, 'classifier': world.clf_scores}


def write_outputs(config, workdir, world, logs, rows, found, probes, timing, t0) -> None:
  tables_dir = pathlib.Path(workdir) / 'tables'
  tables.write_csv(tables_dir / 'table1.csv', rows)
  tables.write_csv(tables_dir / 'claims.csv', found)
  runs = deletion_runs(config)
  d_steps = (0,) + tuple(config.deletion.loss_steps)
  del_rows = [{'run': row_label(p, n, lr),
               **{f'@{s}': f'{v:.3f}' for s, v in zip(
                   d_steps, logs[deletion_name(p, lr)].series('twist_loss', d_steps))}}
              for p, lr, n in runs]
  r_steps = (0,) + tuple(config.reft.loss_steps)
  reft_rows = [{'model': m, **{f'@{s}': f'{v:.3f}' for s, v in zip(
      r_steps, logs['reft_' + m].series('twist_loss', r_steps))}}
               for m in [deletion_name(p, lr) for p, lr, _ in runs] + [NOT_IN_PT]]
  tables.write_csv(tables_dir / 'deletion_twist_loss.csv', del_rows)
  tables.write_csv(tables_dir / 'reft_twist_loss.csv', reft_rows)
  probe_rows = [{'model': m, 'feature': f, **{f'B{l}': a for l, a in enumerate(accs)}}
                for m, by_f in probes.items() for f, accs in by_f.items()]
  tables.write_csv(tables_dir / 'probes.csv', probe_rows)
  clf = world.clf_scores
  tables.write_csv(tables_dir / 'classifier.csv', [clf])
  timing.add('report', time.time() - t0)
  timing.add_total()
  tables.write_csv(tables_dir / 'timing.csv', timing.rows)

  synthetic_data = not config.data.path
  p, m, present = config.pretrain, config.model, logs[PRESENT]
  n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(init_shapes(config)))
  if synthetic_data:
    data = ("the SYNTHETIC stand-in (wrapper_study/tinystories/synthetic.py), NOT the paper's "
            "data: every number below is toy-scale and not comparable to the paper's")
  else:
    data = f'TinyStories-Instruct from {config.data.path}'
  scale = (f'Data: {data} ({len(world.splits.test)} test / {len(world.splits.pretrain)} '
           f'pretrain / {len(world.splits.finetune)} fine-tune examples, {config.data.n_shards} '
           f'shards). Model: {m.n_layers} layers x {m.d_model} ({n_params:,} parameters), context '
           f'{m.max_len}, vocab {m.vocab_size}. Pretraining {p.steps} steps x {p.batch_size} '
           f'sequences (lr {p.lr:g}); deletion {config.deletion.steps} steps x '
           f'{config.deletion.batch_size} (lrs {tuple(config.deletion.lrs)}); reFT '
           f'{config.reft.steps} steps x {config.reft.batch_size} (lr {config.reft.lr:g}); '
           f'{config.eval.num_generations} generations of <= {config.eval.max_new_tokens} tokens '
           'per point. Paper: 91M parameters; pretraining 30K steps x 128 x 1024 tokens; '
           'deletion and reFT 4000 steps x 128 x 1024 at 1e-4, 1e-5 and 1e-5.')
  fmt = lambda v, spec: 'n/a' if v is None else format(v, spec)
  ref = (f'Present after pretraining: Twist-story loss '
         f'{fmt(present.get("twist_loss", p.steps), ".3f")}, twist fraction '
         f'{fmt(present.get("twist_fraction", p.steps), ".0f")}% (not in the paper\'s table). '
         f'Not in PT after pretraining: {fmt(logs[NOT_IN_PT].get("twist_loss", p.steps), ".3f")}, '
         f'{fmt(logs[NOT_IN_PT].get("twist_fraction", p.steps), ".0f")}%.')
  points = (0,) + tuple(config.reft.score_steps)
  sections = [
      ('Scale and data', scale),
      ('Claims, checked', tables.markdown_table(found) + '\n\nThresholds fixed in '
       'wrapper_study/experiments/tinystories_study.py before any run.'),
      ('Table 1: % of generations with a twist during reFT (ours, paper in parentheses)',
       table1_markdown(config, rows) + f'\n\nOur reFT iterations {points} stand for the '
       f'paper\'s {PAPER_TABLE1_POINTS} (reFT {config.reft.steps} vs 4000 iterations). '
       f'{config.eval.num_generations} generations per cell (paper ~16). ' + ref),
      ('Twist classifier (scores the generations)',
       f'Held-out accuracy on the test split: {clf["accuracy"]:.1f}% (balanced '
       f'{clf["balanced_accuracy"]:.1f}%, majority baseline {clf["majority_baseline"]:.1f}%; '
       f'{clf["n_train"]} training / {clf["n_test"]} test stories). Paper (GPT-3.5 fine-tuned): '
       f'{PAPER_CLASSIFIER_ACCURACY:g}%.'),
      ('Loss on Twist stories during deletion (Fig. 31; step 0 = Present)',
       tables.markdown_table(del_rows)),
      ('Loss on Twist stories during reFT (Figs 11 right, 33; step 0 = before reFT)',
       tables.markdown_table(reft_rows)),
      (f'Probe accuracy (%) on {len(world.probe_test.labels_NxF)} test stories, '
       f'{len(world.probe_train.labels_NxF)} training stories (Figs 11 left, 35-38)',
       probe_table(config, probes, world) + '\n\nB0 averages token embeddings over the final 10 '
       'story tokens, so a feature whose signature words fall there (on the synthetic data: the '
       'moral and the ending sentences) is decodable at B0 already.'),
      ('Figures', '\n'.join(f'- figures/{f.name}' for f in sorted(
          (pathlib.Path(workdir) / 'figures').glob('*.png')))),
      ('Time (s)', tables.markdown_table(timing.rows) + '\n\n' + timing.note()),
  ]
  title = 'TinyStories study' + (' (TOY SCALE, SYNTHETIC DATA)' if synthetic_data else '')
  tables.write_report(pathlib.Path(workdir) / 'report.md', title, sections)


@functools.lru_cache(maxsize=None)
def _init_shapes(cfg: model_lib.TransformerConfig):
  return jax.eval_shape(lambda: model_lib.init_params(cfg, jax.random.key(0)))


def init_shapes(config):
  return _init_shapes(model_config(config))
