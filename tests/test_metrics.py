"""Tests for wrapper_study.metrics: write, then read back with tensorboard's loader."""

import importlib.util
import io
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from PIL import Image

from wrapper_study import metrics


def test_no_tensorflow():
  assert importlib.util.find_spec('tensorflow') is None


def test_scalars_images_text_round_trip(tmp_path):
  workdir = str(tmp_path)
  image_HxWx3 = np.zeros((4, 6, 3), np.uint8)
  image_HxWx3[1, 2] = (255, 0, 10)
  with metrics.MetricWriter(workdir) as writer:
    writer.write_scalars(1, {'train/loss': 2.5, 'train/lr': np.float32(1e-3)})
    writer.write_scalars(2, {'train/loss': np.array(1.25)})
    writer.write_images(2, {'attn': image_HxWx3,
                            'rgba': np.full((3, 3, 4), 7, np.uint8)})
    fig, ax = plt.subplots(figsize=(2, 1), dpi=20)
    ax.plot([0, 1])
    writer.write_images(3, {'plot': fig})
    plt.close(fig)
    writer.write_text(3, {'config': 'lr: 0.001'})

  scalars = metrics.read_scalars(os.path.join(workdir, 'tb'))
  assert scalars['train/loss'] == [(1, 2.5), (2, 1.25)]
  assert scalars['train/lr'][0][0] == 1
  np.testing.assert_allclose(scalars['train/lr'][0][1], 1e-3, rtol=1e-6)

  images = metrics.read_images(workdir)  # workdir or workdir/tb both work.
  (step, png), = images['attn']
  assert step == 2
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), image_HxWx3)
  assert np.asarray(Image.open(io.BytesIO(images['rgba'][0][1]))).shape == (3, 3, 4)
  step, png = images['plot'][0]
  assert step == 3 and Image.open(io.BytesIO(png)).size == (40, 20)
  assert metrics.read_text(workdir) == {'config': [(3, 'lr: 0.001')]}

  with open(os.path.join(workdir, 'metrics.csv')) as f:
    rows = f.read().splitlines()
  assert rows[0] == 'step,name,value'
  assert rows[1:] == ['1,train/loss,2.5', f'1,train/lr,{float(np.float32(1e-3))!r}',
                      '2,train/loss,1.25']


def test_reopen_appends(tmp_path):
  for step in (1, 2):  # A resumed run opens a second writer on the same workdir.
    with metrics.MetricWriter(str(tmp_path)) as writer:
      writer.write_scalars(step, {'x': step})
  assert metrics.read_scalars(str(tmp_path))['x'] == [(1, 1.0), (2, 2.0)]


def test_progress_logger():
  assert metrics.format_duration(5) == '5s'
  assert metrics.format_duration(185) == '3m05s'
  assert metrics.format_duration(3720) == '1h02m'
  p = metrics.ProgressLogger(total_steps=100, log_every=10)
  assert p.update(5, {'loss': 1.0}) is None
  line = p.update(10, {'loss': 1.0})
  assert line.startswith('step 10/100, loss 1, ') and 'steps/s' in line and 'ETA' in line


def _csv(workdir):
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    return f.read().splitlines()


def test_csv_resumed_writer_supersedes_earlier_rows(tmp_path):
  workdir = str(tmp_path)
  with metrics.MetricWriter(workdir) as writer:
    for step in (1, 2, 3):
      writer.write_scalars(step, {'a': step, 'b': -step})
  with metrics.MetricWriter(workdir) as writer:  # A resume that replays step 2.
    writer.write_scalars(2, {'a': 20.0})
    writer.write_scalars(4, {'a': 4.0})
    writer.write_scalars(0, {'c': 0.0})  # Out of order but new: kept.
    # Its own rows are never removed: a second run writing the same names into
    # this writer keeps both (a naming problem to fix by prefixes, not to hide).
    writer.write_scalars(2, {'a': 21.0})
  assert _csv(workdir) == ['step,name,value', '1,a,1.0', '1,b,-1.0', '2,b,-2.0', '3,a,3.0',
                           '3,b,-3.0', '2,a,20.0', '4,a,4.0', '0,c,0.0', '2,a,21.0']


def test_csv_open_drops_cut_row_and_replay_drops_every_old_copy(tmp_path):
  path = tmp_path / 'metrics.csv'
  # An older version's resumed run (step 1 twice), then a kill mid-row.
  path.write_bytes(b'step,name,value\r\n1,a,1.0\r\n2,a,2.0\r\n1,a,1.5\r\n2,a,2.')
  with metrics.MetricWriter(str(tmp_path)) as writer:
    assert _csv(str(tmp_path)) == ['step,name,value', '1,a,1.0', '2,a,2.0', '1,a,1.5']
    writer.write_scalars(1, {'a': 9.0})
    writer.write_scalars(2, {'a': 8.0})
  assert _csv(str(tmp_path)) == ['step,name,value', '1,a,9.0', '2,a,8.0']
