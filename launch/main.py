r"""Runs one experiment from a config file.

  python launch/main.py --config=configs/tracr_study.py[:arg] --workdir=runs/x \
      [--config.section.field=value ...]
  wrapper-study --config=tracr_study[:arg] --workdir=runs/x     # installed console script
  wrapper-study --config=tracr_study:paper --dry_run             # the plan: FLOPs, memory, time

`--config` takes a file path or a packaged config's name (`configs.names()`).

The run writes into its workdir: TensorBoard events (tb/), checkpoints,
figures/*.png, tables/*.csv and report.md. This file is kept short on purpose:
the logic lives in wrapper_study.experiments, importable from Colab.

Anything a user can get wrong (config file, `:arg`, field, value, workdir,
data, a checkpoint of another architecture) ends in ONE line on stderr,
`FATAL <what>: <message>`, exit code 2, no traceback.
"""

import importlib.util
import logging as std_logging
import os
import pathlib
import sys

# Figures are files here, never windows (a notebook keeps its inline backend).
os.environ.setdefault('MPLBACKEND', 'Agg')

# Run as a file from a checkout, the repository root must be importable
# (`configs`, and config files that build on each other).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

import configs
from launch import audit as audit_cli
from wrapper_study import allocator
from wrapper_study import checkpoint
from wrapper_study import config_check
from wrapper_study import dry_run
from wrapper_study import experiments
from wrapper_study import host_devices
from wrapper_study import run_record

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A config file (configs/tracr_study.py:smoke) or a packaged config\'s name '
    '(tracr_study:smoke); override fields with --config.<field>=<value>. Packaged configs:\n'
    + configs.describe(), lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the run writes (and resumes from); '
                               'required unless --dry_run.')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Compile every training phase on abstract inputs (no data, no step, '
    'nothing written) and print per phase: parameters, FLOPs per step (XLA cost analysis), '
    'peak device memory (XLA memory analysis), steps, total FLOPs and the projected time; '
    'see wrapper_study/dry_run.py. The device count is the host\'s (on a CPU: '
    f'{host_devices.ENV}, e.g. 1 for one chip).')
_DRY_RUN_TARGETS = flags.DEFINE_multi_enum(
    'dry_run_target', ['h100', 'v5e'], sorted(dry_run.TARGETS), 'The accelerators planned '
    'for, a projected time each: their peak at each precision (h100: bf16 989.4, tf32 494.7, '
    'fp32 66.9 TFLOP/s dense, 80 GB; v5e: bf16 197, fp32 as 6 bf16 passes ~32.8, 16 GB).')
_DRY_RUN_PEAK = flags.DEFINE_float(
    'dry_run_peak_tflops', None, 'Peak TFLOP/s per device for every target (default: each '
    'target\'s at the config\'s precision).')
_DRY_RUN_MFU = flags.DEFINE_float(
    'dry_run_mfu', dry_run.DEFAULT_MFU, 'Fraction of the peak a step reaches (default '
    f'{dry_run.DEFAULT_MFU}: a well-fed transformer step on an H100; small models reach less).')
_DRY_RUN_MEMORY = flags.DEFINE_float(
    'dry_run_memory_gb', None, 'Device memory in GB a phase must fit (default: each '
    'target\'s).')
flags.mark_flags_as_required(['config'])


def _fail(kind: str, message) -> None:
  """The one error surface: one line on stderr, exit code 2."""
  print(f'FATAL {kind}: ' + ' '.join(str(message).split()), file=sys.stderr, flush=True)
  sys.exit(2)


def _config_spec(argv: list[str]) -> tuple[list[str], str | None, str | None]:
  """argv with --config=NAME[:arg] of a packaged config made a file path; that spec; as typed."""
  out, spec, typed, i = [], None, None, 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--config='):
      typed = arg[len('--config='):]
      spec = configs.resolve(typed)
      arg = '--config=' + spec
    elif arg == '--config' and i + 1 < len(argv):
      out.append(arg)
      i += 1
      typed = argv[i]
      arg = spec = configs.resolve(typed)
    out.append(arg)
    i += 1
  return out, spec, typed


def _check_config_file(spec: str, typed: str):
  """The config file and its `:arg`, loaded once here so an error is one line, not a traceback;
  returns the config it gives (before overrides)."""
  path, _, arg = spec.partition(':')
  if not pathlib.Path(path).is_file():
    _fail('config error', f'--config={typed}: no such file; give a config file or one of the '
          f'packaged configs {configs.names()} (e.g. --config=tracr_study:smoke).')
  try:
    module_spec = importlib.util.spec_from_file_location('_checked_config', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, 'get_config'):
      _fail('config error', f'--config={typed}: {path} has no get_config() function.')
    return module.get_config(*([arg] if arg else []))
  except (ValueError, TypeError, KeyError, AttributeError, ImportError, SyntaxError) as e:
    _fail('config error', f'--config={typed}: {e}')


def _unknown_override(config, argv: list[str]) -> str | None:
  """'--config.a.b: section config.a has no field 'b'; its fields: [...]' for the first
  override naming a field the config lacks (None when every field exists)."""
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].partition('=')[0].split('.')
    section, where = config, 'the config'
    for i, key in enumerate(path):
      keys = list(section.keys()) if hasattr(section, 'keys') else None
      if keys is None:
        break  # A field inside a value (a tuple, a string): ml_collections' message stands.
      if key not in keys:
        return (f'--config.{".".join(path)}: {where} has no field {key!r}; its fields: '
                f'{sorted(keys)}.')
      section, where = section[key], 'section config.' + '.'.join(path[:i + 1])
  return None


def _usage() -> str:
  config_help, workdir_help = flags.FLAGS['config'].help, flags.FLAGS['workdir'].help
  dry = ''.join(f'  --{n}: {flags.FLAGS[n].help}\n' for n in (
      'dry_run', 'dry_run_target', 'dry_run_peak_tflops', 'dry_run_mfu', 'dry_run_memory_gb'))
  return (f'{__doc__.strip()}\n\nFlags:\n  --config: {config_help}\n  --workdir: {workdir_help}\n'
          f'{dry}  --helpfull: every flag, including absl\'s and JAX\'s.')


def _parse_flags(argv):
  """absl's parser, but a config typo or bad value ends with one clear line."""
  if any(a in ('--help', '-h', '-?') for a in argv[1:]):
    print(_usage())
    sys.exit(0)
  argv, spec, typed = _config_spec(argv)
  config = None if spec is None else _check_config_file(spec, typed)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail('flags error', f'{e} (pass --helpfull to see all flags)')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for unknown fields ("Did you mean ...") and
    # wrong types while applying --config.* overrides.
    msg = str(e).strip('\'"').replace('\\n', ' ').replace("\\'", "'")
    unknown = None if config is None else _unknown_override(config, argv)
    if unknown is not None and 'Did you mean' not in msg:
      _fail('config error', f'unknown field {unknown}')
    _fail('config error', f'{msg} Check the --config.* overrides against the fields of the '
          'config file.')


class _QuietLibraries:
  """Drops INFO lines of orbax and JAX's backend probing (no TPU here) from the run's log."""

  def filter(self, record) -> bool:
    if record.levelno >= std_logging.WARNING:
      return True
    return '/orbax/' not in record.pathname and not record.pathname.endswith('xla_bridge.py')


def _workdir() -> pathlib.Path:
  workdir = pathlib.Path(_WORKDIR.value)
  if workdir.exists() and not workdir.is_dir():
    _fail('workdir error', f'--workdir={workdir} is a file; give a directory (it is created '
          'if missing, and resumed from if it holds a run).')
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    _fail('workdir error', f'--workdir={workdir} cannot be created: {e.strerror or e}.')
  return workdir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _WORKDIR.value is None and not _DRY_RUN.value:
    _fail('flags error', 'Flag --workdir must have a value other than None (only --dry_run '
          'runs without one).')
  quiet = _QuietLibraries()
  logging.get_absl_handler().addFilter(quiet)
  std_logging.getLogger('jax._src.xla_bridge').addFilter(quiet)
  config = _CONFIG.value
  try:
    experiment = experiments.get(config.experiment)
    config_check.all_finite(config)
    experiment.validate(config)
  except config_check.ConfigError as e:
    _fail('config error', e)
  if _DRY_RUN.value:
    _dry_run(experiment, config)
    return
  workdir = _workdir()
  (workdir / 'config.txt').write_text(str(config))
  given = ' '.join(a for a in sys.argv[1:] if a.startswith('--config'))  # File and overrides.
  logging.info('%s: %s -> %s (full config: %s)', config.experiment, given, workdir,
               workdir / 'config.txt')
  logging.info('Allocator: %s; JAX devices: %s (%s=%s)', allocator.active(), jax.devices(),
               host_devices.ENV, os.environ.get(host_devices.ENV, 'auto'))
  started = run_record.fingerprint(config)  # The code as it is now is the code that runs.
  done = run_record.finished(workdir, config)
  if done is not None:
    logging.info('This run finished earlier with the same config and code (%s); nothing to '
                 'redo. Delete that file to go through the phases again.',
                 run_record.path(workdir, config))
    print(_final_screen(workdir, pathlib.Path(done['report'])), flush=True)
    return
  try:
    result = experiment.run(config, workdir)
  except config_check.ConfigError as e:  # Bad input only the data or the workdir can reveal.
    _fail('config error', e)
  except checkpoint.CorruptCheckpointError as e:  # An explicitly requested step is damaged.
    _fail('checkpoint error', e)
  except FloatingPointError as e:  # A single run diverged (a population goes on without it).
    _fail('training diverged', f'{e} Lower the learning rate, or rerun to resume from the '
          'last good checkpoint.')
  report = (result or {}).get('report', workdir / 'report.md')
  run_record.write(workdir, config, report, started)
  logging.info('Done. Report: %s', report)
  print(_final_screen(workdir, pathlib.Path(report)), flush=True)


def _dry_run(experiment, config) -> None:
  """The plan of every training phase (wrapper_study/dry_run.py); nothing is trained or written."""
  if not hasattr(experiment, 'plan'):
    _fail('config error', f'experiment {config.experiment!r} has no plan(config) for --dry_run.')
  rows = dry_run.plan(experiment.plan(config), progress=lambda line: logging.info('%s', line))
  given = ' '.join(a for a in sys.argv[1:] if a.startswith('--config'))
  print(dry_run.report(rows, title=given, targets=_DRY_RUN_TARGETS.value,
                       peak_tflops=_DRY_RUN_PEAK.value, mfu=_DRY_RUN_MFU.value,
                       memory_gb=_DRY_RUN_MEMORY.value), flush=True)


def _final_screen(workdir: pathlib.Path, report: pathlib.Path) -> str:
  """What the run wrote, and the one command that shows its curves."""
  def listing(sub: str, pattern: str) -> list[str]:
    files = sorted(p.name for p in (workdir / sub).glob(pattern))
    return [f'{sub}/ ({len(files)}):'] + [f'  {f}' for f in files]
  return '\n'.join(['', '=' * 72, f'Report:      {report}', f'Workdir:     {workdir}',
                    *listing('figures', '*.png'), *listing('tables', '*.csv'),
                    f'TensorBoard: tensorboard --logdir {workdir / "tb"}', '=' * 72])


def run():
  """The console script `wrapper-study` (and `wrapper-study audit ...`, see launch/audit.py)."""
  if audit_cli.is_audit(sys.argv):
    sys.argv = audit_cli.to_runner_argv(sys.argv)
  allocator.ensure_fast()  # May re-execute this process once, with tcmalloc or mimalloc (allocator.py).
  try:
    host_devices.ensure()  # Two CPU devices where two cores may be used; before JAX starts.
  except ValueError as e:
    _fail('environment error', e)
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
