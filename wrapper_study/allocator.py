"""The memory allocator every binary and benchmark runs with.

On CPU, glibc's malloc hands JAX's large activation buffers back to the OS
every step and page-faults them in again: measured on the project's 2-core
machine, a paper-shape PCFG step takes 34.7 s with glibc and 12.4 s with
tcmalloc preloaded (../shared/reference/perf_notes.md). So a binary calls
`ensure_fast()` before it imports JAX: when tcmalloc is installed (Debian:
`libtcmalloc-minimal4`) and not yet loaded, the process re-executes itself
once with it in LD_PRELOAD; otherwise it re-executes with glibc settings that
keep freed memory (MALLOC_MMAP_MAX_=0, a huge trim threshold), which recover
most of the loss. The allocator changes no result, only speed.

WRAPPER_STUDY_ALLOCATOR selects: 'auto' (default: tcmalloc, else tuned glibc),
'tcmalloc', 'glibc' (tuned glibc), or 'off' (leave the process as it is).
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys

ENV = 'WRAPPER_STUDY_ALLOCATOR'
CHOICES = ('auto', 'tcmalloc', 'glibc', 'off')
_DONE = 'WRAPPER_STUDY_ALLOCATOR_SET'  # Set before the re-exec: never loops.
GLIBC_SETTINGS = {'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': '100000000000',
                  'MALLOC_TOP_PAD_': '1000000000'}
_TCMALLOC_GLOBS = ('/usr/lib/*/libtcmalloc_minimal.so.4*', '/usr/lib/libtcmalloc_minimal.so.4*',
                   '/usr/lib/*/libtcmalloc.so.4*', '/usr/local/lib/libtcmalloc*.so*')


def find_tcmalloc() -> str | None:
  """Path of an installed tcmalloc shared library, or None."""
  for pattern in _TCMALLOC_GLOBS:
    found = sorted(p for p in glob.glob(pattern) if '_debug' not in p)
    if found:
      return found[0]
  name = ctypes.util.find_library('tcmalloc_minimal') or ctypes.util.find_library('tcmalloc')
  return name


def _loaded_libraries() -> str:
  try:
    with open('/proc/self/maps') as f:
      return f.read()
  except OSError:
    return ''


def active() -> str:
  """What this process allocates with, in words (for the run log)."""
  if 'tcmalloc' in _loaded_libraries():
    return 'tcmalloc (' + (os.environ.get('LD_PRELOAD') or 'linked') + ')'
  if all(os.environ.get(k) == v for k, v in GLIBC_SETTINGS.items()):
    return 'glibc, tuned (' + ' '.join(f'{k}={v}' for k, v in GLIBC_SETTINGS.items()) + ')'
  return 'glibc, default settings (slow for JAX on CPU; see wrapper_study/allocator.py)'


def environment(choice: str, environ=None) -> dict[str, str] | None:
  """The environment to re-execute with for `choice`, or None when nothing should change."""
  environ = dict(os.environ if environ is None else environ)
  if choice not in CHOICES:
    raise ValueError(f'{ENV}={choice!r} is unknown; valid: {CHOICES}.')
  if choice == 'off' or environ.get(_DONE) or 'tcmalloc' in environ.get('LD_PRELOAD', ''):
    return None
  environ[_DONE] = '1'
  library = find_tcmalloc() if choice in ('auto', 'tcmalloc') else None
  if library:
    environ['LD_PRELOAD'] = ' '.join(filter(None, [library, environ.get('LD_PRELOAD')]))
  elif choice == 'tcmalloc':
    raise ValueError(f'{ENV}=tcmalloc, but no tcmalloc library is installed; install Debian\'s '
                     'libtcmalloc-minimal4, or use auto/glibc.')
  else:
    environ.update(GLIBC_SETTINGS)
  return environ


def ensure_fast() -> None:
  """Re-executes this process once with the fast allocator (call before importing JAX)."""
  if not sys.platform.startswith('linux'):
    return
  try:
    env = environment(os.environ.get(ENV, 'auto'))
  except ValueError as e:
    print(f'FATAL allocator error: {e}', file=sys.stderr)
    sys.exit(2)
  if env is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)
