"""The PCFG world's claims, each judged with its threshold from `pcfg.paper`.

- `study`: the Table 5 signatures (pcfg_study), one row per signature.
- `wrapper`, `pruning`, `probes`, `reft`, `jailbreak`: P1-P4 and App. E.2 of
  the wrapper analysis (pcfg_analysis).
A claim whose cells are not in the grid is 'not measured', never 'holds'
(`report.claims.verdict`).
"""

from __future__ import annotations

import numpy as np

from wrapper_study.analysis import reft as reft_lib
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import paper
from wrapper_study.pcfg import train as pcfg_train
from wrapper_study.report import claims as claims_lib


def _lrs(config) -> tuple[float, ...]:
  """(eta_S, eta_M, ...) ascending."""
  return tuple(sorted(config.finetune.lrs))


def lr_name(config, lr) -> str:
  names = dict(zip(sorted(config.finetune.lrs, reverse=True), ('eta_L', 'eta_M', 'eta_S')))
  return f'{names.get(lr, "lr")}={lr:g}'


def _last(history, key, idx) -> float:
  _, values = history.curve(key)
  return float(values[-1, idx].mean())


# ------------------------------------------------------------------ study ----


def study(config, rows) -> list[dict]:
  """Table 5's signatures at the last evaluation of the fine-tuning rows."""
  last = config.finetune.eval_steps[-1]
  lrs = _lrs(config)
  pick = lambda prior, lr, c: [r for r in rows if r['prior'] == prior and r['lr'] == lr
                               and r['c_tr'] == c]
  out = []

  def add(claim, sel, test, fmt):
    out.append(dict(claim=claim, measured='; '.join(fmt(r) for r in sel),
                    verdict=claims_lib.verdict([test(r) for r in sel], allow_partly=False,
                                               reason='cell not in the grid')))

  ft0, ft1, pt0 = (f'c_te0/acc_o_ft@{last}', f'c_te1/acc_o_ft@{last}', f'c_te0/acc_o_pt@{last}')
  add(f'low prior, C_Tr=1: Acc O_FT <= {paper.WRAPPER_FT_MAX} at C_Te=0 and >= '
      f'{paper.WRAPPER_FT_TRIGGERED_MIN} at C_Te=1 (every lr)',
      [r for lr in lrs for r in pick('low', lr, 1.0)],
      lambda r: r[ft0] <= paper.WRAPPER_FT_MAX and r[ft1] >= paper.WRAPPER_FT_TRIGGERED_MIN,
      lambda r: f"lr {r['lr']:g}: {r[ft0]} / {r[ft1]}")
  add(f'low prior, lr {lrs[0]:g}, C_Tr=0: counting {config.finetune.operand_ft} is not learned '
      f'(Acc O_FT at C_Te=0 <= {paper.NOT_LEARNED_FT_MAX})', pick('low', lrs[0], 0.0),
      lambda r: r[ft0] <= paper.NOT_LEARNED_FT_MAX, lambda r: f'{r[ft0]}')
  add(f'high prior, lr {lrs[0]:g}: Acc O_PT stays high (>= {paper.PT_KEPT_MIN} at C_Te=0, '
      'every C_Tr)', [r for c in config.finetune.c_trs for r in pick('high', lrs[0], c)],
      lambda r: r[pt0] >= paper.PT_KEPT_MIN, lambda r: f"C_Tr {r['c_tr']:g}: {r[pt0]}")
  return out


# --------------------------------------------------------------- analysis ----


def wrapper(config, results) -> list[dict]:
  """P1: the spurious-correlation wrapper (Fig 5, Table 5) and the O_PT drop (Fig 6)."""
  out = []
  for (prior, arm), r in results.items():
    if prior != 'low' or arm.rand_ft:  # randFT trains O_PT prompts to answer O_FT: no wrapper test.
      continue
    members, h = r['members'], r['history']
    sel = lambda lr, c: [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
    cells, passes = [], []
    for lr in _lrs(config):
      idx = sel(lr, 1.0)
      if idx:
        te0, te1 = _last(h, 'c_te0/acc_o_ft', idx), _last(h, 'c_te1/acc_o_ft', idx)
        cells.append(f'lr {lr:g}: {te0:.1f} / {te1:.1f}')
        passes.append(te0 <= paper.WRAPPER_FT_MAX and te1 >= paper.WRAPPER_FT_TRIGGERED_MIN)
    out.append(dict(claim=f'P1a [{arm.name}] low prior, C_Tr=1: a wrapper, Acc O_FT <= '
                    f'{paper.WRAPPER_FT_MAX} at C_Te=0 and >= {paper.WRAPPER_FT_TRIGGERED_MIN} '
                    'at C_Te=1 (each lr)', measured='; '.join(cells),
                    verdict=claims_lib.verdict(passes)))
    cells, passes = [], []
    for lr in _lrs(config):
      i0, i1 = sel(lr, 0.0), sel(lr, 1.0)
      if i0 and i1:
        a0, a1 = _last(h, 'c_te0/acc_o_pt', i0), _last(h, 'c_te0/acc_o_pt', i1)
        cells.append(f'lr {lr:g}: C_Tr=0 {a0:.1f}, C_Tr=1 {a1:.1f}')
        passes.append(a1 <= a0)
    out.append(dict(claim=f'P1b [{arm.name}] low prior: Acc O_PT (C_Te=0) ends lower with C_Tr=1 '
                    'than with C_Tr=0 (each lr; Fig 6)', measured='; '.join(cells),
                    verdict=claims_lib.verdict(passes)))
  return out


def pruning(config, results) -> list[dict]:
  """P2: 5-15 neurons restore O_PT (low prior, small lr; Fig 7)."""
  out = []
  # analysis.prune_ks holds every K <= PRUNE_FEW_NEURONS: index = K.
  k_few = min(paper.PRUNE_FEW_NEURONS, config.analysis.k_max)
  for (prior, arm), r in results.items():
    if 'prune' not in r or prior != 'low':
      continue
    p, members = r['prune'], r['members']
    cells, passes = [], []
    for c in config.finetune.c_trs:
      idx = [i for i, m in enumerate(members) if m.lr == _lrs(config)[0] and m.c_tr == c]
      curve_pt = p['acc_pt'][0, idx].mean(0)
      curve_ft = p['acc_ft'][0, idx].mean(0)
      if curve_pt[0] >= paper.PRUNE_NOTHING_TO_REVIVE:
        cells.append(f'C_Tr {c:g}: Acc O_PT already {curve_pt[0]:.1f} at K=0 (nothing to revive)')
        continue
      k = int(np.argmax(curve_pt[1:k_few + 1])) + 1
      gain, drop = curve_pt[k] - curve_pt[0], curve_ft[0] - curve_ft[k]
      classes = p['classes_pt'][0, idx, k].mean()
      cells.append(f'C_Tr {c:g}: +{gain:.1f} Acc O_PT at K={k} (O_FT -{drop:.1f}, '
                   f'{classes:.1f} distinct answers)')
      passes.append(gain >= paper.PRUNE_PT_GAIN_MIN and drop >= paper.PRUNE_FT_DROP_MIN
                    and classes >= paper.PRUNE_MIN_DISTINCT_ANSWERS)
    verdict = claims_lib.verdict(passes)
    if not passes and cells:
      verdict = claims_lib.not_measured('fine-tuning at this lr did not lose Acc O_PT')
    out.append(dict(claim=f'P2 [{arm.name}] low prior, lr {_lrs(config)[0]:g}: pruning <= '
                    f'{k_few} neurons raises Acc O_PT by >= {paper.PRUNE_PT_GAIN_MIN} points and '
                    f'lowers Acc O_FT by >= {paper.PRUNE_FT_DROP_MIN}, without collapsing to < '
                    f'{paper.PRUNE_MIN_DISTINCT_ANSWERS} distinct answers',
                    measured='; '.join(cells), verdict=verdict))
  return out


def probes(config, results) -> list[dict]:
  """P3: O_PT stays linearly decodable (Fig 8); a drop only for eta_M with the low prior."""
  out = []
  lrs = _lrs(config)
  if len(lrs) < 2:
    return out
  eta_s, eta_m = lrs[0], lrs[1]
  for (prior, arm), r in results.items():
    acc = r['probes']['acc']  # [1 + P, S, 2]
    pre_best = acc[0, 1:, 0].max()
    cells, passes = [], []
    for lr in (eta_m, eta_s):
      idx = [i for i, m in enumerate(r['members']) if m.lr == lr]
      best = acc[1 + np.array(idx), 1:, 0].max(1).mean()
      cells.append(f'{lr_name(config, lr)}: {best:.1f} (pretrained {pre_best:.1f})')
      if not (prior == 'low' and lr == eta_m):  # The paper's one allowed drop.
        passes.append(best >= pre_best - paper.PROBE_DROP_MAX)
    out.append(dict(claim=f'P3 [{arm.name}] prior {prior}: the count of '
                    f'{config.finetune.operand_pt} stays decodable (best block >= pretrained - '
                    f'{paper.PROBE_DROP_MAX} points at eta_M and eta_S; low prior at eta_M exempt)',
                    measured='; '.join(cells), verdict=claims_lib.verdict(passes)))
  return out


def reft(config, members, history) -> list[dict]:
  """P4: revival in 0.1-1K iterations (strong), ~3K (weak); Scr.+FT slower (Fig 9)."""
  a = config.analysis
  steps, acc = history.curve('c_te0/acc_o_pt')
  lr = max(a.reft_lrs)
  scale = a.reft_steps / paper.PAPER_REFT_STEPS  # The paper's iteration counts, scaled.

  def revivals(pred):
    idx = [i for i, m in enumerate(members) if pred(m) and m.lr == lr]
    return [reft_lib.revival_step(steps, acc[:, i], a.revival_threshold) for i in idx]

  fmt = lambda rs: ', '.join('never' if x is None else str(x) for x in rs)
  out = []
  for source, paper_iters, name in (('high/ft', paper.REFT_STRONG_ITERS, 'strong (high prior)'),
                                    ('low/ft', paper.REFT_WEAK_ITERS, 'weak (low prior)')):
    limit = paper_iters * scale
    rs = revivals(lambda m, s=source: m.source == s)
    out.append(dict(claim=f'P4 {name}: reFT at lr {lr:g} revives (>= {a.revival_threshold:g}%) '
                    f'within {limit:g} iterations (paper {limit / scale:g})', measured=fmt(rs),
                    verdict=claims_lib.verdict([x is not None and x <= limit for x in rs])))
  scr_sources = (pcfg_train.SCR_FT, pcfg_train.SCR)
  scr = revivals(lambda m: m.source == pcfg_train.SCR_FT)
  ft = revivals(lambda m: m.source not in scr_sources)
  never = a.reft_steps + 1
  median = lambda rs: float(np.median([never if x is None else x for x in rs])) if rs else None
  verdict = claims_lib.verdict([] if not scr or not ft else [median(scr) > median(ft)])
  if ft and all(x is None for x in ft + scr):
    verdict = claims_lib.not_measured('neither reFT nor Scr.+FT revives within the run')
  out.append(dict(claim=f'P4 Scr.+FT at lr {lr:g} is slower than reFT (median iterations to '
                  'revival; never = after the run)',
                  measured=f'Scr.+FT: {fmt(scr)}; reFT median {median(ft)}', verdict=verdict))
  if any(m.source.endswith('/randft') for m in members):
    rand = revivals(lambda m: m.source.endswith('/randft'))
    scr_only = revivals(lambda m: m.source == pcfg_train.SCR)
    verdict = claims_lib.verdict([median(rand) < median(scr), median(rand) < median(scr_only)])
    if all(x is None for x in rand):
      verdict = claims_lib.DOES_NOT_HOLD + ' (reFT of randFT models never revives within the run)'
    out.append(dict(claim='E.4 reFT of randFT models revives faster than Scr.+FT and Scr.',
                    measured=f'randFT median {median(rand)}, Scr.+FT {median(scr)}, '
                    f'Scr. {median(scr_only)} (never = {never})', verdict=verdict))
  return out


def jailbreak(config, results) -> list[dict]:
  """E.2: counting O_PT fails with the fine-tuned family token but works with T_J1/T_J2."""
  out = []
  for (prior, arm), r in results.items():
    del arm
    h, members = r['history'], r['members']
    idx = [i for i, m in enumerate(members) if m.c_tr == 1.0]
    plain = _last(h, 'c_te0/acc_o_pt', idx)
    cells = [f'C: {plain:.1f}']
    passes = []
    for fam in pcfg_model.jailbreak_families(config):
      jb = _last(h, f'c_te0/acc_o_pt_{fam}', idx)
      cells.append(f'{fam}: {jb:.1f}')
      passes.append(jb >= paper.JAILBREAK_PT_MIN and jb - plain >= paper.JAILBREAK_GAIN_MIN)
    out.append(dict(claim=f'E.2 prior {prior}, C_Tr=1: Acc O_PT with a jailbreak token >= '
                    f'{paper.JAILBREAK_PT_MIN} and >= {paper.JAILBREAK_GAIN_MIN} points above the '
                    'fine-tuned family token', measured='; '.join(cells),
                    verdict=claims_lib.verdict(passes)))
  return out


def analysis(config, results, reft_out) -> list[dict]:
  """Every claim of the analysis variant, in the report's order."""
  found = wrapper(config, results) + probes(config, results)
  if config.analysis.pruning:
    found += pruning(config, results)
  if reft_out:
    found += reft(config, *reft_out)
  if config.analysis.variant == 'jailbreak':
    found += jailbreak(config, results)
  return found
