r"""The PCFG study over operand priors x fine-tuning task (the paper's Tables 5-8).

  python launch/sweep.py --sweep=configs/sweeps/pcfg_priors_tasks.py:paper \
      --sweep_dir=runs/sweeps/pcfg_paper --backend=submitit          # SLURM, GPUs
  python launch/sweep.py --sweep=configs/sweeps/pcfg_priors_tasks.py \
      --sweep_dir=runs/sweeps/pcfg_cpu                               # CPU scale, local

Each run pretrains one model per prior it is given and keeps the checkpoints of
`pretrain.keep_steps` (the pretraining lengths: 10K, 50K, 100K, 200K at paper
scale); every kept checkpoint is fine-tuned on the lr x C_Tr x seeds grid as one
vmapped jit inside the run. The sweep spreads the priors and the two tasks
(Counter, Tables 5-6; Indexer, Tables 7-8) over jobs. Gathered tables (e.g.
tables/finetune_counter.csv) hold every run's rows with `pretrain.priors` and
`finetune.task` columns. Each (prior, task) job pretrains its own model: the
pretraining is repeated per task, which costs one extra pretraining per prior
and keeps jobs independent.
"""

import ml_collections


def get_sweep(arg: str = '') -> ml_collections.ConfigDict:
  """arg: '' (CPU scale), 'paper' (App. C scale) or 'smoke' (tests)."""
  s = ml_collections.ConfigDict(convert_dict=False)
  s.base = 'configs/pcfg_study.py'  # Config spec 'path[:arg]' of launch/main.py.
  s.grid = {  # Dotted config field -> values; runs are the product, last field fastest.
      'pretrain.priors': (('low',), ('high',)),
      'finetune.task': ('counter', 'indexer'),
  }
  s.fixed = {}
  s.slurm = dict(timeout_min=24 * 60, cpus_per_task=8, gpus_per_node=1, mem_gb=64)
  if arg == 'paper':
    s.base = 'configs/pcfg_study.py:paper'
    s.grid['pretrain.priors'] = (('low',), ('medium',), ('high',))
  elif arg == 'smoke':
    s.base = 'configs/pcfg_study.py:smoke'
    s.grid = {'finetune.task': ('counter', 'indexer')}
    s.slurm = dict(timeout_min=20, cpus_per_task=2)
  elif arg:
    raise ValueError(f"configs/sweeps/pcfg_priors_tasks.py: unknown argument {arg!r}; "
                     "valid: '', 'paper', 'smoke'.")
  return s
