"""The experiments' configs: `get_config(arg)` files, installed with the package.

`--config` takes a file path (`configs/tracr_study.py:smoke`) or the name of a
packaged config (`tracr_study:smoke`); `resolve` turns a name into this
package's file, so a pip-installed package runs from any directory.
"""

from __future__ import annotations

import pathlib

DIR = pathlib.Path(__file__).resolve().parent


def names(subdir: str = '') -> list[str]:
  """Packaged config names (e.g. 'tracr_study'; 'sweeps/...' with subdir='sweeps')."""
  return sorted(p.stem for p in (DIR / subdir).glob('*.py') if not p.stem.startswith('_'))


def resolve(spec: str, subdir: str = '') -> str:
  """'path.py[:arg]' stays as it is when the file exists; 'name[:arg]' -> this package's file.

  Returns the spec unchanged when it is neither (the loader then names the missing file).
  """
  path, sep, arg = spec.partition(':')
  if pathlib.Path(path).is_file():
    return spec
  stem = path[:-3] if path.endswith('.py') else path
  for prefix in ('configs/', f'configs/{subdir}/' if subdir else None, f'{subdir}/' if subdir else None):
    if prefix and stem.startswith(prefix):
      stem = stem[len(prefix):]
  packaged = DIR / subdir / f'{stem}.py'
  return str(packaged) + sep + arg if packaged.is_file() else spec


def describe() -> str:
  """One entry per packaged config: its name, what it runs, and its `:arg` variants (for --help)."""
  import ast  # pylint: disable=g-import-not-at-top  # Only --help needs it.
  lines = []
  for name in names():
    tree = ast.parse((DIR / f'{name}.py').read_text())
    doc = (ast.get_docstring(tree) or '').strip().splitlines()
    get = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'get_config']
    args = (ast.get_docstring(get[0]) or '').strip().splitlines() if get else []
    lines.append(f'  {name}: {doc[0] if doc else ""}')
    if args:
      lines.append(f'      {args[0]}')
  return '\n'.join(lines)
