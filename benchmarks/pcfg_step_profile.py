"""Where one paper-shape PCFG training step spends its time: XLA:CPU's ops beside PyTorch's.

  python benchmarks/pcfg_step_profile.py                  # paper shape, JAX (fused) and torch SDPA
  python benchmarks/pcfg_step_profile.py --shape=cpu      # the small preset, quick
  python benchmarks/pcfg_step_profile.py --batch=32       # a third of the memory (~2.5 GB)
  XLA_FLAGS=... python benchmarks/pcfg_step_profile.py --no-torch   # an XLA option's effect

The same two steps as benchmarks/pcfg_train_throughput.py (one device, JAX
`model.attention` --attention, torch minGPT with SDPA), each after a warm-up
step: JAX under jax.profiler (every XLA:CPU thunk's time, by HLO op, grouped
into dots, transposes/copies, fusions and the rest: names from the compiled
HLO), torch under torch.profiler (self CPU time by aten op). Times are the sum
over threads of each op's own time (two threads: up to 2x the wall), printed
beside the step's wall time, the machine's measured fp32 matmul peak and what
the step's dots would take at that peak. Why: on a slow-matmul CPU JAX trails
PyTorch (issue 31); this names the ops that make the difference.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import machine  # benchmarks/machine.py
import pcfg_train_throughput as bench


def _kind(name: str, hlo: dict[str, str]) -> str:
  """A coarse class of an HLO op: from the opcodes in its line and its fused computation."""
  ops = set(re.findall(r'= (?:\S+ )?([a-z][\w-]*)\(', hlo.get(name, '')))
  if 'dot' in ops or 'convolution' in ops:
    return 'dot (YNNPACK)' if name.startswith('ynn_fusion') else 'dot (Eigen)'
  if ops & {'transpose', 'copy'}:
    return 'transpose/copy'
  if ops & {'reduce', 'reduce-window'}:
    return 'reduce'
  if ops & {'scatter', 'gather', 'dynamic-slice', 'dynamic-update-slice', 'sort'}:
    return 'gather/scatter/slice'
  return 'elementwise' if ops else 'other (' + re.sub(r'[.\d]+$', '', name) + ')'


def _fusion_bodies(hlo_text: str) -> dict[str, str]:
  """{instruction name: its line plus its called computation's body} of compiled HLO."""
  computations, current = {}, None
  for line in hlo_text.splitlines():
    m = re.match(r'\s*(?:ENTRY\s+)?%?([\w.-]+)\s.*\{\s*$', line)
    if m and not line.startswith(' '):
      current = m.group(1)
      computations[current] = []
    elif current is not None:
      computations[current].append(line)
  bodies = {}
  for lines in computations.values():
    for line in lines:
      m = re.match(r'\s*(?:ROOT\s+)?%?([\w.-]+)\s*=', line)
      if not m:
        continue
      called = re.findall(r'calls=%?([\w.-]+)', line)
      text = line + '\n' + '\n'.join(l for c in called for l in computations.get(c, []))
      bodies[m.group(1)] = re.sub(r', (metadata|backend_config)=\{.*', '', text, flags=re.M)
      where = re.search(r'op_name="([^"]*)"', line)
      shape = re.match(r'\s*(?:ROOT\s+)?%?[\w.-]+\s*=\s*(\S+)', line).group(1)
      bodies['@' + m.group(1)] = shape + ' ' + (where.group(1).split('/', 1)[-1] if where else '')
  return bodies


def profile_jax(shape: dict, attention: str, steps: int) -> dict:
  step, _, _, _, flops = bench.make_jax(shape, steps + 2, 0, 'fp32', attention)
  rng = np.random.default_rng(0)
  data = rng.integers(0, shape['vocab'], size=(shape['batch'], shape['seq'] + 1))
  batch = dict(inputs=jnp.asarray(data[:, :-1], jnp.int32),
               targets=jnp.asarray(data[:, 1:], jnp.int32))
  step(batch)  # Compiles.
  total_flops = flops(batch)
  directory = tempfile.mkdtemp(prefix='jax_profile_')
  wall = []
  with jax.profiler.trace(directory):
    for _ in range(steps):
      t0 = time.perf_counter()
      step(batch)
      wall.append(time.perf_counter() - t0)
  (path,) = glob.glob(f'{directory}/**/*.xplane.pb', recursive=True)
  by_op = collections.Counter()
  for plane in jax.profiler.ProfileData.from_file(path).planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if 'hlo_op' in stats and not event.name.startswith('end:'):
          by_op[str(stats['hlo_op'])] += event.duration_ns / 1e9 / steps
  return dict(wall=float(np.median(wall)), by_op=by_op, flops=total_flops, directory=directory)


def profile_torch(shape: dict, steps: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  step, _, _ = bench.make_torch(torch, shape, 'sdpa', 0)
  rng = np.random.default_rng(0)
  data = rng.integers(0, shape['vocab'], size=(shape['batch'], shape['seq'] + 1))
  batch = (torch.from_numpy(data[:, :-1]), torch.from_numpy(data[:, 1:]))
  step(batch)
  wall = []
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      t0 = time.perf_counter()
      step(batch)
      wall.append(time.perf_counter() - t0)
  by_op = collections.Counter()
  for avg in prof.key_averages():
    by_op[avg.key] += avg.self_cpu_time_total / 1e6 / steps
  return dict(wall=float(np.median(wall)), by_op=by_op, threads=torch.get_num_threads())


def _table(title: str, by_op: collections.Counter, wall: float, top: int, kinds=None,
           about=lambda name: '') -> None:
  total = sum(by_op.values())
  print(f'\n{title}: wall {wall:.2f} s/step; ops sum {total:.2f} s (over threads)')
  if kinds is not None:
    grouped = collections.Counter()
    for name, s in by_op.items():
      grouped[kinds(name)] += s
    for kind, s in grouped.most_common():
      print(f'  {kind:<28} {s:8.3f} s  {100 * s / total:5.1f}%')
  print(f'  top {top} ops:')
  for name, s in by_op.most_common(top):
    print(f'    {name:<40} {s:8.3f} s  {100 * s / total:5.1f}%'
          + (f'  [{kinds(name)}] {about(name)}' if kinds else ''))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shape', choices=sorted(bench.SHAPES), default='paper')
  parser.add_argument('--batch', type=int, default=None, help="sequences per step (the shape's)")
  parser.add_argument('--attention', default='fused', help='JAX model.attention')
  parser.add_argument('--steps', type=int, default=2, help='profiled steps (after one warm-up)')
  parser.add_argument('--top', type=int, default=15)
  parser.add_argument('--no-torch', action='store_true')
  parser.add_argument('--hlo', default='', help='write the compiled JAX step HLO here')
  args = parser.parse_args()
  shape = dict(bench.SHAPES[args.shape], **({'batch': args.batch} if args.batch else {}))
  print(f'shape {args.shape!r}: {shape}')
  print('\n'.join(machine.describe()))
  peak = machine.matmul_flops_per_s()
  print(f'measured fp32 matmul peak (2048^2, jnp): {peak / 1e9:.0f} GFLOP/s')
  result = profile_jax(shape, args.attention, args.steps)
  hlo_text = _compiled_hlo(shape, args.attention)
  if args.hlo:
    with open(args.hlo, 'w') as f:
      f.write(hlo_text)
  bodies = _fusion_bodies(hlo_text)
  print(f"JAX step: {result['flops'] / 1e9:.1f} GFLOP (XLA count), floor "
        f"{result['flops'] / peak:.2f} s at {peak / 1e9:.0f} GFLOP/s")
  _table(f'JAX ({args.attention}, 1 device)', result['by_op'], result['wall'], args.top,
         lambda n: _kind(n, bodies), lambda n: bodies.get('@' + n, '')[:150])
  if not args.no_torch:
    try:
      t = profile_torch(shape, args.steps)
    except ImportError as e:
      print(f'no torch ({e})')
    else:
      _table(f"torch (sdpa, {t['threads']} threads)", t['by_op'], t['wall'], args.top)
      print(f"\nratio JAX / torch step time: {result['wall'] / t['wall']:.2f} "
            f'(matmul peak {peak / 1e9:.0f} GFLOP/s)')


def _compiled_hlo(shape: dict, attention: str) -> str:
  """The optimized HLO of the same jitted step (op names as in the profile)."""
  config = bench.jax_config(shape, 'fp32', attention)
  params = bench.model.init_params(config, jax.random.key(0))
  tx = bench.optim.make_optimizer(bench.OPT, 3)

  def loss_fn(p, batch):
    logits, _ = bench.model.Transformer(config).apply({'params': p}, batch['inputs'])
    return bench.losses.weighted_cross_entropy(logits, batch['targets'])

  step_fn = bench.train.make_train_step(loss_fn, tx)
  state = bench.train.create_state(params, tx)
  batch = dict(inputs=jnp.zeros((shape['batch'], shape['seq']), jnp.int32),
               targets=jnp.zeros((shape['batch'], shape['seq']), jnp.int32))
  return step_fn.lower(state, batch).compile().as_text()


if __name__ == '__main__':
  os.environ.setdefault('WRAPPER_STUDY_CPU_DEVICES', '1')  # The one-device step.
  machine.ensure_fast_allocator()
  main()
