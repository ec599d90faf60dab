"""Fine-tuning learning rates picked by what they do, at the start of a run.

The paper's lrs (App. C: 1e-4, 1e-5, 1e-6 for 10K iterations on a model pretrained for 200K)
are named by their behaviour: eta_L learns the fine-tuning task, eta_S barely changes the
model, eta_M lies between. At another scale the same numbers do other things (an AdamW step
moves a parameter by about lr, so 500 iterations at 1e-6 move nothing), so with
`finetune.lrs=()` the run first measures, on its own pretrained model, what each candidate
does, and picks by anchors fixed in the config before anything runs:

- every lr of `calibration.lr_grid` fine-tunes the `calibration.prior` model at C_Tr = 0 for
  the fine-tuning budget (`finetune.steps`, batch and schedule as the study's), with
  `calibration.seed`, which is not one of the study's seeds (so the chosen lrs are then
  measured on fresh runs);
- eta_L: the smallest lr whose Acc O_FT (C_Te = 0, the end of the budget) reaches
  `calibration.learn_min` (99%);
- eta_S: the largest lr below eta_L at which Acc O_FT stays <= `calibration.stay_max` (60%);
- eta_M: the grid lr strictly between them nearest (in log) their geometric mean; none
  between: the geometric mean itself.
When no lr reaches learn_min, eta_L is the best-learning lr and the report says the anchor
was not met; likewise for eta_S (then the smallest lr).

Movement, reported for every candidate beside the paper's: the lr budget Sum_t lr_t of
fine-tuning over that of pretraining (the paper's is 1e-4 x 10K / (1e-3 x 200K) = 0.005 at
eta_L: same schedule shape on both sides), and the measured parameter movement
||theta_FT - theta_PT|| / ||theta_PT - theta_init|| (L2 over all parameters).
"""

from __future__ import annotations

import copy
import math
import pathlib
import sys

import jax
import numpy as np

from wrapper_study import metrics
from wrapper_study import optim
from wrapper_study import population
from wrapper_study.pcfg import finetune_data
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import paper
from wrapper_study.pcfg import tasks
from wrapper_study.pcfg import train as pcfg_train
from wrapper_study.report import tables
from wrapper_study.report import plots

ACC_FT = 'c_te0/acc_o_ft'
ACC_PT = 'c_te0/acc_o_pt'
# Paper App. C: fine-tuning lrs over 10K iterations, pretraining 1e-3 over 200K (Table 5's model).
PAPER_LRS = dict(zip(('eta_L', 'eta_M', 'eta_S'), paper.APPENDIX_C_LRS))
PAPER_FT_STEPS, PAPER_PT_LR, PAPER_PT_STEPS = 10_000, 1e-3, 200_000
# Table 5 (200K pretraining): pretrained Acc O_FT (count b) at P(a) = 0.999 and 0.5, the
# paper's low and high priors: the weakly and the strongly relevant capability.
PAPER_PRETRAINED_ACC_FT = {0.999: 27.1, 0.5: 99.9}


def needed(config) -> bool:
  """finetune.lrs=() asks for calibrated lrs."""
  return not tuple(config.finetune.lrs)


def run_name(config) -> str:
  return (f'calibration_{pcfg_model.pretrain_name(config, config.calibration.prior)}_'
          f'{config.pretrain.steps}')


def lr_budget(opt_lr: float, warmup_fraction: float, steps: int) -> float:
  """Sum over the steps of the schedule's lr (warmup + cosine to lr / 100, as every phase)."""
  return optim.lr_sum(pcfg_train._adamw(opt_lr, 0.0, warmup_fraction), steps)  # pylint: disable=protected-access


def paper_budget_ratio(lr: float) -> float:
  return lr * PAPER_FT_STEPS / (PAPER_PT_LR * PAPER_PT_STEPS)


def _l2(tree) -> float:
  return math.sqrt(sum(float(np.sum(np.square(np.asarray(x, np.float64))))
                       for x in jax.tree.leaves(tree)))


def movement(params_ft, params_pt, params_init) -> float:
  """||theta_FT - theta_PT|| / ||theta_PT - theta_init||."""
  sub = lambda a, b: jax.tree.map(lambda x, y: np.asarray(x) - np.asarray(y), a, b)
  return _l2(sub(params_ft, params_pt)) / _l2(sub(params_pt, params_init))


def choose(lrs, acc_ft, learn_min: float, stay_max: float) -> dict:
  """{eta_L, eta_M, eta_S, notes}: the rule of the module docstring on measured Acc O_FT."""
  order = np.argsort(lrs)
  lrs, acc = np.asarray(lrs, float)[order], np.asarray(acc_ft, float)[order]
  notes = []
  learned = [i for i in range(len(lrs)) if acc[i] >= learn_min]
  if learned:
    i_l = learned[0]
  else:
    i_l = int(np.nanargmax(acc))
    notes.append(f'no lr reached {learn_min:g}% Acc O_FT: eta_L is the best, '
                 f'{lrs[i_l]:g} ({acc[i_l]:.1f}%)')
  stayed = [i for i in range(i_l) if acc[i] <= stay_max]
  if stayed:
    i_s = stayed[-1]
  else:
    i_s = 0
    notes.append(f'no lr below eta_L kept Acc O_FT <= {stay_max:g}%: eta_S is the smallest, '
                 f'{lrs[0]:g} ({acc[0]:.1f}%)')
  eta_l, eta_s = float(lrs[i_l]), float(lrs[i_s])
  middle = math.sqrt(eta_l * eta_s)
  between = [float(lr) for lr in lrs[i_s + 1:i_l]]
  eta_m = (min(between, key=lambda lr: abs(math.log(lr / middle))) if between
           else float(f'{middle:.3g}'))
  if eta_l <= eta_s:
    notes.append(f'eta_L {eta_l:g} is not above eta_S {eta_s:g}: the grid does not separate them')
  return dict(eta_L=eta_l, eta_M=eta_m, eta_S=eta_s, notes=notes)


def calibrate(config, params_pt, params_init, workdir, writer) -> dict:
  """Fine-tunes every candidate lr once (one population); returns rows and the choice."""
  cal, f = config.calibration, config.finetune
  c = copy.deepcopy(config)
  c.finetune.c_trs = (0.0,)
  c.finetune.seeds = (int(cal.seed),)
  members = population.grid(cal.lr_grid, (0.0,), (int(cal.seed),))
  members, history, params_P = pcfg_train.finetune(c, cal.prior, config.pretrain.steps,
                                                   params_pt, workdir, writer,
                                                   name=run_name(config), members=members)
  end = f.steps
  steps_ft, acc_ft = history.curve(ACC_FT)
  steps_pt, acc_pt = history.curve(ACC_PT)
  pt_budget = lr_budget(config.pretrain.lr, config.pretrain.warmup_fraction, config.pretrain.steps)
  rows = []
  for i, m in enumerate(members):
    rows.append(dict(
        lr=m.lr, acc_o_ft_start=float(acc_ft[0, i]),
        acc_o_ft=float(acc_ft[list(steps_ft).index(end), i]),
        acc_o_pt=float(acc_pt[list(steps_pt).index(end), i]),
        lr_budget_ratio=lr_budget(m.lr, f.warmup_fraction, f.steps) / pt_budget,
        movement=movement(population.member_params(params_P, i), params_pt, params_init)))
  rows.sort(key=lambda r: r['lr'])
  chosen = choose([r['lr'] for r in rows], [r['acc_o_ft'] for r in rows],
                  cal.learn_min, cal.stay_max)
  return dict(rows=rows, chosen=chosen, prior=pcfg_model.prior_name(cal.prior), seed=cal.seed,
              steps=f.steps, learn_min=cal.learn_min, stay_max=cal.stay_max)


def with_lrs(config, chosen: dict):
  """A copy of the config whose finetune.lrs are the chosen (eta_L, eta_M, eta_S)."""
  c = copy.deepcopy(config)
  c.finetune.lrs = tuple(sorted({chosen['eta_L'], chosen['eta_M'], chosen['eta_S']},
                                reverse=True))
  return fill_reft_lrs(c)


def fill_reft_lrs(config):
  """analysis.reft_lrs=() means eta_M and eta_S of finetune.lrs (the paper's reFT lrs)."""
  if 'analysis' not in config or tuple(config.analysis.reft_lrs) or needed(config):
    return config
  c = copy.deepcopy(config)
  lrs = sorted(config.finetune.lrs, reverse=True)
  c.analysis.reft_lrs = tuple(lrs[1:3]) or tuple(lrs)
  return c


# ------------------------------------------------------------------ report ----


FIGURE = 'lr_calibration'


def figure(cal: dict):
  """Acc O_FT at the end of the budget against lr, the two anchors and the chosen lrs."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows, chosen = cal['rows'], cal['chosen']
  fig, ax = plt.subplots(figsize=(5.5, 3.8), layout='constrained')
  lrs = [r['lr'] for r in rows]
  ax.plot(lrs, [r['acc_o_ft'] for r in rows], marker='o', label='Acc O_FT (C_Te=0)')
  ax.plot(lrs, [r['acc_o_pt'] for r in rows], marker='.', ls='--', label='Acc O_PT (C_Te=0)')
  ax.axhline(cal['learn_min'], color='g', lw=0.8, label=f"learn anchor {cal['learn_min']:g}%")
  ax.axhline(cal['stay_max'], color='r', lw=0.8, label=f"stay anchor {cal['stay_max']:g}%")
  for name in ('eta_L', 'eta_M', 'eta_S'):
    ax.axvline(chosen[name], color='k', lw=0.6, ls=':')
    ax.text(chosen[name], 2, name, rotation=90, fontsize=plots.TICK, va='bottom')
  ax.set_xscale('log')
  ax.set_xlabel('fine-tuning lr (C_Tr = 0)', fontsize=plots.LABEL)
  ax.set_ylabel('accuracy (%)', fontsize=plots.LABEL)
  ax.set_ylim(0, 102)
  ax.set_title(f"lr calibration, prior {cal['prior']}, {cal['steps']} iterations",
               fontsize=plots.LABEL + 1)
  ax.tick_params(labelsize=plots.TICK)
  ax.legend(fontsize=plots.TICK)
  ax.grid(alpha=0.3)
  return fig


def report_section(config, cal: dict, pre_rows, figure_path: str = '') -> tuple[str, str]:
  """The anchors measured at the start of the run and the lrs chosen from them."""
  chosen = cal['chosen']
  acc_ft = f'{finetune_data.TASK_FAMILY[config.finetune.task]}_{config.finetune.operand_ft}'
  anchors = []
  for r in pre_rows:
    prior = _prior_of(config, r['prior'])
    terminals = pcfg_model.vocab(config).terminals
    p_a = float(tasks.resolve_prior(pcfg_model.prior_probs(config, prior), terminals)[0])
    paper_p_a = round(float(tasks.resolve_prior(prior, terminals)[0]), 3)  # The role's.
    paper_acc = PAPER_PRETRAINED_ACC_FT.get(paper_p_a, '')
    anchors.append(dict(prior=r['prior'], p_a=p_a, pretrained_acc_o_ft=r.get(acc_ft, ''),
                        paper_table5=paper_acc))
  curve = [dict(lr=f"{r['lr']:g}", acc_o_ft_start=round(r['acc_o_ft_start'], 1),
                acc_o_ft=round(r['acc_o_ft'], 1), acc_o_pt=round(r['acc_o_pt'], 1),
                lr_budget_vs_pretraining=f"{r['lr_budget_ratio']:.2g}",
                movement=f"{r['movement']:.3g}",
                chosen=' '.join(k for k in ('eta_L', 'eta_M', 'eta_S') if chosen[k] == r['lr']))
           for r in cal['rows']]
  paper = ', '.join(f'{k} {v:g}: {paper_budget_ratio(v):.2g}'
                    for k, v in PAPER_LRS.items())
  notes = ''.join(f'\n- anchor not met: {n}' for n in chosen['notes'])
  text = (
      f"Fine-tuning lrs picked by behaviour before the study's grid ran "
      f"(`wrapper_study/pcfg/calibration.py`; anchors fixed in the config): every lr of "
      f"`calibration.lr_grid` fine-tuned the {cal['prior']} model at C_Tr = 0 for the budget "
      f"({cal['steps']} iterations), seed {cal['seed']} (not a study seed). eta_L = the "
      f"smallest lr reaching {cal['learn_min']:g}% Acc O_FT, eta_S = the largest lr below it "
      f"staying <= {cal['stay_max']:g}%, eta_M = the grid lr between nearest their geometric "
      f"mean.\n\n**Chosen: eta_L {chosen['eta_L']:g}, eta_M {chosen['eta_M']:g}, eta_S "
      f"{chosen['eta_S']:g}** (paper: 1e-4, 1e-5, 1e-6).{notes}\n\n"
      f"Because eta_S is chosen so that count({config.finetune.operand_ft}) stays low at "
      f"C_Tr = 0, the Table 5 signature 'eta_S cannot learn it' is that anchor measured again "
      f"on the study's seeds, not independent evidence.\n\n"
      f"Movement: `lr_budget_vs_pretraining` = Sum_t lr_t of fine-tuning / that of "
      f"pretraining (same schedule shape; paper {paper}); `movement` = ||theta_FT - "
      f"theta_PT|| / ||theta_PT - theta_init||, measured.\n\n"
      + tables.markdown_table(curve)
      + (f'\n\n![lr calibration]({figure_path})' if figure_path else '') +
      '\n\nPretrained accuracy on count(O_FT) per prior, against Table 5 (200K iterations):\n\n'
      + tables.markdown_table(anchors))
  return ('Calibration, the starting point', text)


def _prior_of(config, name: str):
  """The prior (name or probabilities) of config.pretrain.priors whose name is `name`."""
  for prior in tuple(config.pretrain.priors):
    if pcfg_model.prior_name(prior) == name:
      return prior
  return name


# ----------------------------------------------------------- in an experiment ----

PHASE = 'calibrate lrs'


def is_calibration_prior(config, prior) -> bool:
  return needed(config) and (pcfg_model.prior_name(prior) ==
                             pcfg_model.prior_name(config.calibration.prior))


def ordered_priors(config) -> list:
  """The priors in run order: the calibration prior first when lrs are calibrated."""
  priors = list(config.pretrain.priors)
  return sorted(priors, key=lambda p: not is_calibration_prior(config, p))


def phases(config, prior) -> list[str]:
  """The phases maybe_calibrate times after `prior`'s pretraining (for the run's plan)."""
  if not is_calibration_prior(config, prior):
    return []
  return [PHASE, f'figure {FIGURE}.png']


def maybe_calibrate(config, prior, workdir, writer, times):
  """After `prior` is pretrained: (config with the chosen lrs, calibration result) when this
  is the calibration prior, else (config, None). Draws figures/lr_calibration.png."""
  if not is_calibration_prior(config, prior):
    return config, None
  with times.timed(PHASE):
    params_pt = pcfg_train.load_pretrained(config, prior, config.pretrain.steps, workdir)
    params_init = pcfg_train.init_params(config, list(config.pretrain.priors).index(prior))
    result = calibrate(config, params_pt, params_init, workdir, writer)
  path = pathlib.Path(workdir) / 'figures' / f'{FIGURE}.png'
  with times.timed(f'figure {path.name}'):
    plots.save_once(lambda: figure(result), path, metrics.digest(str(result)),
                    sys.modules[__name__])
  return with_lrs(config, result['chosen']), result
