"""The PCFG world: pretrain on the grammar, fine-tune the lr x C_Tr x seed grid.

Per operand prior: pretrain (AdamW, next-token loss on every token, data drawn
on the fly, checkpoints kept at pretrain.keep_steps) -> for each kept
checkpoint, fine-tune the grid as one population (AdamW, answer-only loss) ->
Acc O_PT / Acc O_FT at C_Te = 0 and 1 at the two evaluation points -> the
layout of Tables 5-8 beside the paper -> the Table 5 signatures with verdicts.
Config: configs/pcfg_study.py.
"""

from __future__ import annotations

import functools
import pathlib
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import checkpoint
from wrapper_study import config_check as cc
from wrapper_study import losses
from wrapper_study import metrics
from wrapper_study import model as model_lib
from wrapper_study import optim
from wrapper_study import paper_numbers
from wrapper_study import population
from wrapper_study.report import tables
from wrapper_study import train
from wrapper_study.pcfg import finetune_data
from wrapper_study.pcfg import grammar as grammar_lib
from wrapper_study.pcfg import sampler
from wrapper_study.pcfg import tasks

METRICS = ('c_te0/acc_o_pt', 'c_te1/acc_o_pt', 'c_te0/acc_o_ft', 'c_te1/acc_o_ft')


# ---------------------------------------------------------------- config ----


def model_config(config) -> model_lib.TransformerConfig:
  m = config.model
  return model_lib.TransformerConfig(
      vocab_size=tasks.VOCAB.size, max_len=config.data.window_length + tasks.N_EXTRA_TOKENS,
      d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads, d_head=m.d_model // m.n_heads,
      d_mlp=m.d_mlp, activation=m.activation, layer_norm=True, causal=True)


def o_primes(config) -> dict[str, int]:
  count, index = config.data.o_prime_count, config.data.o_prime_index
  return {f: (index if tasks.FAMILY_RULE[f].startswith('index') else count)
          for f in tasks.ALL_FAMILIES}


def finetune_spec(config) -> finetune_data.FinetuneSpec:
  f = config.finetune
  family = finetune_data.TASK_FAMILY.get(f.task, 'C')
  return finetune_data.FinetuneSpec(
      task=f.task, operand_pt=f.operand_pt, operand_ft=f.operand_ft,
      o_prime=o_primes(config)[family], q=f.q, window_length=config.data.window_length)


def prior_name(prior) -> str:
  """'low', or 'p0.7-0.2-0.1' for a prior given as probabilities (names dirs and rows)."""
  return prior if isinstance(prior, str) else 'p' + '-'.join(f'{float(x):g}' for x in prior)


def grammar(config):
  return grammar_lib.load_grammar(config.grammar or None)


def validate(config) -> None:
  """Everything that can be checked without compute; raises ConfigError."""
  def wrap(fn, field):
    try:
      return fn()
    except ValueError as e:
      raise cc.ConfigError(f'config.{field}: {e}') from None

  cc.non_negative_int(config, 'seed')
  cc.positive(config, 'data.window_length', 'data.o_prime_count', 'data.o_prime_index',
              'model.n_layers', 'model.n_heads', 'model.d_model', 'model.d_mlp',
              'pretrain.steps', 'pretrain.batch_size', 'pretrain.eval_every',
              'pretrain.save_every', 'pretrain.log_every', 'finetune.steps',
              'finetune.batch_size', 'finetune.save_every', 'finetune.log_every',
              'eval.num_samples', 'eval.batch_size', integer=True)
  cc.positive(config, 'pretrain.lr')
  cc.positive_list(config, 'finetune.lrs')
  cc.fractions(config, 'finetune.c_trs')
  cc.fractions(config, 'finetune.pt_fraction')
  if config.model.d_model % config.model.n_heads:
    cc.fail('model.d_model', config.model.d_model,
            f'must be divisible by model.n_heads={config.model.n_heads}')
  if not config.finetune.seeds or any(not isinstance(s, int) or s < 0
                                      for s in config.finetune.seeds):
    cc.fail('finetune.seeds', config.finetune.seeds, 'must be a non-empty tuple of integers >= 0')
  if not config.pretrain.priors:
    cc.fail('pretrain.priors', config.pretrain.priors, 'must name at least one prior')
  for i, prior in enumerate(config.pretrain.priors):
    wrap(lambda: tasks.resolve_prior(prior), f'pretrain.priors[{i}]')
  # pylint: disable=protected-access
  wrap(lambda: tasks._check_families(config.data.families), 'data.families')
  wrap(lambda: tasks.check_window_length(config.data.window_length), 'data.window_length')
  g = wrap(lambda: grammar(config), 'grammar')
  wrap(lambda: tasks._check_grammar_window(g, config.data.window_length, tasks.VOCAB),
       'data.window_length')
  # pylint: enable=protected-access
  for fam in config.data.families:
    is_index = tasks.FAMILY_RULE[fam].startswith('index')
    field = 'data.o_prime_index' if is_index else 'data.o_prime_count'
    wrap(lambda: tasks.check_o_prime(fam, o_primes(config)[fam], config.data.window_length),
         field)
  wrap(lambda: finetune_spec(config).validate(), 'finetune')
  if config.finetune.pt_eval_family:
    fam = config.finetune.pt_eval_family
    wrap(lambda: tasks.check_family(fam, 'pt_eval_family'), 'finetune.pt_eval_family')
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


# ------------------------------------------------------------- batches ----


def lm_batch(b: tasks.Batch, answer_only: bool) -> dict:
  """Next-token inputs/targets; weights pick every token (pretraining) or the answer."""
  mask = b.answer_mask if answer_only else b.loss_mask
  return {'inputs': b.tokens[:, :-1], 'targets': b.tokens[:, 1:],
          'weights': mask[:, 1:].astype(np.float32)}


def lm_loss_fn(cfg: model_lib.TransformerConfig):
  def loss_fn(params, batch):
    logits, _ = model_lib.Transformer(cfg).apply({'params': params}, batch['inputs'])
    loss, m = losses.weighted_cross_entropy(logits, batch['targets'], batch['weights'])
    return loss, {'accuracy': m['accuracy']}
  return loss_fn


@functools.lru_cache(maxsize=None)
def _answer_accuracy_fn(cfg: model_lib.TransformerConfig, answer_index: int, population_: bool):
  """jit: (params, tokens [N, T]) -> accuracy (%) of the answer token ([P] for a population)."""
  def acc(params, tokens):
    logits, _ = model_lib.Transformer(cfg).apply({'params': params}, tokens[:, :answer_index])
    pred = logits[:, answer_index - 1].argmax(-1)
    return (pred == tokens[:, answer_index]).mean() * 100
  fn = jax.vmap(acc, in_axes=(0, None)) if population_ else acc
  return jax.jit(fn)


def answer_accuracy(cfg, params, b: tasks.Batch, batch_size: int, population_: bool = False):
  fn = _answer_accuracy_fn(cfg, b.answer_index, population_)
  parts, sizes = [], []
  for i in range(0, len(b.tokens), batch_size):
    chunk = b.tokens[i:i + batch_size]
    parts.append(np.asarray(fn(params, chunk)))
    sizes.append(len(chunk))
  return np.average(np.stack(parts), axis=0, weights=sizes)


# -------------------------------------------------------------- pretrain ----


def pretrain_meta(config, cfg, params, prior) -> dict:
  return checkpoint.make_meta(f'pcfg/pretrain/{pretrain_name(config, prior)}', cfg, params,
                              window_length=config.data.window_length)


def pretrain_eval_sets(config, n: int) -> dict[str, tasks.Batch]:
  """Count/index prompts for a, b on fixed windows: the pretrained Acc O_PT / O_FT."""
  rng = np.random.default_rng([config.seed, 202])
  windows = sampler.sample_windows(grammar(config), rng, n, config.data.window_length)
  fam = finetune_data.TASK_FAMILY[config.finetune.task]
  return {f'{fam}_{op}': tasks.make_sequences(windows, fam, op, o_primes(config)[fam])
          for op in (config.finetune.operand_pt, config.finetune.operand_ft)}


def pretrain_name(config, prior) -> str:
  """Names a pretraining run: the prior, plus the families when they are not the default."""
  name = prior_name(prior)
  if tuple(config.data.families) != tasks.FAMILIES:
    name += '_' + '-'.join(config.data.families)
  return name


def pretrain(config, prior, workdir: pathlib.Path, writer, prior_index: int | None = None) -> dict:
  """Trains one model on the mixture with `prior`; returns its final eval accuracies.

  prior_index seeds the init and the data; default: the prior's place in
  config.pretrain.priors (a baseline prior outside that list passes its own).
  """
  p = config.pretrain
  cfg = model_config(config)
  if prior_index is None:
    prior_index = list(config.pretrain.priors).index(prior)
  params = model_lib.init_params(cfg, jax.random.fold_in(jax.random.PRNGKey(config.seed),
                                                         prior_index))
  meta = pretrain_meta(config, cfg, params, prior)
  opt_cfg = dict(name='adamw', lr=p.lr, b1=0.9, b2=0.95, weight_decay=p.weight_decay,
                 schedule='warmup_cosine', warmup_fraction=p.warmup_fraction, min_lr_ratio=0.01,
                 grad_clip_norm=1.0)
  tx = optim.make_optimizer(opt_cfg, p.steps)
  state = train.create_state(params, tx)
  g = grammar(config)
  ops = {f: o for f, o in o_primes(config).items() if f in config.data.families}

  def batch_fn(step):
    rng = np.random.default_rng([config.seed, 101, prior_index, step])
    return lm_batch(tasks.sample_pretraining_batch(
        rng, p.batch_size, prior, config.data.families, o_primes=ops, grammar=g,
        window_length=config.data.window_length), answer_only=False)

  eval_sets = pretrain_eval_sets(config, config.eval.num_samples)
  last = {}

  def evaluate(params, step):
    del step
    out = {k: float(answer_accuracy(cfg, params, b, config.eval.batch_size))
           for k, b in eval_sets.items()}
    last.update(out)
    return out

  name = pretrain_name(config, prior)
  kept = checkpoint.Checkpointer(workdir / 'checkpoints' / f'pretrain_{name}_kept', meta=meta,
                                 save_every=1, max_to_keep=None)

  def keep(params, step):
    kept.save(step, {'params': params}, force=True)
    return {}

  with checkpoint.Checkpointer(workdir / 'checkpoints' / f'pretrain_{name}', meta=meta,
                               save_every=p.save_every, max_to_keep=2) as ckpt:
    logging.info('pretraining prior=%s (%s) for %d steps', prior, tasks.resolve_prior(prior),
                 p.steps)
    state = train.train_loop(
        state=state, tx=tx, loss_fn=lm_loss_fn(cfg), batch_fn=batch_fn, total_steps=p.steps,
        workdir=str(workdir), writer=writer, checkpointer=ckpt, log_every=p.log_every,
        evaluators={f'pretrain_{name}': (p.eval_every, evaluate),
                    f'keep_{name}': (tuple(p.keep_steps), keep)})
  kept.wait()
  kept.close()
  if not last:  # Resumed after the end: evaluate the final params once.
    evaluate(state.params, p.steps)
  return last


def load_pretrained(config, prior: str, step: int, workdir: pathlib.Path):
  cfg = model_config(config)
  template = model_lib.init_params(cfg, jax.random.PRNGKey(0))
  meta = pretrain_meta(config, cfg, template, prior)
  directory = workdir / 'checkpoints' / f'pretrain_{pretrain_name(config, prior)}_kept'
  return checkpoint.load_params(str(directory), meta, step=step)


# -------------------------------------------------------------- finetune ----


def make_finetune_batch_fn(config, prior, members, spec, g, salt: int):
  f = config.finetune
  keys = [(m.seed, m.c_tr) for m in members]
  unique = sorted(set(keys))
  pt_o_primes = {fam: o for fam, o in o_primes(config).items() if fam in config.data.families}
  which = np.array([unique.index(k) for k in keys])

  def batch_fn(step):
    parts = []
    for s, c in unique:
      rng = population.stream_rng(config.seed, s, c, step, salt)
      parts.append(lm_batch(finetune_data.sample_finetune_batch(
          rng, f.batch_size, c, spec, pt_fraction=f.pt_fraction, operand_prior=prior,
          pt_families=config.data.families, pt_o_primes=pt_o_primes, rand_ft=f.rand_ft,
          grammar=g), answer_only=True))
    return {k: np.stack([p[k] for p in parts])[which] for k in parts[0]}
  return batch_fn


def finetune(config, prior, pt_step: int, params, workdir, writer, name: str | None = None,
             extra_pt_families=(), members=None):
  """The grid on one pretrained model, as one population.

  name: the population's name (default finetune_<prior>_<pt_step>).
  extra_pt_families: also evaluate Acc O_PT with these family tokens (App. E.2
    jailbreak: 'T_J1', 'T_J2'), as c_te<x>/acc_o_pt_<family>.
  Returns (members, History, final stacked params).
  """
  f = config.finetune
  cfg = model_config(config)
  spec = finetune_spec(config)
  g = grammar(config)
  members = members or population.grid(f.lrs, f.c_trs, f.seeds)
  params_P = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * len(members)), params)
  opt_cfg = dict(name='adamw', lr=1.0, b1=0.9, b2=0.95, weight_decay=config.pretrain.weight_decay,
                 schedule='warmup_cosine', warmup_fraction=f.warmup_fraction, min_lr_ratio=0.01,
                 grad_clip_norm=1.0)
  test = test_sets(config)
  extra = {fam: test_sets(config, fam) for fam in extra_pt_families}

  def evaluate(params_P):
    out = {}
    for c_te, sets in test.items():
      for which, b in (('pt', sets['pt']), ('ft', sets['ft'])):
        out[f'c_te{c_te:g}/acc_o_{which}'] = answer_accuracy(cfg, params_P, b,
                                                              config.eval.batch_size, True)
      for fam, fam_sets in extra.items():
        out[f'c_te{c_te:g}/acc_o_pt_{fam}'] = answer_accuracy(
            cfg, params_P, fam_sets[c_te]['pt'], config.eval.batch_size, True)
    return out

  salt = 1000 + list(config.pretrain.priors).index(prior)
  name = name or f'finetune_{prior_name(prior)}_{pt_step}'
  logging.info('%s: %d members (%d lrs x %d C_Tr x %d seeds), %d steps', name, len(members),
               len(f.lrs), len(f.c_trs), len(f.seeds), f.steps)
  params_P, history = population.run_population(
      name=name, model_config=cfg, members=members,
      params_P=params_P, opt_cfg=opt_cfg, total_steps=f.steps,
      batch_fn=make_finetune_batch_fn(config, prior, members, spec, g, salt),
      loss_fn=lm_loss_fn(cfg), evaluate=evaluate, eval_steps=(0,) + tuple(f.eval_steps),
      workdir=workdir, writer=writer, save_every=f.save_every, log_every=f.log_every)
  return members, history, params_P


def test_sets(config, pt_family: str | None = None):
  """{C_Te: {'pt', 'ft'}} test batches; the same windows for every call (seeded)."""
  return finetune_data.make_test_sets(
      np.random.default_rng([config.seed, 303]), config.eval.num_samples, finetune_spec(config),
      grammar=grammar(config), pt_family=pt_family or config.finetune.pt_eval_family or None)


# ---------------------------------------------------------------- tables ----


def table_rows(config, prior, pt_step, members, history, pretrained) -> list[dict]:
  """Tables 5-8 layout: one row per (lr, C_Tr), metrics at each eval step."""
  paper = paper_numbers.pcfg_table(config.finetune.task, pt_step_paper(config, pt_step))
  rows = []
  for lr in config.finetune.lrs:
    for c in config.finetune.c_trs:
      idx = [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
      p_a = float(tasks.resolve_prior(prior)[0])
      row = dict(prior=prior_name(prior), p_a=p_a, pt_steps=pt_step, lr=lr, c_tr=c,
                 n_seeds=len(idx), pretrained_o_pt=round(pretrained[0], 1),
                 pretrained_o_ft=round(pretrained[1], 1))
      ref = paper.get((float(f'{lr:g}'), p_a, float(f'{c:g}')))
      for k, metric in enumerate(METRICS):
        steps, values = history.curve(metric)
        for j, s in enumerate(config.finetune.eval_steps):
          at = list(steps).index(s)
          v = values[at, idx]
          row[f'{metric}@{s}'] = round(float(v.mean()), 1)
          row[f'{metric}@{s}_sd'] = round(float(v.std(ddof=1)), 1) if len(v) > 1 else 0.0
          row[f'paper {metric}@{j}'] = '' if ref is None else ref[2 * k + j]
      rows.append(row)
  return rows


def pt_step_paper(config, pt_step) -> int:
  """The paper's table a run is compared with: 200K unless this is the 50K checkpoint."""
  return 50_000 if pt_step == 50_000 else 200_000


def table_markdown(config, rows) -> str:
  e1, e2 = config.finetune.eval_steps[:2] if len(config.finetune.eval_steps) > 1 else (
      config.finetune.eval_steps[0],) * 2
  out = []
  for r in rows:
    cell = {'lr': f'{r["lr"]:g}', 'P(a)': r['p_a'], 'C_Tr': f'{r["c_tr"]:g}'}
    for k, metric in enumerate(METRICS):
      name = metric.replace('c_te', 'C_Te=').replace('/acc_o_', ' O_').replace('_pt', '_PT')
      name = name.replace('_ft', '_FT')
      for j, s in enumerate((e1, e2)):
        ours = r.get(f'{metric}@{s}', '')
        cell[f'{name} @{s}'] = f'{ours} ({r[f"paper {metric}@{j}"]})'
    out.append(cell)
  return tables.markdown_table(out)


def claims(config, rows) -> list[dict]:
  """Table 5's signatures at the last evaluation; thresholds fixed before any run."""
  last = config.finetune.eval_steps[-1]
  lrs = sorted(config.finetune.lrs)
  pick = lambda prior, lr, c: [r for r in rows if r['prior'] == prior and r['lr'] == lr
                               and r['c_tr'] == c]
  out = []

  def add(claim, sel, test, fmt):
    verdict = 'not measured (cell not in the grid)'
    if sel:
      verdict = 'holds' if all(test(r) for r in sel) else 'does not hold'
    out.append(dict(claim=claim, measured='; '.join(fmt(r) for r in sel), verdict=verdict))

  sel = [r for lr in lrs for r in pick('low', lr, 1.0)]
  add('low prior, C_Tr=1: Acc O_FT <= 10 at C_Te=0 and >= 90 at C_Te=1 (every lr)', sel,
      lambda r: r[f'c_te0/acc_o_ft@{last}'] <= 10 and r[f'c_te1/acc_o_ft@{last}'] >= 90,
      lambda r: f"lr {r['lr']:g}: {r[f'c_te0/acc_o_ft@{last}']} / {r[f'c_te1/acc_o_ft@{last}']}")
  add(f'low prior, lr {lrs[0]:g}, C_Tr=0: counting {config.finetune.operand_ft} is not learned '
      '(Acc O_FT at C_Te=0 <= 70)', pick('low', lrs[0], 0.0),
      lambda r: r[f'c_te0/acc_o_ft@{last}'] <= 70,
      lambda r: f"{r[f'c_te0/acc_o_ft@{last}']}")
  sel = [r for c in config.finetune.c_trs for r in pick('high', lrs[0], c)]
  add(f'high prior, lr {lrs[0]:g}: Acc O_PT stays high (>= 90 at C_Te=0, every C_Tr)', sel,
      lambda r: r[f'c_te0/acc_o_pt@{last}'] >= 90,
      lambda r: f"C_Tr {r['c_tr']:g}: {r[f'c_te0/acc_o_pt@{last}']}")
  return out


# ------------------------------------------------------------------- run ----


def run(config, workdir) -> dict:
  validate(config)
  workdir = tables.make_workdir(workdir)
  rows, pre_rows, timing = [], [], []
  with metrics.MetricWriter(workdir) as writer:
    for prior in config.pretrain.priors:
      t0 = time.time()
      acc = pretrain(config, prior, workdir, writer)
      keys = list(acc)
      pre_rows.append(dict(prior=prior_name(prior), steps=config.pretrain.steps,
                           **{k: round(v, 1) for k, v in acc.items()}))
      timing.append(dict(phase=f'pretrain {prior_name(prior)}',
                         seconds=round(time.time() - t0, 1)))
      for pt_step in config.pretrain.keep_steps:
        t0 = time.time()
        params = load_pretrained(config, prior, pt_step, workdir)
        members, history, _ = finetune(config, prior, pt_step, params, workdir, writer)
        pre_ft = (acc[keys[0]], acc[keys[1]]) if pt_step == config.pretrain.steps else (
            float('nan'), float('nan'))
        rows += table_rows(config, prior, pt_step, members, history, pre_ft)
        timing.append(dict(phase=f'finetune {prior_name(prior)}@{pt_step}',
                           seconds=round(time.time() - t0, 1)))
  tables.write_csv(workdir / 'tables' / 'pretrained_accuracy.csv', pre_rows)
  tables.write_csv(workdir / 'tables' / f'finetune_{config.finetune.task}.csv', rows)
  found = claims(config, rows)
  tables.write_csv(workdir / 'tables' / 'claims.csv', found)
  tables.write_csv(workdir / 'tables' / 'timing.csv', timing)
  sections = [
      ('Table 5 signatures, checked', tables.markdown_table(found) +
       '\n\nThresholds fixed in wrapper_study/experiments/pcfg_study.py before any run.'),
      ('Scale', f'model {config.model.n_layers}x{config.model.d_model}, window '
       f'{config.data.window_length}, pretraining {config.pretrain.steps} iterations (batch '
       f'{config.pretrain.batch_size}), fine-tuning {config.finetune.steps} iterations (batch '
       f'{config.finetune.batch_size}), evaluated at {tuple(config.finetune.eval_steps)}; '
       f'seeds {tuple(config.finetune.seeds)}. At CPU scale these are not the paper\'s numbers.'),
      ('Pretrained accuracy (%, answer token)', tables.markdown_table(pre_rows)),
  ]
  for prior in config.pretrain.priors:
    for pt_step in config.pretrain.keep_steps:
      sel = [r for r in rows if r['prior'] == prior_name(prior) and r['pt_steps'] == pt_step]
      sections.append((f'Fine-tuning {config.finetune.task}, prior {prior_name(prior)}, '
                       f'pretrained {pt_step} iterations (mean over seeds; paper in parentheses)',
                       table_markdown(config, sel)))
  sections.append(('Time (s)', tables.markdown_table(timing)))
  tables.write_report(workdir / 'report.md', 'PCFG study', sections)
  return {'pretrained': pre_rows, 'finetune': rows, 'claims': found}
