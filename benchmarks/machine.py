"""The machine a benchmark ran on, printed with its figures (shared by the benchmarks).

Also the machine's FLOP floor: `matmul_flops_per_s` measures what a large fp32
matmul reaches here, and `floor_fraction` says how close a jitted step comes
to it (XLA's own count of the step's FLOPs / that peak / the measured time).
"""

import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from wrapper_study import allocator  # pylint: disable=g-import-not-at-top
from wrapper_study import host_devices  # pylint: disable=g-import-not-at-top


def ensure_fast_allocator() -> None:
  """Runs the benchmark as the launcher runs a study: re-executes it once under the
  launcher's allocator (wrapper_study/allocator.py: tcmalloc, mimalloc or tuned glibc) and
  splits the CPU into the launcher's host devices (host_devices; WRAPPER_STUDY_CPU_DEVICES=1
  keeps JAX's one device)."""
  allocator.ensure_fast()
  host_devices.ensure()


def cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def usable_cores() -> int:
  """Cores this process may run on (its affinity where the OS has one)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def describe() -> list[str]:
  """Platform, CPU, usable cores, jax backend and devices, XLA_FLAGS, load average."""
  return [f'platform: {platform.platform()}, python {platform.python_version()}',
          f'cpu: {cpu_name()}, os.cpu_count={os.cpu_count()}, usable={usable_cores()}',
          f'jax {jax.__version__}, backend {jax.default_backend()}, '
          f'{jax.device_count()} device(s): {jax.devices()}',
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
          f'allocator: {allocator.active()}',
          'load average (1/5/15 min): %.2f %.2f %.2f' % os.getloadavg()]


def matmul_flops_per_s(n: int = 2048, repeats: int = 5, precision: str = 'fp32') -> float:
  """Best n x n matmul rate of the default device at a model precision (FLOP/s).

  precision: a key of wrapper_study.model.PRECISIONS (fp32, tf32, bf16).
  """
  from wrapper_study import model  # pylint: disable=g-import-not-at-top
  dtype, matmul_precision = model.PRECISIONS[precision]
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
  with jax.default_matmul_precision(matmul_precision):
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    mm(a, a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best


def step_flops(jitted, *args) -> float:
  """FLOPs of one call of a jitted function, as XLA counts them after compiling, times the
  devices its arguments span: XLA counts one device's share of a partitioned program (a
  data-parallel step over two CPU devices read half the one-device count)."""
  cost = jitted.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  devices = max((len(x.sharding.device_set) for x in jax.tree.leaves(args)
                 if isinstance(x, jax.Array)), default=1)
  return devices * float(cost.get('flops', float('nan')))


def time_train_steps(step, state, batch_fn, timed: int) -> tuple[float, float]:
  """(median s/step over `timed` steps, first call's s incl. compile) of step(state, batch),
  each step timed to completion, batches from batch_fn(step) as a run draws them."""
  t0 = time.perf_counter()
  state, m = step(state, batch_fn(0))
  jax.block_until_ready(m)
  first = time.perf_counter() - t0
  times = []
  for s in range(1, timed + 1):
    t0 = time.perf_counter()
    state, m = step(state, batch_fn(s))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return statistics.median(times), first


def time_draws(batch_fn, draws: int) -> float:
  """Median s of batch_fn(step) to completion (a run's data draw for that step)."""
  times = []
  for s in range(1, draws + 1):
    t0 = time.perf_counter()
    jax.block_until_ready(batch_fn(s))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def time_interleaved(runs: dict, rounds: int) -> dict[str, float]:
  """Median s/step of each run {name: (step, state, batch_fn, steps per round)}, after one
  untimed first call each: every round steps each run in turn, so that a change in the
  machine's speed during the measurement falls on all of them alike."""
  return medians(time_interleaved_rounds(runs, rounds))


def medians(by_round: dict[str, list[list[float]]]) -> dict[str, float]:
  """{name: median s/step over all its rounds' steps} of time_interleaved_rounds' times."""
  return {name: statistics.median(t for r in rounds for t in r)
          for name, rounds in by_round.items()}


def time_interleaved_rounds(runs: dict, rounds: int) -> dict[str, list[list[float]]]:
  """time_interleaved's step times, kept by round: {name: [[s of each step] per round]}."""
  states, done = {}, {}
  for name, (step, state, batch_fn, _) in runs.items():
    states[name], m = step(state, batch_fn(0))
    jax.block_until_ready(m)
    done[name] = 1
  times = {name: [] for name in runs}
  for _ in range(rounds):
    for name, (step, _, batch_fn, per_round) in runs.items():
      times[name].append([])
      for _ in range(per_round):
        t0 = time.perf_counter()
        states[name], m = step(states[name], batch_fn(done[name]))
        jax.block_until_ready(m)
        times[name][-1].append(time.perf_counter() - t0)
        done[name] += 1
  return times


def ratio_by_round(one_rounds: list[list[float]], grid_rounds: list[list[float]],
                   members: int) -> str:
  """'median M.MMx, quartiles Q1-Q3x over R rounds' of the per-round ratio one at a time x
  members / grid (each round's median step on each side): how far the machine's drift moves
  a paired ratio within one run."""
  ratios = [members * statistics.median(one) / statistics.median(grid)
            for one, grid in zip(one_rounds, grid_rounds)]
  q1, q2, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
  return f'median {q2:.2f}x, quartiles {q1:.2f}-{q3:.2f}x over {len(ratios)} rounds'


def floor_line(name: str, flops: float, seconds: float, peak: float) -> str:
  """'<name>: F GFLOP/step, floor X ms, measured Y ms = Z% of the floor'."""
  floor = flops / peak
  return (f'{name}: {flops / 1e9:.3f} GFLOP/step, FLOP floor {floor * 1e3:.1f} ms at '
          f'{peak / 1e9:.0f} GFLOP/s, measured {seconds * 1e3:.1f} ms = '
          f'{100 * floor / seconds:.0f}% of the floor')
