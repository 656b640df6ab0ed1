"""JAX's persistent compilation cache (config.compile_cache): a rerun compiles nothing, results unchanged."""
import os
import re
import subprocess
import sys

import pytest

from configs.validate import compile_cache_problems
from ddm import files
from modes import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _main(workdir, cache):
  env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', JAX_PLATFORMS='cpu')  # every program
  out = subprocess.run([sys.executable, 'main.py', '--config=configs/toy1d.py:smoke', f'--workdir={workdir}',
                        f'--config.compile_cache={cache}'], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stderr


def test_a_rerun_loads_every_program_from_the_cache(tmp_path):
  cache = tmp_path / 'cache'
  first = _main(tmp_path / 'a', cache)
  entries = sorted(os.listdir(cache))
  second = _main(tmp_path / 'b', cache)
  hits, misses = map(int, re.search(r'compilation cache: (\d+) hits, (\d+) misses', first).groups())
  assert misses > 10 and hits < misses
  hits2, misses2 = map(int, re.search(r'compilation cache: (\d+) hits, (\d+) misses', second).groups())
  assert misses2 == 0 and hits2 == hits + misses  # every program of the first run, none compiled again
  compile_s = [float(re.search(r'misses, ([\d.]+) s in XLA compiles and cache loads', run).group(1))
               for run in (first, second)]
  assert 0 < compile_s[1] < 0.5 * compile_s[0], compile_s  # loading is faster than compiling
  assert sorted(os.listdir(cache)) == entries
  losses = [re.findall(r'step \d+/\d+  loss \S+  length \S+  energy \S+', run) for run in (first, second)]
  assert losses[0] and losses[0] == losses[1]


def test_off_uses_no_cache(tmp_path):
  out = _main(tmp_path / 'a', 'off')
  assert 'compilation cache' not in out


def test_settings():
  assert compile_cache.folder('off') is None
  assert compile_cache.folder('default') == files.user_cache('jax_compile')
  assert compile_cache.folder('~/x') == os.path.expanduser('~/x')


@pytest.mark.parametrize('setting, message', [
    ('', "need 'default', 'off' or a folder"),
    ('gs://bucket/cache', 'is remote'),
    (__file__, 'is a file'),
])
def test_bad_settings_are_named(setting, message):
  (problem,) = compile_cache_problems(setting)
  assert problem.startswith('config.compile_cache=') and message in problem
  with pytest.raises(ValueError, match=re.escape(message)):
    compile_cache.enable(setting)
