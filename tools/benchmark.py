"""What online schedule learning costs, and how the training loop compares with a bare step (issue 8).

    python -m tools.benchmark --config=configs/digits.py --out=bench.json [--repeats=5] [--config.FIELD=VALUE ...]

One config per call; prints a table and writes JSON. Every time is the median over ``--repeats`` timed runs
after compilation and warm-up, each ended by ``block_until_ready``. Figures:

* train: examples/s of the loop's step built by the loop's own helpers (``train.step.make_train_steps`` wrapped
  by ``train.step.pmapped``: pmapped over the local devices, state donated; the state and key replicated by
  ``train.step.replicate``; the batch sharded and already on the devices) with
  ``schedule.learn`` True and False (False still measures the costs: only the schedule is kept), of the same
  step with the rate estimator and the update stubbed out (what the loop costs without the schedule
  machinery), and of a bare step written here (same network, loss, optimizer, EMA and batch, plain
  ``jax.jit``, levels drawn uniformly from the same schedule, no statistics, no metrics). The schedule
  update is a ``lax.cond`` that fires every P steps; its branch is timed on its own and amortised over the
  expected P at the config's cadence (simulated from the level draws), added to the median time of the
  windows in which it did not fire (if it fired in every window, the windows' mean is used instead: the real
  frequency). Also the input pipeline's ``next()`` + ``shard`` throughput and the loop end to end
  (pipeline, host-to-device copy and step, as ``train_and_evaluate`` runs it, without logging).
* cost estimator: the per-example jvp rate against central and forward two-evaluation finite differences.
* sampling: images/s of the ``lax.scan`` sampler against a Python loop of jitted single steps.
* compile time (lowering and XLA compile) of the loop's step and the bare step; peak device memory of a
  training step (``memory_stats()['peak_bytes_in_use']``, read right after the loop step's runs: the
  allocator's peak since start, i.e. one state, one batch and the step's temporaries) where the backend
  has it (GPU), and the compiled step's ``memory_analysis()`` everywhere.
"""
import functools
import math
import os
import platform
import sys
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from configs.validate import validate
from ddm import files, losses, samplers, streams
from ddm.paths import make_path, per_example
from ddm.registry import SAMPLERS
from schedule import baselines, costs, online
from train import data, model as model_lib, state as state_lib, step as step_lib

FLAGS = flags.FLAGS
TARGET = 0.03        # schedule learning at the config's cadence: <= 3% of the step (issue 20), loop vs bare too
TARGET_EVERY = 0.25  # with a rate on every example: <= 25%


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:options]).',
                                  lock_config=True)
  flags.DEFINE_string('out', 'bench.json', 'Where the JSON is written.')
  flags.DEFINE_integer('repeats', 5, 'Timed runs per figure (the median is reported).')
  flags.DEFINE_integer('steps', 10, 'Train steps per timed run.')
  flags.DEFINE_integer('warmup', 2, 'Untimed runs after compilation.')
  flags.DEFINE_integer('num_devices', 0, 'Local devices the loop step is pmapped over (0: all, as the loop).')
  flags.DEFINE_integer('pipeline_batches', 50, 'Batches per timed run of the input pipeline.')
  flags.DEFINE_integer('sample_batch', 0, 'Images per sampling run (0: config.eval.batch_size).')
  flags.DEFINE_list('sample_steps', ['10', '100'], 'Sampler step counts K.')
  flags.DEFINE_float('fd_step', 1e-3, 'Finite-difference step in t of the cost estimator comparison.')


# ----------------------------------------------------------------------------------------------- timing
def median_time(fn, repeats, warmup):
  """Median wall time of ``fn()`` (its result blocked on) over ``repeats`` runs after ``warmup`` runs."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def compile_timed(jitted, *args):
  """``(compiled, lower_s, compile_s)``."""
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  mid = time.perf_counter()
  compiled = lowered.compile()
  return compiled, mid - start, time.perf_counter() - mid


def memory_analysis_of(compiled):
  try:
    stats = compiled.memory_analysis()
  except Exception as e:  # not every backend implements it
    return {'error': f'{type(e).__name__}: {e}'}
  if stats is None:
    return None
  if isinstance(stats, (list, tuple)):
    stats = stats[0]
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes', 'temp_size_in_bytes',
            'generated_code_size_in_bytes')
  return {f: int(getattr(stats, f)) for f in fields if hasattr(stats, f)}


def _peak_bytes(device):
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def machine_info():
  devices = jax.local_devices()
  import flax
  import optax
  return {'backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
          'device_kind': devices[0].device_kind, 'device_count': jax.device_count(),
          'local_device_count': jax.local_device_count(), 'process_count': jax.process_count(),
          'cpu_count': os.cpu_count(), 'platform': platform.platform(), 'python': platform.python_version(),
          'jax': jax.__version__, 'flax': flax.__version__, 'optax': optax.__version__}


# ------------------------------------------------------------------------------------------------ train
def _example_batch(config, shape):
  """The first batch of the config's input pipeline, or uniform [-1, 1] data of its shape if the data is
  not on this machine (step times do not depend on the values)."""
  try:
    return next(data.make_train_iterator(config.data, config.train.batch_size, config.seed))['x'], None
  except Exception as e:  # e.g. TFDS data not prepared
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (data.host_batch_size(config.train.batch_size),) + tuple(shape)).astype(np.float32)
    return x, f'{type(e).__name__}: {str(e)[:200]}'


def zero_rate(score_fn, path, x, t, key=None):
  """A rate estimator that measures nothing (zeros): the loop's step without the schedule machinery."""
  del score_fn, path, t, key
  return jnp.zeros(x.shape[:1], jnp.float32)


def _update_period(config, batch, draws=16, seed=0):
  """Expected steps between schedule updates at the config's cadence when ``batch`` examples a step feed
  the statistics (:func:`schedule.online.simulate_counts`: levels uniform over the T+1 points, method.md
  section 5; the update fires when every level holds ``min_count`` samples or ``update_every`` steps passed)."""
  sch = config.schedule
  _, steps = online.simulate_counts(sch.num_levels + 1, batch, sch.min_count, sch.update_every, draws, seed)
  return float(np.mean(steps))


class _Timed:
  """A compiled step with its state, timed in windows of ``steps`` steps (``window()`` returns seconds).

  With ``plain`` (the step between measurements), step i of the run calls ``compiled`` when i is a multiple
  of ``every`` and ``plain`` otherwise, as the loop does with ``schedule.measure_every``."""

  def __init__(self, compiled, state, args_rest, steps, count_updates, lower_s, compile_s, plain=None, every=1):
    self.compiled, self.state, self.args_rest, self.steps = compiled, state, args_rest, steps
    self.count_updates, self.lower_s, self.compile_s = count_updates, lower_s, compile_s
    self.plain, self.every, self.count = plain, every, 0
    self.times, self.updates = [], []

  def _num_updates(self):
    return int(self.state.num_updates.reshape(-1)[0]) + int(self.state.num_skipped.reshape(-1)[0])

  def window(self, record=True):
    before = self._num_updates() if self.count_updates else 0   # fetched outside the timed region
    state, start = self.state, time.perf_counter()
    for _ in range(self.steps):
      step = self.compiled if self.plain is None or self.count % self.every == 0 else self.plain
      state, out = step(state, *self.args_rest)
      self.count += 1
    jax.block_until_ready((state, out))
    elapsed = time.perf_counter() - start
    self.state = state
    if record:
      self.times.append(elapsed / self.steps)
      self.updates.append(self._num_updates() - before if self.count_updates else 0)
    return elapsed

  def result(self, batch_size):
    median = statistics.median(self.times)
    out = {'step_s': median, 'step_s_runs': self.times, 'examples_per_s': batch_size / median,
           'lower_s': self.lower_s, 'compile_s': self.compile_s, 'memory_analysis': memory_analysis_of(self.compiled)}
    if self.count_updates:
      out['updates_per_run'] = self.updates
    return out


def loop_steps(config, path, model, devices, **options):
  """The loop's pmapped steps, built as ``modes/train.py`` builds them: :func:`train.step.make_train_steps` with
  the loop's wrap :func:`train.step.pmapped` (on ``devices``, state donated); ``options``: the step builder's
  ``rate_fn``, ``schedule_updates``."""
  return step_lib.make_train_steps(config.model, config.loss, config.schedule, config.optim, path, model,
                                   data.data_shape(config.data), wrap=step_lib.pmapped(devices), **options)


def loop_inputs(config, path, model, batch, devices):
  """``(state, base_key, batch)`` as the loop feeds its steps: the initial state and the 'train' key replicated by
  :func:`train.step.replicate`, the batch sharded and already on ``devices``."""
  p_state = step_lib.replicate(step_lib.initial_state(config.schedule, config.optim, path, model), devices)
  base_key = step_lib.replicate(streams.key(config.seed, 'train'), devices)
  x = jax.pmap(lambda v: v, devices=devices)(data.shard({'x': batch}, len(devices))['x'])   # on the devices
  return p_state, base_key, {'x': x}


def prepare_loop_step(config, path, model, batch, devices, args, stub=False):
  """The loop's measuring step (:func:`loop_steps`, :func:`loop_inputs`), compiled; with ``stub``, without the
  schedule machinery (the :func:`zero_rate` estimator and no schedule updates, passed to the step builder)."""
  options = dict(rate_fn=zero_rate, schedule_updates=False) if stub else {}
  p_step = loop_steps(config, path, model, devices, **options)[True]
  p_state, base_key, x = loop_inputs(config, path, model, batch, devices)
  compiled, lower_s, compile_s = compile_timed(p_step, p_state, x, base_key)
  return _Timed(compiled, p_state, (x, base_key), args.steps, True, lower_s, compile_s)


def prepare_grouped_step(config, path, model, batch, devices, args):
  """The loop's pair of steps at ``schedule.measure_every`` = m > 1: a measuring step (m x cost_fraction of
  the batch) every m-th step, the plain step between (:func:`train.step.make_train_steps`); windows of a
  whole number of m-step cycles, so every window holds the same share of measuring steps."""
  every = config.schedule.measure_every
  steps = loop_steps(config, path, model, devices)
  p_state, base_key, x = loop_inputs(config, path, model, batch, devices)
  measuring, lower_s, compile_s = compile_timed(steps[True], p_state, x, base_key)
  plain, plain_lower_s, plain_compile_s = compile_timed(steps[False], p_state, x, base_key)
  window = every * math.ceil(args.steps / every)
  return _Timed(measuring, p_state, (x, base_key), window, True, lower_s + plain_lower_s,
                compile_s + plain_compile_s, plain=plain, every=every)


def _grouped_update_period(config, measured, draws=16, seed=0):
  """:func:`_update_period` when ``measured`` examples feed the statistics on every m-th step only
  (the update is checked on measuring steps, so the period is a multiple of m)."""
  sch, every = config.schedule, config.schedule.measure_every
  _, steps = online.simulate_counts(sch.num_levels + 1, measured, sch.min_count,
                                    math.ceil(sch.update_every / every), draws, seed)
  return float(every * np.mean(steps))


def make_bare_step(config, path, model):
  """The reference: denoiser update + EMA under plain ``jax.jit``; levels uniform over the schedule's points."""
  loss_fn = losses.make_loss_fn(model.denoise, path, config.model.precond, config.model.sigma_data,
                                config.loss.weighting)

  def bare_step(state, x0, base_key):
    key_examples, key_dropout = jax.random.split(jax.random.fold_in(base_key, state.step))
    keys = jax.random.split(key_examples, x0.shape[0])
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean(loss_fn(p, x0, state.schedule, keys, key_dropout, train=True)[0]))(state.params)
    state = state.apply_gradients(grads=grads)
    state = state.replace(ema_params=state_lib.ema_update(state.ema_params, state.params, config.optim.ema_decay))
    return state, loss

  return jax.jit(bare_step, donate_argnums=(0,))


def prepare_bare_step(config, path, model, batch, args):
  device = jax.local_devices()[0]
  step = make_bare_step(config, path, model)
  # create() builds the same optimizer; its scalar counters share one buffer, so copy every leaf (donation).
  state = jax.tree.map(lambda a: jnp.array(a, copy=True),
                       jax.device_put(step_lib.initial_state(config.schedule, config.optim, path, model), device))
  x, key = jax.device_put(batch, device), jax.device_put(streams.key(config.seed, 'train'), device)
  compiled, lower_s, compile_s = compile_timed(step, state, x, key)
  return _Timed(compiled, state, (x, key), args.steps, False, lower_s, compile_s)


def time_interleaved(variants: dict, repeats: int, warmup: int):
  """Warm-up windows, then ``repeats`` rounds of one window of every variant in turn: a noisy machine
  (shared cores, clock changes) slows every variant alike instead of the one that happened to run then."""
  for v in variants.values():
    for _ in range(warmup):
      v.window(record=False)
  for _ in range(repeats):
    for v in variants.values():
      v.window()


def bench_update(config, path, state, args):
  """The ``lax.cond`` branch (Algorithm 2, steps 3-4) alone, jitted, on device 0's copy of a trained state."""
  state = step_lib.unreplicate(state)
  state = state.replace(cost_sum=jnp.ones_like(state.cost_sum), cost_count=jnp.ones_like(state.cost_count))
  update = jax.jit(functools.partial(step_lib.online_update, config.schedule, path))
  median, _ = median_time(lambda: update(state), args.repeats, args.warmup)
  return median


def _train_iterator(config):
  """``(batches, note)``: the config's pipeline, or, if its data is not on this machine, the same array
  pipeline over the in-memory 'fake' pool of the same shape (a proxy, named in ``note``)."""
  try:
    batches = data.make_train_iterator(config.data, config.train.batch_size, config.seed)
    next(batches)
    return batches, None
  except Exception as e:
    proxy = config.copy_and_resolve_references()
    with proxy.unlocked():
      proxy.data.dataset, proxy.data.fake_shape = 'fake', tuple(data.data_shape(config.data))
    return data.make_train_iterator(proxy.data, proxy.train.batch_size, proxy.seed), (
        f'proxy: the fake in-memory pool of the same shape, because {type(e).__name__}: {str(e)[:120]}')


def bench_pipeline(config, args, n):
  """``next()`` + ``shard`` of the config's input pipeline (host work only)."""
  batches, note = _train_iterator(config)

  def run():
    for _ in range(args.pipeline_batches):
      out = data.shard(next(batches), n)
    return out['x']

  median, _ = median_time(run, args.repeats, 1)
  return {'examples_per_s': data.host_batch_size(config.train.batch_size) * args.pipeline_batches / median,
          'batches_per_run': args.pipeline_batches, 'note': note}


def bench_loop_end_to_end(config, devices, step, args):
  """``train_and_evaluate``'s inner loop without logging: next(), shard, host-to-device copy, the step.

  ``step``: the :class:`_Timed` loop step (its executable reused, not recompiled; its state advanced)."""
  compiled, state, base_key = step.compiled, step.state, step.args_rest[1]
  batches, note = _train_iterator(config)
  n, holder = len(devices), {'state': state}

  def window():
    state, pending = holder['state'], []
    for _ in range(args.steps):
      state, metrics = compiled(state, data.shard(next(batches), n), base_key)
      pending.append(metrics)
    holder['state'] = state
    return state, pending

  median, _ = median_time(window, args.repeats, args.warmup)
  step.state = holder['state']
  return {'examples_per_s': config.train.batch_size * args.steps / median, 'step_s': median / args.steps,
          'note': note}


# ------------------------------------------------------------------------------------------ cost estimator
def bench_cost_estimator(config, path, model, params, batch, args):
  """Per-sample jvp rate vs two-evaluation finite differences, on the training batch at its own levels."""
  loss_fn = losses.make_loss_fn(model.denoise, path, config.model.precond, config.model.sigma_data,
                                config.loss.weighting)
  ts = baselines.make_baseline(config.schedule.init, path, config.schedule.num_levels)
  keys = jax.random.split(jax.random.PRNGKey(0), batch.shape[0])
  _, _, x, t, _ = jax.jit(lambda p, x0: loss_fn(p, x0, jnp.asarray(ts, jnp.float32), keys, keys[0], train=False))(
      params, jnp.asarray(batch))
  # The step is a relative change of fd_step in sigma (capped at fd_step in t): a fixed step in t straddles
  # orders of magnitude of sigma near the data end of a linear-in-sigma path. t is clipped so both sides
  # stay in [0, 1]; every estimator is evaluated at the same clipped t.
  _, sigma, _, dsigma = path.derivatives(t)
  h = args.fd_step * jnp.minimum(1.0, sigma / jnp.maximum(jnp.abs(dsigma), 1e-30))
  t = jnp.clip(t, h, 1.0 - h)
  t_plus, t_minus = t + h, t - h

  def jvp(params, x, t):
    return costs.corrector_rate(model.score(params, path), path, x, t)

  def central(params, x, t):
    score_fn = model.score(params, path)
    diff = (score_fn(x, t_plus) - score_fn(x, t_minus)) / per_example(t_plus - t_minus, x)
    return path.sigma(t)**2 * jnp.sum(diff**2, axis=tuple(range(1, x.ndim)))

  def forward(params, x, t):  # L_c(t + h -> t) / h^2
    return costs.corrector_cost(model.score(params, path), path, x, t_plus, t) / (t_plus - t)**2

  out, values = {}, {}
  for name, fn in (('jvp', jvp), ('fd_central', central), ('fd_forward', forward)):
    jitted = jax.jit(fn)
    median, _ = median_time(lambda: jitted(params, x, t), args.repeats, args.warmup)
    values[name] = np.asarray(jitted(params, x, t), np.float64)
    out[name] = {'s_per_sample': median / x.shape[0], 'batch_mean': float(np.mean(values[name]))}
  ref = out['jvp']['batch_mean']
  for name in ('fd_central', 'fd_forward'):
    out[name]['rel_diff_of_means'] = abs(out[name]['batch_mean'] - ref) / max(abs(ref), 1e-30)
    out[name]['time_vs_jvp'] = out[name]['s_per_sample'] / out['jvp']['s_per_sample']
  out.update({'batch': int(x.shape[0]), 'fd_step_relative_sigma': args.fd_step,
              'finite': bool(all(np.all(np.isfinite(v)) for v in values.values()))})
  return out


# ---------------------------------------------------------------------------------------------- sampling
def bench_sampling(config, path, model, params, shape, args):
  """``lax.scan`` sampler (``samplers.make_sampler`` as eval/sampling.py builds it, jitted on one device)
  against a Python loop of the same jitted step, with the step keys precomputed (favouring the loop)."""
  name, device = config.eval.sampler, jax.local_devices()[0]
  batch = args.sample_batch or config.eval.batch_size
  opts = dict(langevin_snr=config.eval.langevin_snr, langevin_steps=config.eval.langevin_steps)
  chosen = SAMPLERS.get(name, 'config.eval.sampler')

  @jax.jit
  def scan_sample(params, key, ts, x_init):
    return samplers.make_sampler(name, path, model.score(params, path), **opts)(key, ts, x_init)

  def jitted(move):
    def one(params, x, t, t_next, key):
      dynamics = samplers.Dynamics(path, model.score(params, path), float(opts['langevin_snr']),
                               int(opts['langevin_steps']))
      return move(dynamics, x, t, t_next, key)
    return jax.jit(one)

  one_step, last_step = jitted(chosen.step), jitted(chosen.last)

  x_init = jax.device_put(samplers.prior_sample(path, jax.random.PRNGKey(1), (batch,) + tuple(shape)), device)
  key = jax.random.PRNGKey(2)
  out = {'sampler': name, 'batch': batch}
  for k in (int(s) for s in args.sample_steps):
    ts_np = np.asarray(baselines.make_baseline(config.schedule.init, path, k), np.float32)
    ts = jnp.asarray(ts_np)
    step_keys = [jax.random.fold_in(key, i) for i in range(k)]

    def loop_sample():
      x = x_init
      for i in reversed(range(1, k)):
        x = one_step(params, x, ts_np[i + 1], ts_np[i], step_keys[i])
      return last_step(params, x, ts_np[1], ts_np[0], step_keys[0])

    scan_times, loop_times = [], []
    rounds = (getattr(args, 'sample_repeats', 0) or args.repeats) + 1
    for i in range(rounds):   # interleaved; the first round is the warm-up (and compiles)
      for fn, times in ((lambda: scan_sample(params, key, ts, x_init), scan_times), (loop_sample, loop_times)):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        if i:
          times.append(time.perf_counter() - start)
    scan_s, loop_s = statistics.median(scan_times), statistics.median(loop_times)
    a, b = np.asarray(scan_sample(params, key, ts, x_init)), np.asarray(loop_sample())
    out[str(k)] = {'scan_images_per_s': batch / scan_s, 'loop_images_per_s': batch / loop_s,
                   'scan_speedup': loop_s / scan_s,
                   'max_abs_diff': float(np.max(np.abs(a - b))), 'finite': bool(np.all(np.isfinite(a)))}
  return out


def _no_dropout_pair(config, path, batch, devices, args) -> dict:
  """The fused learned step and the step without schedule machinery of ``config``'s network with dropout 0."""
  plain = config.copy_and_resolve_references()
  with plain.unlocked():
    plain.model.unet.dropout = 0.0
  model = model_lib.make_model(plain.model, plain.data, path, streams.key(plain.seed, 'init'))
  return {'loop_learn_on_fused_no_dropout': prepare_loop_step(plain, path, model, batch, devices, args),
          'loop_no_schedule_machinery_no_dropout': prepare_loop_step(plain, path, model, batch, devices, args,
                                                                     stub=True)}


# Each overhead against its own base, as in the medians: (variant, base).
SPREAD_PAIRS = {
    'overhead_schedule_learning': ('loop_learn_on', 'loop_no_schedule_machinery'),
    'overhead_schedule_learning_fused': ('loop_learn_on_fused', 'loop_no_schedule_machinery'),
    'overhead_schedule_learning_jvp_every_example': ('loop_jvp_every_example', 'loop_no_schedule_machinery'),
    'overhead_schedule_learning_jvp_every_example_fused': ('loop_jvp_every_example_fused',
                                                           'loop_no_schedule_machinery'),
    'overhead_schedule_learning_grouped': ('loop_learn_on_grouped', 'loop_no_schedule_machinery'),
    'overhead_schedule_learning_fused_no_dropout': ('loop_learn_on_fused_no_dropout',
                                                    'loop_no_schedule_machinery_no_dropout'),
    'overhead_learn_flag': ('loop_learn_on', 'loop_learn_off'),
    'overhead_loop_over_bare': ('loop_no_schedule_machinery', 'bare'),
}


def overhead_spread(timed: dict) -> dict:
  """``{overhead: {min, median, max, per_round}}``: the overhead of each interleaved round (one window of the
  variant over the window of its base in the same round: a slow spell of a shared machine hits both), so the
  median figures come with the range they vary over. Windows with a schedule update count as they ran (the
  medians' amortisation is not applied per round)."""
  out = {}
  for name, (variant, base) in SPREAD_PAIRS.items():
    if variant in timed and base in timed:
      a = timed[variant]['step_s_runs']
      b = timed[base]['step_s_runs']
      rounds = [x / y - 1.0 for x, y in zip(a, b)]
      out[name] = {'min': min(rounds), 'median': statistics.median(rounds), 'max': max(rounds),
                   'per_round': rounds}
  return out


# ---------------------------------------------------------------------------------------------- the run
def run(config, args) -> dict:
  """Every figure for one config; ``args`` carries the flags (repeats, steps, ...)."""
  validate(config, None, 'train')
  path, shape = make_path(config.sde), data.data_shape(config.data)
  model = model_lib.make_model(config.model, config.data, path, streams.key(config.seed, 'init'))
  devices = jax.local_devices()[:args.num_devices or None]
  if config.train.batch_size % len(devices):
    raise ValueError(f'config.train.batch_size={config.train.batch_size} is not divisible by {len(devices)} devices')
  batch, batch_note = _example_batch(config, shape)
  result = {'machine': machine_info(),
            'settings': {'repeats': args.repeats, 'steps': args.steps, 'warmup': args.warmup,
                         'num_devices': len(devices), 'batch_size': int(batch.shape[0]),
                         'num_params': int(sum(np.size(p) for p in jax.tree.leaves(model.params))),
                         'schedule_num_steps': config.schedule.num_levels,
                         'update_every': config.schedule.update_every, 'min_count': config.schedule.min_count,
                         'rate_pass': config.schedule.rate_pass,
                         'measure_every': config.schedule.measure_every,
                         'batch_source': 'input pipeline' if batch_note is None else f'random ({batch_note})'}}
  logging.info('benchmarking %s', result['settings'])

  # The separate rate pass in the main variants, the fused one beside them (where it applies); the config's
  # own choice is recorded, and the targets read the figures of the pass it resolves to.
  choice, measure_every = config.schedule.rate_pass, config.schedule.measure_every
  default_fused = step_lib.fused_rate(config.model, config.schedule, model)
  with config.unlocked():
    config.schedule.rate_pass = 'separate'
    config.schedule.measure_every = 1  # every variant but 'loop_learn_on_grouped' measures on every step
  # The loop's step with the schedule learned: first, and run once alone, so the device's peak is this step's.
  variants = {'loop_learn_on': prepare_loop_step(config, path, model, batch, devices, args)}
  variants['loop_learn_on'].window(record=False)
  peak = _peak_bytes(devices[0])
  with config.unlocked():
    config.schedule.learn = False
  variants['loop_learn_off'] = prepare_loop_step(config, path, model, batch, devices, args)
  with config.unlocked():
    config.schedule.learn = True
  variants['loop_no_schedule_machinery'] = prepare_loop_step(config, path, model, batch, devices, args, stub=True)
  fraction = config.schedule.cost_fraction
  if fraction < 1:  # the same step with a rate for every example, for comparison
    with config.unlocked():
      config.schedule.cost_fraction = 1.0
    variants['loop_jvp_every_example'] = prepare_loop_step(config, path, model, batch, devices, args)
    with config.unlocked():
      config.schedule.cost_fraction = fraction
  # The same two steps with the rate fused into the loss's pass (config.schedule.rate_pass), where it is
  # the same estimator; the separate pass is the one the other variants time.
  with config.unlocked():
    config.schedule.rate_pass = 'auto'
    if step_lib.fused_rate(config.model, config.schedule, model) and getattr(args, 'fused', True):
      variants['loop_learn_on_fused'] = prepare_loop_step(config, path, model, batch, devices, args)
      if fraction < 1:
        config.schedule.cost_fraction = 1.0
        variants['loop_jvp_every_example_fused'] = prepare_loop_step(config, path, model, batch, devices, args)
        config.schedule.cost_fraction = fraction
    elif getattr(args, 'fused', True) and model_lib.has_dropout(config.model):
      # Dropout keeps the config's own training on the separate pass; the fused pass is timed on the same
      # network without dropout, against that network's step without the machinery (CIFAR-10's preset).
      variants.update(_no_dropout_pair(config, path, batch, devices, args))
    config.schedule.rate_pass = choice
    config.schedule.measure_every = measure_every
  if measure_every > 1:  # the config's own cadence: the measuring step (its rate pass) every m-th step, plain between
    variants['loop_learn_on_grouped'] = prepare_grouped_step(config, path, model, batch, devices, args)
  variants['bare'] = prepare_bare_step(config, path, model, batch, args)
  variants = {k: v for k, v in variants.items() if v is not None}
  time_interleaved(variants, args.repeats, args.warmup)
  step_on = variants['loop_learn_on']
  timed = {k: v.result(batch.shape[0]) for k, v in variants.items()}
  update_s = bench_update(config, path, step_on.state, args)

  def amortise(r, period):
    quiet = [s for s, u in zip(r['step_s_runs'], r['updates_per_run']) if u == 0]
    if quiet:
      step = statistics.median(quiet) + update_s / period
      method = 'median of the timed runs without an update + the update branch timed alone / expected period'
    else:
      step = statistics.mean(r['step_s_runs'])
      method = 'mean of the timed runs, every one of which contained updates (the real frequency)'
    r.update({'amortised_step_s': step, 'amortised_examples_per_s': batch.shape[0] / step,
              'update_branch_s': update_s, 'expected_update_period_steps': period, 'amortisation': method})
    return step

  per_device = batch.shape[0] // len(devices)
  fed = step_lib.cost_examples(per_device, config.schedule.cost_fraction) * len(devices)
  on = timed['loop_learn_on']
  on.update({'cost_fraction': config.schedule.cost_fraction, 'examples_with_jvp_per_step': fed})
  on_step = amortise(on, _update_period(config, fed))
  off, stub, bare = timed['loop_learn_off'], timed.get('loop_no_schedule_machinery'), timed['bare']
  base = stub['step_s'] if stub else off['step_s']
  train = {**{k: timed.get(k) for k in ('loop_learn_on', 'loop_learn_off', 'loop_no_schedule_machinery',
                                         'loop_jvp_every_example', 'bare')},
           # learning the schedule: the loop's step with it over the same step without the estimator/update
           'overhead_schedule_learning': on_step / base - 1.0,
           # config.schedule.learn True vs False (False still measures the costs; only the schedule is kept)
           'overhead_learn_flag': on_step / off['step_s'] - 1.0,
           # the loop's step (pmap, per-example keys, metrics) without schedule machinery over the bare step
           'overhead_loop_over_bare': base / bare['step_s'] - 1.0,
           'overhead_loop_with_learning_over_bare': on_step / bare['step_s'] - 1.0,
           'schedule_share_of_step': 1.0 - base / on_step}
  every = timed.get('loop_jvp_every_example')
  if every:
    every_step = amortise(every, _update_period(config, batch.shape[0]))
    train['overhead_schedule_learning_jvp_every_example'] = every_step / base - 1.0
  for name, r in (('', timed.get('loop_learn_on_fused')), ('_jvp_every_example', timed.get('loop_jvp_every_example_fused'))):
    if r:
      r_step = amortise(r, _update_period(config, fed if not name else batch.shape[0]))
      train[f'overhead_schedule_learning{name}_fused'] = r_step / base - 1.0
  train.update({k: timed.get(k) for k in ('loop_learn_on_fused', 'loop_jvp_every_example_fused')})
  fused_nd, stub_nd = timed.get('loop_learn_on_fused_no_dropout'), timed.get('loop_no_schedule_machinery_no_dropout')
  if fused_nd and stub_nd:
    train.update(loop_learn_on_fused_no_dropout=fused_nd, loop_no_schedule_machinery_no_dropout=stub_nd)
    train['overhead_schedule_learning_fused_no_dropout'] = (
        amortise(fused_nd, _update_period(config, fed)) / stub_nd['step_s'] - 1.0)
  grouped = timed.get('loop_learn_on_grouped')
  if grouped:
    measured = step_lib.measured_examples(per_device, config.schedule) * len(devices)
    train['loop_learn_on_grouped'] = grouped
    grouped.update({'measure_every': measure_every, 'examples_with_jvp_per_measuring_step': measured,
                    'rate_pass': 'fused' if default_fused else 'separate'})
    train['overhead_schedule_learning_grouped'] = amortise(grouped, _grouped_update_period(config, measured)) / base - 1.0
  train['overhead_spread'] = overhead_spread(timed)
  result['train'] = train
  result['input_pipeline'] = bench_pipeline(config, args, len(devices))
  result['loop_end_to_end'] = bench_loop_end_to_end(config, devices, step_on, args)
  params = jax.device_put(jax.device_get(step_lib.unreplicate(step_on.state.params)), jax.local_devices()[0])
  del variants, step_on
  result['cost_estimator'] = bench_cost_estimator(config, path, model, params, batch, args)
  result['sampling'] = bench_sampling(config, path, model, params, shape, args)
  result['compile'] = {'loop_step': {'lower_s': on['lower_s'], 'compile_s': on['compile_s']},
                       'bare_step': {'lower_s': bare['lower_s'], 'compile_s': bare['compile_s']}}
  result['memory'] = {'peak_bytes_in_use': peak, 'loop_step_memory_analysis': on['memory_analysis'],
                      'bare_step_memory_analysis': bare['memory_analysis']}
  pipeline = result['input_pipeline']['examples_per_s']
  ks = [str(int(s)) for s in args.sample_steps]
  k_max = max(ks, key=int)
  fused_ran = 'overhead_schedule_learning_fused' in train
  suffix = '_fused' if default_fused and fused_ran else ''
  train['rate_pass_of_config'] = 'fused' if suffix else 'separate'
  every_key = f'overhead_schedule_learning_jvp_every_example{suffix}'
  # the target reads the config's own cadence: grouped when it measures every m-th step
  config_key = 'overhead_schedule_learning_grouped' if grouped else f'overhead_schedule_learning{suffix}'
  train['overhead_schedule_learning_of_config'] = train[config_key]
  result['targets'] = {
      'schedule_learning_overhead_le_3pct': train[config_key] <= TARGET,
      'schedule_learning_every_example_le_25pct': (train[every_key] <= TARGET_EVERY) if every_key in train else None,
      'loop_overhead_over_bare_le_3pct': train['overhead_loop_over_bare'] <= TARGET,
      f'scan_sampler_at_least_loop_speed_at_{k_max}_steps': result['sampling'][k_max]['scan_speedup'] >= 1.0,
      'input_pipeline_faster_than_step': None if pipeline is None else pipeline >= on['amortised_examples_per_s'],
      'no_host_sync_inside_step': True,  # metrics stay on device; fetched at logging steps (modes/train.py)
  }
  return result


def _fmt(v, unit=''):
  if v is None:
    return 'n/a'
  if isinstance(v, bool):
    return 'yes' if v else 'NO'
  if abs(v) >= 100:
    return f'{v:,.0f}{unit}'
  return f'{v:.3g}{unit}'


def table(result) -> str:
  tr, ce, sa, s = result['train'], result['cost_estimator'], result['sampling'], result['settings']
  m = result['machine']
  rows = [('machine', f"{m['device_kind']} x{s['num_devices']} ({m['backend']}), {m['cpu_count']} CPUs"),
          ('batch / params / T', f"{s['batch_size']} / {s['num_params']:,} / {s['schedule_num_steps']}"),
          ('train, loop step, learn=True (ex/s)', _fmt(tr['loop_learn_on']['amortised_examples_per_s'])),
          ('train, loop step, learn=False (ex/s)', _fmt(tr['loop_learn_off']['examples_per_s'])),
          ('train, loop step, no schedule machinery (ex/s)',
           _fmt(tr['loop_no_schedule_machinery'] and tr['loop_no_schedule_machinery']['examples_per_s'])),
          ('train, bare jit step (ex/s)', _fmt(tr['bare']['examples_per_s'])),
          ('train, loop step, jvp on every example (ex/s)',
           _fmt(tr.get('loop_jvp_every_example') and tr['loop_jvp_every_example']['amortised_examples_per_s'])),
          ('update branch (s) / expected period (steps)',
           f"{_fmt(tr['loop_learn_on']['update_branch_s'])} / {_fmt(tr['loop_learn_on']['expected_update_period_steps'])}"),
          ('overhead of schedule learning (cost_fraction '
           f"{tr['loop_learn_on']['cost_fraction']:.3g}, {tr['loop_learn_on']['examples_with_jvp_per_step']} "
           'jvp/step)', _fmt(100 * tr['overhead_schedule_learning'], '%')),
          ('overhead of schedule learning, jvp on every example',
           _fmt(tr.get('overhead_schedule_learning_jvp_every_example') and
                100 * tr['overhead_schedule_learning_jvp_every_example'], '%')),
          ('overhead of schedule learning, fused rate (same fraction / every example)',
           f"{_fmt(tr.get('overhead_schedule_learning_fused') and 100 * tr['overhead_schedule_learning_fused'], '%')} / "
           f"{_fmt(tr.get('overhead_schedule_learning_jvp_every_example_fused') and 100 * tr['overhead_schedule_learning_jvp_every_example_fused'], '%')}"),
          ('overhead of schedule learning, fused rate, the network without dropout (against its own step)',
           _fmt(tr.get('overhead_schedule_learning_fused_no_dropout') and
                100 * tr['overhead_schedule_learning_fused_no_dropout'], '%')),
          ('rate pass of the config (the targets read it)', tr.get('rate_pass_of_config', 'separate')),
          ('overhead of schedule learning, measuring every m-th step (m; jvp/measuring step)',
           f"{_fmt(tr.get('overhead_schedule_learning_grouped') and 100 * tr['overhead_schedule_learning_grouped'], '%')}"
           + (f" (m={tr['loop_learn_on_grouped']['measure_every']}; "
              f"{tr['loop_learn_on_grouped']['examples_with_jvp_per_measuring_step']})"
              if tr.get('loop_learn_on_grouped') else '')),
          ('overhead of schedule learning at the config\'s cadence (target)',
           _fmt(100 * tr['overhead_schedule_learning_of_config'], '%')),
          ('overhead learn=True over learn=False', _fmt(100 * tr['overhead_learn_flag'], '%')),
          ('overhead of loop step over bare step', _fmt(100 * tr['overhead_loop_over_bare'], '%')),
          *[(f'  {name}: range over the interleaved rounds', f"{100 * v['min']:.1f} .. {100 * v['max']:.1f} %")
            for name, v in tr.get('overhead_spread', {}).items()],
          ('input pipeline next()+shard (ex/s)', _fmt(result['input_pipeline']['examples_per_s'])),
          ('loop end to end incl. pipeline (ex/s)', _fmt(result['loop_end_to_end']['examples_per_s'])),
          ('cost: jvp (us/sample)', _fmt(1e6 * ce['jvp']['s_per_sample'])),
          ('cost: central FD, 2 evals (us/sample)', _fmt(1e6 * ce['fd_central']['s_per_sample'])),
          ('cost: rel. diff of means, central / forward FD',
           f"{_fmt(ce['fd_central']['rel_diff_of_means'])} / {_fmt(ce['fd_forward']['rel_diff_of_means'])}")]
  for k in (key for key in sa if key.isdigit()):
    rows.append((f"sampling {sa['sampler']} K={k}: scan / loop (img/s)",
                 f"{_fmt(sa[k]['scan_images_per_s'])} / {_fmt(sa[k]['loop_images_per_s'])}"
                 f" (x{sa[k]['scan_speedup']:.2f})"))
  c, mem = result['compile'], result['memory']
  rows += [('compile loop step: lower + compile (s)', f"{_fmt(c['loop_step']['lower_s'])} + {_fmt(c['loop_step']['compile_s'])}"),
           ('compile bare step: lower + compile (s)', f"{_fmt(c['bare_step']['lower_s'])} + {_fmt(c['bare_step']['compile_s'])}"),
           ('peak device memory (MiB)', _fmt(mem['peak_bytes_in_use'] and mem['peak_bytes_in_use'] / 2**20))]
  ma = mem['loop_step_memory_analysis']
  if ma and 'temp_size_in_bytes' in ma:
    rows.append(('loop step temp / argument (MiB)',
                 f"{_fmt(ma['temp_size_in_bytes'] / 2**20)} / {_fmt(ma['argument_size_in_bytes'] / 2**20)}"))
  rows += [(f'target: {k}', _fmt(v)) for k, v in result['targets'].items()]
  width = max(len(r[0]) for r in rows)
  return '\n'.join(f'{a:<{width}}  {b}' for a, b in rows)


def _jsonable(tree):
  if isinstance(tree, dict):
    return {k: _jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_jsonable(v) for v in tree]
  if isinstance(tree, (np.generic,)):
    tree = tree.item()
  if isinstance(tree, float) and not math.isfinite(tree):
    return None
  return tree


def report(result: dict, table_fn, out: str):
  """Prints ``table_fn(result)`` and writes ``result`` (with the command line) as JSON to ``out``."""
  result['command'] = ' '.join(sys.argv)
  print(table_fn(result))
  files.write_json(_jsonable(result), out)
  logging.info('wrote %s', out)


def main(argv):
  del argv
  report(run(FLAGS.config, FLAGS), table, FLAGS.out)


if __name__ == '__main__':
  define_flags()
  app.run(main)
