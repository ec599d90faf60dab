"""250-token windows per second: vectorized PCFG sampler vs the recursive one.

Usage: python benchmarks/pcfg_sampler.py [--windows N] [--recursive-windows M]

Both draw the paper's Fig. 14 grammar with the same 'concat' window policy.
Each rate is the best of --repeats timed runs (the machine may be shared).
"""

import argparse
import os
import platform
import time

import numpy as np

import machine  # benchmarks/machine.py (the script's own folder is on sys.path)
from wrapper_study.pcfg import grammar as grammar_lib
from wrapper_study.pcfg import sampler


def _best_rate(fn, n: int, repeats: int) -> float:
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn(n)
    best = min(best, time.perf_counter() - start)
  return n / best


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--windows', type=int, default=4096, help='windows per vectorized call')
  parser.add_argument('--batch', type=int, default=96, help='also time this small batch size')
  parser.add_argument('--recursive-windows', type=int, default=1_000)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--length', type=int, default=sampler.WINDOW_LENGTH)
  args = parser.parse_args()

  g = grammar_lib.paper_grammar()
  rng = np.random.default_rng(0)
  sampler.sample_windows(g, rng, 8, args.length)  # Compile the lookup tables once.
  vectorized = lambda n: sampler.sample_windows(g, rng, n, args.length)
  untabulated = lambda n: sampler.sample_windows(g, rng, n, args.length, table_size=0)
  recursive = lambda n: sampler.sample_windows_recursive(g, rng, n, args.length)

  rate_vec = _best_rate(vectorized, args.windows, args.repeats)
  rate_small = _best_rate(vectorized, args.batch, args.repeats * 10)
  rate_untab = _best_rate(untabulated, args.windows, args.repeats)
  rate_rec = _best_rate(recursive, args.recursive_windows, args.repeats)

  print(f'machine: {platform.platform()}, {platform.processor() or platform.machine()}, '
        f'cpu_count={os.cpu_count()}, python {platform.python_version()}, numpy {np.__version__}')
  print(f'window length {args.length}; best of {args.repeats} runs')
  print(f'vectorized (tables)      batch {args.windows:>6}: {rate_vec:12,.0f} windows/s')
  print(f'vectorized (tables)      batch {args.batch:>6}: {rate_small:12,.0f} windows/s')
  print(f'vectorized (no tables)   batch {args.windows:>6}: {rate_untab:12,.0f} windows/s')
  print(f'recursive (plain Python) n     {args.recursive_windows:>6}: {rate_rec:12,.0f} windows/s')
  print(f'speedup vectorized/recursive: {rate_vec / rate_rec:.0f}x (batch {args.batch}: '
        f'{rate_small / rate_rec:.0f}x, no tables: {rate_untab / rate_rec:.0f}x)')


if __name__ == '__main__':
  machine.ensure_fast_allocator()  # The launcher's allocator: same speed as a run.
  main()
