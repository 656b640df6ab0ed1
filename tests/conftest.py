"""Test set-up: two fake CPU devices (so the pmap paths run on CPU), the repository on sys.path, a fresh
persistent compilation cache for the session, and compiled programs freed after every module."""
import atexit
import os
import shutil
import sys
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The suite compiles the same smoke programs in many tests (and in the main.py subprocesses, which inherit the
# variable): JAX's persistent cache turns every repeat into a load. A fresh folder per session, so nothing is
# carried between runs (tests/train/test_loop.py: 163 s with it; without, 6 of its 15 tests in 240 s).
# pytest-xdist's workers (pytest.ini: -n 2) each get their own folder rather than share the controller's.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ or os.environ.get('PYTEST_XDIST_WORKER'):
  _cache = tempfile.mkdtemp(prefix='jax_compile_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
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
