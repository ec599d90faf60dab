"""A finished run's record: the same config and code skip the phases; any change does not."""

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


def test_a_damaged_record_is_no_record(tmp_path):
  config = _config()
  run_record.path(tmp_path, config).parent.mkdir(parents=True)
  run_record.path(tmp_path, config).write_text('{not json')
  assert run_record.finished(tmp_path, config) is None
