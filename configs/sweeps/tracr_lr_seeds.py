r"""The Tracr study over fine-tuning length x seeds: 4 runs of the reduced study.

  python launch/sweep.py --sweep=configs/sweeps/tracr_lr_seeds.py \
      --sweep_dir=runs/sweeps/tracr_lr_seeds
On SLURM (options in `slurm` below; --max_parallel caps the job array):
  python launch/sweep.py --sweep=configs/sweeps/tracr_lr_seeds.py \
      --sweep_dir=runs/sweeps/tracr_lr_seeds --backend=submitit
Tiny, a few minutes on a CPU (the study's smoke config):
  python launch/sweep.py --sweep=configs/sweeps/tracr_lr_seeds.py:smoke \
      --sweep_dir=/tmp/tracr_sweep_smoke

Each run fine-tunes the whole lr x C_Tr x seeds grid of the study itself (one
vmapped jit); this sweep varies what a run keeps fixed: the fine-tuning length
and the top-level seed (weight noise and data). Gathered tables such as
tables/table3_counter.csv then hold one block of rows per run, keyed by the
`finetune.steps` and `seed` columns.
"""

import ml_collections


def get_sweep(arg: str = '') -> ml_collections.ConfigDict:
  """arg: '' (reduced study, 500 vs 2000 steps) or 'smoke' (tiny, 6 vs 8 steps)."""
  # convert_dict=False keeps grid/fixed/slurm plain dicts: dotted keys, grid order kept.
  s = ml_collections.ConfigDict(convert_dict=False)
  s.base = 'configs/tracr_study.py'  # Config spec 'path[:arg]' of launch/main.py.
  s.grid = {  # Dotted config field -> values; runs are the product, last field fastest.
      'finetune.steps': (500, 2000),
      'seed': (0, 1),
  }
  s.fixed = {}  # Dotted config field -> value, the same in every run.
  s.slurm = dict(  # submitit.AutoExecutor parameters; other keys get 'slurm_'.
      timeout_min=120,
      cpus_per_task=8,
      gpus_per_node=1,
      mem_gb=32,
      # partition='gpu',  # Your cluster's partition.
  )
  if arg == 'smoke':
    s.base = 'configs/tracr_study.py:smoke'
    s.grid = {'finetune.steps': (6, 8), 'seed': (0, 1)}
    s.fixed = {'tasks': ('counter',)}
    s.slurm = dict(timeout_min=20, cpus_per_task=2)
  elif arg:
    raise ValueError(f"configs/sweeps/tracr_lr_seeds.py: unknown argument {arg!r}; "
                     "valid: '', 'smoke'.")
  return s
