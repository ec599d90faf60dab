"""Forward-pass speed: our jitted Flax port vs tracr's own haiku model.

  python benchmarks/tracr_forward.py [--batch 256 --repeats 20]

For the paper's two programs, on one batch of random inputs, times
  flax jit (logits)        our `model.run_with_cache`, jitted, logits only;
  flax jit (+resid cache)  the same also returning every residual, as tracr does;
  tracr forward            `assembled.forward` (the haiku apply that
                           `AssembledTransformerModel.apply` calls), un-jitted
                           as tracr ships it, on the whole batch;
  tracr forward jit        the same wrapped in jax.jit, for fairness;
  tracr apply loop         `assembled.apply` itself, which takes one sequence,
                           timed on --apply-seqs sequences and scaled to a batch.
Each number is the median over --repeats after one warm-up call, with
block_until_ready. The script also checks that both models give the same
answers on the batch before timing.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import string
import time

import jax
import numpy as np

import machine  # benchmarks/machine.py (the script's own folder is on sys.path)
from wrapper_study import model
from wrapper_study.tracr import compile as tracr_compile
from wrapper_study.tracr import model as tracr_model

CASES = (
    # name, vocab, max_seq_len, sample tokens with replacement?
    ('counter', tuple('abcdefghi'), 10, True),
    ('max_identifier', tuple(string.ascii_lowercase), 10, False),
)


def _median_ms(fns: dict, repeats: int) -> dict:
  """Median ms per call of each fn, timed round-robin after a warm-up call.

  Interleaving spreads load from other processes evenly over the rows.
  """
  for fn in fns.values():
    jax.block_until_ready(fn())  # Warm-up: compile / fill op caches.
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[k].append(time.perf_counter() - start)
  return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _machine() -> str:
  cpu = platform.processor() or platform.machine()
  return (f'machine: {cpu}, {os.cpu_count()} CPUs, devices={jax.devices()}, '
          f'jax {jax.__version__}, python {platform.python_version()}')


def bench(name, vocab, max_seq_len, replace, batch, repeats, apply_seqs, cache_dir):
  ours = tracr_model.get_compiled(name, vocab, max_seq_len, cache_dir=cache_dir)
  assembled = tracr_compile.tracr_model(name, vocab, max_seq_len)
  rng = np.random.default_rng(0)
  seqs = [list(rng.choice(np.array(vocab, dtype=object), max_seq_len, replace=replace))
          for _ in range(batch)]
  tokens_BxT = ours.encode(seqs)
  assert tokens_BxT[0].tolist() == assembled.input_encoder.encode([ours.bos] + seqs[0])

  flax_logits = jax.jit(lambda p, t: model.run_with_cache(ours.config, p, t)[0])
  names = [f'blocks.{l}.hook_resid_{k}' for l in range(ours.config.n_layers)
           for k in ('mid', 'post')]
  flax_cache = jax.jit(functools.partial(model.run_with_cache, ours.config, names=names))
  tracr_fwd = functools.partial(assembled.forward, assembled.params)
  tracr_jit = jax.jit(assembled.forward)
  tokens_jnp = jax.numpy.asarray(tokens_BxT)

  # Same answers before timing anything.
  got = ours.answers(flax_logits(ours.params, tokens_jnp))
  want = np.asarray(tracr_jit(assembled.params, tokens_jnp).unembedded_output)
  assert (got == want[:, ours.readout_position]).all(), f'{name}: answers differ'

  rows = _median_ms({
      'flax jit (logits)': lambda: flax_logits(ours.params, tokens_jnp),
      'flax jit (+resid cache)': lambda: flax_cache(ours.params, tokens_jnp),
      'tracr forward (no jit)': lambda: tracr_fwd(tokens_jnp),
      'tracr forward jit': lambda: tracr_jit(assembled.params, tokens_jnp),
  }, repeats)
  # apply takes one sequence at a time: time a few and scale to the batch.
  apply_batch = [[ours.bos] + s for s in seqs[:apply_seqs]]
  loop = _median_ms({'loop': lambda: [assembled.apply(s).unembedded for s in apply_batch]},
                    max(1, min(repeats, 3)))['loop']
  rows[f'tracr apply loop (x{batch}/{len(apply_batch)})'] = loop * batch / len(apply_batch)
  return list(rows.items())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--apply-seqs', type=int, default=16,
                      help='sequences timed through tracr apply (one at a time)')
  parser.add_argument('--cache-dir', default=None, help='export cache (default: env/home)')
  args = parser.parse_args()
  if args.batch < 1 or args.repeats < 1 or args.apply_seqs < 1:
    parser.error('--batch, --repeats and --apply-seqs must be >= 1')

  print(_machine())
  print(f'batch={args.batch}, repeats={args.repeats} (median after warm-up), '
        f'T={CASES[0][2] + 1} incl. BOS')
  header = f'{"program":<15} {"implementation":<28} {"ms/batch":>10} {"x flax jit":>11}'
  print(header)
  print('-' * len(header))
  for name, vocab, max_seq_len, replace in CASES:
    rows = bench(name, vocab, max_seq_len, replace, args.batch, args.repeats,
                 min(args.apply_seqs, args.batch), args.cache_dir)
    base = rows[0][1]
    for impl, ms in rows:
      print(f'{name:<15} {impl:<28} {ms:>10.3f} {ms / base:>10.1f}x')


if __name__ == '__main__':
  machine.ensure_fast_allocator()  # The launcher's allocator: same speed as a run.
  main()
