"""The project's import graph, read from the source with `ast` (nothing is imported).

  python tests/import_graph.py      # prints each module's project imports, then any cycle

Every `import` counts, at module level or inside a function, so a lazy import
cannot hide a cycle.
"""

from __future__ import annotations

import ast
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('wrapper_study', 'configs', 'launch')


def modules() -> dict[str, pathlib.Path]:
  """Dotted name -> file, for every module of the project's packages."""
  out = {}
  for package in PACKAGES:
    for path in sorted((REPO / package).rglob('*.py')):
      parts = list(path.relative_to(REPO).with_suffix('').parts)
      if parts[-1] == '__init__':
        parts = parts[:-1]
      out['.'.join(parts)] = path
  return out


def _resolve(name: str, known: dict) -> str | None:
  """The longest known module that `name` names (`a.b.c` -> `a.b` when c is a symbol)."""
  while name:
    if name in known:
      return name
    name = name.rpartition('.')[0]
  return None


def graph() -> dict[str, set[str]]:
  """Module -> the project modules it imports."""
  known = modules()
  edges = {}
  for name, path in known.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        targets = [f'{node.module}.{a.name}' for a in node.names]
      else:
        continue
      for target in targets:
        dep = _resolve(target, known)
        if dep and dep != name and not name.startswith(dep + '.') and dep != name.rpartition('.')[0]:
          deps.add(dep)
    edges[name] = deps
  return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """Every strongly connected group of more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        group.append(w)
        if w == v:
          break
      if len(group) > 1:
        out.append(sorted(group))

  sys.setrecursionlimit(10_000)
  for v in sorted(edges):
    if v not in index:
      visit(v)
  return out


if __name__ == '__main__':
  g = graph()
  for module in sorted(g):
    print(f'{module}: {", ".join(sorted(g[module])) or "-"}')
  found = cycles(g)
  print(f'\n{len(g)} modules; import cycles: {found or "none"}')
  sys.exit(1 if found else 0)
