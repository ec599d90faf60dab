"""Issue 28: the learning-rate labels checked against the paper's behaviour at C_Tr=0."""

from configs import tracr_study as tracr_config
from wrapper_study.tracr import anchors
from wrapper_study.tracr import calibration
from wrapper_study.tracr import paper

FT0 = f'end/{paper.ANTI}/acc_o_ft'


def _rows(acc_by_lr, corr=0.95, seeds=(0, 1, 2)):
  """Member rows as analysis.member_rows writes them (one C_Tr=1 row to be ignored)."""
  rows = [dict(kind='fine-tuned', lr=lr, c_tr=0.0, seed=s, diverged=False,
               **{FT0: acc, 'attn0_corr': corr}) for lr, acc in acc_by_lr.items() for s in seeds]
  rows.append(dict(kind='fine-tuned', lr=1e-3, c_tr=1.0, seed=0, diverged=False,
                   **{FT0: 99.0, 'attn0_corr': 0.1}))
  rows.append(dict(kind=paper.NOISED, lr='', c_tr='', seed=0, diverged=False, **{FT0: 99.0}))
  return rows


def _section(arows):
  config = tracr_config.get_config('smoke')
  config.finetune.noise_std = 1e-3
  crows = [dict(noise_std=1e-3, seed=s, pct_of_compiled=100.0, passes=True) for s in (0, 1)]
  return calibration.calibration_section(config, 'counter', crows, 'test', arows)[1]


def test_a_grid_in_the_papers_regime_passes_every_anchor():
  rows = anchors.check('counter', _rows({1e-1: 99.0, 1e-2: 97.0, 1e-3: 30.0, 1e-4: 20.0}))
  assert [r['holds'] for r in rows] == ['yes', 'yes', 'yes']
  assert 'Every learning-rate anchor holds' in _section(rows)
  mi = anchors.check('max_identifier', _rows({1e-4: 90.0}, corr=0.97))
  assert [(r['anchor'], r['holds']) for r in mi] == [('eta_VS keeps the sorting', 'yes')]


def test_a_grid_failing_one_anchor_is_reported_as_failing():
  # eta_M collapsed (the old default's lr 1e-2): it does not learn O_FT.
  rows = anchors.check('counter', _rows({1e-1: 99.0, 1e-2: 35.0, 1e-3: 30.0}))
  assert [r['holds'] for r in rows] == ['yes', 'NO', 'yes']
  text = _section(rows)
  assert 'FAILS: eta_M learns O_FT' in text and '| NO |' in text
  # eta_S learning O_FT fails its anchor too; a label missing from the grid is not measured.
  rows = anchors.check('counter', _rows({1e-1: 99.0, 1e-3: 95.0}))
  assert [r['holds'] for r in rows] == ['yes', 'not measured', 'NO']
  assert 'FAILS' in anchors.verdict(rows)
  # Diverged seeds are left out; a sorting that is not kept fails.
  diverged = _rows({1e-4: 90.0}, corr=0.5)
  assert anchors.check('max_identifier', diverged)[0]['holds'] == 'NO'
  for r in diverged:
    r['diverged'] = True
  assert anchors.check('max_identifier', diverged)[0]['holds'] == 'not measured'
  assert anchors.check(None, diverged) == []
