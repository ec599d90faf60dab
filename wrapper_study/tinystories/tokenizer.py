"""SentencePiece BPE tokenizer trained by the project on the texts at hand.

Trainer settings follow the authors' `train_vocab` (BPE, character_coverage
1.0, split_digits, byte_fallback, identity normalisation; the paper's vocab
is 8192), plus three choices of ours:
- remove_extra_whitespaces=False, so decode(encode(text)) == text exactly;
- fixed ids unk=0, bos=1, eos=2, pad=3 (the authors have no pad id; we pad
  prompts and probe inputs);
- one thread and no sentence sampling, so the same texts give the same
  pieces (the .model bytes also record model_prefix, so they differ between
  paths; the vocabulary and every encoding do not).
Newlines are not in the trainer's view (it reads one line per sentence, as the
authors' tiny.txt), so '\\n' is the byte piece <0x0A>.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import sentencepiece as spm

UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3


class Tokenizer:
  """A loaded SentencePiece model."""

  def __init__(self, model_path: str):
    if not os.path.isfile(model_path):
      raise ValueError(f'tokenizer file {model_path!r} does not exist.')
    self.path = model_path
    self._sp = spm.SentencePieceProcessor(model_file=model_path)

  @property
  def vocab_size(self) -> int:
    return self._sp.vocab_size()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def pad_id(self) -> int:
    return self._sp.pad_id()

  def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
    ids = self._sp.encode(text)
    return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode(list(texts))

  def decode(self, ids: Iterable[int]) -> str:
    """Text of ids; bos/eos/pad decode to nothing."""
    return self._sp.decode([int(i) for i in ids])

  def piece(self, token_id: int) -> str:
    return self._sp.id_to_piece(int(token_id))


def train_tokenizer(texts: Iterable[str], vocab_size: int, path_prefix: str,
                    seed: int = 0) -> Tokenizer:
  """Trains BPE on texts (split into lines); writes path_prefix.model/.vocab; loads it."""
  if not isinstance(vocab_size, int) or vocab_size <= PAD_ID + 256:
    raise ValueError(f'tokenizer vocab_size must exceed {PAD_ID + 256} (4 special ids and 256 '
                     f'byte pieces), got {vocab_size!r}; the paper uses 8192.')
  lines = [line for text in texts for line in text.split('\n') if line.strip()]
  if not lines:
    raise ValueError('train_tokenizer got no text.')
  os.makedirs(os.path.dirname(os.path.abspath(path_prefix)), exist_ok=True)
  if hasattr(spm, 'set_random_generator_seed'):
    spm.set_random_generator_seed(seed)
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=path_prefix,
        model_type='bpe',
        vocab_size=vocab_size,
        self_test_sample_size=0,
        character_coverage=1.0,
        num_threads=1,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        byte_fallback=True,
        unk_surface=r' \342\201\207 ',
        normalization_rule_name='identity',
        remove_extra_whitespaces=False,
        unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID,
        max_sentence_length=1 << 16,
        input_sentence_size=0,  # Use every line (no sampling).
        minloglevel=2)
  except RuntimeError as e:  # E.g. "Vocabulary size is too high ... should be <= N".
    raise ValueError(f'tokenizer vocab_size={vocab_size} cannot be trained on these '
                     f'{len(lines)} lines: {e}') from e
  return Tokenizer(path_prefix + '.model')


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int) -> None:
  """ValueError unless the model's embedding has exactly one row per tokenizer piece."""
  if model_vocab_size != tokenizer.vocab_size:
    raise ValueError(f'model.vocab_size={model_vocab_size} but the tokenizer {tokenizer.path!r} '
                     f'has {tokenizer.vocab_size} pieces; set model.vocab_size='
                     f'{tokenizer.vocab_size} (or train the tokenizer with that vocab_size).')
