"""Issue 28: the attention maps draw inputs that contain the operands."""

import numpy as np

from wrapper_study.tracr import maps
from wrapper_study.tracr import tasks


def test_map_inputs_contain_both_operand_tokens():
  spec = tasks.COUNTER.spec(seq_len=10)
  toks = tasks.sample(spec, np.random.default_rng(0), 200, 0.0)
  toks[:5] = 4  # 'eeeeeeeeee': no a, no b (the example had none either).
  rows = maps.map_rows(spec, toks, 3)
  assert len(rows) == 3 and not set(rows) & set(range(5))
  for r in rows:
    assert (toks[r] == 0).any() and (toks[r] == 1).any()  # a and b present.
  # Too few rows with both: the rest are filled in, never fewer than asked.
  few = np.full((4, 10), 4)
  few[2, :2] = (0, 1)
  assert list(maps.map_rows(spec, few, 3)) == [2, 0, 1]
  # Operands that are ranks (Max-identifier): every row has them, the first n are drawn.
  mi = tasks.MAX_IDENTIFIER.spec()
  assert list(maps.map_rows(mi, tasks.sample(mi, np.random.default_rng(0), 9, 0.0), 3)) == [0, 1, 2]
