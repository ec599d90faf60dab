"""The Tracr claims, each a `paper.CLAIMS` entry judged by `report.claims.judge` on seeds.

The claims read three lists of per-member rows (written as tables, so a test
can feed synthetic ones): `members` (one per fine-tuned member, plus one
'noised-only' row per seed: the compiled model with that seed's noise, never
fine-tuned), `pruned` (per pruned member and granularity: Acc O_PT at K=0 and
K=paper.PRUNING_K) and `reft` (per reFT member: start, highest Acc O_PT,
first revived step). Every claim has a manipulation check (did fine-tuning
change what it is about?) and a matched control; a diverged member is NaN in
its seed's value, left out of the interval and counted in the reason.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from wrapper_study.report import claims as claims_lib
from wrapper_study.report import intervals
from wrapper_study.tracr import paper

FINE_TUNED = 'fine-tuned'
NAN = math.nan


@dataclasses.dataclass
class Evidence:
  """What the claims of one task read (lists of dicts, as in the members/pruning/reFT tables)."""
  members: Sequence[dict]
  pruned: Sequence[dict] = ()
  reft: Sequence[dict] = ()
  reft_steps: int = 0
  revival_threshold: float = paper.REVIVAL_THRESHOLD


def _is(a, b) -> bool:
  return a not in ('', None) and math.isclose(float(a), float(b), rel_tol=1e-9)


def _diverged(r: dict) -> bool:
  return str(r.get('diverged', False)).lower() in ('true', '1')


def cell(rows, lr, c_tr=None, kind=FINE_TUNED) -> list[dict]:
  """Rows of one (lr, C_Tr) cell, by seed; c_tr=None: any C_Tr."""
  return sorted([r for r in rows if r.get('kind', FINE_TUNED) == kind and _is(r['lr'], lr)
                 and (c_tr is None or _is(r['c_tr'], c_tr))], key=lambda r: int(r['seed']))


def noised(rows) -> dict[int, dict]:
  """seed -> the noised-only row of that seed."""
  return {int(r['seed']): r for r in rows if r.get('kind') == paper.NOISED}


def values(rows, key: str) -> list[float]:
  """Per seed; NaN for a diverged member (judge leaves it out and counts it).

  attn0_corr is judged x 100, so the verdict's interval prints with its digits.
  """
  scale = 100.0 if key == 'attn0_corr' else 1.0
  return [NAN if _diverged(r) else scale * float(r[key]) for r in rows]


def _mean(xs) -> float:
  xs = [x for x in xs if math.isfinite(x)]
  return float(np.mean(xs)) if xs else NAN


def _f(x: float, spec: str = '.1f') -> str:
  return 'n/a' if not math.isfinite(x) else f'{x:{spec}}'


def _absent(claim_id: str, task: str, what: str) -> dict:
  """A claim whose cell the config does not run: not measured, saying which cell."""
  return _judge(claim_id, task, [], check=claims_lib.Check(False, what, 'cell not in the grid'))


def changed(rows) -> claims_lib.Check:
  """Fine-tuning moved Acc O_PT down or Acc O_FT up by >= paper.CHANGED points (seed mean)."""
  moves = {}
  for c_te in ('c_te1', paper.ANTI):
    moves[f'O_PT fell at {c_te}'] = _mean(
        [s - e for s, e in zip(values(rows, f'start/{c_te}/acc_o_pt'),
                               values(rows, f'end/{c_te}/acc_o_pt'))])
    moves[f'O_FT rose at {c_te}'] = _mean(
        [e - s for s, e in zip(values(rows, f'start/{c_te}/acc_o_ft'),
                               values(rows, f'end/{c_te}/acc_o_ft'))])
  finite = {k: v for k, v in moves.items() if math.isfinite(v)}
  best = max(finite, key=finite.get) if finite else None
  ok = best is not None and finite[best] >= paper.CHANGED
  desc = ('no finite member' if best is None else
          f'{best} by {finite[best]:.1f} points (needs >= {paper.CHANGED:g})')
  return claims_lib.Check(ok, desc, 'fine-tuning did not change O_PT or O_FT')


def _judge(claim_id, task, per_seed, *, check, control=None, note='', interval=None,
           kinds=None, budget=None) -> dict:
  claim = paper.CLAIMS[claim_id]
  claim = dataclasses.replace(claim, claim_id=f'{task}/{claim_id}',
                              statement=f'{task}: {claim.statement}')
  row = claims_lib.judge(claim, per_seed, check=check, control_value=control, interval=interval,
                         kinds=kinds, budget=budget)
  row['reason'] += f'; {note}' if note else ''
  return row


def _accuracy_claim(ev, task, claim_id, lr, c_tr, metric, control_rows, control_what) -> dict:
  rows = cell(ev.members, lr, c_tr)
  if not rows:
    return _absent(claim_id, task, f'lr {lr:g} C_Tr={c_tr:g} not fine-tuned')
  natural = metric.replace(f'/{paper.ANTI}/', f'/{paper.NATURAL}/')
  nat = (f'natural C_Te=0 set: {_f(_mean(values(rows, natural)))}; '
         if natural != metric and natural in rows[0] else '')
  ctrl = _mean(values(control_rows, metric)) if control_rows else NAN
  return _judge(claim_id, task, values(rows, metric), check=changed(rows),
                control=ctrl if math.isfinite(ctrl) else None,
                note=f'{nat}control: {control_what} {_f(ctrl)}')


def _worst(cells: dict, side: str):
  """(name, per-seed values, interval) of the cell whose interval is worst for the claim."""
  out = []
  for name, v in cells.items():
    iv = intervals.t_interval([x for x in v if math.isfinite(x)])
    if math.isfinite(iv[0]):
      out.append((iv[1] if side == '>=' else -iv[2], name, v, iv))
  if not out:
    return None, [], None
  _, name, v, iv = min(out)
  return name, v, iv


def counter_claims(ev: Evidence, task: str) -> list[dict]:
  nz = list(noised(ev.members).values())
  m = f'end/{paper.ANTI}/acc_o_ft'
  return [
      _accuracy_claim(ev, task, 'wrapper_high_c_te1', paper.LR_M, 1.0, 'end/c_te1/acc_o_ft', nz,
                      'noised-only Acc O_FT at C_Te=1'),
      _accuracy_claim(ev, task, 'wrapper_low_c_te0', paper.LR_M, 1.0, m,
                      cell(ev.members, paper.LR_M, 0.0), 'C_Tr=0 at lr 1e-2'),
      _accuracy_claim(ev, task, 'cannot_learn_lr_s', paper.LR_S, 0.0, m,
                      cell(ev.members, paper.LR_L, 0.0), 'lr 1e-1 C_Tr=0'),
      _accuracy_claim(ev, task, 'learns_lr_l', paper.LR_L, 0.0, m, nz, 'noised-only'),
      pruning_claim(ev, task)]


def pruning_claim(ev: Evidence, task: str) -> dict:
  """The gain of C_Tr=1 models at K=1 over the same seed's larger control gain."""
  cid = 'pruning_single_weight'
  rows = [r for r in ev.pruned if r['granularity'] == 'weight']
  gain = lambda r: NAN if _diverged(r) else float(r['acc_o_pt_k1']) - float(r['acc_o_pt_k0'])
  base = {int(r['seed']): r for r in rows if r.get('kind') == paper.NOISED}
  cells, kept, each, ctrl_gains = {}, [], [], []
  for lr in (paper.LR_M, paper.LR_S):
    ft, c0 = cell(rows, lr, 1.0), {int(r['seed']): r for r in cell(rows, lr, 0.0)}
    if not ft:
      continue
    excess = []
    for r in ft:
      s = int(r['seed'])
      ctrl = [gain(x) for x in (base.get(s), c0.get(s)) if x is not None]
      ctrl = [g for g in ctrl if math.isfinite(g)]
      ctrl_gains += ctrl
      excess.append(gain(r) - max(ctrl) if ctrl else NAN)
    # Manipulation check: fine-tuning removed O_PT (K=0 far below the noised-only model's).
    drop = _mean([float(base[int(r['seed'])]['acc_o_pt_k0']) - float(r['acc_o_pt_k0'])
                  for r in ft if int(r['seed']) in base and not _diverged(r)])
    each.append(f'lr {lr:g}: gain {_f(_mean([gain(r) for r in ft]))}, over controls '
                f'{_f(_mean(excess))}, O_PT removed by {_f(drop)}')
    if math.isfinite(drop) and drop >= paper.CHANGED:
      cells[f'lr {lr:g}'], kept = excess, kept + [lr]
  if not any(cell(rows, lr, 1.0) for lr in (paper.LR_M, paper.LR_S)):
    return _absent(cid, task, 'no C_Tr=1 model at lr 1e-2 or 1e-3 pruned by weight')
  if not base:
    check = claims_lib.Check(False, 'no noised-only model pruned', 'no control pruned')
  else:
    check = claims_lib.Check(
        bool(kept), f'fine-tuning removed O_PT (K=0 Acc O_PT >= {paper.CHANGED:g} points below '
        f'the noised-only model) at lr {", ".join(f"{x:g}" for x in kept) or "none"}',
        'fine-tuning did not remove O_PT')
  name, per_seed, iv = _worst(cells, '>=')
  if check.passed and name is None:
    check = claims_lib.Check(False, 'no seed with a finite gain and control', 'no control pruned')
  return _judge(cid, task, per_seed, check=check, interval=iv,
                control=_mean(ctrl_gains) if ctrl_gains else None,
                note=f'worst: {name}; ' + '; '.join(each)
                     + '; control_value: mean control gain at K=1')


def max_identifier_claims(ev: Evidence, task: str) -> list[dict]:
  nz = list(noised(ev.members).values())
  ctrl = _mean(values(nz, 'attn0_corr')) if nz else NAN
  out = []
  cid = 'sorting_kept_lr_vs'
  rows = cell(ev.members, paper.LR_VS)
  if not rows:
    out.append(_absent(cid, task, 'lr 1e-4 not fine-tuned'))
  else:
    cs = sorted({float(r['c_tr']) for r in rows})
    cells = {f'C_Tr={c:g}': values(cell(rows, paper.LR_VS, c), 'attn0_corr') for c in cs}
    name, per_seed, iv = _worst(cells, '>=')
    out.append(_judge(cid, task, per_seed, check=changed(rows), interval=iv,
                      control=ctrl if math.isfinite(ctrl) else None,
                      note=f'worst: {name}; ' + '; '.join(f'{k}: {_f(_mean(v))}'
                                                         for k, v in cells.items())
                           + f'; control: noised-only {_f(ctrl)}'))
  out.append(_accuracy_claim(ev, task, 'readout_learned_lr_vs', paper.LR_VS, 0.0,
                             f'end/{paper.ANTI}/acc_o_ft', nz, 'noised-only'))
  cid = 'sorting_distorted_lr_m'
  rows = cell(ev.members, paper.LR_M, 0.0)
  if not rows:
    out.append(_absent(cid, task, 'lr 1e-2 C_Tr=0 not fine-tuned'))
  else:
    acc = _mean(values(rows, f'end/{paper.ANTI}/acc_o_ft'))
    out.append(_judge(cid, task, values(rows, 'attn0_corr'), check=changed(rows),
                      control=ctrl if math.isfinite(ctrl) else None,
                      note=f'Acc O_FT ({paper.CLAIMS_C_TE0}) {_f(acc)}; control: '
                           f'noised-only {_f(ctrl)}'))
  return out


def _source_lr(r) -> float:
  return NAN if r['source'] == paper.SCRATCH else float(r['source_lr'])


def _matched_lrs(ev: Evidence, src: list, scratch: list) -> list[float]:
  """The reFT lrs both arms ran (the control gets no larger lr than the treatment)."""
  lrs = lambda rows: {round(float(r['reft_lr']), 12) for r in rows}
  return sorted(lrs(src) & lrs(scratch))


def reft_claims(ev: Evidence, task: str) -> list[dict]:
  never, thr = ev.reft_steps + 1, ev.revival_threshold
  iters = lambda r: never if r['revived_at'] in ('', None) else int(r['revived_at'])
  scratch = [r for r in ev.reft if r['source'] == paper.SCRATCH and not _diverged(r)]
  at = lambda rows, lrs: [r for r in rows if any(_is(r['reft_lr'], lr) for lr in lrs)]
  out = []
  cid = 'reft_faster_than_scratch'
  src = [r for r in ev.reft if _is(_source_lr(r), paper.LR_M)]
  lrs = _matched_lrs(ev, src, scratch) if src and scratch else []
  if not src or not scratch:
    out.append(_absent(cid, task, 'no reFT from lr 1e-2, or no Scr.+FT'))
  elif not lrs:
    out.append(_judge(cid, task, [], check=claims_lib.Check(
        False, 'Scr.+FT ran at no reFT lr: no matched control (a larger lr is no control)',
        'no Scr.+FT at the reFT lrs')))
  else:
    src, scratch_m = at(src, lrs), at(scratch, lrs)
    kept = [r for r in src if not _diverged(r) and float(r['acc_o_pt_start']) < thr]
    seeds = sorted({int(r['seed']) for r in src})
    per_seed, kinds = [], []
    for s in seeds:
      mine = [iters(r) for r in kept if int(r['seed']) == s]
      base = [iters(r) for r in scratch_m if int(r['seed']) == s]
      v, k = (claims_lib.iteration_gap(min(mine), min(base), never) if mine and base
              else (NAN, claims_lib.EXACT))
      per_seed.append(v)
      kinds.append(k)
    check = claims_lib.Check(
        bool(kept), f'{len(kept)} of {len(src)} reFT models started below Acc O_PT {thr:g}% '
        '(fine-tuning removed O_PT)', 'fine-tuning did not remove O_PT: nothing to revive')
    ctrl = min(float(np.median([iters(r) for r in scratch_m if _is(r['reft_lr'], lr)]))
               for lr in lrs)
    fast = [iters(r) for r in kept]
    done = lambda rows: f'{sum(iters(r) < never for r in rows)}/{len(rows)}'
    out.append(_judge(cid, task, per_seed, check=check, control=ctrl, kinds=kinds,
                      budget=ev.reft_steps,
                      note=f'matched lrs {", ".join(f"{x:g}" for x in lrs)}; revived within '
                           f'{ev.reft_steps} iterations: reFT {done(kept)}, Scr.+FT '
                           f'{done(scratch_m)}; fastest reFT {min(fast) if fast else "n/a"}, '
                           f'control: fastest Scr.+FT median {ctrl:g} iterations at the same '
                           f'lrs ({never} = never)'))
  cid = 'no_revival_lr_l'
  src = [r for r in ev.reft if _is(_source_lr(r), paper.LR_L)]
  pos = [r for r in ev.reft if _is(_source_lr(r), paper.LR_M) and not _diverged(r)
         and float(r['acc_o_pt_start']) < thr]
  if not src:
    out.append(_absent(cid, task, 'no reFT from lr 1e-1'))
  else:
    ok = [r for r in src if not _diverged(r) and float(r['acc_o_pt_start']) < thr]
    lrs = sorted({round(float(r['reft_lr']), 12) for r in ok})
    pos = at(pos, lrs)
    per_seed = [max((float(r['acc_o_pt_max']) for r in ok if int(r['seed']) == s), default=NAN)
                for s in sorted({int(r['seed']) for r in src})]
    ctrl = _mean(intervals.per_seed([int(r['seed']) for r in pos],
                                    [float(r['acc_o_pt_max']) for r in pos], np.max))
    revives = math.isfinite(ctrl) and ctrl >= thr
    # The control shows the budget can revive; a treatment seed that revived shows it too,
    # and then "no revival" is contradicted whatever the control did.
    treated_revived = sum(v >= thr for v in per_seed if math.isfinite(v))
    check = claims_lib.Check(
        bool(ok) and (revives or treated_revived > 0),
        f'{len(ok)} of {len(src)} reFT models started below Acc O_PT {thr:g}%; the matched '
        f'control (reFT of the lr 1e-2 models at the same reFT lrs, {len(pos)} runs) reaches '
        f'{_f(ctrl)} (needs >= {thr:g}: it must revive for "no revival" to mean anything, '
        f'unless the lr 1e-1 models revive themselves: {treated_revived} of '
        f'{len(per_seed)} seeds did)',
        'fine-tuning did not remove O_PT: nothing to revive' if not ok else
        'the matched control (reFT after lr 1e-2) did not revive either: the budget cannot tell')
    out.append(_judge(cid, task, per_seed, check=check,
                      control=ctrl if math.isfinite(ctrl) else None,
                      note=f'control: reFT after lr 1e-2, highest Acc O_PT {_f(ctrl)} (seed mean '
                           'of the per-seed best)'))
  return out


_TASK = {'counter': counter_claims, 'max_identifier': max_identifier_claims}


def task_claims(task: str, paper_claims: str, ev: Evidence) -> list[dict]:
  """The task's own claims only (a sensitivity arm's grid has no pruning or reFT)."""
  return _TASK[paper_claims](ev, task)


def claims(task: str, paper_claims: Optional[str], ev: Evidence) -> tuple[list[dict], list[dict]]:
  """(claims.csv rows of one task, skipped claims): its own task's claims, then the general."""
  judged = (_TASK[paper_claims](ev, task) if paper_claims else []) + reft_claims(ev, task)
  skipped = [dict(program=task, claim=paper.CLAIMS[c].statement, only_for=owner)
             for owner, ids in paper.TASK_CLAIMS.items() if owner != paper_claims for c in ids]
  return judged, skipped
