r"""The Tracr study: the paper's Counter and Max-identifier, compiled and loaded into Flax.

Compiles both programs with tracr (cached after the first run), loads the weights
into the shared Flax transformer with no training, checks accuracy on fresh
inputs, and writes attention maps, tables and report.md.

Run (the README's main command):
  python launch/main.py --config=configs/tracr_study.py --workdir=runs/tracr_study
Smaller, for tests:
  python launch/main.py --config=configs/tracr_study.py:smoke --workdir=/tmp/tracr_smoke

Choices where the paper is silent (App. B.1 / C.1), with reasons:
- counter.seq_len = 20: the paper's figures show ~45 tokens, but the compiled
  width grows with the length (count and output blocks are one-hot over 0..L)
  and 20 keeps every count class populated in 2K samples and the CPU grid fast.
- counter.q = 1: the PCFG Counter's q (count(b) = count(a) + 1), reused.
- max_identifier.seq_len = 10: Fig. 13 shows 10 letters.
- max_identifier.operand_ft = 6, q = 1: the paper's own q = 1 example
  ("if the O_PT-th token is 'a' then the O_FT-th token is 'b'") needs adjacent ranks.
"""

import string

import ml_collections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """arg: '' (default CPU study) or 'smoke' (tiny, for tests)."""
  c = ml_collections.ConfigDict()
  c.experiment = 'tracr_study'  # Which wrapper_study.experiments module runs.
  c.seed = 0  # Every random choice derives from this.
  c.programs = ('counter', 'max_identifier')  # Subset of the two tasks below.
  c.cache_dir = ''  # tracr exports; '' = $WRAPPER_STUDY_CACHE or ~/.cache/wrapper_study/tracr.

  c.counter = ml_collections.ConfigDict(dict(
      vocab='abcdefghi',  # Paper: "first nine letters", with replacement.
      seq_len=20,  # Tokens after BOS (paper silent; see docstring).
      operand_pt='a',  # Counted by the compiled model.
      operand_ft='b',  # Counted after fine-tuning.
      q=1,  # Spurious offset count(b) - count(a) in correlated samples.
  ))
  c.max_identifier = ml_collections.ConfigDict(dict(
      vocab=string.ascii_lowercase,  # Paper: a-z without replacement.
      seq_len=10,  # Fig. 13 shows 10 letters.
      operand_pt=5,  # Compiled to output the 5th smallest letter.
      operand_ft=6,  # Fine-tuned to output the 6th (paper silent).
      q=1,  # Letter offset between the two ranked tokens in correlated samples.
  ))
  c.eval = ml_collections.ConfigDict(dict(
      num_samples=2000,  # Fresh inputs per program for the accuracy check.
      batch_size=500,  # Inputs per jitted forward.
  ))
  c.figures = ml_collections.ConfigDict(dict(
      num_inputs=3,  # Inputs drawn in the attention-map figures.
  ))
  if arg == 'smoke':
    c.eval.num_samples = 200
    c.eval.batch_size = 100
    c.figures.num_inputs = 1
  elif arg:
    raise ValueError(f"configs/tracr_study.py: unknown config argument {arg!r}; valid: '', 'smoke'.")
  return c
