"""The Tracr study: compiled Counter and Max-identifier, fine-tuned, audited.

Per program: compile (cached) -> load into Flax -> check the compiled model ->
fine-tune the lr x C_Tr x seed grid as one population -> Table 3 beside the
paper -> accuracy curves -> attention and MLP maps -> weight and neuron pruning
-> reverse fine-tuning against Scr.+FT -> report.md. Config:
configs/tracr_study.py (its docstring lists every choice the paper leaves open).
"""

from __future__ import annotations

import functools
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import checkpoint
from wrapper_study import config_check as cc
from wrapper_study import metrics
from wrapper_study import model as model_lib
from wrapper_study import paper_numbers
from wrapper_study.report import plots
from wrapper_study import population
from wrapper_study.analysis import pruning
from wrapper_study.report import tables
from wrapper_study import tracr_bridge
from wrapper_study import tracr_finetune as ft
from wrapper_study import tracr_tasks
from wrapper_study import train

PROGRAMS = ('counter', 'max_identifier')
# The program kwarg that sets the compiled operand.
_OPERAND_KWARG = {'counter': 'count_token', 'max_identifier': 'rank'}
# Not a parameter of the compiled model: tracr's read-out, rebuilt from labels.
FROZEN = ('unembed',)
METRICS = paper_numbers.TABLE3_COLUMNS
REFT_LOG_STEPS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 3000, 5000, 10000)


# ---------------------------------------------------------------- config ----


def task_spec(config, program: str) -> tracr_tasks.TaskSpec:
  t = config[program]
  return tracr_tasks.TaskSpec(program=program, vocab=t.vocab, seq_len=t.seq_len,
                              operand_pt=t.operand_pt, operand_ft=t.operand_ft, q=t.q)


def validate(config) -> None:
  """Everything that can be checked without compute; raises ConfigError."""
  cc.subset_of(config, 'programs', PROGRAMS)
  cc.non_negative_int(config, 'seed', 'figures.num_inputs', 'pruning.k_max')
  cc.positive(config, 'eval.num_samples', 'eval.batch_size', 'finetune.steps',
              'finetune.batch_size', 'finetune.num_evals', 'finetune.save_every',
              'finetune.log_every', 'pruning.num_grad_samples', 'reft.steps', integer=True)
  cc.non_negative_int(config, 'finetune.warmup_steps', 'reft.warmup_steps')
  for phase in ('finetune', 'reft'):
    if config[phase].warmup_steps >= config[phase].steps:
      cc.fail(f'{phase}.warmup_steps', config[phase].warmup_steps,
              f'must be below {phase}.steps={config[phase].steps}')
  for path in ('finetune.lrs', 'reft.lrs', 'reft.scratch_lrs'):
    cc.positive_list(config, path)
  cc.fractions(config, 'finetune.c_trs')
  if not config.finetune.seeds or any(not isinstance(s, int) or s < 0 for s in config.finetune.seeds):
    cc.fail('finetune.seeds', config.finetune.seeds, 'must be a non-empty tuple of integers >= 0')
  if not 0 <= config.finetune.momentum < 1:
    cc.fail('finetune.momentum', config.finetune.momentum, 'must lie in [0, 1)')
  if config.finetune.grad_clip_norm < 0:
    cc.fail('finetune.grad_clip_norm', config.finetune.grad_clip_norm, 'must be >= 0 (0: off)')
  if config.finetune.noise_std < 0:
    cc.fail('finetune.noise_std', config.finetune.noise_std, 'must be >= 0 (a standard deviation)')
  cc.subset_of(config, 'pruning.granularities', pruning.GRANULARITIES, allow_empty=True)
  cc.subset_of(config, 'reft.source_lrs', config.finetune.lrs, allow_empty=True)
  cc.subset_of(config, 'reft.source_c_trs', config.finetune.c_trs, allow_empty=True)
  cc.subset_of(config, 'figures.c_trs', config.finetune.c_trs, allow_empty=True)
  cc.subset_of(config, 'pruning.c_trs', config.finetune.c_trs, allow_empty=True)
  if not 0 < config.reft.revival_threshold <= 100:
    cc.fail('reft.revival_threshold', config.reft.revival_threshold, 'must lie in (0, 100]')
  for src in config.reft.source_lrs:
    if any(lr >= src for lr in config.reft.lrs):
      cc.fail('reft.lrs', config.reft.lrs,
              f'the paper forces reFT lrs below the fine-tuning lr; source lr {src:g} is not above all')
  for program in config.programs:
    try:
      task_spec(config, program).validate(prefix=program)
    except ValueError as e:
      raise cc.ConfigError(f'config.{e}') from None


# ---------------------------------------------------------- model helpers ----


def compile_model(config, program: str, operand=None) -> tracr_bridge.TracrModel:
  """The program compiled for `operand` (default: the pretraining operand)."""
  spec = task_spec(config, program)
  operand = spec.operand_pt if operand is None else operand
  return tracr_bridge.get_compiled(
      program, vocab=list(spec.vocab), max_seq_len=spec.seq_len,
      program_kwargs={_OPERAND_KWARG[program]: operand},
      cache_dir=config.cache_dir or None)


@functools.lru_cache(maxsize=None)
def _cache_fn(config: model_lib.TransformerConfig, names: tuple[str, ...]):
  """One jitted cached forward per (architecture, names): compiled once, reused."""
  return jax.jit(lambda params, tokens: model_lib.run_with_cache(config, params, tokens,
                                                                 names=names)[1])


def activations(tm, params, inputs_BxT, names) -> dict[str, np.ndarray]:
  return jax.device_get(_cache_fn(tm.config, tuple(names))(params, inputs_BxT))


def token_labels(tm, inputs_BxT) -> list[list[str]]:
  inv = {i: str(v) for v, i in tm.input_encoding.items()}
  return [[inv[int(t)] for t in row] for row in inputs_BxT]


def _mean_sd(values) -> tuple[float, float]:
  v = np.asarray(values, float)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


# ---------------------------------------------------------------- phases ----


def sgd_config(config, warmup_steps: int) -> dict:
  """SGD + momentum, warmup then cosine to lr/100; the peak lr is per member."""
  return dict(name='sgd', lr=1.0, momentum=config.finetune.momentum, schedule='warmup_cosine',
              warmup_steps=warmup_steps, min_lr_ratio=0.01, frozen=FROZEN,
              grad_clip_norm=config.finetune.grad_clip_norm)


def finetune_grid(config, program, tm, data, test_sets, workdir, writer):
  """The Table 3 grid as one population. Returns (members, final params, history)."""
  f = config.finetune
  members = population.grid(f.lrs, f.c_trs, f.seeds)
  params_P = ft.noisy_params(tm.params, members, config.seed, f.noise_std, FROZEN)
  opt_cfg = sgd_config(config, f.warmup_steps)
  eval_steps = sorted({int(s) for s in np.linspace(0, f.steps, f.num_evals + 1)})
  logging.info('%s: fine-tuning %d members (%d lrs x %d C_Tr x %d seeds) for %d steps in one jit',
               program, len(members), len(f.lrs), len(f.c_trs), len(f.seeds), f.steps)
  params_P, history = ft.run_population(
      name=f'{program}_finetune', tm=tm, members=members, params_P=params_P, opt_cfg=opt_cfg,
      total_steps=f.steps,
      batch_fn=ft.make_batch_fn(data, members, f.batch_size, config.seed, data.spec.operand_ft),
      test_sets=test_sets, eval_steps=eval_steps, workdir=workdir, writer=writer,
      save_every=f.save_every, log_every=f.log_every)
  return members, params_P, history


def table3_rows(config, program, members, final_acc, finite) -> list[dict]:
  """Mean and sd over the seeds that did not diverge (diverged ones are counted)."""
  rows = []
  paper = paper_numbers.TABLE3[program]
  for lr in config.finetune.lrs:
    for c in config.finetune.c_trs:
      cell = [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
      idx = [i for i in cell if finite[i]]
      row = dict(program=program, lr=lr, c_tr=c, n_seeds=len(cell), diverged=len(cell) - len(idx))
      for k, metric in enumerate(METRICS):
        mean, sd = _mean_sd(final_acc[metric][idx]) if idx else (float('nan'), float('nan'))
        row[f'{metric}'] = round(mean, 1)
        row[f'{metric}_sd'] = round(sd, 1)
        p = paper.get((float(f'{lr:g}'), float(f'{c:g}')))
        row[f'paper_{metric}'] = '' if p is None else p[k]
      rows.append(row)
  return rows


def table3_markdown(rows) -> str:
  out = []
  for r in rows:
    cells = [f'{r["lr"]:g}', f'{r["c_tr"]:g}' + (f' ({r["diverged"]} diverged)' if r['diverged'] else '')]
    for metric in METRICS:
      cells.append(f'{r[metric]:.1f} ± {r[metric + "_sd"]:.1f} ({r["paper_" + metric]})')
    out.append(dict(zip(['lr', 'C_Tr', 'C_Te=1 O_PT', 'C_Te=1 O_FT', 'C_Te=0 O_PT',
                         'C_Te=0 O_FT'], cells)))
  return (tables.markdown_table(out) + '\n\nEach cell: our mean ± sd over seeds (the paper\'s '
          'number in parentheses). Accuracies in %.')


def curves_figure(config, program, members, history, metric_pairs, title, logx=False,
                  group=lambda m: f'C_Tr={m.c_tr:g}', panel=lambda m: f'lr={m.lr:g}'):
  """Panels (one per `panel` value) x rows (metrics); one line per `group`; seed bands."""
  del config, program
  figs = []
  for key, ylabel in metric_pairs:
    steps, values = history.curve(key)
    figs.append((steps, values, ylabel))
  # One row per metric: members repeated with the metric as their row key.
  rows_members = [(k, m) for k in range(len(figs)) for m in members]
  x = figs[0][0]
  values = np.concatenate([v for _, v, _ in figs], axis=1)
  return plots.grouped_curves(
      x, values, rows_members, panel=lambda km: panel(km[1]), group=lambda km: group(km[1]),
      rows=lambda km: f'({km[0] + 1}) {figs[km[0]][2]}', ylabel='accuracy (%)',
      xlabel='iteration', title=title, logx=logx)


def map_figures(config, program, tm, members, params_P, test_sets, workdir, writer):
  """Attention maps per block (Figs 10, 40-45) and first-MLP maps (Figs 46, 53)."""
  n = config.figures.num_inputs
  if not n:
    return []
  inputs = test_sets['c_te0'].inputs[:n]
  seed0 = config.finetune.seeds[0]
  shown = [('compiled', tm.params)]
  for lr in config.finetune.lrs:
    for c in config.figures.c_trs:
      i = next(i for i, m in enumerate(members) if (m.lr, m.c_tr, m.seed) == (lr, c, seed0))
      shown.append((f'lr={lr:g} C_Tr={c:g}', population.member_params(params_P, i)))
  names = [f'blocks.{l}.attn.hook_pattern' for l in range(tm.config.n_layers)]
  written = []
  labels = token_labels(tm, inputs)
  for j in range(n):
    pats = np.stack([np.stack([activations(tm, p, inputs[j:j + 1], names)[nm][0, 0] for nm in names])
                     for _, p in shown])
    fig = plots.attention_maps(pats, [labels[j]] * len(shown), [s for s, _ in shown],
                               title=f'{program}: attention per block, input {j} '
                                     f'(O_PT={task_spec(config, program).operand_pt})')
    writer.write_images(0, {f'{program}/attention/input{j}': fig})
    written.append(plots.save(fig, workdir / 'figures' / f'attention_{program}_input{j}.png'))
  mlp = 'blocks.0.mlp.hook_post'
  acts = np.stack([activations(tm, p, inputs[:1], [mlp])[mlp][0] for _, p in shown])
  fig = plots.activation_map(acts, [labels[0]] * len(shown), [s for s, _ in shown],
                             title=f'{program}: first MLP activations (input 0)')
  written.append(plots.save(fig, workdir / 'figures' / f'mlp_{program}.png'))
  return written


@functools.lru_cache(maxsize=None)
def _prune_sweep_fn(config: model_lib.TransformerConfig, readout: int, units: pruning.Units,
                    ks: tuple[int, ...]):
  """jit: (params [C], rank [C], inputs, label_pt, label_ft) -> [C, K, 3].

  Per member and K: Acc O_PT (%), Acc O_FT (%) and the number of distinct
  classes predicted (Fig. 59's check that a pruned model has not collapsed to
  a constant answer). C members at once: one batched evaluation per chunk.
  """
  def sweep(params, rank, inputs, label_pt, label_ft):
    def evaluate(p):
      logits, _ = model_lib.Transformer(config).apply({'params': p}, inputs)
      pred = logits[:, readout].argmax(-1)
      distinct = (jnp.bincount(pred, length=config.n_outputs) > 0).sum()
      return jnp.stack([(pred == label_pt).mean() * 100, (pred == label_ft).mean() * 100,
                        distinct.astype(jnp.float32)])
    return pruning.sweep(evaluate, params, units, rank, ks)
  return jax.jit(jax.vmap(sweep, in_axes=(0, 0, None, None, None)))


def prune_population(config, program, tm, data, members, params_P, test_sets, units_by_gran,
                     chunk: int = 6):
  """Pruning curves of the members with C_Tr in pruning.c_trs.

  Returns ({granularity: [M, K+1, 3] on C_Te=0 (see _prune_sweep_fn)}, top units, the M
  members).
  """
  idx = [i for i, m in enumerate(members) if m.c_tr in config.pruning.c_trs]
  chosen = [members[i] for i in idx]
  params_M = jax.tree.map(lambda x: x[np.asarray(idx)], params_P)
  rng = np.random.default_rng([config.seed, 11])
  grad_toks = tracr_tasks.sample(data.spec, rng, config.pruning.num_grad_samples, None)
  grad_batch = {'tokens': jnp.asarray(data.inputs(grad_toks)),
                'labels': jnp.asarray(data.labels(grad_toks, data.spec.operand_pt))}
  loss_fn = ft.answer_loss_fn(tm.config, tm.readout_position)
  ks = tuple(range(config.pruning.k_max + 1))
  ts = test_sets['c_te0']
  curves, top = {}, {}
  for gran, units in units_by_gran.items():
    score_fn = jax.jit(jax.vmap(lambda p: pruning.prune_order(
        pruning.scores(loss_fn, p, grad_batch, units))))
    ranks_M = score_fn(params_M)
    sweep = _prune_sweep_fn(tm.config, tm.readout_position, units, ks)
    parts = []
    for i in range(0, len(idx), chunk):
      sl = slice(i, i + chunk)
      parts.append(np.asarray(sweep(jax.tree.map(lambda x: x[sl], params_M), ranks_M[sl],
                                    ts.inputs, ts.label_pt, ts.label_ft)))
    curves[gran] = np.concatenate(parts)
    top[gran] = [pruning.top_units(units, ranks_M[i], 3) for i in range(len(idx))]
  return curves, top, chosen


def pruning_rows(config, program, members, curves, top):
  rows = []
  for gran, c_PxKx2 in curves.items():
    for lr in config.finetune.lrs:
      for c in config.pruning.c_trs:
        idx = [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
        pt, ftc = c_PxKx2[idx, :, 0].mean(0), c_PxKx2[idx, :, 1].mean(0)
        distinct = c_PxKx2[idx, :, 2].mean(0)
        best = int(pt.argmax())
        rows.append(dict(program=program, granularity=gran, lr=lr, c_tr=c,
                         acc_o_pt_k0=round(float(pt[0]), 1), best_k=best,
                         acc_o_pt_best=round(float(pt[best]), 1),
                         gain_o_pt=round(float(pt[best] - pt[0]), 1),
                         acc_o_ft_k0=round(float(ftc[0]), 1),
                         acc_o_ft_at_best=round(float(ftc[best]), 1),
                         acc_o_pt_k1=round(float(pt[min(1, len(pt) - 1)]), 1),
                         classes_k0=round(float(distinct[0]), 1),
                         classes_at_best=round(float(distinct[best]), 1),
                         first_pruned_seed0=top[gran][idx[0]][0]))
  return rows


def pruning_figure(config, program, gran, members, curves):
  ks = np.arange(config.pruning.k_max + 1)
  lrs = config.finetune.lrs
  fig, axes = plots.plt.subplots(2, len(lrs), figsize=(3.3 * len(lrs), 5.4), squeeze=False)
  for col, lr in enumerate(lrs):
    for row, (j, name) in enumerate([(0, 'Acc O_PT'), (1, 'Acc O_FT')]):
      ax = axes[row, col]
      for c in config.pruning.c_trs:
        idx = [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
        mean, (lo, hi) = plots.seed_band(curves[idx, :, j])
        line, = ax.plot(ks, mean, label=f'C_Tr={c:g}')
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
      ax.set_ylim(-3, 103)
      ax.set_title(f'lr={lr:g}', fontsize=8)
      ax.set_xlabel(f'pruned {gran}s (K)', fontsize=8)
      ax.set_ylabel(f'{name} (C_Te=0)', fontsize=8)
      ax.grid(alpha=0.3)
  axes[0, -1].legend(fontsize=6)
  fig.suptitle(f'{program}: {gran} pruning by grad x weight of the O_PT loss '
               '(Figs 55-58 style; band 95% over seeds)', fontsize=10)
  fig.tight_layout()
  return fig


def reft_population(config, program, tm, ft_tm, data, members, params_P, test_sets, workdir, writer):
  """reFT of chosen fine-tuned models and the Scr.+FT baseline, as one population."""
  r = config.reft
  seeds = config.finetune.seeds
  reft_members, sources = [], []
  for i, m in enumerate(members):
    if m.lr in r.source_lrs and m.c_tr in r.source_c_trs:
      for lr in r.lrs:
        reft_members.append(population.Member(lr, None, m.seed, f'FT lr={m.lr:g} C_Tr={m.c_tr:g}'))
        sources.append(population.member_params(params_P, i))
  scratch = [population.Member(lr, None, s, 'Scr.+FT') for lr in r.scratch_lrs for s in seeds]
  scratch_P = ft.noisy_params(ft_tm.params, scratch, config.seed + 1, config.finetune.noise_std,
                              FROZEN)
  params = population.concat(train.stack(sources) if sources else None, scratch_P)
  reft_members += scratch
  opt_cfg = sgd_config(config, r.warmup_steps)
  eval_steps = sorted({s for s in REFT_LOG_STEPS if s <= r.steps} | {r.steps})
  logging.info('%s: reverse fine-tuning %d members (incl. %d Scr.+FT) for %d steps',
               program, len(reft_members), len(scratch), r.steps)
  _, history = ft.run_population(
      name=f'{program}_reft', tm=tm, members=reft_members, params_P=params, opt_cfg=opt_cfg,
      total_steps=r.steps,
      batch_fn=ft.make_batch_fn(data, reft_members, config.finetune.batch_size, config.seed,
                                data.spec.operand_pt, salt=1),
      test_sets={'c_te0': test_sets['c_te0']}, eval_steps=eval_steps, workdir=workdir,
      writer=writer, save_every=config.finetune.save_every, log_every=config.finetune.log_every)
  return reft_members, history


def reft_rows(config, program, reft_members, history):
  steps, acc = history.curve('c_te0/acc_o_pt')
  rows = []
  groups = sorted({(m.source, m.lr) for m in reft_members}, key=lambda g: (g[0] == 'Scr.+FT', g))
  for source, lr in groups:
    idx = [i for i, m in enumerate(reft_members) if (m.source, m.lr) == (source, lr)]
    revive = []
    for i in idx:
      hit = np.flatnonzero(acc[:, i] >= config.reft.revival_threshold)
      revive.append(int(steps[hit[0]]) if len(hit) else None)
    done = [x for x in revive if x is not None]
    rows.append(dict(program=program, source=source, reft_lr=lr, n_seeds=len(idx),
                     acc_o_pt_start=round(float(acc[0, idx].mean()), 1),
                     acc_o_pt_end=round(float(acc[-1, idx].mean()), 1),
                     revived=f'{len(done)}/{len(idx)}',
                     iters_to_revival_median=int(np.median(done)) if done else '',
                     iters_to_revival_each=' '.join('-' if x is None else str(x) for x in revive)))
  return rows


# ------------------------------------------------------------ the claims ----


def claims(program, t3, prune_rows, reft_rows_) -> list[dict]:
  """The paper's Tracr claims, each with our measurement and a verdict.

  Thresholds were fixed when this was written, before any run: 'high' >= 90%,
  'low' <= 10%, 'cannot learn' < 50%, pruning gain > 60 points.
  """
  get = lambda lr, c: next((r for r in t3 if r['lr'] == lr and r['c_tr'] == c), None)
  out = []

  def add(claim, row_ok, measured):
    verdict = 'holds' if row_ok else 'does not hold'
    if row_ok is None:
      verdict = 'not measured (cell not in the grid, or nothing revived)'
    out.append(dict(program=program, claim=claim, measured=measured, verdict=verdict))

  if program == 'counter':
    r = get(1e-2, 1.0)
    add('lr 1e-2, C_Tr=1: Acc O_FT high at C_Te=1 and low at C_Te=0 (spurious wrapper)',
        None if r is None else r['c_te1/acc_o_ft'] >= 90 and r['c_te0/acc_o_ft'] <= 10,
        '' if r is None else f"{r['c_te1/acc_o_ft']:.1f} / {r['c_te0/acc_o_ft']:.1f}")
    r = get(1e-3, 0.0)
    add('lr 1e-3, C_Tr=0: cannot learn to count b (Acc O_FT at C_Te=0 < 50)',
        None if r is None else r['c_te0/acc_o_ft'] < 50,
        '' if r is None else f"{r['c_te0/acc_o_ft']:.1f}")
    r = get(1e-1, 0.0)
    add('lr 1e-1, C_Tr=0: learns to count b (Acc O_FT at C_Te=0 >= 90)',
        None if r is None else r['c_te0/acc_o_ft'] >= 90,
        '' if r is None else f"{r['c_te0/acc_o_ft']:.1f}")
    pr = [p for p in prune_rows if p['granularity'] == 'weight' and p['c_tr'] == 1.0
          and p['lr'] in (1e-2, 1e-3)]
    add('C_Tr=1, lr 1e-2/1e-3: pruning a few weights raises Acc O_PT by > 60 points',
        None if not pr else all(p['gain_o_pt'] > 60 for p in pr),
        '; '.join(f"lr {p['lr']:g}: +{p['gain_o_pt']:.1f} at K={p['best_k']}" for p in pr))
  else:
    r = get(1e-4, 1.0)
    r0 = get(1e-4, 0.0)
    add('lr 1e-4: keeps the sorting, learns the read-out (Acc O_FT >= 90 at C_Te=0)',
        None if r0 is None else r0['c_te0/acc_o_ft'] >= 90,
        '' if r0 is None else f"C_Tr=0: {r0['c_te0/acc_o_ft']:.1f}" +
        ('' if r is None else f", C_Tr=1: {r['c_te0/acc_o_ft']:.1f}"))
    r = get(1e-2, 0.0)
    add('lr 1e-2, C_Tr=0: the sorting is distorted (Acc O_FT at C_Te=0 < 90)',
        None if r is None else r['c_te0/acc_o_ft'] < 90,
        '' if r is None else f"{r['c_te0/acc_o_ft']:.1f}")
  fast = [x for x in reft_rows_ if x['source'].startswith('FT lr=0.01')]
  slow = [x for x in reft_rows_ if x['source'] == 'Scr.+FT']
  big = [x for x in reft_rows_ if x['source'].startswith('FT lr=0.1 ')]
  if fast and slow:
    best_ft = min((x['iters_to_revival_median'] for x in fast if x['iters_to_revival_median'] != ''),
                  default=None)
    best_scr = min((x['iters_to_revival_median'] for x in slow if x['iters_to_revival_median'] != ''),
                   default=None)
    add('reFT after lr 1e-2 revives O_PT faster than Scr.+FT learns it',
        None if best_ft is None and best_scr is None else
        best_ft is not None and (best_scr is None or best_ft < best_scr),
        f'fastest median iterations: reFT {best_ft}, Scr.+FT {best_scr}')
  if big:
    add('no revival after lr 1e-1 fine-tuning',
        all(x['revived'].startswith('0/') for x in big),
        '; '.join(f"{x['source']} reFT lr {x['reft_lr']:g}: {x['revived']}" for x in big))
  return out


# ------------------------------------------------------------------- run ----


def run(config, workdir) -> dict:
  validate(config)
  workdir = tables.make_workdir(workdir)
  results = {'compiled': [], 'table3': [], 'pruning': [], 'reft': [], 'claims': [], 'timing': []}
  sections = []
  with metrics.MetricWriter(workdir) as writer:
    for program in config.programs:
      t_program = time.time()
      timing = {'program': program}
      ######## Compile, load, check what can fail before compute ########
      spec = task_spec(config, program)
      t0 = time.time()
      tm = compile_model(config, program)
      ft_tm = compile_model(config, program, operand=spec.operand_ft)
      if model_lib.param_shapes(ft_tm.params) != model_lib.param_shapes(tm.params):
        raise ValueError(f'{program} compiled for O_FT={spec.operand_ft!r} has another shape '
                         'than for O_PT; Scr.+FT needs both in one population.')
      units = {g: pruning.make_units(tm.params, g) for g in config.pruning.granularities}
      for g, u in units.items():
        pruning.check_k(config.pruning.k_max, u)
      timing['compile_s'] = round(time.time() - t0, 1)
      logging.info('%s: compiled and loaded in %.1fs: %s', program, time.time() - t0, tm.config)
      with checkpoint.Checkpointer(workdir / 'checkpoints' / f'{program}_compiled',
                                   meta=checkpoint.make_meta(f'tracr/{program}', tm.config,
                                                             tm.params),
                                   save_every=1, max_to_keep=1) as ckpt:
        ckpt.save(0, {'params': tm.params}, force=True)

      data = ft.TaskData(spec, tm)
      test_sets = ft.make_test_sets(data, config.eval.num_samples, config.seed)
      single = jax.tree.map(lambda x: x[None], tm.params)
      acc0 = ft.accuracies(tm.config, tm.readout_position, single, test_sets)
      results['compiled'].append(dict(
          program=program, seq_len=spec.seq_len, d_model=tm.config.d_model,
          n_layers=tm.config.n_layers, d_mlp=tm.config.d_mlp,
          n_params=sum(int(np.size(x)) for x in jax.tree.leaves(tm.params)),
          **{k: round(float(v[0]), 1) for k, v in acc0.items()}))
      writer.write_scalars(0, {f'compiled/{program}/{k}': float(v[0]) for k, v in acc0.items()})

      ######## Fine-tuning grid (one jit) ########
      t0 = time.time()
      members, params_P, history = finetune_grid(config, program, tm, data, test_sets, workdir,
                                                 writer)
      timing['finetune_s'] = round(time.time() - t0, 1)
      final = {m: history.curve(m)[1][-1] for m in METRICS}
      noised = {m: history.curve(m)[1][0] for m in METRICS}  # Step 0: compiled + noise.
      results['compiled'][-1].update(
          {f'noised {m}': round(float(noised[m].mean()), 1) for m in METRICS})
      t3 = table3_rows(config, program, members, final, population.finite_members(params_P))
      results['table3'] += t3
      tables.write_csv(workdir / 'tables' / f'table3_{program}.csv', t3)
      fig = curves_figure(config, program, members, history,
                          [('c_te0/acc_o_ft', 'Acc O_FT, C_Te=0 (%)'),
                           ('c_te1/acc_o_ft', 'Acc O_FT, C_Te=1 (%)'),
                           ('c_te0/acc_o_pt', 'Acc O_PT, C_Te=0 (%)')],
                          f'{program}: accuracy during fine-tuning')
      plots.save(fig, workdir / 'figures' / f'finetune_curves_{program}.png')

      ######## Attention and MLP maps ########
      t0 = time.time()
      map_figures(config, program, tm, members, params_P, test_sets, workdir, writer)
      timing['maps_s'] = round(time.time() - t0, 1)

      ######## Pruning ########
      t0 = time.time()
      prows = []
      if units:
        curves, top, pruned = prune_population(config, program, tm, data, members, params_P,
                                               test_sets, units)
        prows = pruning_rows(config, program, pruned, curves, top)
        for gran, c in curves.items():
          plots.save(pruning_figure(config, program, gran, pruned, c),
                     workdir / 'figures' / f'pruning_{gran}_{program}.png')
        tables.write_csv(workdir / 'tables' / f'pruning_{program}.csv', prows)
      results['pruning'] += prows
      timing['pruning_s'] = round(time.time() - t0, 1)

      ######## Reverse fine-tuning vs Scr.+FT ########
      t0 = time.time()
      rrows = []
      reft_members, reft_history = reft_population(config, program, tm, ft_tm, data, members,
                                                   params_P, test_sets, workdir, writer)
      rrows = reft_rows(config, program, reft_members, reft_history)
      tables.write_csv(workdir / 'tables' / f'reft_{program}.csv', rrows)
      fig = curves_figure(config, program, reft_members, reft_history,
                          [('c_te0/acc_o_pt', 'Acc O_PT, C_Te=0 (%)')],
                          f'{program}: reverse fine-tuning vs Scr.+FT (Figs 27, 39)', logx=True,
                          group=lambda m: m.source, panel=lambda m: f'reFT lr={m.lr:g}')
      plots.save(fig, workdir / 'figures' / f'reft_{program}.png')
      results['reft'] += rrows
      timing['reft_s'] = round(time.time() - t0, 1)
      timing['total_s'] = round(time.time() - t_program, 1)
      results['timing'].append(timing)

      ######## Claims ########
      results['claims'] += claims(program, t3, prows, rrows)
      sections.append((f'{program}: Table 3 (after {config.finetune.steps} iterations)',
                       table3_markdown(t3) +
                       f'\n\n![curves](figures/finetune_curves_{program}.png)'))
      if prows:
        cols = ['granularity', 'lr', 'c_tr', 'acc_o_pt_k0', 'acc_o_pt_k1', 'best_k',
                'acc_o_pt_best', 'gain_o_pt', 'acc_o_ft_k0', 'acc_o_ft_at_best', 'classes_k0',
                'classes_at_best', 'first_pruned_seed0']
        sections.append((f'{program}: pruning (C_Te=0, mean over seeds)',
                         tables.markdown_table(prows, cols) + '\n\nclasses_*: distinct answers '
                         'predicted on the test set (a gain with ~1 class is a collapse to the '
                         'most frequent count, not a revived capability).\n\n' + '\n'.join(
                             f'![{g}](figures/pruning_{g}_{program}.png)' for g in units)))
      sections.append((f'{program}: reverse fine-tuning (revived: Acc O_PT >= '
                       f'{config.reft.revival_threshold:g}%)',
                       tables.markdown_table(rrows, ['source', 'reft_lr', 'acc_o_pt_start',
                                                     'acc_o_pt_end', 'revived',
                                                     'iters_to_revival_median',
                                                     'iters_to_revival_each']) +
                       f'\n\n![reft](figures/reft_{program}.png)'))
      maps = sorted(p.name for p in (workdir / 'figures').glob(f'*_{program}*.png')
                    if p.name.startswith(('attention', 'mlp')))
      sections.append((f'{program}: attention and MLP maps',
                       '\n'.join(f'![{m}](figures/{m})' for m in maps)))

  tables.write_csv(workdir / 'tables' / 'compiled_accuracy.csv', results['compiled'])
  tables.write_csv(workdir / 'tables' / 'claims.csv', results['claims'])
  tables.write_csv(workdir / 'tables' / 'timing.csv', results['timing'])
  head = [('Claims of the paper, checked', tables.markdown_table(
              results['claims'], ['program', 'claim', 'measured', 'verdict']) +
           '\n\nThresholds fixed in wrapper_study/experiments/tracr_study.py before any run.'),
          ('Scale', f'fine-tuning {config.finetune.steps} iterations (paper 10K), batch '
           f'{config.finetune.batch_size} (paper 96), seeds {tuple(config.finetune.seeds)}, '
           f'reFT {config.reft.steps} iterations; test sets of {config.eval.num_samples}.'),
          ('Compiled models (no training)', tables.markdown_table(results['compiled']) +
           '\n\nThe Flax port runs tracr\'s weights unchanged, so Acc O_PT is 100. '
           '"noised" columns: the same models after the N(0, noise_std) weight noise that '
           'starts fine-tuning (mean over seeds), before any update.'),
          ('Time (s)', tables.markdown_table(results['timing']))]
  tables.write_report(workdir / 'report.md', 'Tracr study', head + sections)
  return results
