"""Every notebook in colabs/ executes top to bottom (a real kernel, no mocks), as stored.

The notebooks are written by colabs/build.py (their cells live there) and
stored with their outputs; these tests check that the stored ones match the
builder, carry outputs, run without an error at the sizes they are stored
with, and end with an inline matplotlib figure (a PNG display output).
"""

import copy
import importlib.util
import os
import pathlib
import time

import nbformat
import pytest

COLABS = pathlib.Path(__file__).resolve().parents[1] / 'colabs'
NAMES = ('tracr', 'pcfg', 'tinystories', 'audit')


def _build():
  spec = importlib.util.spec_from_file_location('colabs_build', COLABS / 'build.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


build = _build()


def _code_cells(nb):
  return [c for c in nb.cells if c.cell_type == 'code']


def _ends_with_png(nb) -> bool:
  last = _code_cells(nb)[-1]
  return any(o.get('output_type') in ('display_data', 'execute_result')
             and 'image/png' in o.get('data', {}) for o in last.get('outputs', []))


def test_one_notebook_per_world():
  assert sorted(p.stem for p in COLABS.glob('*.ipynb')) == sorted(NAMES)
  assert sorted(build.NOTEBOOKS) == sorted(NAMES)


@pytest.mark.parametrize('name', NAMES)
def test_stored_notebook_matches_builder_and_has_outputs(name):
  stored = nbformat.read(COLABS / f'{name}.ipynb', as_version=4)
  built = build.notebook(name)
  assert [(c.cell_type, c.source) for c in stored.cells] == [
      (c.cell_type, c.source) for c in built.cells], (
          f'colabs/{name}.ipynb differs from colabs/build.py: run python colabs/build.py {name}')
  first = _code_cells(stored)[0].source
  assert 'REPO_URL = ' in first and 'pip' in first and 'import wrapper_study' in first
  assert all(c.get('outputs') for c in _code_cells(stored)), 'stored without outputs'
  assert not [o for c in _code_cells(stored) for o in c.outputs if o.output_type == 'error']
  assert _ends_with_png(stored)


@pytest.mark.parametrize('name', NAMES)
def test_notebook_runs(name, tracr_cache, monkeypatch):
  monkeypatch.setenv('WRAPPER_STUDY_CACHE', tracr_cache)
  # build.execute puts the repository root first on the kernel's PYTHONPATH; restored after.
  monkeypatch.setenv('PYTHONPATH', os.environ.get('PYTHONPATH', ''))
  nb = copy.deepcopy(nbformat.read(COLABS / f'{name}.ipynb', as_version=4))
  for cell in _code_cells(nb):
    cell.outputs = []
  t0 = time.time()
  build.execute(nb)  # Raises CellExecutionError on the first failing cell.
  print(f'{name}.ipynb executed in {time.time() - t0:.0f} s')
  assert not [o for c in _code_cells(nb) for o in c.outputs if o.output_type == 'error']
  assert _ends_with_png(nb)
  # The install cell found the package (no pip install in the tests).
  assert 'wrapper_study from' in ''.join(o.get('text', '') for o in _code_cells(nb)[0].outputs)
