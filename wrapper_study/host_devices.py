"""How many JAX devices a CPU process splits its cores into.

JAX gives a CPU one device, and XLA spreads each large op over every core. A
population of small members (the Tracr grid, 140 members of 16 MFLOP) is made
of ops too small to spread, so the cores idle; with two host devices each runs
half the members at once (`train.member_mesh`), and a data-parallel step
(`train.data_mesh`, `train.batch_mesh`: TinyStories, PCFG pretraining) runs half
the batch on each. Measured on the project's 2-core machine, idle, one device ->
two (benchmarks/population_devices.py, tinystories_throughput.py,
pcfg_train_throughput.py): Tracr grid 1.80x (Counter) and 1.83x
(Max-identifier) faster with each device taking its members one at a time
(train.default_member_chunk), TinyStories CPU training 1.24x, the paper-shape
PCFG step 1.05-1.18x; the whole default Tracr study 1.30x (11m38s -> 8m57s,
before the members went one at a time).

So every binary and benchmark calls `ensure()` before JAX starts its backend:
it adds `--xla_force_host_platform_device_count=N` to XLA_FLAGS. The flag only
shapes the CPU platform; on a GPU or TPU jax.devices() is unchanged.

WRAPPER_STUDY_CPU_DEVICES selects N: 'auto' (default: 2 when the process may
use 2 or more cores, else 1; more was not measured, and a data-parallel batch
must divide evenly over the devices, so every CPU config keeps even batches) or
a whole number >= 1 (1: JAX's own single device). An XLA_FLAGS that already
sets the count wins. Members spread over devices, and a data-parallel step,
compute what one device computes up to float order (another partition of the
work), which is why the tests that replay recorded numbers pin 1.
"""

from __future__ import annotations

import os

ENV = 'WRAPPER_STUDY_CPU_DEVICES'
FLAG = '--xla_force_host_platform_device_count'
AUTO_MAX = 2  # The device count measured to help on this project's 2-core machine.


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def count(environ=None) -> int:
  """The number of host devices WRAPPER_STUDY_CPU_DEVICES asks for."""
  environ = os.environ if environ is None else environ
  value = environ.get(ENV, '').strip()
  if value in ('', 'auto'):
    return min(AUTO_MAX, usable_cores())
  if not value.isdigit() or int(value) < 1:
    raise ValueError(f'{ENV}={value!r} is not valid: use auto (the default) or a whole '
                     'number of devices >= 1 (1: no split).')
  return int(value)


def ensure(environ=None) -> int:
  """Adds the device count to XLA_FLAGS (call before JAX's first computation).

  Returns the count asked for; XLA_FLAGS that already name FLAG are left alone.
  """
  environ = os.environ if environ is None else environ
  n = count(environ)
  flags = environ.get('XLA_FLAGS', '')
  if FLAG not in flags and n > 1:
    environ['XLA_FLAGS'] = f'{flags} {FLAG}={n}'.strip()
  return n
