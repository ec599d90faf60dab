"""Experiments the runner can launch: config.experiment -> module with validate() and run()."""

import importlib

EXPERIMENTS = {
    'tracr_study': 'wrapper_study.experiments.tracr_study',
    'pcfg_study': 'wrapper_study.experiments.pcfg_study',
    'pcfg_analysis': 'wrapper_study.experiments.pcfg_analysis',
    'tinystories_study': 'wrapper_study.experiments.tinystories_study',
    'audit': 'wrapper_study.experiments.audit',
}


def get(name: str):
  if name not in EXPERIMENTS:
    from wrapper_study.config_check import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f'config.experiment={name!r} is unknown; valid: {sorted(EXPERIMENTS)}.')
  return importlib.import_module(EXPERIMENTS[name])
