r"""`wrapper-study audit ...`: the audit's own flags, turned into the config runner's.

  wrapper-study audit --pretrained=DIR --finetuned=DIR --capability=FILE --workdir=DIR \
      [--config=audit:smoke] [--config.reft.steps=500 ...]

is `wrapper-study --config=audit --config.pretrained=DIR --config.finetuned=DIR
--config.capability=FILE --workdir=DIR [...]`: one code path, so overrides,
checks and the one-line FATAL errors are the runner's (launch/main.py).
"""

from __future__ import annotations

import sys

SUBCOMMAND = 'audit'
_FIELDS = ('pretrained', 'finetuned', 'capability')


def is_audit(argv) -> bool:
  return len(argv) > 1 and argv[1] == SUBCOMMAND


def to_runner_argv(argv: list[str]) -> list[str]:
  """argv of `wrapper-study audit ...` -> argv of `wrapper-study --config=audit ...`.

  Exits 2 with one FATAL line on an argument the audit does not take.
  """
  out, config = [argv[0]], '--config=audit'
  args = argv[2:]
  i = 0
  while i < len(args):
    arg = args[i]
    name, eq, value = arg.partition('=')
    if not eq and name.lstrip('-') in _FIELDS + ('workdir', 'config') and i + 1 < len(args):
      value, i = args[i + 1], i + 1  # `--pretrained DIR` as well as `--pretrained=DIR`.
      eq = '='
    flag = name.lstrip('-')
    if flag in _FIELDS and eq:
      out.append(f'--config.{flag}={value}')
    elif flag == 'config' and eq:
      config = f'--config={value}'
    elif name.startswith('--config.') or flag in ('workdir', 'help', 'h', 'helpfull'):
      out.append(arg if eq or not value else f'{name}={value}')
    else:
      print(f'FATAL flags error: wrapper-study audit does not take {arg!r}; give --pretrained=DIR '
            f'--finetuned=DIR --capability=FILE --workdir=DIR [--config.<field>=...].',
            file=sys.stderr, flush=True)
      sys.exit(2)
    i += 1
  return out[:1] + [config] + out[1:]
