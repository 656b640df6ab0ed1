"""Test set-up: two fake CPU devices (so the pmap paths run on CPU) and the repository on sys.path."""
import os
import sys

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope='module')
def _release_compiled_programs():
  """Frees every compiled program after each test module. Each XLA:CPU executable holds memory mappings of
  its code, and the suite compiles thousands of them: kept alive by jit's caches they reach the kernel's
  ``vm.max_map_count`` (65530 here; measured ~40 new mappings a second), and the next compilation segfaults."""
  yield
  import jax
  jax.clear_caches()
  gc.collect()
