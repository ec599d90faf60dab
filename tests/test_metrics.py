"""Tests for wrapper_study.metrics: write, then read back with tensorboard's loader."""

import csv
import importlib.util
import io
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from PIL import Image

from wrapper_study import metrics
from wrapper_study import tb_events


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
  resumed = metrics.ProgressLogger(total_steps=100, log_every=10, start_step=40)
  assert resumed.update(41).startswith('step 41/100: compiled and ran the first step in ')
  assert resumed.update(42) is None and resumed.update(50).startswith('step 50/100, ')


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


def test_runs_population_members_and_hparams(tmp_path):
  workdir, members = str(tmp_path), ['lr=0.01,c_tr=0,seed=0', 'lr=0.01,c_tr=1,seed=0']
  for replay in (False, True):  # A resumed run replays step 2: written once.
    with metrics.MetricWriter(workdir) as writer:
      writer.run('counter/compiled').write_scalars(0, {'c_te0/acc_o_pt': 100.0})
      pop = metrics.PopulationWriter(writer.run('counter/finetune'), members)
      for step in (2,) if replay else (1, 2):
        pop.write_scalars(step, {'train/loss': np.array([1.0, 2.0]) * step, 'shared': 5.0})
      pop.write_hparams([{'lr': 0.01, 'c_tr': 0.0, 'seed': 0, 'source': 'compiled'},
                         {'lr': 0.01, 'c_tr': 1.0, 'seed': 0, 'source': 'compiled'}],
                        ['train/loss'], ok=[True, False])
  tb = os.path.join(workdir, 'tb')
  assert metrics.list_runs(tb) == ['counter/compiled', 'counter/finetune',
                                   f'counter/finetune/{members[0]}',
                                   f'counter/finetune/{members[1]}']
  member = os.path.join(tb, 'counter', 'finetune', members[1])
  assert metrics.read_scalars(member) == {'train/loss': [(1, 2.0), (2, 4.0)]}
  assert metrics.read_scalars(os.path.join(tb, 'counter/finetune'))['shared'] == [(1, 5.0),
                                                                                   (2, 5.0)]
  assert tb_events.repeats(tb) == {}  # No (tag, step) twice in a run, also after the resume.
  hp = metrics.read_hparams(tb)
  assert hp['counter/finetune']['experiment'] == {'hparams': ['lr', 'c_tr', 'seed', 'source'],
                                                  'metrics': ['train/loss']}
  assert hp[f'counter/finetune/{members[1]}'] == {
      'hparams': {'lr': 0.01, 'c_tr': 1.0, 'seed': 0.0, 'source': 'compiled'},
      'group': f'counter/finetune/{members[1]}', 'status': 'STATUS_FAILURE'}
  assert hp[f'counter/finetune/{members[0]}']['status'] == 'STATUS_SUCCESS'
  with open(os.path.join(workdir, 'metrics.csv'), newline='') as f:
    rows = list(csv.reader(f))  # One file; names carry the run (quoted: they hold commas).
  assert ['1', f'counter/finetune/{members[0]}/train/loss', '1.0'] in rows
  assert rows.count(['2', f'counter/finetune/{members[1]}/train/loss', '4.0']) == 1  # Superseded.
  assert ['0', 'counter/compiled/c_te0/acc_o_pt', '100.0'] in rows


def test_population_written_into_one_run_keeps_a_tag_per_member(tmp_path):
  with metrics.MetricWriter(str(tmp_path)) as writer:
    writer.run('grid').write_scalars(3, {'loss': [1.0, 2.0]})
  assert metrics.read_scalars(str(tmp_path / 'tb' / 'grid')) == {'loss/0': [(3, 1.0)],
                                                                  'loss/1': [(3, 2.0)]}


def test_two_members_with_one_run_name_are_refused(tmp_path):
  with metrics.MetricWriter(str(tmp_path)) as writer:
    try:
      metrics.PopulationWriter(writer.run('p'), ['lr=1', 'lr=1'])
    except ValueError as e:
      assert 'share a run name' in str(e)
    else:
      raise AssertionError('no error')


def test_write_report_text_and_every_figure_once_per_call(tmp_path):
  (tmp_path / 'figures').mkdir()
  Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / 'figures' / 'curves.png')
  for text in ('# first', '# second'):
    (tmp_path / 'report.md').write_text(text)
    assert metrics.write_report(tmp_path, tmp_path / 'report.md') == 'report'
  run = str(tmp_path / 'tb' / 'report')
  assert metrics.read_text(run) == {'report.md': [(0, '# first'), (1, '# second')]}
  images = metrics.read_images(run)
  assert [s for s, _ in images['figures/curves']] == [0, 1]
  assert images['figures/curves'][0][1] == (tmp_path / 'figures' / 'curves.png').read_bytes()
