"""Issue 28: per-member fine-tuning traces in TensorBoard, read back (clip fraction included)."""

import numpy as np

from configs import tracr_study as tracr_config
from wrapper_study import metrics
from wrapper_study.experiments import tracr_study
from wrapper_study.tracr import calibration
from wrapper_study.tracr import train as ft


def _grid(tracr_cache, workdir, clip, log_every):
  config = tracr_config.get_config('smoke')
  config.cache_dir = tracr_cache
  config.tasks = ('counter',)
  config.finetune.grad_clip_norm = clip
  config.finetune.log_every = log_every
  spec = tracr_study.task_spec(config, 'counter')
  data = ft.TaskData(spec, ft.compile_model(spec, cache_dir=tracr_cache))
  sets = ft.make_test_sets(data, 64, config.seed)
  with metrics.MetricWriter(workdir) as writer:
    members, _, _ = ft.finetune_grid(config, data, sets, workdir, writer)
  return config, members, calibration.read_traces(workdir, 'counter/finetune', members)


def test_traces_are_written_and_read_back_with_the_fraction_of_clipped_steps(tracr_cache,
                                                                             tmp_path):
  # Every step logged: the per-step gradient norms say which steps the clip bound.
  config, members, every = _grid(tracr_cache, tmp_path / 'every', 50.0, 1)
  assert set(every) == {t for t, _, _ in calibration.TRACES}
  steps, g = every['train/grad_norm']
  assert list(steps) == list(range(1, config.finetune.steps + 1))
  # (A member at lr 1e-1 may diverge at the last smoke step: NaN, never counted as clipped.)
  assert g.shape == (config.finetune.steps, len(members)) and np.isfinite(g[:-1]).all()
  np.testing.assert_array_equal(every['train/clip_fraction'][1], (g > 50.0).astype(float))
  clipped = (g > 50.0).mean()
  assert 0 < clipped < 1, clipped  # The test can tell a fraction from all or nothing.
  # Logged every 3 steps: the fraction covers every step since the last write, not only the
  # logged one (the same deterministic grid, so the same gradient norms).
  _, _, sparse = _grid(tracr_cache, tmp_path / 'sparse', 50.0, 3)
  s3, f3 = sparse['train/clip_fraction']
  assert list(s3) == [3, 6]
  np.testing.assert_allclose(f3, (g > 50.0).reshape(2, 3, -1).mean(1), atol=1e-6)
  for tag in ('train/loss', 'train/update_norm', 'eval/c_te0/n_distinct'):
    assert sparse[tag][1].shape[1] == len(members) and np.isfinite(sparse[tag][1][0]).all(), tag
  d = sparse['eval/c_te0/n_distinct'][1][0]
  assert ((d >= 1) & (d <= 7)).all()  # Counts 0..6 at seq_len 6.
  fig = calibration.traces_figure('counter', members, sparse, (0.0, 1.0))
  assert len(fig.axes) == 5 * len(config.finetune.lrs)
