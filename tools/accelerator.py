"""This project's figures on your GPU or TPU, in one command and one JSON (issue 20).

    python -m tools.accelerator --out=accelerator.json [--budget_s=480] [--config=configs/cifar10.py]

The CIFAR-10 config (``configs/cifar10.py``: the 35.7M-parameter U-Net at its full batch of 128, T = 1000, cost
fraction 1/16) on the in-memory ``fake`` data of CIFAR-10's shape (no data set needed; step times do not depend
on the values), through the two benchmarks of :mod:`tools`:

1. :func:`tools.benchmark.run`: the loop's training step with schedule learning on, off, without the schedule
   machinery, with a rate on every example, and the bare ``jax.jit`` step (steps/s, examples/s, interleaved
   medians with every run kept), compile times, peak device memory, the jvp rate against finite
   differences, and the ``lax.scan`` samplers against a Python loop at K = 10 and 100;
2. :func:`tools.bench_costs.run`: the per-example cost of ``L_c`` and of ``L_p`` for each predictor on the
   same U-Net (compile time, time and temporary memory per example).

Parts run in that order against ``--budget_s`` of wall time: a part that would start after the budget is
spent is listed under ``skipped`` instead (the ``heun`` estimator, whose nested derivatives compile longest,
comes last); a part that starts in time runs to its end, and ``over_budget`` says whether one ran past.
The JSON also holds the versions of jax, jaxlib, flax, optax, orbax and numpy and
``jax.print_environment_info()`` (CUDA, driver, devices). Nothing beyond ``requirements.txt`` is needed; a
machine's own newer CUDA build of jax works as long as it keeps the APIs the pin has.
"""
import contextlib
import importlib.metadata
import io
import time
import types

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from configs import cifar10
from tools import bench_costs, benchmark
from train import data

FLAGS = flags.FLAGS
BUDGET_S = 480
ESTIMATORS = ('corrector', 'identity', 'euler', 'heun')   # the slowest to compile last
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'ml-collections', 'absl-py')
# The training benchmark's settings: 5 interleaved windows of 10 steps per variant; sampling 2 timed rounds
# at K = 10 and 100 on 128 images (a K = 100 Heun batch is 199 network evaluations).
TRAIN = dict(repeats=5, steps=10, warmup=2, num_devices=0, pipeline_batches=20, sample_batch=128,
             sample_repeats=2, sample_steps=['10', '100'], fd_step=1e-3, fused=True)


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'Experiment config (default: configs/cifar10.py); image data '
                                  'is replaced by fake data of its shape.', lock_config=False)
  flags.DEFINE_string('out', 'accelerator.json', 'Where the JSON is written.')
  flags.DEFINE_float('budget_s', BUDGET_S, 'Wall-time budget; parts that would start after it are skipped.')


def on_fake_data(config):
  """``config`` with an image data set replaced by the in-memory ``fake`` data of its shape (toy targets are
  kept: they are drawn in memory)."""
  if config.data.dataset not in ('toy', 'fake'):
    shape = tuple(data.data_shape(config.data))
    config.data.dataset, config.data.fake_shape = 'fake', shape
  return config


def default_config():
  """``configs/cifar10.py`` on the fake data of CIFAR-10's shape (32x32x3)."""
  return on_fake_data(cifar10.get_config())


def versions() -> dict:
  """The versions of :data:`PACKAGES`, and of every installed accelerator plugin of jax (``jax-cuda12-plugin``,
  ``jax-cuda12-pjrt``, ``jax-rocm...``, ``libtpu``...): a machine's own CUDA build brings these, and a plugin
  that does not match jaxlib is the usual reason jax falls back to the CPU."""
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  for dist in importlib.metadata.distributions():
    name = (dist.metadata['Name'] or '').lower().replace('_', '-')
    if name.startswith(('jax-cuda', 'jax-rocm', 'jax-tpu', 'libtpu', 'jax-metal')):
      out[name] = dist.version
  return out


def environment() -> str:
  """``jax.print_environment_info()``'s text (versions, devices and, on GPUs, nvidia-smi)."""
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    try:
      text = jax.print_environment_info(return_string=True)
    except Exception as e:  # e.g. nvidia-smi missing: keep what is known
      text = f'{type(e).__name__}: {e}'
  return text or buffer.getvalue()


def run(config, budget_s: float = BUDGET_S, train_args=None, estimators=ESTIMATORS,
        cost_batch: int = 8) -> dict:
  """Every part in turn against ``budget_s``; returns the JSON's content."""
  if not budget_s > 0:
    raise ValueError(f'--budget_s={budget_s}; need > 0 seconds')
  start, result = time.perf_counter(), {'preset': 'accelerator', 'versions': versions(),
                                        'environment': environment(), 'budget_s': budget_s, 'skipped': [],
                                        'part_s': {}}
  logging.info('accelerator preset: %s on %s', result['versions'], jax.devices())

  def part(name, fn):
    elapsed = time.perf_counter() - start
    if elapsed >= budget_s:
      result['skipped'].append(f'{name} (budget of {budget_s:.0f} s spent after {elapsed:.0f} s)')
      return None
    part_start = time.perf_counter()
    out = fn()
    result['part_s'][name] = time.perf_counter() - part_start
    return out

  args = types.SimpleNamespace(**{**TRAIN, **(train_args or {})})
  result['benchmark'] = part('benchmark', lambda: benchmark.run(config.copy_and_resolve_references(), args))
  result['bench_costs'] = {'settings': None, 'estimators': {}}
  for name in estimators:
    out = part(f'bench_costs.{name}', lambda name=name: bench_costs.run(config, [name], cost_batch, repeats=3))
    if out:
      result['bench_costs']['settings'] = out['settings']
      result['bench_costs']['estimators'][name] = out['estimators'][name]
  base = result['bench_costs']['estimators'].get('corrector')
  for r in result['bench_costs']['estimators'].values():
    r['time_vs_corrector'] = r['s_per_example'] / base['s_per_example'] if base else float('nan')
  result['wall_s'] = time.perf_counter() - start
  result['over_budget'] = bool(result['part_s']) and result['wall_s'] > budget_s  # a part ran past the budget
  return result


def table(result) -> str:
  lines = [f"accelerator preset: {result['wall_s']:.0f} s of a {result['budget_s']:.0f} s budget; "
           + ', '.join(f'{k} {v}' for k, v in result['versions'].items() if v)]
  if result['benchmark']:
    lines += ['', benchmark.table(result['benchmark'])]
  if result['bench_costs']['estimators']:
    lines += ['', bench_costs.table(result['bench_costs'] | {'machine': (result['benchmark'] or {}).get(
        'machine', benchmark.machine_info())})]
  lines += [f'skipped: {s}' for s in result['skipped']]
  if result['over_budget']:
    lines.append(f"over budget: the last part started within {result['budget_s']:.0f} s and ended at "
                 f"{result['wall_s']:.0f} s (part times: {result['part_s']})")
  return '\n'.join(lines)


def main(argv):
  del argv
  config = on_fake_data(FLAGS.config) if FLAGS.config is not None else default_config()
  benchmark.report(run(config, FLAGS.budget_s), table, FLAGS.out)


if __name__ == '__main__':
  define_flags()
  app.run(main)
