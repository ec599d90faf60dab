"""Token arrays of the TinyStories world: LM training, Twist-story loss, prompts, probes.

Every example is tokenized in two parts, so the story starts on a token
boundary and the same story tokens appear in every array:
  prefix = BOS + encode(instruction lines + '\\nStory:')
  story  = encode(story)  (its first piece carries the space after 'Story:')
decode(prefix + story) == instruct.format_example(example).

(a) LMWindows: prefix + story of every example, concatenated (BOS separates
    examples, no EOS, as the authors' pretokenize) and cut into [N, T + 1]
    windows starting at multiples of T (llama2.c's random-chunk loader);
    batch(step) draws windows from a seeded per-epoch permutation.
(b) LossArrays: one row per example, right-padded: inputs, targets and a mask
    that is 1 where the target is a story token (the 'loss on Twist stories'
    metric, on only_feature(test, 'Twist')).
(c) PromptArrays: prefix with the feature requested, left-padded, for
    generation (the authors' prompt is everything up to 'Story: ').
(d) ProbeArrays: BOS + story (instructions stripped, as the authors' probe
    data), left-padded, with weights averaging the final N_FINAL story
    positions and per-feature 0/1 labels. The authors left-pad with the tails
    of other stories; we pad with pad_id, which the weights never read.

Left-padded rows go through the model with pad_mask_BxT = mask and
positions_BxT = model.positions_from_pad_mask(mask), so padding changes
nothing (pad_id is a control id that no text encodes to).

Shapes: N examples, T context (model.max_len), P prompt length, F features.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from wrapper_study.tinystories import instruct
from wrapper_study.tinystories.instruct import Example
from wrapper_study.tinystories.tokenizer import Tokenizer

N_FINAL = 10  # Story positions averaged by a probe (paper App. F).


def encode_examples(examples: Sequence[Example],
                    tokenizer: Tokenizer) -> tuple[list[list[int]], list[list[int]]]:
  """(prefix ids incl. BOS, story ids) per example."""
  if not examples:
    raise ValueError('no examples to tokenize.')
  prefixes = [instruct.instruction_prefix(ex) for ex in examples]
  prefix_ids = [[tokenizer.bos_id] + ids for ids in tokenizer.encode_batch(prefixes)]
  story_ids = tokenizer.encode_batch([ex.story for ex in examples])
  return prefix_ids, story_ids


def _length(lengths: Sequence[int], examples: Sequence[Example], length: Optional[int],
            context: int, what: str, extra: int = 0, extra_name: str = '') -> int:
  """The padded length; ValueError naming the field that is too small and the longest example."""
  i = int(np.argmax(lengths))
  longest = f'example {i} ({examples[i].source or "no source"}) has {lengths[i]} tokens'
  if length is not None and length < lengths[i]:
    raise ValueError(f'{what}: length={length} is too short: {longest}.')
  size = lengths[i] if length is None else length
  if size + extra > context:
    plus = f' + {extra_name}={extra}' if extra_name else ''
    raise ValueError(f'{what}: {size} positions{plus} exceed context={context} (model.max_len); '
                     f'{longest}. Raise model.max_len, use a larger tokenizer vocab_size, or drop '
                     'the longest examples.')
  return size


def within_context(examples: Sequence[Example], tokenizer: Tokenizer,
                   context: int) -> list[Example]:
  """The examples whose instructions + story fit a story_loss_arrays row of `context` positions."""
  prefix_ids, story_ids = encode_examples(examples, tokenizer)
  return [ex for ex, p, s in zip(examples, prefix_ids, story_ids) if len(p) + len(s) - 1 <= context]


# ----------------------------------------------------------------- (a) LM stream


def lm_stream(examples: Sequence[Example], tokenizer: Tokenizer) -> np.ndarray:
  """[S] int32: BOS + instructions + story of each example, concatenated."""
  prefix_ids, story_ids = encode_examples(examples, tokenizer)
  return np.array([t for p, s in zip(prefix_ids, story_ids) for t in p + s], np.int32)


class LMWindows:
  """[N, T + 1] windows of a token stream and a seeded random-access batch sampler."""

  def __init__(self, stream: np.ndarray, context: int, batch_size: int, seed: int):
    if not isinstance(context, int) or context < 1:
      raise ValueError(f'context must be a positive integer (model.max_len), got {context!r}.')
    if not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f'batch_size must be a positive integer, got {batch_size!r}.')
    n_windows = (len(stream) - 1) // context
    if n_windows < 1:
      raise ValueError(f'the token stream has {len(stream)} tokens, fewer than context + 1 = '
                       f'{context + 1}; use more examples or a smaller context (model.max_len).')
    # Window i is stream[i*T : i*T + T + 1]: consecutive windows share one token.
    ix_NxT1 = np.arange(n_windows)[:, None] * context + np.arange(context + 1)
    self.windows_NxT1 = stream[ix_NxT1]
    self.context, self.batch_size, self.seed = context, batch_size, seed
    self._perms: dict[int, np.ndarray] = {}

  @property
  def n_windows(self) -> int:
    return self.windows_NxT1.shape[0]

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      if len(self._perms) > 2:  # Steps move forward; keep memory flat.
        self._perms.pop(min(self._perms))
      self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
    return self._perms[epoch]

  def batch(self, step: int) -> np.ndarray:
    """[B, T + 1] int32 windows of training step `step` (inputs [:, :-1], targets [:, 1:]).

    Every window is drawn once per epoch, in the order of a permutation seeded
    by (seed, epoch); a function of step alone, so a resumed run continues.
    """
    sample = step * self.batch_size + np.arange(self.batch_size)
    epoch, pos = np.divmod(sample, self.n_windows)
    rows = np.array([self._perm(int(e))[p] for e, p in zip(epoch, pos)])
    return self.windows_NxT1[rows]


def lm_windows(examples: Sequence[Example], tokenizer: Tokenizer, context: int,
               batch_size: int, seed: int) -> LMWindows:
  return LMWindows(lm_stream(examples, tokenizer), context, batch_size, seed)


# ----------------------------------------------------------- (b) story-loss rows


@dataclasses.dataclass(frozen=True)
class LossArrays:
  inputs_NxT: np.ndarray  # int32, right-padded with pad_id.
  targets_NxT: np.ndarray  # int32: inputs shifted by one.
  mask_NxT: np.ndarray  # float32: 1 where the target is a story token.


def story_loss_arrays(examples: Sequence[Example], tokenizer: Tokenizer, context: int,
                      length: Optional[int] = None) -> LossArrays:
  """Full examples (instructions + story), loss mask over the story tokens.

  length: padded T; None means the longest row. For the 'loss on Twist
  stories' metric pass only_feature(splits.test, 'Twist').
  """
  prefix_ids, story_ids = encode_examples(examples, tokenizer)
  seqs = [p + s for p, s in zip(prefix_ids, story_ids)]
  t = _length([len(s) - 1 for s in seqs], examples, length, context, 'story_loss_arrays')
  n = len(seqs)
  inputs = np.full((n, t), tokenizer.pad_id, np.int32)
  targets = np.full((n, t), tokenizer.pad_id, np.int32)
  mask = np.zeros((n, t), np.float32)
  for i, (seq, prefix) in enumerate(zip(seqs, prefix_ids)):
    inputs[i, :len(seq) - 1] = seq[:-1]
    targets[i, :len(seq) - 1] = seq[1:]
    # Target j is seq[j + 1]; story tokens sit at seq[len(prefix):].
    mask[i, len(prefix) - 1:len(seq) - 1] = 1.0
  return LossArrays(inputs, targets, mask)


# ------------------------------------------------------------------- (c) prompts


@dataclasses.dataclass(frozen=True)
class PromptArrays:
  tokens_NxP: np.ndarray  # int32, left-padded with pad_id; ends with 'Story:'.
  mask_NxP: np.ndarray  # bool: True on prompt tokens.
  prefixes: list[str]  # The prompt texts (without BOS).


def prompt_arrays(examples: Sequence[Example], tokenizer: Tokenizer, context: int,
                  request: Optional[str] = 'Twist', max_new_tokens: int = 0,
                  length: Optional[int] = None) -> PromptArrays:
  """BOS + instruction lines + 'Story:' with `request` added to Features where missing.

  max_new_tokens: tokens to be generated after the prompt; prompt +
  max_new_tokens must fit the context (the paper generates 350).
  """
  if request is not None:
    name = instruct.check_feature(request, examples)
    examples = [ex if name in ex.features else instruct.with_features(ex, ex.features + (name,))
                for ex in examples]
  prefixes = [instruct.instruction_prefix(ex) for ex in examples]
  prompt_ids = [[tokenizer.bos_id] + ids for ids in tokenizer.encode_batch(prefixes)]
  p = _length([len(ids) for ids in prompt_ids], examples, length, context, 'prompt_arrays',
              extra=max_new_tokens, extra_name='max_new_tokens')
  tokens = np.full((len(prompt_ids), p), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(prompt_ids), p), bool)
  for i, ids in enumerate(prompt_ids):
    tokens[i, p - len(ids):] = ids
    mask[i, p - len(ids):] = True
  return PromptArrays(tokens, mask, prefixes)


# -------------------------------------------------------------------- (d) probes


@dataclasses.dataclass(frozen=True)
class ProbeArrays:
  tokens_NxT: np.ndarray  # int32: BOS + story, left-padded with pad_id.
  mask_NxT: np.ndarray  # bool: True on BOS and story tokens.
  weights_NxT: np.ndarray  # float32: 1/k on the final k = min(N_FINAL, story length) story tokens.
  labels_NxF: np.ndarray  # float32 0/1: feature f is in the example's Features.
  feature_names: tuple[str, ...]  # F, the label columns.


def probe_arrays(examples: Sequence[Example], tokenizer: Tokenizer, context: int,
                 features: Sequence[str] = instruct.STORY_FEATURES, n_final: int = N_FINAL,
                 length: Optional[int] = None) -> ProbeArrays:
  """Story-only inputs for the per-feature linear probes (instructions stripped)."""
  if not isinstance(n_final, int) or n_final < 1:
    raise ValueError(f'n_final must be a positive integer, got {n_final!r}.')
  names = tuple(instruct.check_feature(f, examples) for f in features)
  seqs = [[tokenizer.bos_id] + ids for ids in tokenizer.encode_batch([ex.story for ex in examples])]
  t = _length([len(s) for s in seqs], examples, length, context, 'probe_arrays')
  tokens = np.full((len(seqs), t), tokenizer.pad_id, np.int32)
  weights = np.zeros((len(seqs), t), np.float32)
  for i, seq in enumerate(seqs):
    tokens[i, t - len(seq):] = seq
    k = min(n_final, len(seq) - 1)  # Story tokens only, never BOS.
    if k < 1:
      raise ValueError(f'probe_arrays: example {i} ({examples[i].source or "no source"}) has an '
                       'empty story.')
    weights[i, t - k:] = 1.0 / k
  labels = np.array([[name in ex.features for name in names] for ex in examples], np.float32)
  return ProbeArrays(tokens, tokens != tokenizer.pad_id, weights, labels, names)
