"""Issue 29: each world's table against the paper's, per table and in total (PCFG Tables 5-8,
TinyStories Table 1): ours equal to the paper's scores 100%, a miss, a diverged or a collapsed
cell counts against it, and a paper entry without a counterpart is named as not compared."""

import pytest

from configs import pcfg_study as pcfg_config
from configs import tinystories_study as ts_config
from wrapper_study.pcfg import agreement as pcfg_agreement
from wrapper_study.pcfg import paper as pcfg_paper
from wrapper_study.report import paper_agreement
from wrapper_study.tinystories import agreement as ts_agreement
from wrapper_study.tinystories import paper as ts_paper

TABLE5 = pcfg_paper.TABLES[('counter', pcfg_paper.LONG_PRETRAIN_STEPS)]


def _pcfg_rows(config, paper_lr=lambda lr: lr, paper_p_a=0.999):
  """Rows in pcfg.report.table_rows' layout whose values are the paper's Table 5."""
  rows = []
  for pt in config.pretrain.keep_steps:
    for prior in config.pretrain.priors:
      p_a = paper_p_a if isinstance(paper_p_a, float) else paper_p_a[prior]
      for lr in config.finetune.lrs:
        for c in config.finetune.c_trs:
          ref = TABLE5[(paper_lr(lr), p_a, c)]
          row = dict(prior=prior, pt_steps=pt, lr=lr, c_tr=c)
          for k, m in enumerate(pcfg_agreement.METRICS):
            for j, s in enumerate(config.finetune.eval_steps):
              row[f'{m}@{s}'] = ref[2 * k + j]
              row[f'n_distinct_answers@{s}_seeds'] = '5.0 4.0'
          rows.append(row)
  return rows


def _by_table(rows):
  return {r['table']: r for r in rows}


def test_pcfg_ours_equal_to_the_paper_agrees_everywhere_it_is_compared():
  config = pcfg_config.get_config('smoke')  # lrs 1e-4, 1e-6; C_Tr 0, 1; low prior; 2 checkpoints.
  rows = _pcfg_rows(config)
  found = _by_table(pcfg_agreement.summary_rows(config, rows))
  t5 = found['Table 5']
  assert (t5['within'], t5['entries'], t5['pct'], t5['cells']) == (32, 32, 100.0, 4)
  assert t5['read_at'] == 'pretraining step 6'  # The longest checkpoint standing for 200K.
  assert t5['not_compared_entries'] == 288 - 32
  assert 'C_Tr 0.5, 0.8 not run (144 entries)' in t5['not_compared']
  assert 'lr 1e-05 not run (16 entries)' in t5['not_compared']
  assert found['Table 6']['entries'] == 0 and '50K' in found['Table 6']['not_compared']
  assert 'task indexer not run' in found['Table 7']['not_compared']
  assert found['total']['within'] == 32 and found['total']['paper_entries'] == 4 * 288
  text = pcfg_agreement.line(config, rows)
  assert 'Table 5 at pretraining step 6: 32/32 (100.0%)' in text
  assert 'Table 7: not compared (task indexer not run (288 entries))' in text


def test_pcfg_a_miss_a_diverged_and_a_collapsed_cell_count_against():
  config = pcfg_config.get_config('smoke')
  rows = _pcfg_rows(config)
  last = [r for r in rows if r['pt_steps'] == 6]
  last[0]['c_te0/acc_o_pt@2'] += 10.5  # Just outside 10 points.
  last[1]['c_te1/acc_o_ft@4'] = 'diverged'
  last[2]['n_distinct_answers@4_seeds'] = '5.0 1.0'  # One seed gives one answer.
  rows[0]['c_te0/acc_o_pt@2'] += 50  # Checkpoint 3: not the one read.
  t5 = _by_table(pcfg_agreement.summary_rows(config, rows))['Table 5']
  assert (t5['within'], t5['entries'], t5['collapsed_cells']) == (30, 32, 1)
  assert '1 of 4 cells collapsed' in pcfg_agreement.line(config, rows)


def test_pcfg_three_calibrated_lrs_stand_for_appendix_c_by_rank():
  """The CPU scale's lrs (3e-4, 3e-5, 3e-6) and its own P(b) of the low prior map to the
  paper's 1e-4, 1e-5, 1e-6 and P(a) 0.999; the high prior to 0.5."""
  config = pcfg_config.get_config('')
  config.finetune.lrs = (3e-4, 3e-5, 3e-6)
  rank = dict(zip((3e-4, 3e-5, 3e-6), pcfg_paper.APPENDIX_C_LRS))
  rows = _pcfg_rows(config, rank.get, {'low': 0.999, 'high': 0.5})
  t5 = _by_table(pcfg_agreement.summary_rows(config, rows))['Table 5']
  assert (t5['within'], t5['entries'], t5['pct']) == (144, 144, 100.0)  # 2 x 3 x 3 cells x 8.
  assert t5['not_compared'] == 'C_Tr 0.8 not run (72 entries); P(a) 0.9 not run (72 entries)'


def test_tinystories_ours_equal_to_the_paper_agrees_and_a_missing_row_is_named():
  config = ts_config.get_config('smoke')
  points = (0,) + tuple(config.reft.score_steps)
  rows = [{'model': model, **{f'ours @{s}': v for s, v in zip(points, ts_paper.PAPER_TABLE1[key])}}
          for model, key in ts_agreement.paper_keys(config).items()]
  t1 = _by_table(ts_agreement.summary_rows(config, rows))['Table 1']
  assert (t1['within'], t1['entries'], t1['pct'], t1['cells']) == (28, 28, 100.0, 7)
  assert t1['collapsed_cells'] == '' and t1['not_compared_entries'] == 0
  rows[0]['ours @1'] += 11  # F (eta_M) at the paper's 30: 11 points off.
  config.deletion.protocols = ('F', 'F+RR')  # F+MM not run: its two rows not compared.
  keep = set(ts_agreement.paper_keys(config))
  found = _by_table(ts_agreement.summary_rows(config, [r for r in rows if r['model'] in keep]))
  t1 = found['Table 1']
  assert (t1['within'], t1['entries'], t1['not_compared_entries']) == (19, 20, 8)
  assert t1['not_compared'] == ('F+MM (eta_M) not run (4 entries); '
                                'F+MM (eta_S) not run (4 entries)')
  assert found['total']['pct'] == 95.0
  text = ts_agreement.line(config, rows)
  assert '19/20 (95.0%)' in text and 'F+MM (eta_M) not run' in text


def test_a_table_with_nothing_compared_has_no_percentage():
  rows = paper_agreement.with_total([paper_agreement.row('Table 6', None, 288, {'x': 288})])
  assert rows[-1]['pct'] == '' and rows[-1]['not_compared_entries'] == 288
  assert 'Table 6: not compared (x (288 entries))' in paper_agreement.line(rows)
  with pytest.raises(KeyError):  # A row of ours for a prior the config does not name.
    pcfg_agreement.paper_cell(pcfg_config.get_config('smoke'),
                              dict(prior='medium', lr=1e-4, c_tr=0.0))
