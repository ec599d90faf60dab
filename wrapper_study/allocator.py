"""The memory allocator every binary and benchmark runs with.

On CPU, glibc's malloc hands JAX's large activation buffers back to the OS
every step and page-faults them in again: measured on the project's 2-core
machine, a paper-shape PCFG step takes 34.7 s with glibc and 12.4 s with
tcmalloc preloaded (../shared/reference/perf_notes.md). So a binary calls
`ensure_fast()` before it imports JAX, and the process re-executes itself once
with a faster allocator in LD_PRELOAD:

  tcmalloc  Debian's `libtcmalloc-minimal4`, where someone installed it;
  mimalloc  from the `cmeel-mimalloc` wheel, a dependency on Linux: found
            through that installed distribution's own file list, so a plain
            `pip install -e .` brings it (no root, no apt);
  glibc     no extra library: glibc settings that keep freed memory
            (MALLOC_MMAP_MAX_=0, a huge trim threshold), which recover part
            of the loss.

`auto` takes the first of AUTO_ORDER that is installed, fastest first as
measured on the idle 2-core EPYC (matmul peak 470-510 GFLOP/s; issue 31's
closing note): the paper-shape PCFG step (`benchmarks/pcfg_train_throughput.py
--steps=3 --warmup=1`, JAX fused on 2 devices), two rounds in alternating
order, s/step: tcmalloc 1.893 and 1.920, mimalloc 2.053 and 2.148 (1.09x and
1.12x tcmalloc's); the README's main job 8m09s with tcmalloc, 8m50s with
mimalloc. Tuned glibc: 12.2 s/step where mimalloc took 7.5 (issue 31's fresh
machine). So a machine with Debian's tcmalloc runs it, and every other Linux
machine runs mimalloc from the wheel. (Run side by side on a loaded machine,
mimalloc faulted least and was ahead: 9.6/7.7 vs tcmalloc 10.7/12.0 s/step at
batch 32; idle, sequential rounds decide the order.) The allocator changes no
result, only speed; the run log says which one is active.

WRAPPER_STUDY_ALLOCATOR selects: 'auto' (default), 'mimalloc', 'tcmalloc',
'glibc' (tuned glibc), or 'off' (leave the process as it is).
"""

from __future__ import annotations

import ctypes.util
import glob
import importlib.metadata
import os
import sys

ENV = 'WRAPPER_STUDY_ALLOCATOR'
CHOICES = ('auto', 'mimalloc', 'tcmalloc', 'glibc', 'off')
AUTO_ORDER = ('tcmalloc', 'mimalloc', 'glibc')  # Fastest first, as measured (docstring).
_DONE = 'WRAPPER_STUDY_ALLOCATOR_SET'  # Set before the re-exec: never loops.
GLIBC_SETTINGS = {'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': '100000000000',
                  'MALLOC_TOP_PAD_': '1000000000'}
MIMALLOC_DISTRIBUTION = 'cmeel-mimalloc'  # setup.py's Linux dependency.
_TCMALLOC_GLOBS = ('/usr/lib/*/libtcmalloc_minimal.so.4*', '/usr/lib/libtcmalloc_minimal.so.4*',
                   '/usr/lib/*/libtcmalloc.so.4*', '/usr/local/lib/libtcmalloc*.so*')
_PRELOADED = ('tcmalloc', 'mimalloc', 'jemalloc')  # Already in LD_PRELOAD: the user's choice.


def find_mimalloc() -> str | None:
  """Path of libmimalloc.so among the installed MIMALLOC_DISTRIBUTION's files, or None."""
  try:
    files = importlib.metadata.files(MIMALLOC_DISTRIBUTION) or []
  except importlib.metadata.PackageNotFoundError:
    return None
  found = sorted((f for f in files if f.name.startswith('libmimalloc.so')),
                 key=lambda f: (len(f.name), str(f)))  # libmimalloc.so before .so.3.4.
  for f in found:
    path = os.path.realpath(f.locate())
    if os.path.isfile(path):
      return path
  return None


def find_tcmalloc() -> str | None:
  """Path of an installed tcmalloc shared library, or None."""
  for pattern in _TCMALLOC_GLOBS:
    found = sorted(p for p in glob.glob(pattern) if '_debug' not in p)
    if found:
      return found[0]
  name = ctypes.util.find_library('tcmalloc_minimal') or ctypes.util.find_library('tcmalloc')
  return name


FINDERS = {'mimalloc': find_mimalloc, 'tcmalloc': find_tcmalloc}
_INSTALL = {'mimalloc': f'pip install {MIMALLOC_DISTRIBUTION} (a dependency of this project '
                        'on Linux)',
            'tcmalloc': "install Debian's libtcmalloc-minimal4"}


def _loaded_libraries() -> str:
  try:
    with open('/proc/self/maps') as f:
      return f.read()
  except OSError:
    return ''


def active() -> str:
  """What this process allocates with, in words (for the run log)."""
  loaded = _loaded_libraries()
  for name in _PRELOADED:
    if name in loaded:
      return f'{name} (' + (os.environ.get('LD_PRELOAD') or 'linked') + ')'
  if all(os.environ.get(k) == v for k, v in GLIBC_SETTINGS.items()):
    return 'glibc, tuned (' + ' '.join(f'{k}={v}' for k, v in GLIBC_SETTINGS.items()) + ')'
  return 'glibc, default settings (slow for JAX on CPU; see wrapper_study/allocator.py)'


def library(choice: str) -> str | None:
  """The shared library that `choice` preloads (None for glibc/off, or when auto finds none)."""
  if choice not in CHOICES:
    raise ValueError(f'{ENV}={choice!r} is unknown; valid: {CHOICES}.')
  for name in (AUTO_ORDER if choice == 'auto' else (choice,)):
    if name in FINDERS:
      path = FINDERS[name]()
      if path:
        return path
      if choice == name:
        raise ValueError(f'{ENV}={name}, but no {name} library is installed; {_INSTALL[name]}, '
                         'or use auto/glibc.')
  return None


def environment(choice: str, environ=None) -> dict[str, str] | None:
  """The environment to re-execute with for `choice`, or None when nothing should change."""
  environ = dict(os.environ if environ is None else environ)
  path = library(choice)  # Validates the choice first.
  preloaded = any(name in environ.get('LD_PRELOAD', '') for name in _PRELOADED)
  if choice == 'off' or environ.get(_DONE) or preloaded:
    return None
  environ[_DONE] = '1'
  if path:
    environ['LD_PRELOAD'] = ' '.join(filter(None, [path, environ.get('LD_PRELOAD')]))
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
