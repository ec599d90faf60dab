"""The TinyStories-Instruct text format: `Example`, loader and writer.

The official files (HF roneneldan/TinyStoriesInstruct, TinyStories-Instruct-
{train,valid}.txt) hold one example after another, each followed by a line
`<|endoftext|>`. An example is some instruction lines, in any order and each
optional, then `Story:` and the story (which may run over several lines):

  Features: Dialogue, Twist
  Words: quit, oak, gloomy
  Summary: Sara and Ben play in the park ...
  Random sentence: They saw a big, red ball.
  Story: Sara and Ben were playing in the park. ...
  <|endoftext|>

The official files spell the sentence line `Random sentence:`; the authors'
code (tinystories-wrappers, make_instruction) builds its own text with
`Sentence:`. Both are read; an example is written back with the label it was
read with. Feature names are normalised to CamelCase (`badending`,
`Badending`, `Bad ending` -> `BadEnding`); features outside STORY_FEATURES are
kept as written.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Iterable, Optional, Sequence

SEPARATOR = '<|endoftext|>'
STORY_LABEL = 'Story'

# The six features of the authors' code (STORY_FEATURES), in its order; probe
# labels use this order.
STORY_FEATURES = ('Twist', 'Foreshadowing', 'Dialogue', 'BadEnding', 'MoralValue', 'Conflict')

# Instruction-line label -> Example field.
INSTRUCTION_FIELDS = {
    'Features': 'features',
    'Words': 'words',
    'Summary': 'summary',
    'Sentence': 'sentence',
    'Random sentence': 'sentence',
}

_CANONICAL_FEATURE = {name.lower(): name for name in STORY_FEATURES}
_LABEL_LINE = re.compile(r'^([A-Za-z][A-Za-z ]*):\s*(.*)$')


def normalise_feature(name: str) -> str:
  """'badending', 'Bad ending', 'bad_ending' -> 'BadEnding'; unknown names are kept, stripped."""
  key = re.sub(r'[\s_\-]', '', name).lower()
  return _CANONICAL_FEATURE.get(key, name.strip())


@dataclasses.dataclass(frozen=True)
class Example:
  """One instruct example. `order` lists its instruction-line labels as written."""
  story: str
  features: tuple[str, ...] = ()
  words: tuple[str, ...] = ()
  summary: Optional[str] = None
  sentence: Optional[str] = None
  # Instruction-line labels in written order; None: Features, Words, Summary,
  # Sentence, each only when set.
  order: Optional[tuple[str, ...]] = None
  source: str = dataclasses.field(default='', compare=False)  # 'file:line' when loaded.

  def __post_init__(self):
    for name in ('features', 'words'):  # Lists would break equality and hashing.
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if self.order is None:
      order = tuple(label for label in ('Features', 'Words', 'Summary', 'Sentence')
                    if getattr(self, INSTRUCTION_FIELDS[label]) not in ((), None))
    else:
      order = tuple(self.order)
    object.__setattr__(self, 'order', order)
    for name in ('features', 'words', 'summary', 'sentence'):
      value = getattr(self, name)
      if any('\n' in v for v in (value if isinstance(value, tuple) else (value or '',))):
        raise ValueError(f'Example.{name}={value!r}: an instruction value must be one line.')
    fields = [INSTRUCTION_FIELDS.get(label) for label in self.order]
    if None in fields or len(set(fields)) != len(fields):
      raise ValueError(f'Example.order={self.order!r}: each of {sorted(INSTRUCTION_FIELDS)} at '
                       'most once (Sentence and Random sentence are the same line).')

  def has(self, feature: str) -> bool:
    return normalise_feature(feature) in self.features

  def instruction_lines(self) -> list[str]:
    lines = []
    for label in self.order:
      value = getattr(self, INSTRUCTION_FIELDS[label]) or ''
      if isinstance(value, tuple):
        value = ', '.join(value)
      # An empty value is written as 'Features:' (no trailing space).
      lines.append(f'{label}: {value}' if value else f'{label}:')
    return lines


def instruction_prefix(ex: Example) -> str:
  """The instruction lines and 'Story:' (no trailing space): the generation prompt."""
  return '\n'.join(ex.instruction_lines() + [f'{STORY_LABEL}:'])


def format_example(ex: Example) -> str:
  """The example in the file format, without the separator line."""
  return f'{instruction_prefix(ex)} {ex.story}'


def write_instruct(path: str, examples: Iterable[Example]) -> str:
  """Writes examples, each followed by a separator line; returns path."""
  with open(path, 'w', encoding='utf-8') as f:
    for ex in examples:
      f.write(format_example(ex) + '\n' + SEPARATOR + '\n')
  return path


def with_features(ex: Example, features: Sequence[str]) -> Example:
  """ex with this Features value; adds a Features line first if it had none."""
  order = ex.order if 'Features' in ex.order else ('Features',) + ex.order
  return dataclasses.replace(ex, features=tuple(features), order=order)


def _parse_block(lines: list[tuple[int, str]], where: str) -> Example:
  """lines: (1-based line number, text) of one example, separator excluded."""
  values: dict[str, object] = {}
  order: list[str] = []
  start = lines[0][0]
  for i, (lineno, text) in enumerate(lines):
    if text.startswith(f'{STORY_LABEL}:'):
      first = text[len(STORY_LABEL) + 1:]
      story = '\n'.join([first] + [t for _, t in lines[i + 1:]]).strip()
      if not story:
        raise ValueError(f'{where}:{lineno}: empty story after "Story:".')
      return Example(story=story, order=tuple(order), source=f'{where}:{start}', **values)
    if not text.strip():
      continue
    match = _LABEL_LINE.match(text)
    if match is None or match.group(1) not in INSTRUCTION_FIELDS:
      shown = match.group(1) + ':' if match else text[:40]
      raise ValueError(f'{where}:{lineno}: unknown instruction line {shown!r}; valid labels: '
                       f'{sorted(INSTRUCTION_FIELDS)} then "Story:".')
    label, value = match.group(1), (match.group(2) or '').strip()
    field = INSTRUCTION_FIELDS[label]
    if field in values:
      raise ValueError(f'{where}:{lineno}: a second {label!r} line in one example.')
    if field == 'features':
      values[field] = tuple(normalise_feature(v) for v in value.split(',') if v.strip())
    elif field == 'words':
      values[field] = tuple(v.strip() for v in value.split(',') if v.strip())
    else:
      values[field] = value
    order.append(label)
  raise ValueError(f'{where}:{start}-{lines[-1][0]}: example has no "Story:" line.')


def parse_instruct(text: str, where: str = '<string>') -> list[Example]:
  """Parses the file format; `where` names the source in errors."""
  examples = []
  block: list[tuple[int, str]] = []
  for lineno, line in enumerate(text.splitlines(), start=1):
    if line.strip() == SEPARATOR:
      if not any(t.strip() for _, t in block):
        raise ValueError(f'{where}:{lineno}: separator with no example before it.')
      examples.append(_parse_block(_trim(block), where))
      block = []
    else:
      block.append((lineno, line))
  if any(t.strip() for _, t in block):  # A last example without a separator.
    examples.append(_parse_block(_trim(block), where))
  if not examples:
    raise ValueError(f'{where}:1: no examples (empty file?).')
  return examples


def _trim(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
  """Drops leading blank lines, so an error names the example's first real line."""
  i = 0
  while not block[i][1].strip():
    i += 1
  return block[i:]


def instruct_files(path: str) -> list[str]:
  """path itself, or the sorted .txt files of a directory."""
  if os.path.isdir(path):
    files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith('.txt'))
    if not files:
      raise ValueError(f'data path {path!r} is a directory with no .txt files.')
    return files
  if not os.path.isfile(path):
    raise ValueError(f'data path {path!r} does not exist (a local TinyStories-Instruct .txt file '
                     'or a directory of them; nothing is downloaded).')
  return [path]


def load_instruct(path: str) -> list[Example]:
  """Examples of a local file, or of every .txt file of a directory in name order."""
  examples = []
  for file in instruct_files(path):
    with open(file, encoding='utf-8') as f:
      examples += parse_instruct(f.read(), where=file)
  return examples


def features_present(examples: Iterable[Example]) -> list[str]:
  return sorted({f for ex in examples for f in ex.features})


def check_feature(feature: str, examples: Sequence[Example]) -> str:
  """The canonical name; ValueError listing the data's features if it is neither known nor present."""
  name = normalise_feature(feature)
  present = features_present(examples)
  if name not in STORY_FEATURES and name not in present:
    raise ValueError(f'feature {feature!r} is unknown; features present in the data: {present} '
                     f'(known: {list(STORY_FEATURES)}).')
  return name
