"""Host devices: WRAPPER_STUDY_CPU_DEVICES read as documented, XLA_FLAGS set before JAX starts."""

import json
import os
import subprocess
import sys

import pytest

from wrapper_study import host_devices

FLAG = host_devices.FLAG


def test_auto_is_two_devices_where_two_cores_may_be_used(monkeypatch):
  for cores, expected in ((1, 1), (2, 2), (16, 2)):
    monkeypatch.setattr(host_devices, 'usable_cores', lambda cores=cores: cores)
    assert host_devices.count({}) == expected
    assert host_devices.count({host_devices.ENV: 'auto'}) == expected
    assert host_devices.count({host_devices.ENV: ''}) == expected  # Set but empty: unset.
  assert host_devices.count({host_devices.ENV: '1'}) == 1
  assert host_devices.count({host_devices.ENV: ' 3 '}) == 3


@pytest.mark.parametrize('value', ['0', 'two', '-2', '1.5'])
def test_a_bad_count_names_the_variable_and_the_fix(value):
  with pytest.raises(ValueError, match=f'{host_devices.ENV}=.*auto.*whole number'):
    host_devices.count({host_devices.ENV: value})


def test_ensure_adds_the_flag_once_and_keeps_a_count_already_set():
  env = {host_devices.ENV: '2', 'XLA_FLAGS': '--xla_cpu_enable_fast_math=false'}
  assert host_devices.ensure(env) == 2
  assert env['XLA_FLAGS'] == f'--xla_cpu_enable_fast_math=false {FLAG}=2'
  host_devices.ensure(env)  # Idempotent: a re-executed process does not add it twice.
  assert env['XLA_FLAGS'].count(FLAG) == 1
  mine = {host_devices.ENV: '2', 'XLA_FLAGS': f'{FLAG}=4'}
  host_devices.ensure(mine)
  assert mine['XLA_FLAGS'] == f'{FLAG}=4'  # The user's own count wins.
  one = {host_devices.ENV: '1'}
  host_devices.ensure(one)
  assert 'XLA_FLAGS' not in one  # One device: JAX's default, nothing to add.


SCRIPT = r'''
import json
from wrapper_study import host_devices
host_devices.ensure()
import jax
print(json.dumps(dict(devices=jax.device_count(), platform=jax.default_backend())))
'''


@pytest.mark.parametrize('value', ['1', '2', '3'])
def test_jax_starts_with_the_devices_asked_for(value):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update({host_devices.ENV: value, 'JAX_PLATFORMS': 'cpu'})
  proc = subprocess.run([sys.executable, '-c', SCRIPT], env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.splitlines()[-1])
  assert out == dict(devices=int(value), platform='cpu')
