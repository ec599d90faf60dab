"""The TinyStories claims, each a `paper.CLAIMS` entry judged by `report.claims.judge`.

Every claim gets a manipulation check (did pretraining teach Twist? did
deletion remove it?), a matched control (Not-in-PT, or a probe floor) and an
interval. With several replicates (config.model_seeds) each model's value is
computed in every replicate, against that replicate's own Present and Not-in-PT,
and decided by the 95% t-interval over replicates; the manipulation checks read
the replicates' mean (rates pooled over their generations). With one replicate
the intervals are Wilson for each generation rate, Newcombe for a difference of
two rates, a +-LOSS_MARGIN band for a loss difference (the rules are in paper.py).
"""

from __future__ import annotations

import math
from typing import Optional

from wrapper_study.report import claims as claims_lib
from wrapper_study.report import intervals
from wrapper_study.tinystories import analysis
from wrapper_study.tinystories import instruct
from wrapper_study.tinystories import paper
from wrapper_study.tinystories import train
from wrapper_study.tinystories.paper import NOT_IN_PT, PRESENT

_NAN3 = (math.nan, math.nan, math.nan)


def rate(percent: Optional[float], n: int) -> tuple[float, float, float]:
  """(rate, low, high) in %: the 95% Wilson interval of a rate of n samples (NaNs if missing)."""
  if percent is None or not math.isfinite(percent) or n <= 0:
    return _NAN3
  return intervals.wilson_interval(percent * n / 100.0, n)


def difference(a: Optional[float], b: Optional[float], n: int) -> tuple[float, float, float]:
  """(a - b, low, high) in points: Newcombe's interval from the two rates' Wilson intervals."""
  (pa, la, ua), (pb, lb, ub) = rate(a, n), rate(b, n)
  d = pa - pb
  return d, d - math.hypot(pa - la, ub - pb), d + math.hypot(ua - pa, pb - lb)


def band(d: Optional[float]) -> tuple[float, float, float]:
  """A loss difference with its +-LOSS_MARGIN band (one mean per model: no spread to use)."""
  if d is None or not math.isfinite(d):
    return _NAN3
  return d, d - paper.LOSS_MARGIN, d + paper.LOSS_MARGIN


def worst(items: dict, side: str) -> tuple[float, float, float]:
  """The worst model's (value, low, high): holds iff all hold, fails iff one surely fails."""
  items = [v for v in items.values() if all(math.isfinite(x) for x in v)]
  if not items:
    return _NAN3
  pick = min if side == '>=' else max
  return tuple(pick(v[i] for v in items) for i in range(3))


def first_step(series: dict, n: int, level: float, bound: int) -> int:
  """First step whose rate reaches `level`: bound 0 = the point, 1 = its Wilson low, 2 = high.

  series: {step: twist %}; never reached: the step after the last evaluated one.
  """
  steps = sorted(s for s, v in series.items() if v is not None)
  for s in steps:
    r = rate(series[s], n)
    if (r[1] if bound == 1 else r[2] if bound == 2 else r[0]) >= level:
      return s
  return (steps[-1] + 1) if steps else 0


def recovery_gap(model: dict, control: dict, n: int, level: float) -> tuple[float, float, float]:
  """(Not-in-PT minus model) iterations to `level`, low to high by the Wilson intervals.

  Low: the control's first step that MAY reach the level minus the model's first
  that SURELY does; high: the reverse. Speed, not the level left after deletion.
  """
  if not any(v is not None for v in model.values()):
    return _NAN3
  at = lambda series, bound: first_step(series, n, level, bound)
  never = max(s for s, v in control.items() if v is not None) + 1
  if at(model, 0) >= never and at(control, 0) >= never:
    return _NAN3  # Censored in both arms: no gap (issue 29; was never - never = 0).
  return (at(control, 0) - at(model, 0), at(control, 2) - at(model, 1),
          at(control, 1) - at(model, 2))


def _fmt(x: tuple, spec: str = '.1f') -> str:
  return 'n/a' if not math.isfinite(x[0]) else (f'{x[0]:{spec}} [{x[1]:{spec}}, '
                                                  f'{x[2]:{spec}}]')


class _Run:
  """What the claims read from one replicate's (or the replicates' mean) logs, probes and
  classifier scores; `replicates` are the per-seed runs each claim's value is computed in."""

  def __init__(self, config, logs, probes, clf_scores, probe_stats, n_seeds: int = 1):
    self.config, self.logs, self.probes, self.clf = config, logs, probes or {}, clf_scores
    self.n = config.eval.num_generations * n_seeds  # Generations behind a (pooled) rate.
    self.replicates = [self]
    self.runs = train.deletion_runs(config)
    self.deleted = [train.deletion_name(p, lr) for p, lr, _ in self.runs]
    self.label = {train.deletion_name(p, lr): f'{p} ({name})' for p, lr, name in self.runs}
    self.label[NOT_IN_PT] = 'Not-in-PT'
    self.pt, self.d_end, self.r_end = (config.pretrain.steps, config.deletion.steps,
                                       config.reft.steps)
    info = probe_stats or {}
    self.n_probe = info.get('n_test', config.probe.n_test)
    self.majority = info.get('majority', {})
    self.feature = instruct.normalise_feature(config.deletion.feature)

  def get(self, run: str, metric: str, step: int) -> Optional[float]:
    log = self.logs.get(run)
    return None if log is None else log.get(metric, step)

  # ------------------------------------------------------ manipulation checks ----
  def classifier_ok(self) -> bool:
    return self.clf.get('accuracy', 0.0) >= paper.CLASSIFIER_MIN_ACCURACY

  def classifier_failed(self) -> claims_lib.Check:
    return claims_lib.Check(False, f'classifier accuracy {self.clf.get("accuracy", 0):.1f}% < '
                            f'{paper.CLASSIFIER_MIN_ACCURACY:g}%',
                            'the twist classifier is too inaccurate to read')

  def taught_fraction(self) -> claims_lib.Check:
    """Pretraining taught Present Twist: its twist fraction surely above Not-in-PT's."""
    d = difference(self.get(PRESENT, 'twist_fraction', self.pt),
                   self.get(NOT_IN_PT, 'twist_fraction', self.pt), self.n)
    desc = f'Present minus Not-in-PT twist fraction after pretraining {_fmt(d)} points'
    if not self.classifier_ok():
      return self.classifier_failed()
    return claims_lib.Check(math.isfinite(d[1]) and d[1] > 0, desc + ' (needs low > 0)',
                            'pretraining did not teach Present Twist')

  def taught_loss(self) -> claims_lib.Check:
    """Pretraining taught Present Twist stories: its Twist-story loss below Not-in-PT's."""
    p, c = self.get(PRESENT, 'twist_loss', self.pt), self.get(NOT_IN_PT, 'twist_loss', self.pt)
    d = None if p is None or c is None else c - p
    ok = d is not None and d > paper.LOSS_MARGIN
    desc = ('Not-in-PT minus Present Twist-story loss after pretraining '
            f'{"n/a" if d is None else f"{d:.3f}"} (needs > {paper.LOSS_MARGIN:g})')
    return claims_lib.Check(ok, desc, 'pretraining did not teach Present Twist stories')

  def level(self) -> float:
    """The recovery level: RECOVERY_LEVEL x Present's twist fraction (NaN if unmeasured)."""
    p = self.get(PRESENT, 'twist_fraction', self.pt)
    return math.nan if p is None else paper.RECOVERY_LEVEL * p

  def removed(self, models) -> tuple[list, claims_lib.Check]:
    """Deleted models whose twist fraction is surely below the recovery level, and the check."""
    level = self.level()
    kept = [m for m in models
            if rate(self.get(m, 'twist_fraction', self.d_end), self.n)[2] < level]
    if not self.classifier_ok():
      return [], self.classifier_failed()
    out = [m for m in models if m not in kept]
    desc = (f'deletion removed Twist (twist fraction Wilson high < {paper.RECOVERY_LEVEL:g} x '
            f"Present's = {level:.1f}%) in {len(kept)} of {len(models)} models"
            + (f'; left out: {", ".join(self.label[m] for m in out)}' if out else ''))
    return kept, claims_lib.Check(bool(kept), desc, 'deletion did not remove Twist')

  def removed_loss(self, models) -> tuple[list, claims_lib.Check]:
    """Deleted models whose Twist-story loss rose above Present's by more than the margin."""
    present = self.get(PRESENT, 'twist_loss', self.pt)
    kept = [m for m in models if present is not None and self.get(m, 'twist_loss', self.d_end)
            is not None and self.get(m, 'twist_loss', self.d_end) - present > paper.LOSS_MARGIN]
    out = [m for m in models if m not in kept]
    desc = (f"deletion raised the Twist-story loss > {paper.LOSS_MARGIN:g} above Present's in "
            f'{len(kept)} of {len(models)} models'
            + (f'; left out: {", ".join(self.label[m] for m in out)}' if out else ''))
    return kept, claims_lib.Check(bool(kept), desc, 'deletion did not remove Twist')

  # --------------------------------------------------------------- probes ----
  def probe(self, model: str, feature: str) -> Optional[float]:
    accs = self.probes.get(model, {}).get(feature)
    return None if accs is None else analysis.mean_over_blocks(accs)


def probe_info(world) -> dict:
  """The probe test set's size and each feature's majority-class % (the probe floor)."""
  y = world.probe_test.labels_NxF
  return {'n_test': len(y), 'majority': {
      f: 100 * float(max(y[:, j].mean(), 1 - y[:, j].mean()))
      for j, f in enumerate(world.probe_test.feature_names)}}


def _over_replicates(r: _Run, items_of) -> tuple[dict, dict]:
  """({name: (value, low, high)}, {name: per-replicate values}) of items_of(run) -> {name:
  (value, low, high)}: one replicate's own intervals, or several's 95% t-interval over their
  values (a replicate without the value is left out of that item)."""
  per = [items_of(run) for run in r.replicates]
  if len(per) == 1:
    return per[0], {k: [v[0]] for k, v in per[0].items()}
  values = {k: [p[k][0] for p in per if math.isfinite(p[k][0])] for k in per[0]}
  return {k: intervals.t_interval(v) if v else _NAN3 for k, v in values.items()}, values


def _judge(claim_id: str, r: _Run, items_of, fmt, *, check=None, control=None,
           note='', min_seeds: int = claims_lib.MIN_SEEDS) -> dict:
  """One claims.csv row: the worst model's interval, every model's value in the reason.

  items_of(run) gives {model: (value, low, high)} in one replicate. Callers ask for the models
  that passed the check, or every model when none did (then the values are shown, and the
  verdict is 'not measured').
  """
  claim = paper.CLAIMS[claim_id]
  items, per_seed = _over_replicates(r, items_of)
  value, low, high = worst(items, claim.side)
  finite = [k for k, v in items.items() if math.isfinite(v[0])]
  pick = min if claim.side == '>=' else max
  seeds = per_seed[pick(finite, key=lambda k: items[k][0])] if finite else []
  row = claims_lib.judge(claim, seeds, check=check, control_value=control,
                         interval=(value, low, high), min_seeds=min_seeds)
  each = '; '.join(f'{k}: {fmt(v)}' for k, v in items.items())
  missing = [k for k, v in items.items() if not all(math.isfinite(x) for x in v)]
  row['reason'] += ((f'; {each}' if each else '')
                    + (f'; not measured, left out: {", ".join(missing)}' if missing else '')
                    + (f'; {note}' if note else ''))
  return row


def claims(config, logs_S: list[dict], probes_S: list[dict], clf_scores: dict,
           probe_stats: Optional[dict] = None) -> list[dict]:
  """Every claim of paper.CLAIMS as a claims.csv row (CLAIMS_COLUMNS), in that order.

  logs_S: per replicate, run name -> metrics.RunLog ('twist_loss', 'twist_fraction' by step);
  probes_S: per replicate, model -> feature -> accuracy % at B0..BL; probe_stats (probe_info):
  {'n_test': probe test stories, 'majority': {feature: majority-class %}} (the probe floor).
  """
  if len(logs_S) != len(probes_S) or not logs_S:
    raise ValueError(f'one logs and one probes dict per replicate, got {len(logs_S)} and '
                     f'{len(probes_S)}')
  runs = [_Run(config, logs, probes, clf_scores, probe_stats)
          for logs, probes in zip(logs_S, probes_S)]
  if len(runs) == 1:
    r = runs[0]
  else:
    r = _Run(config, analysis.mean_logs(logs_S), analysis.mean_probes(probes_S), clf_scores,
             probe_stats, n_seeds=len(runs))
    r.replicates = runs
  return [_classifier(r), *_deletion(r), *_reft(r), *_probes(r)]


def _classifier(r: _Run) -> dict:
  n, acc = int(r.clf.get('n_test', 0)), r.clf.get('accuracy')
  maj = r.clf.get('majority_baseline')
  check = claims_lib.Check(
      n > 0 and maj is not None and maj < 100,
      f'{n} test stories, majority class {"n/a" if maj is None else f"{maj:.1f}"}% (both '
      'classes present)', 'the test split has one class only')
  shared = _Run(r.config, {}, {}, r.clf, None)  # One classifier for every replicate.
  # One classifier, no seeds to have: its Wilson interval over the test stories decides.
  return _judge('classifier_accuracy', shared, lambda _: {'classifier': rate(acc, n)}, _fmt,
                check=check, control=maj, min_seeds=0)


def _sub(a: Optional[float], b: Optional[float]) -> Optional[float]:
  return None if a is None or b is None else a - b


def _deletion(r: _Run) -> list[dict]:
  loss = lambda run, m: run.get(m, 'twist_loss', run.d_end)
  fmt3 = lambda v: _fmt(v, '.3f')
  taught = r.taught_loss()
  out = [_judge('deletion_raises_loss', r,
                lambda run: {r.label[m]: band(_sub(loss(run, m),
                                                   run.get(PRESENT, 'twist_loss', run.pt)))
                             for m in r.deleted},
                fmt3, check=taught, control=r.get(NOT_IN_PT, 'twist_loss', r.pt),
                note="control: Not-in-PT's loss after pretraining")]
  lrs = sorted(r.config.deletion.lrs, reverse=True)
  name = train.deletion_name
  check = taught if len(lrs) > 1 else claims_lib.Check(
      False, 'the config has one deletion lr', 'one deletion lr: nothing to compare')
  out.append(_judge('deletion_lr_raises_loss_more', r, lambda run: {
      p: band(_sub(loss(run, name(p, lrs[0])), loss(run, name(p, lrs[-1]))))
      for p in r.config.deletion.protocols}, fmt3, check=check))
  out.append(_judge('deletion_lowers_fraction', r, lambda run: {
      r.label[m]: difference(run.get(PRESENT, 'twist_fraction', run.pt),
                             run.get(m, 'twist_fraction', run.d_end), run.n)
      for m in r.deleted}, _fmt, check=r.taught_fraction(),
                    control=r.get(NOT_IN_PT, 'twist_fraction', r.pt),
                    note="control: Not-in-PT's twist fraction after pretraining"))
  return out


def reft_points(config) -> tuple:
  """0, Table 1's score_steps and the recovery grid (reft.recovery_steps: 1, 2, 4, ...)."""
  return (0,) + tuple(sorted(set(config.reft.score_steps)
                             | set(config.reft.get('recovery_steps', ()))))


def _censored(row: dict, r: _Run, models, series) -> dict:
  """Issue 29: a model that reached the level in neither arm is no 'recovered at 0' gap.

  Every model censored in both arms: not measured (censored); some: never holds."""
  def never(run, x) -> bool:
    got = {k: v for k, v in series(run, x).items() if v is not None}
    return bool(got) and math.isfinite(run.level()) and (
        first_step(got, run.n, run.level(), 0) > max(got))

  out = lambda run, m: never(run, m) and never(run, NOT_IN_PT)
  both = [m for m in models if all(out(run, m) for run in r.replicates)]
  if not both:
    return row
  note = (f'; censored in both arms (neither reached the level within {r.r_end}): '
          f'{", ".join(r.label[m] for m in both)}')
  if row['manipulation_check'].startswith('failed'):
    return row
  if len(both) == len(models):
    return {**row, 'verdict': claims_lib.not_measured(
        f'censored: neither revived within {r.r_end}'), 'reason': row['reason'] + note}
  if row['verdict'] == claims_lib.HOLDS:
    return {**row, 'verdict': claims_lib.INCONCLUSIVE,
            'reason': row['reason'] + note + ': they could be against the claim'}
  return {**row, 'reason': row['reason'] + note}


def _reft(r: _Run) -> list[dict]:
  points = reft_points(r.config)
  series = lambda run, m: {s: run.get('reft_' + m, 'twist_fraction', s) for s in points}
  level = r.level()
  kept, check = r.removed(r.deleted)
  nip_at = first_step(series(r, NOT_IN_PT), r.n, level, 0) if math.isfinite(level) else None
  fmt_it = lambda v: ('n/a' if not math.isfinite(v[0])
                      else f'{v[0]:+.0f} [{v[1]:+.0f}, {v[2]:+.0f}]')
  # Each replicate's models against its own Not-in-PT, to 3/4 of its own Present.
  out = [_censored(_judge('reft_recovers_faster', r, lambda run: {
      r.label[m]: recovery_gap(series(run, m), series(run, NOT_IN_PT), run.n, run.level())
      for m in kept or r.deleted},
                fmt_it, check=check, control=nip_at,
                note=f'control: Not-in-PT reaches {level:.1f}% at reFT iteration {nip_at} '
                     f'(evaluated at {points}; {points[-1] + 1} = never)'),
                   r, kept or r.deleted, series)]
  kept, check = r.removed_loss(r.deleted)
  end = lambda run, m: run.get('reft_' + m, 'twist_loss', run.r_end)
  out.append(_judge('reft_loss_below_not_in_pt', r, lambda run: {
      r.label[m]: band(_sub(end(run, NOT_IN_PT), end(run, m))) for m in kept or r.deleted},
                    lambda v: _fmt(v, '.3f'), check=check, control=end(r, NOT_IN_PT),
                    note="control: Not-in-PT's Twist-story loss after reFT"))
  return out


def _probes(r: _Run) -> list[dict]:
  f, n = r.feature, r.n_probe
  nip, floor = r.probe(NOT_IN_PT, f), r.majority.get(f)
  gap = lambda run, m, feat: difference(run.probe(PRESENT, feat), run.probe(m, feat), n)
  present = rate(r.probe(PRESENT, f), n)

  def removed(models):
    """Deletion removed Twist, and Present decodes it above the floor: something to remove."""
    kept, check = r.removed(models)
    if check.passed and floor is not None and not present[1] > floor:
      return [], claims_lib.Check(
          False, f"Present's {f} probe {_fmt(present)}% is not above the majority class "
          f'({floor:.1f}%)', f'Present does not decode {f}: nothing to remove')
    return kept, check

  note = (f"control: Not-in-PT's {f} probe {'n/a' if nip is None else f'{nip:.1f}'}%"
          + ('' if floor is None else f', majority class {floor:.1f}%'))
  small = r.config.deletion.lr_names[-1]
  out = []
  for claim_id, models in (
      ('probe_kept_small_lr', [train.deletion_name(p, lr) for p, lr, name in r.runs
                               if name == small]),
      ('probe_kept_every_lr', r.deleted)):
    kept, check = removed(models)
    out.append(_judge(claim_id, r, lambda run, ms=tuple(kept or models): {
        r.label[m]: gap(run, m, f) for m in ms}, _fmt, check=check, control=nip, note=note))
  others = [g for g in r.probes.get(PRESENT, {}) if g != f]
  kept, check = r.removed(r.deleted)
  nip_gaps = [abs(gap(r, NOT_IN_PT, g)[0]) for g in others if r.probe(NOT_IN_PT, g) is not None]
  out.append(_judge('probe_other_features_kept', r, lambda run: {
      f'{r.label[m]} {g}': _absolute(gap(run, m, g)) for m in kept or r.deleted for g in others},
                    _fmt, check=check, control=max(nip_gaps) if nip_gaps else None,
                    note=f'control: max |Present minus Not-in-PT| over {", ".join(others)}'))
  out.append(_judge('probe_present_vs_not_in_pt', r,
                    lambda run: {'Present minus Not-in-PT': gap(run, NOT_IN_PT, f)},
                    _fmt, check=r.taught_fraction(), control=floor,
                    note='' if floor is None else 'control: the majority class'))
  return out


def _absolute(v: tuple) -> tuple[float, float, float]:
  """|d| and its interval: from 0 when the interval of d straddles 0."""
  low = 0.0 if v[1] <= 0 <= v[2] else min(abs(v[1]), abs(v[2]))
  return abs(v[0]), low, max(abs(v[1]), abs(v[2]))
