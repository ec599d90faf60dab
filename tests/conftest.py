"""Shared test setup: a per-session tracr export cache so each program compiles once."""

import os
import pathlib
import sys

import pytest

# Test helpers (smoke_tables, import_graph) import as top-level modules under
# every runner and import mode.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture(scope='session')
def tracr_cache(tmp_path_factory):
  # Reuse a developer's warm cache when set; otherwise one fresh dir per session.
  path = os.environ.get('WRAPPER_STUDY_TEST_CACHE') or str(tmp_path_factory.mktemp('tracr_cache'))
  return path
