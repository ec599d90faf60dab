"""Tables (CSV and markdown) and the run's report.md."""

from __future__ import annotations

import csv
import pathlib
from typing import Iterable, Mapping, Sequence

# A cell whose every member diverged (NaN/inf): never shown as 0% (one definition, in reft).
from wrapper_study.analysis.reft import DIVERGED  # noqa: F401  pylint: disable=unused-import


def make_workdir(workdir) -> pathlib.Path:
  """The run layout: workdir/{figures,tables}; returns workdir as a Path."""
  workdir = pathlib.Path(workdir)
  for sub in ('figures', 'tables'):
    (workdir / sub).mkdir(parents=True, exist_ok=True)
  return workdir


def write_csv(path, rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Every key of every row, in first-seen order (a diverged row may lack some).
  columns = list(columns or dict.fromkeys(k for row in rows for k in row))
  with path.open('w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
    w.writeheader()
    w.writerows(rows)
  return path


def read_csv(path) -> list[dict]:
  with pathlib.Path(path).open() as f:
    return list(csv.DictReader(f))


def _fmt(v) -> str:
  if isinstance(v, float):
    return f'{v:.1f}' if abs(v) >= 1 or v == 0 else f'{v:.3g}'
  return str(v)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
  # Every key of every row, in first-seen order (a diverged row may lack some).
  columns = list(columns or dict.fromkeys(k for row in rows for k in row))
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for r in rows:
    lines.append('| ' + ' | '.join(_fmt(r.get(c, '')) for c in columns) + ' |')
  return '\n'.join(lines)


def write_report(path, title: str, sections: Iterable[tuple[str, str]]) -> pathlib.Path:
  """report.md: a title, then (heading, markdown body) sections."""
  path = pathlib.Path(path)
  parts = [f'# {title}', '']
  for heading, body in sections:
    parts += [f'## {heading}', '', body.rstrip(), '']
  path.write_text('\n'.join(parts))
  return path
