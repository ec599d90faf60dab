"""The audit's verdicts about a pair, as claims rows (`report.claims.CLAIMS_COLUMNS`).

Three claims, each with the same manipulation check (did fine-tuning lower Acc
O_PT by at least `min_drop` points? If not, there is nothing to revive and
every claim is "not measured"), a control and a 95% interval:

  decodable  O_PT is still linearly decodable from the fine-tuned model: per
             probe seed, the best block's held-out probe accuracy for the O_PT
             target (the spec's first target) in the fine-tuned model minus
             the pretrained model's; holds when the interval is >= -probe_margin.
             Control: the majority-class rate (the floor a probe gets for free).
  pruning    pruning revives O_PT (one claim per granularity): at the K where the
             grad x weight ranking gains most over K random units of the same
             model, Acc O_PT(top-K) - Acc O_PT(random K), per random draw; holds
             when >= prune_min_gain. Control value: what the same top-K pruning
             does to the pretrained model's Acc O_PT at that K.
  reft       reFT revives O_PT faster than the matched control (`revive.py`):
             per reFT seed, (iterations of the control - of the fine-tuned model)
             / reFT steps to reach revival_fraction x the pretrained Acc O_PT; a
             censored arm (never revived) counts as one evaluation past the
             budget, a bound that decides only in its own direction
             (`claims.iteration_gap`); a seed where both arms are censored says
             nothing and is left out, and none left is "not measured". Holds
             when >= reft_min_speedup.

Fewer than 2 seeds (or draws) never give a decisive verdict (`claims.judge`). The overall
reading (wrapper vs deletion) is only as strong as the three: a wrapper when
reFT holds and probes or pruning hold, deletion when all three do not hold,
mixed otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from wrapper_study.audit import revive
from wrapper_study.report import claims as claims_lib

WORLD = 'audit'


def manipulation_check(pre_acc: float, ft_acc: float, min_drop: float) -> claims_lib.Check:
  drop = pre_acc - ft_acc
  return claims_lib.Check(
      passed=bool(drop >= min_drop),
      description=f'Acc O_PT {pre_acc:.1f} (pretrained) -> {ft_acc:.1f} (fine-tuned): '
                  f'fell {drop:.1f} points (needs >= {min_drop:g})',
      reason_if_failed='fine-tuning did not lower Acc O_PT: nothing to revive')


def decodable(probe_acc_SxMxLxT, majority_T, check, margin: float) -> dict:
  """probe_acc: [seeds, models (0 pre, 1 ft), blocks, targets] %."""
  best = probe_acc_SxMxLxT[..., 0].max(-1)  # [seeds, models]: best block, O_PT target.
  claim = claims_lib.Claim(
      WORLD, 'decodable', 'O_PT is still linearly decodable from the fine-tuned model '
      '(best-block probe accuracy within the margin of the pretrained model\'s)',
      'best-block probe Acc O_PT, fine-tuned minus pretrained (points), per probe seed',
      -margin)
  pre_floor = float(best[:, 0].mean()) - float(majority_T[0])
  if check.passed and pre_floor < margin:
    check = claims_lib.Check(False, check.description + f'; but the pretrained model\'s probes '
                             f'beat the majority class by only {pre_floor:.1f} points',
                             'O_PT is not decodable from the pretrained model either')
  row = claims_lib.judge(claim, best[:, 1] - best[:, 0], check=check,
                         control_value=float(majority_T[0]))
  return row


def pruning(granularity: str, out: dict, check, min_gain: float) -> dict:
  """out: prune.sweep's result for one granularity."""
  cand = np.asarray(out['candidate'])
  ft = out['acc_pt'][cand == 'finetuned'][0]
  rand = out['acc_pt'][cand == 'random']  # [draws, K]
  pre = out['acc_pt'][cand == 'pretrained'][0]
  gain_K = ft - rand.mean(0)
  j = int(np.argmax(gain_K))
  claim = claims_lib.Claim(
      WORLD, f'pruning[{granularity}]', f'Pruning the fine-tuned model\'s top-K '
      f'{granularity}s (grad x weight on O_PT) revives O_PT beyond pruning K random ones',
      f'Acc O_PT(top-K) - Acc O_PT(random K) at the best K (K={int(out["ks"][j])}), '
      f'per random draw', min_gain)
  row = claims_lib.judge(claim, ft[j] - rand[:, j], check=check,
                         control_value=float(pre[j] - pre[0]))
  row['reason'] += (f'; Acc O_PT at K={int(out["ks"][j])}: top-K {ft[j]:.1f}, random '
                    f'{rand[:, j].mean():.1f}, unpruned {ft[0]:.1f}; control = the pretrained '
                    f'model\'s change under the same pruning')
  return row


def reft(out: dict, threshold: float, check, min_speedup: float, eval_every: int) -> dict:
  """out: revive.reft's result; threshold: the Acc O_PT that counts as revived."""
  steps = out['steps']
  budget = int(steps[-1])
  never = budget + eval_every  # A censored arm: one evaluation past the budget (a bound).
  per_seed, kinds, times = [], [], []
  for j in range(out['acc_pt'].shape[2]):
    t = [revive.revival_step(steps, out['acc_pt'][:, arm, j], threshold) for arm in (0, 1)]
    times.append(t)
    # The shared censoring rule (report.claims): one censored arm makes the gap a bound that
    # decides only in its own direction; both censored give no value.
    gap, kind = claims_lib.iteration_gap(*(never if x is None else x for x in t), never)
    per_seed.append(gap / budget)
    kinds.append(kind)
  claim = claims_lib.Claim(
      WORLD, 'reft', 'Reverse fine-tuning on O_PT revives the fine-tuned model faster than a '
      'matched control that never had O_PT', '(control - fine-tuned iterations to revival) / '
      'reFT steps, per reFT seed (censored arm: budget + one evaluation)', min_speedup)
  fmt = lambda t: ' '.join('-' if x is None else str(x) for x in t)
  detail = (f'; revival = Acc O_PT >= {threshold:.1f}; iterations per seed, fine-tuned: '
            f'{fmt([t[0] for t in times])}, control: {fmt([t[1] for t in times])}')
  if all(k == claims_lib.CENSORED for k in kinds):
    return {**claims_lib.judge(claim, [], check=check),
            'verdict': claims_lib.not_measured('both arms censored in every seed'),
            'reason': f'neither arm revived within {budget} steps' + detail}
  row = claims_lib.judge(claim, per_seed, check=check, kinds=kinds, budget=budget)
  row['reason'] += detail
  return row


def overall(rows: list[dict], check) -> dict:
  """The reading in the paper's terms, never stronger than the claims it rests on."""
  base = lambda v: v.split(' (')[0]
  get = lambda cid: [base(r['verdict']) for r in rows if r['claim_id'].startswith(cid)]
  dec, pru, rft = get('decodable'), get('pruning'), get('reft')
  held = claims_lib.HOLDS
  no = claims_lib.DOES_NOT_HOLD
  if not check.passed:
    verdict, reason = claims_lib.not_measured(check.reason_if_failed), check.description
  elif rft == [held] and (held in dec or held in pru):
    verdict, reason = held, ('wrapper: reFT revives O_PT faster than the control, and O_PT is '
                             'still decodable or revivable by pruning')
  elif dec and all(v == no for v in dec + pru + rft):
    verdict, reason = no, ('consistent with deletion: not decodable, not revived by pruning, '
                           'not revived faster than the control')
  elif all(v == claims_lib.NOT_MEASURED for v in dec + pru + rft):
    verdict, reason = claims_lib.not_measured('no claim measured'), 'see the claims above'
  else:
    verdict, reason = claims_lib.PARTLY, ('mixed evidence: ' + ', '.join(
        f'{r["claim_id"]} {base(r["verdict"])}' for r in rows))
  n_held = sum(v == held for v in dec + pru + rft)
  return dict(world=WORLD, claim_id='overall', statement='Fine-tuning wrapped O_PT (hidden and '
              'revivable) rather than deleting it', metric='claims that hold (of decodable, '
              'pruning, reft)', value=n_held, ci_low='', ci_high='', n_seeds='',
              threshold='reft and (decodable or pruning)', control_value='',
              manipulation_check=f'{"passed" if check.passed else "failed"}: '
              f'{check.description}', verdict=verdict, reason=reason)


def all_claims(pre_acc: float, ft_acc: float, probes_out, prune_outs: dict, reft_out,
               section, eval_every: int) -> list[dict]:
  """Every claims.csv row of an audit, the overall reading last."""
  check = manipulation_check(pre_acc, ft_acc, section.min_drop)
  rows = []
  if probes_out is not None:
    rows.append(decodable(probes_out['acc'], probes_out['majority'], check,
                          section.probe_margin))
  for granularity, out in prune_outs.items():
    rows.append(pruning(granularity, out, check, section.prune_min_gain))
  if reft_out is not None:
    threshold = section.revival_fraction * pre_acc
    rows.append(reft(reft_out, threshold, check, section.reft_min_speedup, eval_every))
  rows = [{k: ('' if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
          for r in rows]
  return rows + [overall(rows, check)]
