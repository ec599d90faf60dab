"""A damaged checkpoint costs the steps since the previous one, never the run.

Real orbax checkpoints of the toy run in test_train: each case damages the
latest step as a disk or a user might, reruns the same training, and checks
that it resumed from the newest intact step, moved the damaged step aside
(renamed, not deleted), left the earlier steps byte-identical and ended with the
params of an uninterrupted run, without orbax's "Event loop is closed" noise.
"""

import hashlib
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from wrapper_study import checkpoint
import test_train as tt  # Toy model, batches and _run; also fast-compile flags.

TOTAL, SAVE_EVERY = 12, 4
NOISE = 'Event loop is closed'


def _hashes(directory):
  """relative path -> sha256 of every file under directory."""
  out = {}
  for root, _, files in os.walk(directory):
    for f in files:
      path = os.path.join(root, f)
      with open(path, 'rb') as fh:
        out[os.path.relpath(path, directory)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def _largest(directory, under_d=False):
  files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs
           if not under_d or os.path.basename(r) == 'd']
  return max(files, key=os.path.getsize)


def _delete(step_dir):
  os.remove(_largest(os.path.join(step_dir, 'state')))


def _truncate(path):
  # To a few bytes: OCDBT data files may end in bytes nothing references, so
  # cutting only their tail can leave every array readable (then nothing is wrong).
  with open(path, 'r+b') as f:
    f.truncate(8)


def _break_meta_json(step_dir):
  with open(os.path.join(step_dir, 'meta', 'metadata'), 'a') as f:
    f.write('{"oops": ')


DAMAGE = {
    'delete_largest': _delete,
    'truncate_largest': lambda d: _truncate(_largest(os.path.join(d, 'state'))),
    'truncate_data_file': lambda d: _truncate(_largest(os.path.join(d, 'state'), True)),
    'broken_meta_json': _break_meta_json,
}


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  return tt._run(str(tmp_path_factory.mktemp('ref')), TOTAL, SAVE_EVERY).params


def _interrupted_run(workdir):
  """Checkpoints at 4 and 8, then dies at step 10 (no final save)."""
  def dies_at_10(step):
    if step == 10:
      raise KeyboardInterrupt
    return tt._batch_fn(step)
  with pytest.raises(KeyboardInterrupt):
    tt._run(workdir, TOTAL, SAVE_EVERY, batch_fn=dies_at_10)
  ckpt_dir = os.path.join(workdir, 'ckpt')
  assert sorted(os.listdir(ckpt_dir)) == ['4', '8']
  return ckpt_dir


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_rerun_skips_damaged_latest_step(tmp_path, damage, reference, caplog, capfd):
  workdir = str(tmp_path)
  ckpt_dir = _interrupted_run(workdir)
  intact = _hashes(os.path.join(ckpt_dir, '4'))
  DAMAGE[damage](os.path.join(ckpt_dir, '8'))
  damaged = _hashes(os.path.join(ckpt_dir, '8'))

  with caplog.at_level(logging.INFO):
    final = tt._run(workdir, TOTAL, SAVE_EVERY)

  tt._assert_trees_equal(final.params, reference)
  log = caplog.text
  assert f'Restoring checkpoint {ckpt_dir} step 4.' in log
  assert 'Resumed' in log and 'at step 4 of 12' in log
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and '\n' not in warnings[0], warnings
  assert f'Checkpoint {ckpt_dir} step 8 is unreadable' in warnings[0]
  assert f'moved it to {ckpt_dir}/8.corrupt-1' in warnings[0]
  # Moved aside as it was (the rerun then saved a fresh step 8); 4 untouched.
  assert _hashes(os.path.join(ckpt_dir, '8.corrupt-1')) == damaged
  assert _hashes(os.path.join(ckpt_dir, '4')) == intact
  assert checkpoint.Checkpointer(ckpt_dir, {}).all_steps() == [4, 8, 12]
  out, err = capfd.readouterr()
  assert NOISE not in out + err + log


def test_every_step_damaged_starts_from_scratch(tmp_path, reference, caplog):
  workdir = str(tmp_path)
  ckpt_dir = _interrupted_run(workdir)
  for step in ('4', '8'):
    _break_meta_json(os.path.join(ckpt_dir, step))
  with caplog.at_level(logging.INFO):
    final = tt._run(workdir, TOTAL, SAVE_EVERY)
  tt._assert_trees_equal(final.params, reference)
  assert 'Restoring checkpoint' not in caplog.text
  assert {'4.corrupt-1', '8.corrupt-1'} <= set(os.listdir(ckpt_dir))


def test_other_architecture_is_not_damage(tmp_path):
  workdir = str(tmp_path)
  ckpt_dir = _interrupted_run(workdir)
  before = _hashes(ckpt_dir)
  config = tt.CFG.__class__(**{**tt.CFG.to_dict(), 'd_model': 32})
  with pytest.raises(ValueError, match=r'model\.d_model: saved 16, expected 32'):
    tt._run(workdir, TOTAL, SAVE_EVERY, config=config)
  assert _hashes(ckpt_dir) == before  # Nothing moved, nothing written.


def test_load_params_skips_damaged_latest_unless_asked_for(tmp_path):
  ckpt_dir = _interrupted_run(str(tmp_path))
  meta = tt._setup()[2]
  params_4 = checkpoint.load_params(ckpt_dir, meta, step=4)
  _delete(os.path.join(ckpt_dir, '8'))
  with pytest.raises(checkpoint.CorruptCheckpointError) as e:
    checkpoint.load_params(ckpt_dir, meta, step=8)
  message = str(e.value)
  assert '\n' not in message and f'{ckpt_dir}/8/state' in message, message
  assert sorted(os.listdir(ckpt_dir)) == ['4', '8']  # An explicit step stays put.
  tt._assert_trees_equal(checkpoint.load_params(ckpt_dir, meta), params_4)
  assert sorted(os.listdir(ckpt_dir)) == ['4', '8.corrupt-1']


def test_unclosed_checkpointer_finishes_its_save_at_exit(tmp_path):
  # A caller that dies with an async save in flight and never closes: the save
  # lands and orbax's threads stop quietly (they used to print ~500 lines).
  script = textwrap.dedent(f"""
      import sys
      sys.path[:0] = [{os.path.dirname(__file__)!r}]
      import test_train as tt
      from wrapper_study import checkpoint
      state, _, meta = tt._setup()
      ckpt = checkpoint.Checkpointer({str(tmp_path / 'ckpt')!r}, meta)
      ckpt.save(1, state, force=True)
      raise RuntimeError('boom')
      """)
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 1
  assert 'RuntimeError: boom' in proc.stderr and NOISE not in proc.stderr, proc.stderr[-3000:]
  assert 'cannot schedule new futures' not in proc.stderr
  assert os.listdir(tmp_path / 'ckpt') == ['1']
