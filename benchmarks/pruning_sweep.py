"""A pruning curve over K = 0..K_max: one batched call vs a Python loop over K.

  python benchmarks/pruning_sweep.py                         # both shapes, 300 x 60, K 0..100
  python benchmarks/pruning_sweep.py --shapes=small --repeats=3
  python benchmarks/pruning_sweep.py --shapes=paper --batch=100 --k-max=20 --chunk-sizes=1,4

One model, its neurons (`pruning.make_units(granularity='neuron')`, default
eligibility 'blocks': attention q/k/v/out and MLP fc_in/fc_out columns) ranked
by grad x weight of the eval loss, and an eval of next-token cross-entropy and
accuracy over every position of a random batch. Each method computes the same
[K_max + 1] curve:

  loop     a Python loop over K; each K one call of a jitted
           (params, rank, k) -> eval_fn(pruning.pruned_params(...)), k traced so
           it compiles once. What one writes without the batched API.
  sweep    pruning.sweep in one jit: vmap over every K at once (all K in
           memory together).
  search   pruning.search, one candidate: the K jobs sharded over every device
           (jax.shard_map), inside a shard lax.map in batches of chunk_size jobs
           to bound memory; one row per value of --chunk-sizes ('c=0': plain
           vmap over all the shard's jobs).

Shapes (vocab 268 as the PCFG world):
  small   2 layers, width 64, 4 heads x 16, MLP 256.
  paper   minGPT 'gpt-mini' as the paper's PCFG model: 6 layers, width 192,
          6 heads x 32, MLP 768, GELU, pre-LN, causal.

Timing protocol, the same for each method: one untimed call first (reported
as '1st call s': trace + compile + run), then --repeats timed calls,
round-robin over the methods so that load from other processes falls evenly on
them, each timed to completion (block_until_ready). Reported: median s per
curve, and the ratio loop / method (> 1: the batched method is faster). The
curves of all methods are compared (max |difference|) before timing.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import jax

import machine  # benchmarks/machine.py (the script's own folder is on sys.path)
import jax.numpy as jnp
import numpy as np

from wrapper_study import model
from wrapper_study.analysis import pruning

SHAPES = {
    'small': dict(n_layers=2, n_heads=4, d_model=64, d_head=16, d_mlp=256, activation='relu',
                  layer_norm=False),
    'paper': dict(n_layers=6, n_heads=6, d_model=192, d_head=32, d_mlp=768, activation='gelu',
                  layer_norm=True),
}
METHODS = ('loop', 'sweep', 'search')
DEFAULT_METHODS = ('loop', 'search')  # 'sweep' is a plain vmap, as 'search c=0' on one device.


# ----------------------------------------------------------------------------- machine



# ----------------------------------------------------------------------------- setup

def make_problem(shape: dict, vocab: int, batch: int, seq: int, seed: int):
  """(eval_fn, params, units, rank_U, config) for one random model and eval batch."""
  config = model.TransformerConfig(
      vocab_size=vocab, max_len=seq, d_model=shape['d_model'], n_layers=shape['n_layers'],
      n_heads=shape['n_heads'], d_head=shape['d_head'], d_mlp=shape['d_mlp'],
      activation=shape['activation'], layer_norm=shape['layer_norm'], causal=True,
      init_std=0.1)  # Large enough that pruning moves the curve the methods are checked on.
  params = jax.jit(functools.partial(model.init_params, config))(jax.random.key(seed))
  rng = np.random.default_rng(seed)
  tokens_BxT1 = jnp.asarray(rng.integers(0, vocab, size=(batch, seq + 1)), jnp.int32)
  inputs_BxT, targets_BxT = tokens_BxT1[:, :-1], tokens_BxT1[:, 1:]

  def eval_fn(p):
    logits_BxTxO, _ = model.Transformer(config).apply({'params': p}, inputs_BxT)
    logp_BxTxO = jax.nn.log_softmax(logits_BxTxO)
    nll = -jnp.take_along_axis(logp_BxTxO, targets_BxT[..., None], -1).mean()
    return {'loss': nll, 'acc': (logits_BxTxO.argmax(-1) == targets_BxT).mean()}

  units = pruning.make_units(params, 'neuron')
  rank_U = pruning.prune_order(
      pruning.scores(lambda p, _: (eval_fn(p)['loss'], {}), params, None, units))
  return eval_fn, params, units, rank_U, config


def make_methods(eval_fn, params, units, rank_U, ks, methods, chunk_sizes) -> dict:
  """name -> () -> curve {metric: [len(ks)]} as numpy, computed to completion."""
  one_k = jax.jit(lambda p, r, k: eval_fn(pruning.pruned_params(p, units, r, k)))

  def loop():
    outs = [one_k(params, rank_U, k) for k in ks]  # Dispatched asynchronously, then gathered.
    return {key: np.stack([np.asarray(o[key]) for o in outs]) for key in outs[0]}

  sweep_jit = jax.jit(lambda p, r: pruning.sweep(eval_fn, p, units, r, ks))

  def sweep():
    return jax.tree.map(np.asarray, sweep_jit(params, rank_U))

  params_P = jax.tree.map(lambda x: x[None], params)
  rank_CxU = np.asarray(rank_U)[None]

  def search(chunk_size):
    out = pruning.search(eval_fn, params_P, units, rank_CxU, [0], ks,
                         chunk_size=chunk_size or None)
    return jax.tree.map(lambda x: np.asarray(x[0]), out)

  fns = {m: f for m, f in (('loop', loop), ('sweep', sweep)) if m in methods}
  if 'search' in methods:
    fns.update({f'search c={c}': functools.partial(search, c) for c in chunk_sizes})
  return fns


# ----------------------------------------------------------------------------- main

def bench_shape(name: str, args, methods: list[str]) -> None:
  shape = SHAPES[name]
  ks = list(range(args.k_max + 1))
  eval_fn, params, units, rank_U, _ = make_problem(shape, args.vocab, args.batch, args.seq,
                                                   args.seed)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f"\nshape '{name}': {shape['n_layers']} layers, width {shape['d_model']}, "
        f"{shape['n_heads']} heads x {shape['d_head']}, MLP {shape['d_mlp']}, "
        f"{shape['activation']}, LN={shape['layer_norm']}; {n_params:,} params, "
        f'{units.n_units} neurons; eval batch {args.batch} x {args.seq}; K = 0..{args.k_max} '
        f'({len(ks)} evals per curve)')
  if args.k_max > units.n_units:
    raise SystemExit(f'--k-max={args.k_max} exceeds the {units.n_units} neurons of this shape.')
  fns = make_methods(eval_fn, params, units, rank_U, ks, methods, args.chunk_sizes)

  first, curves = {}, {}
  for m, fn in fns.items():
    start = time.perf_counter()
    curves[m] = fn()
    first[m] = time.perf_counter() - start
  names = list(fns)
  ref = curves[names[0]]
  for m in names[1:]:
    diff = max(float(np.max(np.abs(curves[m][k] - ref[k]))) for k in ref)
    print(f'check {m} vs {names[0]}: max |curve difference| = {diff:.2e} '
          f"({'OK' if diff < 1e-4 else 'MISMATCH'})")
  loss = ref['loss']
  print(f'curve ({names[0]}): loss K=0 {loss[0]:.4f}, K={args.k_max} {loss[-1]:.4f}')

  times = {m: [] for m in fns}
  for _ in range(args.repeats):
    for m, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[m].append(time.perf_counter() - start)
  print('load average after (1/5/15 min): %.2f %.2f %.2f' % os.getloadavg())
  med = {m: statistics.median(v) for m, v in times.items()}
  header = (f"{'method':<12} {'1st call s':>10} {'median s':>9} {'min':>7} {'max':>7} "
            f"{'ms per K':>9} {'loop / method':>13}")
  print(header)
  print('-' * len(header))
  for m in fns:
    ratio = f"{med['loop'] / med[m]:>12.2f}x" if 'loop' in med else f"{'-':>13}"
    print(f'{m:<12} {first[m]:>10.2f} {med[m]:>9.3f} {min(times[m]):>7.3f} '
          f'{max(times[m]):>7.3f} {1000 * med[m] / len(ks):>9.1f} {ratio}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shapes', default='small,paper', help=f'comma list of {sorted(SHAPES)}')
  parser.add_argument('--methods', default=','.join(DEFAULT_METHODS),
                      help=f'comma list of {METHODS}')
  parser.add_argument('--batch', type=int, default=300, help='eval sequences')
  parser.add_argument('--seq', type=int, default=60, help='tokens per eval sequence')
  parser.add_argument('--vocab', type=int, default=268)
  parser.add_argument('--k-max', type=int, default=100, help='curve over K = 0..k_max')
  parser.add_argument('--chunk-sizes', default='0,1',
                      help='search: comma list of jobs per vmapped batch in a shard, one row '
                           'each (0: all at once)')
  parser.add_argument('--repeats', type=int, default=1, help='timed calls per method')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()

  shapes = [s.strip() for s in args.shapes.split(',') if s.strip()]
  methods = [s.strip() for s in args.methods.split(',') if s.strip()]
  if not shapes or set(shapes) - set(SHAPES):
    parser.error(f'--shapes: unknown {sorted(set(shapes) - set(SHAPES))}; valid: {sorted(SHAPES)}')
  if not methods or set(methods) - set(METHODS):
    parser.error(f'--methods: unknown {sorted(set(methods) - set(METHODS))}; valid: {METHODS}')
  try:
    args.chunk_sizes = [int(c) for c in args.chunk_sizes.split(',') if c.strip()]
  except ValueError:
    parser.error(f'--chunk-sizes={args.chunk_sizes!r}: a comma list of integers >= 0')
  if min(args.batch, args.seq, args.repeats, args.vocab) < 1 or args.k_max < 0 or (
      min(args.chunk_sizes, default=-1) < 0):
    parser.error('--batch, --seq, --vocab, --repeats must be >= 1; --k-max >= 0; '
                 '--chunk-sizes a non-empty list of integers >= 0')

  print('\n'.join(machine.describe()))
  for name in shapes:
    bench_shape(name, args, methods)


if __name__ == '__main__':
  machine.ensure_fast_allocator()  # The launcher's allocator: same speed as a run.
  main()
