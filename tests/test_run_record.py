"""A finished run's record: the same config and code skip the phases; any change does not."""

import json
import shutil

import ml_collections

from wrapper_study import run_record


def _config(**fields):
  return ml_collections.ConfigDict(dict(experiment='toy', seed=0, **fields))


def test_a_record_matches_only_its_own_config_and_needs_the_report(tmp_path, monkeypatch):
  report = tmp_path / 'report.md'
  report.write_text('done')
  config = _config(lr=0.1)
  assert run_record.finished(tmp_path, config) is None  # Nothing recorded yet.
  run_record.write(tmp_path, config, report)
  assert run_record.finished(tmp_path, config)['report'] == str(report)
  assert run_record.finished(tmp_path, _config(lr=0.2)) is None  # Another config.
  other = _config(lr=0.2)  # Variants sharing a workdir keep a record each.
  run_record.write(tmp_path, other, report)
  assert run_record.finished(tmp_path, config) and run_record.finished(tmp_path, other)
  report.unlink()  # The outputs are gone: go through the phases again.
  assert run_record.finished(tmp_path, config) is None
  report.write_text('done')
  monkeypatch.setattr(run_record, '_source_digest', lambda: 'other code')
  assert run_record.finished(tmp_path, config) is None  # The code changed.
  monkeypatch.undo()
  run_record.forget(tmp_path)
  assert run_record.finished(tmp_path, config) is None and not list(tmp_path.glob('results/*'))


def test_source_edited_during_a_run_is_not_recorded_as_run(tmp_path, monkeypatch):
  """The record carries the fingerprint taken when the run began: code edited while a long
  run went on (it imported the old code) does not make the next run skip its phases."""
  report = tmp_path / 'report.md'
  report.write_text('done')
  config = _config()
  started = run_record.fingerprint(config)
  monkeypatch.setattr(run_record, '_source_digest', lambda: 'edited during the run')
  run_record.write(tmp_path, config, report, started)
  assert run_record.finished(tmp_path, config) is None  # The edited code never ran.
  monkeypatch.undo()
  assert run_record.finished(tmp_path, config)['report'] == str(report)


def test_a_damaged_record_is_no_record(tmp_path):
  config = _config()
  run_record.path(tmp_path, config).parent.mkdir(parents=True)
  run_record.path(tmp_path, config).write_text('{not json')
  assert run_record.finished(tmp_path, config) is None


def _finished_workdir(root, config):
  """A workdir as a completed run leaves it: report, one checkpoint file, the record."""
  root.mkdir(parents=True)
  (root / 'report.md').write_text(f'report of {root.name}')
  (root / 'checkpoints' / 'grid' / '6').mkdir(parents=True)
  (root / 'checkpoints' / 'grid' / '6' / 'state').write_bytes(b'x' * 100)
  run_record.write(root, config, root / 'report.md')
  return root


def test_a_copied_workdir_reports_its_own_report(tmp_path):
  config = _config()
  original = _finished_workdir(tmp_path / 'original', config)
  record = run_record.path(original, config).read_text()
  assert str(tmp_path) not in record  # No absolute path is stored.
  copy = tmp_path / 'elsewhere' / 'copy'
  shutil.copytree(original, copy)
  shutil.rmtree(original)  # The old location is gone.
  done = run_record.finished(copy, config)
  assert done is not None and done['report'] == str(copy / 'report.md')


def test_a_record_needs_its_checkpoints_intact(tmp_path):
  config = _config()
  workdir = _finished_workdir(tmp_path / 'run', config)
  assert run_record.finished(workdir, config) is not None
  state = workdir / 'checkpoints' / 'grid' / '6' / 'state'
  state.write_bytes(b'x' * 10)  # Truncated.
  assert run_record.finished(workdir, config) is None
  state.unlink()  # Missing.
  assert run_record.finished(workdir, config) is None


def test_a_record_of_the_old_absolute_form_is_no_record(tmp_path):
  config = _config()
  (tmp_path / 'report.md').write_text('done')
  run_record.path(tmp_path, config).parent.mkdir(parents=True)
  run_record.path(tmp_path, config).write_text(json.dumps(
      {'fingerprint': run_record.fingerprint(config), 'report': str(tmp_path / 'report.md'),
       'experiment': 'toy'}))
  assert run_record.finished(tmp_path, config) is None
