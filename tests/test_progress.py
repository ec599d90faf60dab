"""Console progress: phase headers, progress lines with ETA; cache keys."""

import json

import numpy as np

from wrapper_study import metrics
from wrapper_study import progress


def test_phase_headers_count_the_planned_phases(tmp_path):
  times = metrics.PhaseTimes(tmp_path, plan=['a/compile', 'a/pruning', 'b/compile'])
  assert times.header('a/pruning') == '[2/3] a/pruning'
  with times.timed('b/compile'):
    pass
  assert times.header('extra') == '[4/4] extra'  # Unplanned: appended, never misnumbered.
  assert [r['phase'] for r in times.rows] == ['b/compile']


def test_progress_logs_eta_then_the_time_taken():
  bar = progress.Progress('maps', 3, every_s=0)
  assert bar.update().startswith('maps: 1/3, ETA ')
  bar.update()
  assert bar.update().startswith('maps: 3/3, took ')
  quiet = progress.Progress('fast', 2, every_s=3600)  # Shorter than every_s: silent.
  assert quiet.update() is None and quiet.update() is None
  assert list(progress.progress(range(4), 'x', every_s=0)) == [0, 1, 2, 3]


def test_digest_changes_with_any_input():
  params = {'w': np.ones((2, 3), np.float32)}
  key = metrics.digest(params, 'config a')
  assert key == metrics.digest({'w': np.ones((2, 3), np.float32)}, 'config a')
  assert key != metrics.digest(params, 'config b')
  assert key != metrics.digest({'w': np.ones((3, 2), np.float32)}, 'config a')
  assert key != metrics.digest({'w': np.full((2, 3), 2, np.float32)}, 'config a')


def test_cached_json_keeps_key_order_and_returns_what_it_loads(tmp_path):
  rows = [{'z': 1, 'a': 0.5, 'm': ''}]
  first = metrics.cached_json(tmp_path / 'r.json', lambda: rows)
  again = metrics.cached_json(tmp_path / 'r.json', lambda: 1 / 0)
  assert first == again == rows and list(again[0]) == ['z', 'a', 'm']
  assert json.loads((tmp_path / 'r.json').read_text()) == rows
