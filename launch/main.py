r"""Runs one experiment from a config file.

  python launch/main.py --config=configs/tracr_study.py[:arg] --workdir=runs/x \
      [--config.section.field=value ...]
  wrapper-study --config=tracr_study[:arg] --workdir=runs/x     # installed console script

`--config` takes a file path or a packaged config's name (`configs.names()`).

The run writes into its workdir: TensorBoard events (tb/), checkpoints,
figures/*.png, tables/*.csv and report.md. This file is kept short on purpose:
the logic lives in wrapper_study.experiments, importable from Colab.
"""

import logging as std_logging
import pathlib
import sys

# Run as a file from a checkout, the repository root must be importable
# (`configs`, and config files that build on each other).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

import configs
from wrapper_study import config_check
from wrapper_study import experiments

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/tracr_study.py or configs/tracr_study.py:smoke.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the run writes (and resumes from).')
flags.mark_flags_as_required(['config', 'workdir'])


def _with_config_files(argv: list[str]) -> list[str]:
  """--config=NAME[:arg] of a packaged config -> its file (config_flags reads files)."""
  out, i = [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--config='):
      arg = '--config=' + configs.resolve(arg[len('--config='):])
    elif arg == '--config' and i + 1 < len(argv):
      out.append(arg)
      i += 1
      arg = configs.resolve(argv[i])
    out.append(arg)
    i += 1
  return out


def _parse_flags(argv):
  """absl's parser, but a config typo or bad value ends with one clear line."""
  try:
    return flags.FLAGS(_with_config_files(argv))
  except flags.Error as e:
    sys.exit(f'FATAL flags error: {e}\nPass --helpfull to see all flags.')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for unknown fields ("Did you mean ...") and
    # wrong types while applying --config.* overrides.
    msg = str(e).strip('\'"').replace('\\n', ' ').replace("\\'", "'")
    sys.exit(f'FATAL config error: {msg}\n'
             'Check the --config.* overrides against the fields of the config file.')


class _QuietLibraries:
  """Drops INFO lines of orbax and other chatty libraries from the run's log."""

  def filter(self, record) -> bool:
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = _CONFIG.value
  experiment = experiments.get(config.experiment)
  try:
    experiment.validate(config)
  except config_check.ConfigError as e:
    sys.exit(f'FATAL config error: {e}')
  logging.info('JAX devices: %s', jax.devices())
  logging.info('Config:\n%s', config)
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'config.txt').write_text(str(config))
  try:
    result = experiment.run(config, workdir)
  except config_check.ConfigError as e:  # Bad input only the data can reveal (run checks it first).
    sys.exit(f'FATAL config error: {e}')
  report = (result or {}).get('report', workdir / 'report.md')
  logging.info('Done. Report: %s', report)


def run():
  """The console script `wrapper-study`."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
