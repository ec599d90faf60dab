"""Shard splits and the deletion protocols of the TinyStories world (paper Sec. 5.2, App. F).

Splits follow the authors' PretokDataset with split_shards_pretrain=True:
shard 0 is the held-out test set; of shards 1..n-1, the first
int(0.8 * (n - 1)) are pretraining and the rest fine-tuning (and reFT). The
authors' shards are the 50 files of TinyStories_all_data; for one file (or a
list of examples) shard k is the k-th of n_shards contiguous, near-equal
slices (np.array_split bounds), in file order.

Protocols (paper name / authors' dataset name):
  F     filter-Twist                   drop every story whose Features has Twist.
  F+MM  filter-mix-Twist-Foreshadowing F, then Foreshadowing -> Twist in Features.
  F+RR  filter-adv-Twist ("F+AT")      F, then add Twist to the Features of a
                                       `fraction` of the remaining stories
                                       (features=Twist:1.0 in the code: all).
reFT data is `only_feature` (specialise-Twist); the Not-in-PT control
pretrains on `filter_feature` of the pretraining split.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Optional, Sequence

import numpy as np

from wrapper_study.tinystories import instruct
from wrapper_study.tinystories.instruct import Example

N_SHARDS = 50  # TinyStories_all_data has data00..data49.json.
PRETRAIN_SHARD_FRACTION = 0.8  # The code's PRETRAIN_SHARD_PERCENTAGE.
PROTOCOLS = ('F', 'F+MM', 'F+RR')


@dataclasses.dataclass(frozen=True)
class Splits:
  test: list[Example]  # Shard 0.
  pretrain: list[Example]  # First 80% of shards 1..n-1.
  finetune: list[Example]  # Last 20%: fine-tuning and reFT.
  shards: dict  # Split name -> tuple of shard ids.


def shard_bounds(n_examples: int, n_shards: int) -> np.ndarray:
  """[n_shards + 1] start offsets of contiguous near-equal shards (np.array_split's)."""
  return np.array([k * (n_examples // n_shards) + min(k, n_examples % n_shards)
                   for k in range(n_shards + 1)])


def split(examples: Sequence[Example], n_shards: int = N_SHARDS,
          seed: Optional[int] = None) -> Splits:
  """test / pretrain / finetune as the authors' split_shards_pretrain=True.

  seed=None keeps file order (the authors' shards are fixed files); an int
  first permutes the examples with that seed.
  """
  if not isinstance(n_shards, int) or n_shards < 3:
    raise ValueError(f'n_shards must be an integer >= 3 (one test shard, then at least one '
                     f'pretraining and one fine-tuning shard), got {n_shards!r}.')
  if len(examples) < n_shards:
    raise ValueError(f'n_shards={n_shards} exceeds the {len(examples)} examples; '
                     'every shard needs at least one.')
  examples = list(examples)
  if seed is not None:
    examples = [examples[i] for i in np.random.default_rng(seed).permutation(len(examples))]
  bounds = shard_bounds(len(examples), n_shards)
  n_pretrain = int((n_shards - 1) * PRETRAIN_SHARD_FRACTION)
  shards = {'test': (0,), 'pretrain': tuple(range(1, 1 + n_pretrain)),
            'finetune': tuple(range(1 + n_pretrain, n_shards))}
  take = lambda ids: examples[bounds[ids[0]]:bounds[ids[-1] + 1]]  # Contiguous shard ids.
  return Splits(test=take(shards['test']), pretrain=take(shards['pretrain']),
                finetune=take(shards['finetune']), shards=shards)


def filter_feature(examples: Sequence[Example], feature: str = 'Twist') -> list[Example]:
  """F: every example whose Features does not include feature."""
  name = instruct.check_feature(feature, examples)
  return [ex for ex in examples if name not in ex.features]


def only_feature(examples: Sequence[Example], feature: str = 'Twist') -> list[Example]:
  """reFT data: the examples whose Features include feature."""
  name = instruct.check_feature(feature, examples)
  return [ex for ex in examples if name in ex.features]


def mix_match(examples: Sequence[Example], remove: str = 'Twist',
              replace_with: str = 'Foreshadowing') -> list[Example]:
  """F+MM: filter `remove`, then rename `replace_with` to `remove` in Features, in place."""
  remove_name = instruct.check_feature(remove, examples)
  other = instruct.check_feature(replace_with, examples)
  if other == remove_name:
    raise ValueError(f'mix_match: replace_with={replace_with!r} must differ from remove={remove!r}.')
  swapped = lambda fs: tuple(remove_name if f == other else f for f in fs)
  return [dataclasses.replace(ex, features=swapped(ex.features))
          for ex in filter_feature(examples, remove_name)]


def random_relabel(examples: Sequence[Example], feature: str = 'Twist', fraction: float = 1.0,
                   seed: int = 0) -> list[Example]:
  """F+RR: filter feature, then append it to the Features of each story w.p. fraction.

  As the code's make_adversarial_fn: a stateful draw per example (here a
  random.Random(seed)), the feature appended last; a Features line is added
  first to examples that had none.
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f'random_relabel fraction must be in [0, 1], got {fraction!r}.')
  name = instruct.check_feature(feature, examples)
  rng = random.Random(seed)
  out = []
  for ex in filter_feature(examples, name):
    if rng.random() < fraction:
      ex = instruct.with_features(ex, ex.features + (name,))
    out.append(ex)
  return out


def build_protocol(name: str, examples: Sequence[Example], feature: str = 'Twist',
                   unrelated: str = 'Foreshadowing', fraction: float = 1.0,
                   seed: int = 0) -> list[Example]:
  """Fine-tuning data of protocol `name` (one of PROTOCOLS) from examples."""
  if name == 'F':
    return filter_feature(examples, feature)
  if name == 'F+MM':
    return mix_match(examples, remove=feature, replace_with=unrelated)
  if name == 'F+RR':
    return random_relabel(examples, feature=feature, fraction=fraction, seed=seed)
  raise ValueError(f'protocol {name!r} is unknown; valid: {list(PROTOCOLS)} (the authors\' '
                   '"F+AT" is F+RR here).')
