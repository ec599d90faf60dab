"""Config checks of the PCFG experiments: everything that can fail before compute does.

`study` checks what pretraining and fine-tuning read (both experiments);
`analysis` adds the wrapper analysis' fields. Both raise ConfigError naming
the field.
"""

from __future__ import annotations

from wrapper_study import config_check as cc
from wrapper_study.analysis import probing
from wrapper_study.analysis import pruning
from wrapper_study.pcfg import device_sampler
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import tasks

VARIANTS = ('main', 'mixing', 'jailbreak', 'randft')


def _wrap(fn, field):
  try:
    return fn()
  except ValueError as e:
    raise cc.ConfigError(f'config.{field}: {e}') from None


def study(config) -> None:
  """The grammar, families, priors, model and both training phases; raises ConfigError."""
  cc.non_negative_int(config, 'seed')
  cc.member_chunk(config)
  cc.positive(config, 'data.window_length', 'data.o_prime_count', 'data.o_prime_index',
              'model.n_layers', 'model.n_heads', 'model.d_model', 'model.d_mlp',
              'pretrain.steps', 'pretrain.batch_size', 'pretrain.eval_every',
              'pretrain.save_every', 'pretrain.log_every', 'finetune.steps',
              'finetune.batch_size', 'finetune.save_every', 'finetune.log_every',
              'eval.num_samples', 'eval.batch_size', integer=True)
  cc.positive(config, 'pretrain.lr')
  if tuple(config.finetune.lrs) or 'calibration' not in config:
    cc.positive_list(config, 'finetune.lrs')
  else:
    _calibration(config)
  cc.fractions(config, 'finetune.c_trs')
  cc.fractions(config, 'finetune.pt_fraction')
  if config.model.d_model % config.model.n_heads:
    cc.fail('model.d_model', config.model.d_model,
            f'must be divisible by model.n_heads={config.model.n_heads}')
  cc.seeds(config, 'finetune.seeds')
  g = _wrap(lambda: pcfg_model.grammar(config), 'grammar')
  vocab = _wrap(lambda: pcfg_model.vocab(config), 'grammar')  # Its terminals are the operands.
  _wrap(lambda: pcfg_model.model_config(config).validate(), 'model')  # precision, attention, ...
  if not config.pretrain.priors:
    cc.fail('pretrain.priors', config.pretrain.priors, 'must name at least one prior')
  for i, prior in enumerate(config.pretrain.priors):
    _wrap(lambda: tasks.resolve_prior(prior, vocab.terminals), f'pretrain.priors[{i}]')
  for name, probs in (config.pretrain.get('prior_values') or {}).items():
    _wrap(lambda: tasks.resolve_prior(tuple(probs), vocab.terminals),
          f'pretrain.prior_values.{name}')
  # pylint: disable=protected-access
  _wrap(lambda: tasks._check_families(config.data.families), 'data.families')
  _wrap(lambda: tasks.check_window_length(config.data.window_length, vocab),
        'data.window_length')
  _wrap(lambda: tasks._check_grammar_window(g, config.data.window_length, vocab),
        'data.window_length')
  # pylint: enable=protected-access
  cc.one_of(config, 'data.on_device', (False, True))
  if config.data.on_device:
    _wrap(lambda: device_sampler.compile_grammar(g), 'data.on_device')
  for fam in config.data.families:
    is_index = tasks.FAMILY_RULE[fam].startswith('index')
    field = 'data.o_prime_index' if is_index else 'data.o_prime_count'
    _wrap(lambda: tasks.check_o_prime(fam, pcfg_model.o_primes(config)[fam],
                                      config.data.window_length, vocab), field)
  _wrap(lambda: pcfg_model.finetune_spec(config).validate(vocab), 'finetune')
  if config.finetune.pt_eval_family:
    fam = config.finetune.pt_eval_family
    _wrap(lambda: tasks.check_family(fam, 'pt_eval_family'), 'finetune.pt_eval_family')
    if fam not in config.data.families:
      cc.fail('finetune.pt_eval_family', fam, 'must be one of data.families (App. E.2 needs '
              "e.g. data.families=('C','CC','I','IC','T','T_J1','T_J2'))")
  for path, total in (('pretrain.keep_steps', config.pretrain.steps),
                      ('finetune.eval_steps', config.finetune.steps)):
    steps = cc.get(config, path)
    if not steps or any(not isinstance(s, int) or not 0 < s <= total for s in steps):
      cc.fail(path, steps, f'must be a non-empty tuple of steps in 1..{total}')
  for phase in ('pretrain', 'finetune'):
    if not 0 <= config[phase].warmup_fraction < 1:
      cc.fail(f'{phase}.warmup_fraction', config[phase].warmup_fraction, 'must lie in [0, 1)')


def _calibration(config) -> None:
  """finetune.lrs=(): the lr calibration's fields (wrapper_study/pcfg/calibration.py)."""
  cal = config.calibration
  cc.positive_list(config, 'calibration.lr_grid')
  if len(set(cal.lr_grid)) < 3:
    cc.fail('calibration.lr_grid', cal.lr_grid, 'must hold at least 3 distinct lrs '
            '(eta_L, eta_M and eta_S are picked from it)')
  for path in ('calibration.learn_min', 'calibration.stay_max'):
    if not 0 <= cc.get(config, path) <= 100:
      cc.fail(path, cc.get(config, path), 'must be a percentage in [0, 100]')
  if not cal.stay_max < cal.learn_min:
    cc.fail('calibration.stay_max', cal.stay_max,
            f'must be below calibration.learn_min={cal.learn_min}')
  names = [pcfg_model.prior_name(p) for p in config.pretrain.priors]
  if pcfg_model.prior_name(cal.prior) not in names:
    cc.fail('calibration.prior', cal.prior, f'must be one of pretrain.priors {names}')
  cc.non_negative_int(config, 'calibration.seed')
  if cal.seed in tuple(config.finetune.seeds):
    cc.fail('calibration.seed', cal.seed, f'must not be one of finetune.seeds '
            f'{tuple(config.finetune.seeds)} (the chosen lrs are measured on fresh runs)')


def analysis(config) -> None:
  """`study`'s checks plus the analysis fields; raises ConfigError."""
  study(config)
  a = config.analysis
  cc.one_of(config, 'analysis.variant', VARIANTS)
  cc.one_of(config, 'analysis.probe_method', ('adamw', 'closed_form'))
  cc.one_of(config, 'analysis.prune_matrices', tuple(pruning.ELIGIBLE))
  cc.positive(config, 'analysis.probe_steps', 'analysis.probe_train_samples',
              'analysis.probe_test_samples', 'analysis.prune_samples', 'analysis.prune_chunk',
              'analysis.mask_steps', 'analysis.reft_steps', 'analysis.k_step',
              'analysis.member_chunk', 'analysis.mask_samples',
              'analysis.prune_eval_samples', integer=True)
  cc.non_negative_int(config, 'analysis.k_max')
  cc.positive(config, 'analysis.probe_lr', 'analysis.mask_lr')
  if tuple(a.reft_lrs):  # () = eta_M and eta_S of the (calibrated) fine-tuning lrs.
    cc.positive_list(config, 'analysis.reft_lrs')
  cc.fractions(config, 'analysis.pt_fractions')
  cc.fractions(config, 'analysis.reft_source_c_trs')
  if config.pretrain.steps not in config.pretrain.keep_steps:
    cc.fail('pretrain.keep_steps', config.pretrain.keep_steps,
            f'must include the final step pretrain.steps={config.pretrain.steps} (analysed)')
  if not 0 <= a.revival_threshold <= 100:
    cc.fail('analysis.revival_threshold', a.revival_threshold, 'must be a percentage in [0, 100]')
  if a.mask_sparsity < 0:
    cc.fail('analysis.mask_sparsity', a.mask_sparsity, 'must be >= 0')
  steps = a.reft_eval_steps
  if not steps or any(not isinstance(s, int) or not 0 < s <= a.reft_steps for s in steps):
    cc.fail('analysis.reft_eval_steps', steps, f'must be steps in 1..{a.reft_steps}')
  if a.reft:
    if [c for c in a.reft_source_c_trs if c not in config.finetune.c_trs]:
      cc.fail('analysis.reft_source_c_trs', a.reft_source_c_trs,
              f'must be among finetune.c_trs={tuple(config.finetune.c_trs)}')
    _wrap(lambda: tasks.resolve_prior(a.scr_ft_prior, pcfg_model.vocab(config).terminals),
          'analysis.scr_ft_prior')
  if a.variant == 'jailbreak' and not pcfg_model.jailbreak_families(config):
    cc.fail('data.families', config.data.families,
            "must include 'T_J1' and/or 'T_J2' for the jailbreak variant")
  _wrap(lambda: probing.probe_sites(pcfg_model.model_config(config),
                                    tuple(a.probe_layers) or None), 'analysis.probe_layers')
  if a.pruning:
    units = pruning.make_units(pcfg_model.template(config), 'neuron',
                               pruning.eligible_by_name(a.prune_matrices))
    try:
      pruning.check_k(a.k_max, units, 'analysis.k_max')
    except ValueError as e:
      raise cc.ConfigError(f'config.{e}') from None
