"""Every notebook in colabs/ executes top to bottom (a real kernel, no mocks)."""

import pathlib

import nbclient
import nbformat
import pytest

COLABS = sorted((pathlib.Path(__file__).resolve().parents[1] / 'colabs').glob('*.ipynb'))


@pytest.mark.parametrize('path', COLABS, ids=[p.name for p in COLABS])
def test_notebook_runs(path, tracr_cache, monkeypatch):
  monkeypatch.setenv('WRAPPER_STUDY_CACHE', tracr_cache)
  nb = nbformat.read(path, as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(path.parent)}}).execute()
  errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
            if o.get('output_type') == 'error']
  assert not errors
