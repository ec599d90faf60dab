"""The PCFG world's claims: each a `paper.CLAIMS` entry judged by `report.claims.judge`.

- `study`: the Table 5 signatures (pcfg_study), from the table rows.
- `analysis`: P1-P4 and App. E.2 / E.4 (pcfg_analysis), per (prior, arm).
Every claim is decided on per-seed values (a 95% t-interval over seeds), has a
manipulation check (did fine-tuning change what the claim is about? members
and lrs that fail it are left out and named; none left: not measured) and a
matched control (C_Tr = 0 models, the pretrained model, a probe floor, or
Scr.+FT / Scr.). C_Te = 0 is the anti-correlated test set; the natural one
(chance agreement allowed) is given in the reason where it matters.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import numpy as np

from wrapper_study.analysis import reft as reft_lib
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import paper
from wrapper_study.pcfg import train as pcfg_train
from wrapper_study.report import claims as claims_lib
from wrapper_study.report import intervals

PT0, PT1, FT0, FT1 = 'c_te0/acc_o_pt', 'c_te1/acc_o_pt', 'c_te0/acc_o_ft', 'c_te1/acc_o_ft'
FT0N = f'{pcfg_train.NATURAL}/acc_o_ft'
DISTINCT = 'n_distinct_answers'  # Distinct answers over the test sets, per member.


def seeds_of(row, key) -> list[float]:
  """The per-seed values of a table row's `key` (stored as '<v> <v> ...'; NaN = diverged)."""
  text = str(row.get(f'{key}_seeds', ''))
  return [float(x) for x in text.split()] if text else []


def _lrs(config) -> tuple[float, ...]:
  """(eta_S, eta_M, ...) ascending."""
  return tuple(sorted(config.finetune.lrs))


def lr_name(config, lr) -> str:
  names = dict(zip(sorted(config.finetune.lrs, reverse=True), ('eta_L', 'eta_M', 'eta_S')))
  return f'{names.get(lr, "lr")}={lr:g}'


def _fmt(v) -> str:
  v = [x for x in np.atleast_1d(v)]
  return ' '.join('n/a' if not math.isfinite(x) else f'{x:.1f}' for x in v) if v else 'n/a'


def _mean(v) -> float:
  v = np.asarray(v, float)
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else math.nan


class Grid:
  """Per-seed values of one fine-tuned grid: get(lr, C_Tr, metric, step) -> [seeds] or None.

  step None is the last evaluation, 0 the model before fine-tuning.
  """

  def __init__(self, lookup: Callable, last: int):
    self._lookup, self.last = lookup, last

  def get(self, lr, c, metric, step=None) -> Optional[np.ndarray]:
    v = self._lookup(lr, c, metric, self.last if step is None else step)
    return None if v is None or len(v) == 0 else np.asarray(v, float)

  def changed(self, lr, c=1.0) -> tuple[Optional[bool], str]:
    """The manipulation check of a cell: Acc O_PT fell, or Acc O_FT (C_Te=1) rose, >= 30."""
    pt0, pt, ft0, ft = (self.get(lr, c, PT0, 0), self.get(lr, c, PT0), self.get(lr, c, FT1, 0),
                        self.get(lr, c, FT1))
    if any(x is None for x in (pt0, pt, ft0, ft)):
      return None, f'lr {lr:g}: not in the grid'
    drop, gain = _mean(pt0) - _mean(pt), _mean(ft) - _mean(ft0)
    ok = drop >= paper.FT_CHANGED_MIN or gain >= paper.FT_CHANGED_MIN
    return ok, f'lr {lr:g}: Acc O_PT {-drop:+.1f}, Acc O_FT (C_Te=1) {gain:+.1f}'


def study_grid(config, rows, prior: str) -> Grid:
  """The final checkpoint's rows of `prior` (Table 5 is the longest pretraining)."""
  sel = {(r['lr'], r['c_tr']): r for r in rows
         if r['prior'] == prior and r['pt_steps'] == config.pretrain.steps}

  def lookup(lr, c, metric, step):
    r = sel.get((lr, c))
    return None if r is None else seeds_of(r, f'{metric}@{step}')
  return Grid(lookup, config.finetune.eval_steps[-1])


def history_grid(members, history) -> Grid:
  def lookup(lr, c, metric, step):
    idx = [i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c]
    steps, values = history.curve(metric)
    if not idx or step not in list(steps):
      return None
    return values[list(steps).index(step), idx]
  steps, _ = history.curve(PT0)
  return Grid(lookup, int(steps[-1]) if len(steps) else 0)


def _claim(claim_id: str, tag: str = '') -> claims_lib.Claim:
  c = paper.CLAIMS[claim_id]
  return dataclasses.replace(c, claim_id=f'{claim_id}[{tag}]') if tag else c


def _collapsed(grid, lr, c) -> str:
  """' (k of n seeds collapsed)' when some seeds give <= COLLAPSED_MAX distinct answers."""
  n = grid.get(lr, c, DISTINCT)
  k = 0 if n is None else int((n <= pcfg_train.COLLAPSED_MAX).sum())
  return f' ({k} of {len(n)} seeds collapsed to <= {pcfg_train.COLLAPSED_MAX} answers)' if k else ''


def _missing(claim, what: str) -> dict:
  check = claims_lib.Check(False, f'{what} not in the grid', 'cells not in the grid')
  return claims_lib.judge(claim, [], check=check)


def _changed_lrs(grid, lrs, c=1.0):
  """(lrs whose cell passes the check, its Check) over the given lrs."""
  found = [(lr, *grid.changed(lr, c)) for lr in lrs]
  kept = [lr for lr, ok, _ in found if ok]
  measured = [x for x in found if x[1] is not None]
  desc = (f'fine-tuning changed the model (Acc O_PT fell or Acc O_FT at C_Te=1 rose >= '
          f'{paper.FT_CHANGED_MIN} points; C_Tr={c:g}) at {len(kept)} of {len(measured)} lrs: '
          + '; '.join(d for _, _, d in found))
  return kept, claims_lib.Check(bool(kept), desc, 'fine-tuning did not change the model')


# ----------------------------------------------------------------- wrapper ----


def _margin(grid, lr, c) -> Optional[np.ndarray]:
  ft0, ft1 = grid.get(lr, c, FT0), grid.get(lr, c, FT1)
  if ft0 is None or ft1 is None:
    return None
  return np.minimum(ft1 - paper.WRAPPER_FT_TRIGGERED_MIN, paper.WRAPPER_FT_MAX - ft0)


def wrapper_claim(config, grid: Grid, claim) -> dict:
  """Table 5 / P1a: the wrapper margin, worst kept lr per seed; control: the C_Tr=0 models."""
  lrs = [lr for lr in _lrs(config) if grid.get(lr, 1.0, FT0) is not None]
  if not lrs:
    return _missing(claim, 'low prior, C_Tr=1')
  kept, check = _changed_lrs(grid, lrs)
  per_seed = np.min([_margin(grid, lr, 1.0) for lr in kept or lrs], axis=0)
  control = [_mean(_margin(grid, lr, 0.0)) for lr in kept or lrs
             if grid.get(lr, 0.0, FT0) is not None]
  row = claims_lib.judge(claim, per_seed, check=check,
                         control_value=min(control) if control else None)
  each = '; '.join(f'lr {lr:g}: Acc O_FT C_Te=0 {_fmt(grid.get(lr, 1.0, FT0))} (natural set '
                   f'{_fmt(grid.get(lr, 1.0, FT0N))}), C_Te=1 {_fmt(grid.get(lr, 1.0, FT1))}'
                   f'{_collapsed(grid, lr, 1.0)}' for lr in lrs)
  row['reason'] += f'; {each}; control: the same margin of the C_Tr=0 models'
  return row


# ------------------------------------------------------------------- study ----


def study(config, rows, calibrated: bool = False) -> list[dict]:
  """Table 5's signatures at the last evaluation, one CLAIMS_COLUMNS row each.

  calibrated: the lrs were picked by pcfg.calibration, which chose eta_S as the largest lr
  at which the low prior's C_Tr=0 Acc O_FT stays <= calibration.stay_max: T5.not_learned then
  tests the quantity its lr was chosen on and is reported `by construction` (not counted).
  """
  low, high = study_grid(config, rows, 'low'), study_grid(config, rows, 'high')
  out = [wrapper_claim(config, low, _claim('T5.wrapper'))]
  eta_s, eta_l = _lrs(config)[0], _lrs(config)[-1]
  claim = _claim('T5.not_learned')
  v, start, pos = low.get(eta_s, 0.0, FT0), low.get(eta_s, 0.0, FT0, 0), low.get(eta_l, 0.0, FT0)
  if v is None or pos is None:
    out.append(_missing(claim, f'low prior, C_Tr=0, lrs {eta_s:g} and {eta_l:g}'))
  else:
    gain = _mean(pos) - _mean(low.get(eta_l, 0.0, FT0, 0))
    check = claims_lib.Check(
        eta_l != eta_s and gain >= paper.FT_CHANGED_MIN,
        f'counting {config.finetune.operand_ft} is learnable here: at lr {eta_l:g}, C_Tr=0 Acc '
        f'O_FT (C_Te=0) rose {gain:+.1f} (needs >= {paper.FT_CHANGED_MIN})',
        'the largest lr did not learn O_FT either: nothing to contrast')
    row = claims_lib.judge(claim, v, check=check, control_value=_mean(start))
    cal = config.get('calibration')
    if calibrated and cal is not None and cal.get('prior', 'low') == 'low':
      row['reason'] = (f'{row["verdict"]} on the values ({row["reason"]}); but eta_S={eta_s:g} '
                       f'was chosen by the calibration so that this Acc O_FT stays <= '
                       f'{cal.get("stay_max", "stay_max")}: the claim tests its own selection')
      row['verdict'] = claims_lib.by_construction(
          'eta_S chosen so that C_Tr=0 Acc O_FT stays low')
    row['reason'] += (f'; natural set {_fmt(low.get(eta_s, 0.0, FT0N))}'
                      f'{_collapsed(low, eta_s, 0.0)}; control: Acc O_FT before fine-tuning')
    out.append(row)
  claim = _claim('T5.pt_kept')
  cs = [c for c in config.finetune.c_trs if high.get(eta_s, c, PT0) is not None]
  if not cs:
    out.append(_missing(claim, f'high prior, lr {eta_s:g}'))
  else:
    start = _mean(high.get(eta_s, cs[0], PT0, 0))
    # Issue 29: "kept" means something only if fine-tuning did something; an unmoved model
    # keeps O_PT trivially. The check asks what fine-tuning changed: Acc O_FT (C_Te=1, the
    # cells where it is taught) rose, or Acc O_FT (C_Te=0) moved, by >= FT_CHANGED_MIN.
    moved = {}
    for c in cs:
      for m in (FT1, FT0):
        a, b = high.get(eta_s, c, m, 0), high.get(eta_s, c, m)
        if a is not None and b is not None:
          moved[f'C_Tr {c:g} {m}'] = abs(_mean(b) - _mean(a))
    best = max(moved, key=moved.get) if moved else None
    did = best is not None and moved[best] >= paper.FT_CHANGED_MIN
    taught = start >= paper.PT_KEPT_MIN
    check = claims_lib.Check(
        taught and did, f'the pretrained model counts {config.finetune.operand_pt}: Acc O_PT '
        f'{start:.1f} before fine-tuning (needs >= {paper.PT_KEPT_MIN}); fine-tuning moved '
        + (f'{best} by {moved[best]:.1f} points' if best else 'nothing measured')
        + f' (needs >= {paper.FT_CHANGED_MIN})',
        'pretraining did not teach O_PT: nothing to keep' if not taught else
        'fine-tuning at eta_S changed nothing: an unmoved model keeps O_PT trivially')
    row = claims_lib.judge(claim, np.min([high.get(eta_s, c, PT0) for c in cs], axis=0),
                           check=check, control_value=start)
    row['reason'] += '; ' + '; '.join(f'C_Tr {c:g}: {_fmt(high.get(eta_s, c, PT0))}'
                                      f'{_collapsed(high, eta_s, c)}' for c in cs)
    out.append(row)
  return out


# ---------------------------------------------------------------- analysis ----


def p1b(config, grid: Grid, claim) -> dict:
  lrs = [lr for lr in _lrs(config)
         if grid.get(lr, 1.0, PT0) is not None and grid.get(lr, 0.0, PT0) is not None]
  if not lrs:
    return _missing(claim, 'low prior, C_Tr=0 and 1')
  kept, check = _changed_lrs(grid, lrs)
  per_seed = np.min([grid.get(lr, 0.0, PT0) - grid.get(lr, 1.0, PT0) for lr in kept or lrs],
                    axis=0)
  row = claims_lib.judge(claim, per_seed, check=check,
                         control_value=_mean(grid.get(lrs[0], 1.0, PT0, 0)))
  row['reason'] += ('; ' + '; '.join(f'lr {lr:g}: C_Tr=0 {_fmt(grid.get(lr, 0.0, PT0))}, C_Tr=1 '
                                     f'{_fmt(grid.get(lr, 1.0, PT0))}' for lr in lrs)
                    + '; control: Acc O_PT before fine-tuning')
  return row


def _best_gain(p, i, k_few, order: str = '') -> tuple[float, int]:
  """(largest Acc O_PT gain over K = 1..k_few without a collapse, its K) of candidate i;
  order '_rand': the random-units ordering (P2's control), over the same K."""
  curve, classes = p[f'acc_pt{order}'][0, i], p[f'classes_pt{order}'][0, i]
  ok = [k for k in range(1, min(k_few, len(curve) - 1) + 1)
        if classes[k] >= paper.PRUNE_MIN_DISTINCT_ANSWERS]
  if not ok:
    return 0.0, 0
  k = max(ok, key=lambda k: curve[k])
  return float(curve[k] - curve[0]), k


def p2(config, r: dict, claim) -> dict:
  """Pruning gain of C_Tr=1 models (grad x weight) over K random units of the same model.

  Issue 29: the C_Tr=0 model at eta_S forms the wrapper too (paper Fig. 79), so it is no
  control; K random units of the same model, searched over the same K with the same rule, ask
  whether grad x weight found the wrapper. (The eta_L model, where O_PT is deleted, is not in
  the analysis grid: eta_M and eta_S only.)
  """
  members, p = r['members'], r['prune']
  lr = _lrs(config)[0]
  k_few = min(paper.PRUNE_FEW_NEURONS, config.analysis.k_max)
  by_seed = lambda c: {m.seed: i for i, m in enumerate(members) if m.lr == lr and m.c_tr == c}
  ft, c0 = by_seed(1.0), by_seed(0.0)
  seeds = sorted(ft)
  if not seeds:
    return _missing(claim, f'lr {lr:g}, C_Tr=1')
  if 'acc_pt_rand' not in p:
    return _missing(claim, 'the random-units control (an analysis cached before issue 29)')
  steps, pt = r['history'].curve(PT0)
  start = {s: float(pt[list(steps).index(0), i]) for s, i in ft.items()} if 0 in steps else {}
  kept = [s for s in seeds if s in start and
          start[s] - p['acc_pt'][0, ft[s], 0] >= paper.FT_CHANGED_MIN]
  check = claims_lib.Check(
      bool(kept), f'fine-tuning lowered Acc O_PT (C_Te=0, K=0 on the pruning test set) >= '
      f'{paper.FT_CHANGED_MIN} points below the model before fine-tuning in {len(kept)} of '
      f'{len(seeds)} seeds' + ''.join(f'; seed {s}: {start.get(s, math.nan):.1f} -> '
                                      f'{p["acc_pt"][0, ft[s], 0]:.1f}' for s in seeds),
      'fine-tuning did not remove O_PT: nothing to revive')
  use = kept or seeds
  gains = {s: _best_gain(p, ft[s], k_few) for s in use}
  controls = {s: _best_gain(p, ft[s], k_few, '_rand') for s in use}
  old = {s: _best_gain(p, c0[s], k_few)[0] for s in use if s in c0}
  row = claims_lib.judge(claim, [gains[s][0] - controls[s][0] for s in use], check=check,
                         control_value=_mean([controls[s][0] for s in use]))
  row['reason'] += ('; ' + '; '.join(
      f'seed {s}: +{gains[s][0]:.1f} at K={gains[s][1]} (Acc O_FT '
      f'{p["acc_ft"][0, ft[s], 0]:.1f} -> {p["acc_ft"][0, ft[s], gains[s][1]]:.1f}), control '
      f'{gains[s][1] and controls[s][1]} random units +{controls[s][0]:.1f}'
      + (f', C_Tr=0 grad x weight +{old[s]:.1f}' if s in old else '') for s in use)
      + '; control: mean best gain of K random units of the same model')
  return row


def p3(config, prior: str, r: dict, claim) -> Optional[dict]:
  lrs = _lrs(config)
  if len(lrs) < 2:
    return None
  acc, members, grid = r['probes']['acc'], r['members'], r['grid']  # acc: [1 + P, S, 2].
  pre_best = float(acc[0, 1:, 0].max())
  use = [lr for lr in (lrs[1], lrs[0]) if not (prior == 'low' and lr == lrs[1])]
  floor = r['probes'].get('majority')
  floor = None if floor is None else float(np.asarray(floor).reshape(-1)[0])
  changed = [(lr, *grid.changed(lr, c)) for lr in use for c in config.finetune.c_trs]
  kept = sorted({lr for lr, ok, _ in changed if ok})
  above = floor is None or pre_best >= floor + paper.PROBE_FLOOR_MARGIN
  met = lambda ok: 'met' if ok else 'NOT met'  # Both conditions are shown; say which failed.
  desc = (f'pretrained probe of O_PT {pre_best:.1f}% vs the majority class '
          f'{"n/a" if floor is None else f"{floor:.1f}"}% (needs >= floor + '
          f'{paper.PROBE_FLOOR_MARGIN}: {met(above)}); '
          f'fine-tuning changed the model (>= {paper.FT_CHANGED_MIN} points) at lrs '
          f'{", ".join(f"{lr:g}" for lr in kept) or "none"} of {", ".join(f"{x:g}" for x in use)}'
          f' (needs one: {met(bool(kept))})')
  check = claims_lib.Check(
      above and bool(kept), desc, 'fine-tuning did not change the model' if above else
      'the pretrained model does not decode O_PT above the floor: nothing to keep')
  best = lambda lr: np.array([acc[1 + i, 1:, 0].max() for i, m in enumerate(members)
                              if m.lr == lr], float)
  seeds = lambda lr: [m.seed for m in members if m.lr == lr]
  per_lr = {lr: best(lr) for lr in (kept or use)}
  # Issue 29: members of one seed (its C_Tr) are one value (their mean) before the interval;
  # then the worst lr per seed.
  per_seed = np.min([intervals.per_seed(seeds(lr), v - pre_best) for lr, v in per_lr.items()],
                    axis=0)
  row = claims_lib.judge(claim, per_seed, check=check, control_value=floor)
  row['reason'] += ('; ' + '; '.join(f'{lr_name(config, lr)}: best block {_mean(v):.1f} '
                                     f'(pretrained {pre_best:.1f})' for lr, v in per_lr.items())
                    + '; control: the majority class of the probe test labels (the floor)')
  return row


def jailbreak(config, grid: Grid, tag: str) -> list[dict]:
  fams = pcfg_model.jailbreak_families(config)
  kept, check = _changed_lrs(grid, _lrs(config))
  use = kept or _lrs(config)
  # Issue 29: one value per seed (the worst lr), never the lrs of one seed as seeds.
  fam_lr = lambda f, lr: grid.get(lr, 1.0, f'{PT0}_{f}')
  jb_lr = {lr: np.min([fam_lr(f, lr) for f in fams], axis=0) for lr in use}
  plain = np.min([grid.get(lr, 1.0, PT0) for lr in use], axis=0)
  jb = np.min(list(jb_lr.values()), axis=0)
  gain = np.min([jb_lr[lr] - grid.get(lr, 1.0, PT0) for lr in use], axis=0)
  each = '; '.join(f'{f}: {_mean(np.min([fam_lr(f, lr) for lr in use], axis=0)):.1f}'
                   for f in fams)
  out = []
  for claim_id, values in (('E2.jailbreak_acc', jb), ('E2.jailbreak_gain', gain)):
    row = claims_lib.judge(_claim(claim_id, tag), values, check=check, control_value=_mean(plain))
    row['reason'] += f'; plain family token {_mean(plain):.1f}; {each}; control: the plain token'
    out.append(row)
  return out


# -------------------------------------------------------------------- reFT ----


def reft(config, members, history, pretrained: Optional[dict] = None) -> list[dict]:
  """P4 and E.4 at the largest reFT lr; members starting at/above the threshold are left out.

  pretrained: {reFT source: Acc O_PT of its model before fine-tuning}; a source
  whose pretrained model did not reach the threshold has nothing to revive.
  """
  pretrained = pretrained or {}
  a = config.analysis
  steps, acc = history.curve(PT0)
  lr, thr, never = max(a.reft_lrs), a.revival_threshold, a.reft_steps + 1
  scale = a.reft_steps / paper.PAPER_REFT_STEPS
  idx = lambda pred: [i for i, m in enumerate(members) if pred(m) and m.lr == lr]
  iters = lambda i: reft_lib.revival_step(steps, acc[:, i], thr)  # Kept members start below.
  its = lambda i: never if iters(i) is None else iters(i)
  started_low = lambda i: acc[0, i] < thr
  med = lambda ii: float(np.median([its(i) for i in ii])) if ii else math.nan
  scr_ft = idx(lambda m: m.source == pcfg_train.SCR_FT)
  scr = idx(lambda m: m.source == pcfg_train.SCR)
  fmt = lambda ii: ', '.join(f'{"never" if iters(i) is None else iters(i)}' for i in ii)

  def removed(ii, what):
    low = [i for i in ii if started_low(i)]
    desc = (f'fine-tuning removed O_PT: Acc O_PT at reFT step 0 below {thr:g}% in {len(low)} of '
            f'{len(ii)} {what} members (step 0: {_fmt(acc[0, ii])})')
    before = {s: v for s, v in pretrained.items() if s in {members[i].source for i in ii}}
    if any(v < thr for v in before.values()):
      return low, claims_lib.Check(False, desc + '; before fine-tuning Acc O_PT ' + ', '.join(
          f'{s} {v:.1f}' for s, v in before.items()) + f' (needs >= {thr:g})',
                                   'pretraining did not teach O_PT: nothing to revive')
    return low, claims_lib.Check(bool(low), desc, 'fine-tuning did not remove O_PT')

  control = (f'control: Scr.+FT {fmt(scr_ft)} (median {med(scr_ft):g}), Scr. {fmt(scr)} (median '
             f'{med(scr):g}) at the same reFT lr {lr:g}, budget and grid; never = {never}')
  seed_of = lambda i: members[i].seed

  def by_seed(ii):
    """Issue 29: one value per seed (the median of its members, e.g. C_Tr 0 and 1), a LOWER
    bound when one of them never revived within the budget."""
    seeds = sorted({seed_of(i) for i in ii})
    vals = [med([i for i in ii if seed_of(i) == s]) for s in seeds]
    kinds = [claims_lib.LOWER if any(its(i) >= never for i in ii if seed_of(i) == s)
             else claims_lib.EXACT for s in seeds]
    return vals, kinds

  grid = _grid_resolution(config)
  out = []
  for claim_id, source, paper_iters in (('P4.strong', 'high/ft', paper.REFT_STRONG_ITERS),
                                        ('P4.weak', 'low/ft', paper.REFT_WEAK_ITERS)):
    claim = dataclasses.replace(_claim(claim_id), threshold=paper_iters * scale)
    ii = idx(lambda m, s=source: m.source == s)
    if not ii:
      out.append(_missing(claim, f'reFT of {source}'))
      continue
    low, check = removed(ii, source)
    coarse = grid(claim.threshold)
    if check.passed and coarse:
      check = claims_lib.Check(False, check.description + '; ' + coarse,
                               'evaluation grid too coarse where the threshold decides')
    vals, kinds = by_seed(low or ii)
    row = claims_lib.judge(claim, vals, kinds=kinds, budget=a.reft_steps, check=check,
                           control_value=med(scr_ft))
    row['reason'] += f'; reFT {fmt(low or ii)}; {control}'
    out.append(row)
  claim = _claim('P4.scr_slower')
  ii = idx(lambda m: m.source not in (pcfg_train.SCR_FT, pcfg_train.SCR)
           and not m.source.endswith('/randft'))
  low, check = removed(ii, 'fine-tuned')
  seeds = sorted({members[i].seed for i in scr_ft})
  gaps = [claims_lib.iteration_gap(med([i for i in (low or ii) if seed_of(i) == s]),
                                   its(next(i for i in scr_ft if seed_of(i) == s)), never)
          for s in seeds if any(seed_of(i) == s for i in (low or ii))]
  row = claims_lib.judge(claim, [g for g, _ in gaps], kinds=[k for _, k in gaps],
                         budget=a.reft_steps, check=check, control_value=med(scr))
  row['reason'] += f'; reFT {fmt(low or ii)}; {control}'
  out.append(row)
  ii = idx(lambda m: m.source.endswith('/randft'))
  if ii:
    low, check = removed(ii, 'randFT')
    use = low or ii
    gaps = []
    for s in seeds:
      mine = [i for i in use if seed_of(i) == s]
      base = [its(i) for i in scr_ft + scr if seed_of(i) == s]
      if mine and base:
        gaps.append(claims_lib.iteration_gap(med(mine), min(base), never))
    row = claims_lib.judge(_claim('E4.randft_faster'), [g for g, _ in gaps],
                           kinds=[k for _, k in gaps], budget=a.reft_steps, check=check,
                           control_value=med(scr_ft))
    row['reason'] += f'; randFT {fmt(use)}; {control}'
    out.append(row)
  return out


def _grid_resolution(config):
  """threshold -> '' when reFT is evaluated >= REFT_POINTS_PER_DOUBLING times per doubling
  from half to twice the threshold, else why not (issue 29: with 5, 10, 20, 50, 100 every
  count from 51 to 100 reads as 100)."""
  steps = sorted(config.analysis.reft_eval_steps)

  def coarse(thr: float) -> str:
    near = [s for s in steps if thr / 2 <= s <= 2 * thr]
    need = 2 * paper.REFT_POINTS_PER_DOUBLING
    if len(near) >= need:
      return ''
    return (f'the reFT evaluation grid has {len(near)} step(s) in [{thr / 2:g}, {2 * thr:g}] '
            f'around the threshold {thr:g} (needs >= {need}: '
            f'{paper.REFT_POINTS_PER_DOUBLING} per doubling)')
  return coarse


def analysis(config, results, reft_out) -> list[dict]:
  """Every claim of the analysis variant, in the report's order (CLAIMS_COLUMNS rows)."""
  out = []
  for (prior, arm), r in results.items():
    r = {**r, 'grid': history_grid(r['members'], r['history'])}
    tag = f'{prior}/{arm.name}'
    if prior == 'low' and not arm.rand_ft:  # randFT answers O_FT to O_PT prompts: no wrapper.
      out.append(wrapper_claim(config, r['grid'], _claim('P1a', tag)))
      out.append(p1b(config, r['grid'], _claim('P1b', tag)))
    row = p3(config, prior, r, _claim('P3', tag))
    out += [row] if row else []
    if config.analysis.pruning and 'prune' in r and prior == 'low':
      out.append(p2(config, r, _claim('P2', tag)))
    if config.analysis.variant == 'jailbreak':
      out += jailbreak(config, r['grid'], tag)
  if reft_out:
    before = {}
    for (prior, arm), r in results.items():
      steps, pt = r['history'].curve(PT0)
      if 0 in list(steps):
        before[f'{prior}/{arm.name}'] = float(np.mean(pt[list(steps).index(0)]))
    out += reft(config, *reft_out, pretrained=before)
  return out
