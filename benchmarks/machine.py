"""The machine a benchmark ran on, printed with its figures (shared by the benchmarks)."""

import os
import platform

import jax


def cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe() -> list[str]:
  """Platform, CPU, usable cores, jax backend and devices, XLA_FLAGS, load average."""
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = os.cpu_count()
  return [f'platform: {platform.platform()}, python {platform.python_version()}',
          f'cpu: {cpu_name()}, os.cpu_count={os.cpu_count()}, usable={usable}',
          f'jax {jax.__version__}, backend {jax.default_backend()}, '
          f'{jax.device_count()} device(s): {jax.devices()}',
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
          'load average (1/5/15 min): %.2f %.2f %.2f' % os.getloadavg()]
