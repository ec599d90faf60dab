"""Probe fitting time: every site and target in one vmapped jit vs a per-probe loop.

  python benchmarks/probes.py                      # paper protocol, 4000 AdamW steps
  python benchmarks/probes.py --steps=500          # shorter, same schedule shape
  python benchmarks/probes.py --repeats=0 --no-loop

Features come from a random-init model at the paper's PCFG shape (minGPT
'gpt-mini': 6 layers, width 192, 6 heads, MLP 768, GELU, pre-LN, causal) via
`probing.collect_features` at the last position, sites B0..B6. Tokens are drawn
from 8 symbols; the two targets are the counts of symbols 1 and 2 ('count of
a', 'count of b'), n_classes 41 (the paper's labels 0..40). A random model
carries some count information at the last position through causal attention,
so accuracies are above chance but are not the point: time is.

Timed, each with the same ProbeConfig (paper protocol unless --steps etc.):
  vmapped   `probing.train_probes`: S x T probes in one jitted computation.
  loop      `probing.train_probes_loop`: one jitted single-probe fit per site
            and target (S x T calls, one compilation).
  closed    `probing.train_probes` with method='closed_form' (ridge).
Each row reports the first call (compilation included, as a user meets it) and
the median of --repeats further calls (compiled), taken round-robin over the
fits so that load from other processes falls evenly. Every call ends with
block_until_ready. The loop and vmapped fits must agree: the script prints the
largest parameter and accuracy differences between them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import jax

import machine  # benchmarks/machine.py (the script's own folder is on sys.path)
import numpy as np

from wrapper_study import model
from wrapper_study.analysis import probing

SHAPE = dict(n_layers=6, n_heads=6, d_model=192, d_head=32, d_mlp=768, vocab=268)
N_SYMBOLS = 8  # Tokens are drawn from ids 0..7; targets count ids 1 and 2.
N_CLASSES = 41




def _data(cfg, params, n: int, seq: int, seed: int, batch_size: int):
  """(features [S, n, D], labels [2, n]) at the last position."""
  tokens = np.random.default_rng(seed).integers(0, N_SYMBOLS, size=(n, seq))
  labels = np.stack([(tokens == 1).sum(1), (tokens == 2).sum(1)]).clip(0, N_CLASSES - 1)
  feats = probing.collect_features(cfg, params, tokens, -1, batch_size=batch_size)
  return feats, labels


def _time_round_robin(fits: dict, repeats: int) -> dict:
  """name -> (first-call s, median of `repeats` compiled calls or None, last result).

  First calls (compilation included) run in order; the compiled calls then go
  round-robin so that load from other processes falls evenly on every fit.
  """
  first, times, out = {}, {name: [] for name in fits}, {}
  for name, fn in fits.items():
    start = time.perf_counter()
    out[name] = jax.block_until_ready(fn())
    first[name] = time.perf_counter() - start
  for _ in range(repeats):
    for name, fn in fits.items():
      start = time.perf_counter()
      out[name] = jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: (first[name], statistics.median(times[name]) if times[name] else None, out[name])
          for name in fits}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=4000, help='AdamW steps (paper: 4000)')
  parser.add_argument('--batch-size', type=int, default=256, help='probe minibatch')
  parser.add_argument('--n-train', type=int, default=2000, help='probe training samples')
  parser.add_argument('--n-test', type=int, default=500, help='held-out samples')
  parser.add_argument('--seq', type=int, default=32, help='tokens per sample')
  parser.add_argument('--repeats', type=int, default=1,
                      help='compiled calls timed after the first (0: first call only)')
  parser.add_argument('--no-loop', action='store_true', help='skip the per-probe loop')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  if min(args.steps, args.batch_size, args.n_train, args.n_test, args.seq) < 1 or args.repeats < 0:
    parser.error('--steps, --batch-size, --n-train, --n-test, --seq must be >= 1, --repeats >= 0')

  print('\n'.join(machine.describe()))
  s = SHAPE
  cfg = model.TransformerConfig(vocab_size=s['vocab'], max_len=args.seq, d_model=s['d_model'],
                                n_layers=s['n_layers'], n_heads=s['n_heads'],
                                d_head=s['d_head'], d_mlp=s['d_mlp'], activation='gelu',
                                layer_norm=True, causal=True)
  params = model.init_params(cfg, jax.random.key(args.seed))
  # The paper's schedule shape (decays at 1/2, 3/4, 7/8 of the run) at any --steps.
  bounds = tuple(sorted({max(1, round(args.steps * f)) for f in (0.5, 0.75, 0.875)}))
  probe_cfg = probing.ProbeConfig(method='adamw', steps=args.steps, batch_size=args.batch_size,
                                  boundaries=bounds)
  probe_cfg.validate()

  start = time.perf_counter()
  train_f, train_l = _data(cfg, params, args.n_train, args.seq, args.seed + 1, 512)
  test_f, test_l = _data(cfg, params, args.n_test, args.seq, args.seed + 2, 512)
  S, N, D = train_f.shape
  T = train_l.shape[0]
  print(f'model {s["n_layers"]} layers x width {D} (random init); features '
        f'{probing.site_labels(cfg)[0]}..{probing.site_labels(cfg)[-1]} at the last of {args.seq} '
        f'positions: [S={S}, N={N}, D={D}] train, {args.n_test} test, collected in '
        f'{time.perf_counter() - start:.2f} s (incl. compile)')
  print(f'probes: S={S} sites x T={T} targets = {S * T}, {N_CLASSES} classes; AdamW '
        f'{probe_cfg.steps} steps, batch {probe_cfg.batch_size}, lr {probe_cfg.lr} x '
        f'{probe_cfg.decay} at {probe_cfg.boundaries}, weight decay {probe_cfg.weight_decay}')

  closed_cfg = dataclasses.replace(probe_cfg, method='closed_form')
  fits = {'vmapped (train_probes)':
              lambda: probing.train_probes(train_f, train_l, N_CLASSES, probe_cfg)}
  if not args.no_loop:
    fits['loop (train_probes_loop)'] = (
        lambda: probing.train_probes_loop(train_f, train_l, N_CLASSES, probe_cfg))
  fits['closed_form (vmapped)'] = (
      lambda: probing.train_probes(train_f, train_l, N_CLASSES, closed_cfg))
  rows = _time_round_robin(fits, args.repeats)

  print('load average after (1/5/15 min): %.2f %.2f %.2f' % os.getloadavg())
  header = (f"{'fit':<26} {'1st call s':>10} {'compiled s':>10}  held-out acc % "
            f"(count a | count b, B0..B{S - 1})")
  print(header)
  print('-' * len(header))
  for name, (first, median, probe) in rows.items():
    acc = probing.accuracy(probe, test_f, test_l)
    m = f'{median:>10.2f}' if median is not None else f"{'-':>10}"
    print(f'{name:<26} {first:>10.2f} {m}  '
          f"{' '.join(f'{a:.0f}' for a in acc[:, 0])} | {' '.join(f'{a:.0f}' for a in acc[:, 1])}")

  if 'loop (train_probes_loop)' in rows:
    v, l = rows['vmapped (train_probes)'], rows['loop (train_probes_loop)']
    print(f'ratio loop / vmapped, 1st call: {l[0] / v[0]:.2f}x' + (
        f', compiled: {l[1] / v[1]:.2f}x' if v[1] is not None else ''))
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(v[2], l[2]))
    acc_diff = np.max(np.abs(probing.accuracy(v[2], test_f, test_l)
                             - probing.accuracy(l[2], test_f, test_l)))
    print(f'vmapped vs loop: max |param diff| = {diff:.2e}, max |held-out acc diff| = '
          f'{acc_diff:.2f} points')


if __name__ == '__main__':
  machine.ensure_fast_allocator()  # The launcher's allocator: same speed as a run.
  main()
