"""A small generated stand-in for TinyStories-Instruct, in the same text format.

NOT THE PAPER'S DATA. Numbers measured on it (losses, generation scores, probe
accuracies) are not the paper's numbers; it exists so the TinyStories pipeline
can be run and tested end to end on a CPU in minutes, with no download.

Stories are template sentences over a vocabulary of about 200 word forms, 40-80
words long. Each feature is drawn independently with FEATURE_PROBS and has a
textual signature in the story:
  Twist (version 'v2', the default): a reversal of what the story set up, in one
    of four structurally different forms (TWISTS: a hidden identity revealed, an
    object that acts, the sought thing found where it always was, the whole story
    a dream), each built only from words the other stories use too, after an
    opener that non-twist sentences share. Stories without a twist carry a
    near-miss with NEAR_MISS_PROB: a surprising event that reverses nothing
    (NEAR_MISSES), in the same place and with the same openers, so neither a word
    nor a position gives the feature away; only what the sentence does.
    Version 'v1' (kept to reproduce earlier records): one template, 'But then,
    something surprising happened: ...' / 'Suddenly, to their surprise, ...',
    whose words appear nowhere else.
  Foreshadowing: an early hint right after the opening.
  Dialogue: two lines of quoted speech (stories without it have no quotes).
  Conflict: a quarrel over the object.
  BadEnding: a sad last event instead of a happy one.
  MoralValue: a closing 'learned that ...' / 'The lesson ...' sentence.
Instruction lines: Features (always, features in random order), Words (three
words of the story), Summary (one neutral sentence: who, what, where; it
does not describe the features, so Features is the only instruction that
names them) and Random sentence (a body sentence, never a feature sentence,
so a prompt cannot copy a twist); the last three each appear with
LINE_PROB, and the lines come in random order, as in the authors' code.
"""

from __future__ import annotations

import random

from wrapper_study.tinystories import instruct

# Per-story feature probabilities (Twist about 20%, as the brief asks; the
# real data's rates differ).
FEATURE_PROBS = {
    'Twist': 0.2,
    'Foreshadowing': 0.2,
    'Dialogue': 0.4,
    'BadEnding': 0.15,
    'MoralValue': 0.3,
    'Conflict': 0.25,
}
LINE_PROB = 0.8  # Chance that each of Words, Summary, Random sentence is present.
VERSIONS = ('v1', 'v2')
NEAR_MISS_PROB = 0.4  # v2: stories without a twist that have a surprising non-twist event.

GIRLS = ('Lily', 'Mia', 'Sue', 'Anna')
BOYS = ('Tom', 'Ben', 'Max', 'Sam')
PLACES = ('park', 'garden', 'forest', 'beach', 'yard')
OBJECTS = ('ball', 'kite', 'box', 'car', 'cake', 'hat', 'flower', 'book', 'boat', 'doll')
ADJECTIVES = ('big', 'red', 'little', 'shiny', 'soft', 'blue', 'old', 'new')
ANIMALS = ('cat', 'dog', 'bird', 'frog', 'bunny')

OPENINGS = (
    'Once upon a time, a little {kind} named {a} played in the {place} with {b}.',
    'One day, {a} and {b} went to the {place} to play.',
)
FORESHADOWING = (
    '{a} did not know that the {obj} had a secret.',
    'There was something strange about the {adj} {obj}, but nobody saw it.',
    'The sky was getting dark, as if something was about to happen.',
)
BODY = (
    '{a} and {b} played with a {adj} {obj} in the {place}.',
    'They ran and jumped under a big tree.',
    '{a} found a {adj} {obj} near a rock.',
    'The sun was warm and the birds were singing.',
    '{b} liked the {obj} very much.',
    'They looked at the {obj} and smiled.',
    '{a} showed the {obj} to {a_his} mom.',
    'They sat on the grass and ate some bread.',
)
# v2: the words of the twists and near-misses (animal, pocket, woke up, talk, really, dream,
# bed, mask) are everyday story words: these body sentences use them without any surprise.
BODY_V2 = BODY + (
    'A little {animal} watched them from the big tree.',
    '{a} put a {adj} stone in {a_his} pocket.',
    'That morning, {a} woke up early and got out of bed.',
    '{b} liked to talk about the {animal} at the {place}.',
    '{a} told {b} about a funny dream.',
    'The {obj} was really {adj}, and {b} said so.',
    '{b} wore a funny mask and a {adj} hat.',
    '{b} said that {b_he} had been to the {place} before.',
    'They played for a long time, and all of them were happy.',
    '{a} walked along the path with {b}.',
    'The {animal} wagged its tail.',
    '{a} gave the {animal} a funny name.',
    '{a} took off {a_his} {adj} hat.',
)
OPENERS_V2 = ('But then,', 'Suddenly,', 'Then,', 'To their surprise,')
# A twist reverses what the story set up; each form differs in structure, not only in words.
TWISTS = {
    'identity': '{b} took off a mask: {b_he} was really a {animal}!',
    'object': 'the {obj} began to talk, and it told them its name!',
    'found': 'the {obj} they looked for was in {a_his} pocket all along!',
    'dream': '{a} woke up in bed, and it had all been a dream!',
}
# Surprising, but nothing the story set up turns out otherwise.
NEAR_MISSES = (
    'a {animal} ran past them, and they laughed.',
    'it started to rain, so they ran under the big tree.',
    'they found a {adj} stone near the {obj}.',
    '{b} began to sing a funny song about the {animal}.',
)
CONFLICT = (
    'Then {b} wanted the {obj} too, and they started to fight.',
    '{b} took the {obj} away, and {a} got very angry.',
)
DIALOGUE_OPEN = (
    '"Can I play with the {obj}?" asked {b}.',
    '"Look at my {adj} {obj}!" said {a}.',
)
DIALOGUE_REPLY = (
    '"Yes, let us play together," said {a}.',
    '"Wow, it is so {adj}!" said {b}.',
)
TWIST_OPENERS = ('But then, something surprising happened:', 'Suddenly, to their surprise,')
TWIST_EVENTS = (
    'the {obj} began to talk!',
    'the {obj} was really a magic {animal}!',
    '{b} was really a {animal} in disguise!',
)
# Text only a twist sentence holds (v1: its openers), for checks of generated data.
TWIST_SIGNATURES = TWIST_OPENERS + ('took off a mask:', 'it told them its name!',
                                    'pocket all along!', 'had all been a dream!')
HAPPY_ENDINGS = (
    'In the end, they were happy and played until the sun went down.',
    '{a} and {b} went home, tired and happy.',
)
BAD_ENDINGS = (
    'In the end, the {obj} was broken and {a} was very sad.',
    '{a} lost the {obj} and never found it again.',
)
MORALS = (
    '{a} learned that it is good to share.',
    'The lesson is that being kind is important.',
    'They learned to always tell the truth.',
)


def _fill(rng: random.Random, templates, slots: dict) -> str:
  return rng.choice(templates).format(**slots)


def has_twist_sentence(story: str) -> bool:
  """Whether a generated story holds a twist sentence (either version)."""
  return any(mark in story for mark in TWIST_SIGNATURES)


def _surprise(rng: random.Random, slots: dict, twist: bool) -> str:
  """v2: a twist in one of its forms, or a near-miss, after an opener both share."""
  event = rng.choice(list(TWISTS.values()) if twist else NEAR_MISSES).format(**slots)
  return f'{rng.choice(OPENERS_V2)} {event}'


def generate_example(rng: random.Random, version: str = 'v2') -> instruct.Example:
  """One story with independently drawn features and its instruction lines."""
  features = [f for f, p in FEATURE_PROBS.items() if rng.random() < p]
  girl = rng.random() < 0.5
  a = rng.choice(GIRLS if girl else BOYS)
  b = rng.choice([n for n in GIRLS + BOYS if n != a])
  slots = dict(a=a, b=b, kind='girl' if girl else 'boy', a_his='her' if girl else 'his', place=rng.choice(PLACES),
               obj=rng.choice(OBJECTS), adj=rng.choice(ADJECTIVES), animal=rng.choice(ANIMALS))
  slots['b_he'] = 'she' if b in GIRLS else 'he'
  body = [t.format(**slots) for t in rng.sample(BODY_V2 if version == 'v2' else BODY, 2)]
  sentences = [_fill(rng, OPENINGS, slots)]
  if 'Foreshadowing' in features:
    sentences.append(_fill(rng, FORESHADOWING, slots))
  sentences.append(body[0])
  if 'Conflict' in features:
    sentences.append(_fill(rng, CONFLICT, slots))
  if 'Dialogue' in features:
    sentences += [_fill(rng, DIALOGUE_OPEN, slots), _fill(rng, DIALOGUE_REPLY, slots)]
  sentences.append(body[1])
  if version == 'v1' and 'Twist' in features:
    sentences.append(f'{rng.choice(TWIST_OPENERS)} {_fill(rng, TWIST_EVENTS, slots)}')
  elif version == 'v2' and ('Twist' in features or rng.random() < NEAR_MISS_PROB):
    sentences.append(_surprise(rng, slots, twist='Twist' in features))
  sentences.append(_fill(rng, BAD_ENDINGS if 'BadEnding' in features else HAPPY_ENDINGS, slots))
  if 'MoralValue' in features:
    sentences.append(_fill(rng, MORALS, slots))

  rng.shuffle(features)
  words = [slots['obj'], slots['adj'], slots['place']]
  rng.shuffle(words)
  order = ['Features'] + [label for label in ('Words', 'Summary', 'Random sentence')
                          if rng.random() < LINE_PROB]
  rng.shuffle(order)
  # Fields of absent lines stay empty, so a written and re-read example is equal.
  return instruct.Example(
      story=' '.join(sentences),
      features=tuple(features),
      words=tuple(words) if 'Words' in order else (),
      summary=('{a} and {b} play with a {adj} {obj} in the {place}.'.format(**slots)
               if 'Summary' in order else None),
      sentence=rng.choice(body) if 'Random sentence' in order else None,
      order=tuple(order))


def generate_examples(n_examples: int, seed: int, version: str = 'v2') -> list[instruct.Example]:
  """n_examples stories, a deterministic function of (seed, version)."""
  if not isinstance(n_examples, int) or n_examples < 1:
    raise ValueError(f'n_examples must be a positive integer, got {n_examples!r}.')
  if version not in VERSIONS:
    raise ValueError(f'synthetic version {version!r} is unknown; valid: {VERSIONS}.')
  rng = random.Random(seed)
  return [generate_example(rng, version) for _ in range(n_examples)]


def write_synthetic(path: str, n_examples: int, seed: int,
                    version: str = 'v2') -> list[instruct.Example]:
  """Writes generate_examples(n_examples, seed, version) to path in the instruct format."""
  examples = generate_examples(n_examples, seed, version)
  instruct.write_instruct(path, examples)
  return examples
