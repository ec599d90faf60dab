r"""Runs a sweep: a grid of configs of one experiment, each as launch/main.py.

  python launch/sweep.py --sweep=configs/sweeps/tracr_lr_seeds.py \
      --sweep_dir=runs/sweeps/tracr_lr_seeds [--backend=local|submitit|submitit_local] \
      [--max_parallel=N]

Each run writes into sweep_dir/runs/<name>/ (its log in log.txt). Relaunching
the same command skips finished runs and reruns the others, which resume from
their checkpoints. The gathered tables land in sweep_dir/tables/ and an index
in sweep_dir/report.md. Exits 1 when any run failed. The logic lives in
wrapper_study.sweep.
"""

import subprocess
import sys

from absl import app
from absl import flags
from absl import logging

from wrapper_study import sweep as sweep_lib

_SWEEP = flags.DEFINE_string(
    'sweep', None, 'Sweep file with get_sweep(arg), e.g. configs/sweeps/tracr_lr_seeds.py[:arg], '
    'or a packaged sweep\'s name (tracr_lr_seeds[:arg]).')
_SWEEP_DIR = flags.DEFINE_string('sweep_dir', None, 'Where the runs, tables and report go.')
_BACKEND = flags.DEFINE_enum('backend', 'local', sweep_lib.BACKENDS,
                             'local: subprocesses here; submitit: SLURM; '
                             'submitit_local: submitit jobs on this machine.')
_MAX_PARALLEL = flags.DEFINE_integer(
    'max_parallel', None, 'Runs at a time (default: 1 locally, unlimited with submitit).',
    lower_bound=1)
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Run nothing: print every run\'s plan (launch/main.py --dry_run: each '
    'training phase compiled on abstract inputs, its FLOPs, memory and projected time).')
_DRY_RUN_FLAGS = flags.DEFINE_list(
    'dry_run_flags', [], 'More flags for each run\'s --dry_run, e.g. '
    '--dry_run_flags=--dry_run_target=v5e,--dry_run_mfu=0.2.')
flags.mark_flags_as_required(['sweep', 'sweep_dir'])


def _dry_run(sweep) -> None:
  """Each run's plan, one process each (as the runs would start); nothing is written."""
  runs = sweep_lib.plan(sweep)
  for i, run in enumerate(runs):
    print(f'\n## Run {i + 1}/{len(runs)}: {run.name}', flush=True)
    proc = subprocess.run([*sweep_lib.command(run), '--dry_run', *_DRY_RUN_FLAGS.value],
                          cwd=sweep_lib.REPO, stdout=subprocess.PIPE, text=True)
    print(proc.stdout, flush=True)
    if proc.returncode:
      sys.exit(f'FATAL sweep error: run {run.name} could not be planned (exit {proc.returncode}).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    sweep = sweep_lib.from_config(sweep_lib.load_spec(_SWEEP.value, 'get_sweep'), _SWEEP_DIR.value)
    if _DRY_RUN.value:
      _dry_run(sweep)
      return
    summary = sweep_lib.launch(sweep, _BACKEND.value, _MAX_PARALLEL.value)
  except sweep_lib.SweepError as e:
    sys.exit(f'FATAL sweep error: {e}')
  print(summary.text())
  print(f'Index: {sweep.sweep_dir.resolve() / "report.md"}')
  if not summary.ok:
    logging.error('%d run(s) failed; relaunch the same command to retry them.',
                  len(summary.failed))
    sys.exit(1)


def run():
  """The console script `wrapper-study-sweep`."""
  app.run(main)


if __name__ == '__main__':
  run()
