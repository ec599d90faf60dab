"""A plan before any GPU is rented: every training phase of a config compiled, never run.

Each world's train module lists its phases (`Phase`: one model's parameters and batch as
shapes, the loss, the optimizer, the steps, how many members); `plan` builds each phase's
jitted step exactly as training builds it (train.make_train_step) on abstract inputs
(jax.ShapeDtypeStruct: no data, no parameters allocated, no step run, no checkpoint
written), lowers and compiles it, and reads XLA's own figures: FLOPs per step
(`compiled.cost_analysis()`) and device memory (`compiled.memory_analysis()`: arguments +
outputs - the donated (aliased) bytes + temporaries). The projected time is FLOPs / (peak x
utilisation). On a CPU it plans for the accelerator named by `Target` with the host's
device count (WRAPPER_STUDY_CPU_DEVICES): the FLOPs are the program's, the memory XLA:CPU's
buffer assignment of it. What cannot be known without the device is printed with the plan
(CAVEATS).

Populations are planned as one vmap over their members (train.over_members with chunk 0,
the accelerators' default); XLA counts a lax.map's body once, so the CPU mapping of one
member at a time would under-report its FLOPs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import train

PyTree = Any

# Dense (no sparsity) peak matmul TFLOP/s by compute precision (model.PRECISIONS), and memory.
# H100 SXM5 (NVIDIA's datasheet): bf16 989.4, tf32 494.7 (tensor cores), fp32 66.9 (CUDA
# cores: JAX's 'float32' matmul precision keeps true fp32 on a GPU); 80 GB HBM3.
# TPU v5e (Google Cloud's page): bf16 197, 16 GB HBM2e; fp32 at 'float32' precision runs as
# six bf16 passes (~197/6) and 'tensorfloat32' as three (~197/3).
TARGETS = {
    'h100': dict(bf16=989.4, tf32=494.7, fp32=66.9, memory_gb=80.0, label='H100 SXM'),
    'v5e': dict(bf16=197.0, tf32=65.7, fp32=32.8, memory_gb=16.0, label='TPU v5e'),
}
# Model FLOPs utilisation assumed by default: about what a well-fed transformer step reaches on
# an H100 in bf16 (30-50% in published large-model runs); the small models here (Tracr members
# of a few thousand parameters, the 6M-parameter PCFG model) are launch- and memory-bound and
# will reach less, so their projected times are lower bounds.
DEFAULT_MFU = 0.3

CAVEATS = (
    'Not knowable without the device: the kernels XLA picks there (cuDNN/flash attention for '
    "model.attention='fused', fusions, layouts: FLOPs are those of this backend's program), "
    'the utilisation actually reached (small members are launch- and memory-bound, far below '
    'the assumed MFU), the allocator\'s fragmentation and framework reserve above XLA\'s '
    'buffer assignment, host time (data drawn by numpy, evaluations, checkpoints, compiles), '
    'and collective cost across devices.')


@dataclasses.dataclass(frozen=True)
class Phase:
  """One training phase as its step sees it.

  params and batch are ONE model's (arrays or jax.ShapeDtypeStruct); members > 0 makes it a
  population of that many (a leading axis added to both); runs: how many times the phase runs
  with these shapes (e.g. one per deletion protocol); data_parallel: one model's batch split
  over the devices as train.batch_mesh does.
  """
  name: str
  params: PyTree
  batch: PyTree
  loss_fn: Callable
  tx: Any
  steps: int
  members: int = 0
  runs: int = 1
  data_parallel: bool = True
  precision: str = 'fp32'


@dataclasses.dataclass
class Row:
  """What XLA says of one phase's compiled step."""
  phase: str
  params: int  # One model's parameters.
  members: int
  runs: int
  devices: int
  flop_per_device: float  # One step, one device (XLA's count of the SPMD program).
  peak_gb: float  # Per device: arguments + outputs not aliased to them + temporaries.
  args_gb: float
  temp_gb: float
  steps: int
  precision: str

  @property
  def gflop_per_step(self) -> float:
    return self.flop_per_device * self.devices * 1e-9

  @property
  def total_pflop(self) -> float:
    return self.flop_per_device * self.devices * self.steps * self.runs * 1e-15

  def step_seconds(self, peak_tflops: float, mfu: float) -> float:
    return self.flop_per_device / (peak_tflops * 1e12 * mfu)

  def seconds(self, peak_tflops: float, mfu: float) -> float:
    """Projected time of every step of every run of the phase."""
    return self.step_seconds(peak_tflops, mfu) * self.steps * self.runs


def shapes(tree: PyTree, lead: Sequence[int] = ()) -> PyTree:
  """jax.ShapeDtypeStruct of every leaf (arrays or structs), with leading dimensions `lead`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(tuple(lead) + tuple(np.shape(x)),
                                                     np.dtype(x.dtype)), tree)


def n_params(params: PyTree) -> int:
  return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params)))


def _first_batch_dim(batch: PyTree) -> int:
  return int(np.shape(jax.tree.leaves(batch)[0])[0])


def compile_phase(phase: Phase, devices: Optional[Sequence] = None):
  """(compiled step, devices used, abstract state, abstract batch): the step training would
  jit, compiled for those inputs (it runs on concrete arrays of their shapes)."""
  devices = jax.devices() if devices is None else list(devices)
  if phase.members:
    mesh = train.member_mesh(phase.members, devices)
    n = phase.members + (train.member_padding(phase.members, mesh.size) if mesh else 0)
    params = shapes(phase.params, (n,))
    state = jax.eval_shape(lambda p: train.create_population(p, phase.tx, jnp.ones([n])), params)
    batch = shapes(phase.batch, (n,))
  else:
    mesh = train.batch_mesh(_first_batch_dim(phase.batch), devices) if phase.data_parallel else None
    state = jax.eval_shape(lambda p: train.create_state(p, phase.tx), shapes(phase.params))
    batch = shapes(phase.batch)
  step = train.make_train_step(phase.loss_fn, phase.tx, vmap=bool(phase.members), mesh=mesh,
                               member_chunk=0 if phase.members else None)
  return step.lower(state, batch).compile(), 1 if mesh is None else mesh.size, state, batch


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}


def measure(phase: Phase, devices=None) -> Row:
  """Compiles the phase's step and reads what XLA says of it."""
  compiled, n_dev, _, _ = compile_phase(phase, devices)
  return row_of(phase, compiled, n_dev)


def row_of(phase: Phase, compiled, n_dev: int) -> Row:
  """What XLA says of the phase's compiled step."""
  flops = float(_cost(compiled).get('flops', float('nan')))  # Per device (one SPMD program).
  mem = compiled.memory_analysis()
  gb = 1e-9
  args, temp = mem.argument_size_in_bytes * gb, mem.temp_size_in_bytes * gb
  peak = args + (mem.output_size_in_bytes - mem.alias_size_in_bytes) * gb + temp
  return Row(phase=phase.name, params=n_params(phase.params), members=phase.members,
             runs=phase.runs, devices=n_dev, flop_per_device=flops, peak_gb=peak, args_gb=args,
             temp_gb=temp, steps=phase.steps, precision=phase.precision)


def peak_for(target: str, precision: str, peak_tflops: Optional[float] = None) -> float:
  """The peak TFLOP/s a phase is projected at: given, or the target's at its precision."""
  return float(peak_tflops) if peak_tflops else TARGETS[target][precision]


def plan(phases: Sequence[Phase], *, devices=None, progress: Callable[[str], None] = print
         ) -> list[Row]:
  """Every phase compiled and measured by XLA; a phase with the same step (loss, optimizer,
  shapes) as an earlier one reuses its figures instead of compiling again."""
  rows, seen = [], {}
  for i, phase in enumerate(phases):
    key = (phase.loss_fn, phase.tx, phase.members, phase.data_parallel,
           str(shapes(phase.params)), str(shapes(phase.batch)))
    if key not in seen:
      progress(f'dry run: compiling [{i + 1}/{len(phases)}] {phase.name}')
      seen[key] = measure(phase, devices)
    rows.append(dataclasses.replace(seen[key], phase=phase.name, runs=phase.runs,
                                    steps=phase.steps))
  return rows


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  if seconds < 1:
    return f'{seconds * 1e3:.3g} ms'
  if seconds < 120:
    return f'{seconds:.1f} s'
  if seconds < 7200:
    return f'{seconds / 60:.1f} min'
  return f'{seconds / 3600:.1f} h'


def _gb(gb: float) -> str:
  return f'{gb:.3g} GB' if gb >= 0.1 else f'{gb * 1e3:.3g} MB'


def _size(n: int) -> str:
  return f'{n / 1e6:.2f}M' if n >= 1e5 else f'{n / 1e3:.1f}K'


def _chunk_hint(row: Row, memory_gb: float) -> str:
  """For a population: the member chunk whose temporaries would fit (they grow with the
  members mapped at once; train.over_members), an estimate from this program's figures."""
  if not row.members:  # Data-parallel: the activations split over the devices, the state not.
    state = row.peak_gb - row.temp_gb
    if state >= memory_gb:
      return '; the parameters and optimizer state alone do not fit'
    n = math.ceil(row.temp_gb * row.devices / (memory_gb - state))
    return f'; data-parallel over {n} devices may fit, est.'
  per_member = row.temp_gb / row.members
  chunk = int((memory_gb - (row.peak_gb - row.temp_gb)) / per_member) if per_member else 0
  if chunk < 1:
    return '; one member at a time does not fit either'
  return f'; --config.member_chunk={min(chunk, row.members)} may fit, est.'


def report(rows: Sequence[Row], *, title: str, targets: Sequence[str] = ('h100', 'v5e'),
           peak_tflops: Optional[float] = None, mfu: float = DEFAULT_MFU,
           memory_gb: Optional[float] = None) -> str:
  """The plan as a markdown table (a projected time per target), a total, per target the
  phases that do not fit its memory (memory_gb: one size for all), and the caveats.
  peak_tflops: one peak for every target and precision instead of theirs."""
  n_dev = rows[0].devices if rows else 1
  precisions = sorted({r.precision for r in rows})
  at = {t: {p: peak_for(t, p, peak_tflops) for p in precisions} for t in targets}
  memory = {t: TARGETS[t]['memory_gb'] if memory_gb is None else memory_gb for t in targets}
  about = '; '.join(f'{TARGETS[t]["label"]}: ' + ', '.join(f'{p} {at[t][p]:g}' for p in precisions)
                    + f' TFLOP/s, {memory[t]:g} GB' for t in targets)
  lines = [f'# Dry run: {title}',
           f'Per device, {n_dev} device(s) (the host devices of {jax.default_backend()}); '
           f'projected at MFU {mfu:g} of the peak ({about}).', '',
           '| phase | params | members | runs | GFLOP/step | peak memory/device | steps '
           '| total PFLOP | ' + ' | '.join(f'time {TARGETS[t]["label"]}' for t in targets) + ' |',
           '|---' * (8 + len(targets)) + '|']
  for r in rows:
    times = ' | '.join(_duration(r.seconds(at[t][r.precision], mfu)) for t in targets)
    lines.append(f'| {r.phase} | {_size(r.params)} | {r.members or "-"} | {r.runs} | '
                 f'{r.gflop_per_step:.4g} | {_gb(r.peak_gb)} | {r.steps} | '
                 f'{r.total_pflop:.4g} | {times} |')
  lines += ['', f'Total: {sum(r.total_pflop for r in rows):.4g} PFLOP; training steps projected '
            + ', '.join(f'{_duration(sum(r.seconds(at[t][r.precision], mfu) for r in rows))} on '
                        f'{TARGETS[t]["label"]}' for t in targets) + '.']
  for t in targets:
    over = [f'{r.phase} ({_gb(r.peak_gb)}{_chunk_hint(r, memory[t])})' for r in rows
            if r.peak_gb > memory[t]]
    lines.append(f'Does not fit {TARGETS[t]["label"]} ({memory[t]:g} GB): {", ".join(over)}.'
                 if over else f'Every phase fits {TARGETS[t]["label"]} ({memory[t]:g} GB).')
  lines += ['', CAVEATS]
  return '\n'.join(lines)
