"""Sampling with any schedule for evaluation and monitoring (one compiled sampler, every local device), and
the model's own samples that a post-hoc search may draw ``p_t`` from (:func:`with_model_samples`)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from ddm import samplers
from ddm.paths import per_example
from schedule import baselines
from schedule.searches.problem import Problem


def make_draw(eval_cfg, path, model):
  """Returns ``draw(params, ts, key, num_samples, data_shape) -> f32[N, *S]`` with ``eval_cfg.sampler``
  (``eval_cfg``: ``config.eval``, its Langevin and solver settings included).

  Each batch of ``eval_cfg.batch_size`` (rounded up to a multiple of the local device count) is split
  across the local devices with ``pmap``; with several hosts each draws ``N / process_count`` samples from
  its own key and the result is gathered, so every host returns the same ``N`` samples. The starting noise
  depends on ``key`` only, so deterministic samplers give the same samples on any number of devices.
  Parameters and the schedule ``ts: f32[K+1]`` are arguments of one compiled function: new weights or a new
  schedule of the same length reuse it (one compilation per K and batch shape).
  """
  num_devices = jax.local_device_count()

  def sample_shard(params, key, ts, x_init):
    sampler = samplers.make_sampler(
        eval_cfg.sampler, path, model.score(params, path), langevin_snr=eval_cfg.langevin_snr,
        langevin_steps=eval_cfg.langevin_steps, solver_order=eval_cfg.get('solver_order', 0))
    return sampler(key, ts, x_init)

  p_sample = jax.pmap(sample_shard, in_axes=(None, 0, None, 0))

  def draw(params, ts, key, num_samples: int, data_shape):
    hosts = jax.process_count()
    per_host = -(-num_samples // hosts)
    key = jax.random.fold_in(key, jax.process_index()) if hosts > 1 else key
    batch = min(eval_cfg.batch_size, per_host)
    batch = -(-batch // num_devices) * num_devices
    ts = jnp.asarray(ts, jnp.float32)
    out = []
    for i in range(-(-per_host // batch)):
      key_prior, key_sample = jax.random.split(jax.random.fold_in(key, i))
      x_init = samplers.prior_sample(path, key_prior, (batch,) + tuple(data_shape))
      x_init = x_init.reshape((num_devices, batch // num_devices) + x_init.shape[1:])
      x = p_sample(params, jax.random.split(key_sample, num_devices), ts, x_init)
      out.append(np.asarray(x).reshape((batch,) + x.shape[2:]))
    x = np.concatenate(out)[:per_host]
    if hosts > 1:
      x = np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return x[:num_samples]

  return draw


MODEL_POOL_STEPS = 256      # Steps of the fine (log-linear) schedule the model's reverse process is run on.
MODEL_POOL = 32768          # Trajectories kept: every grid time reuses them, so their count sets the Monte
                            # Carlo error of the whole fit (4096 put a 10-step Cantor ladder 9% off, 32768 1%).
MODEL_POOL_BYTES = 2**29    # Memory bound of the stored trajectories (the pool shrinks for large images)...
MODEL_POOL_MIN = 64         # ...but holds at least this many trajectories.


def with_model_samples(eval_cfg, problem: Problem, key, pool_size: int = MODEL_POOL) -> Problem:
  """``problem`` with ``sample_x0`` and ``sample_pt`` drawn from the model's own reverse process
  (``config.fit.samples='model'``).

  ``pool_size`` trajectories of ``eval_cfg.sampler`` (``config.eval``, its Langevin settings included) are run from
  the prior on a ``MODEL_POOL_STEPS``-step log-linear schedule and every state is kept
  (:func:`ddm.samplers.make_trajectory`). A draw of ``p_t`` takes a random trajectory's state at the first fine
  point ``t_j >= t``, ``j >= 1``, and moves it to ``t`` with one more interior step of the same sampler (the
  identity when ``t = t_j``; at ``t_0`` a step from ``t_1``, so that ``p_{t_0}`` keeps its noise); ``sample_x0`` is
  the trajectory's end (the sampler's output, whose last step is the denoiser). The pool shrinks so the states
  fit ``MODEL_POOL_BYTES``.
  """
  path, score_fn, shape = problem.path, problem.score_fn, tuple(problem.data_shape)
  ts = baselines.make_baseline('log_linear', path, MODEL_POOL_STEPS)
  per_trajectory = (MODEL_POOL_STEPS + 1) * int(np.prod(shape)) * 4
  n = int(min(pool_size, max(MODEL_POOL_MIN, MODEL_POOL_BYTES // per_trajectory)))
  trajectory = jax.jit(samplers.make_trajectory(eval_cfg.sampler, path, score_fn, langevin_snr=eval_cfg.langevin_snr,
                                                langevin_steps=eval_cfg.langevin_steps))
  key_prior, key_walk = jax.random.split(key)
  batch, chunks = int(eval_cfg.batch_size), []
  for start in range(0, n, batch):
    m = min(batch, n - start)
    x1 = samplers.prior_sample(path, jax.random.fold_in(key_prior, start), (m,) + shape)
    chunks.append(trajectory(jax.random.fold_in(key_walk, start), ts, x1))
  states = jnp.concatenate(chunks, axis=1)                                   # [MODEL_POOL_STEPS + 1, n, *S]
  x0 = states[0]                                                             # the samples (denoised last step)
  step_fn = samplers.SAMPLERS.get(eval_cfg.sampler, 'config.eval.sampler').step
  dynamics = samplers.Dynamics(path, score_fn, float(eval_cfg.langevin_snr), int(eval_cfg.langevin_steps))

  def sample_x0(key, m):
    return x0[jax.random.randint(key, (m,), 0, n)]

  def sample_pt(key, t):
    t = jnp.asarray(t, states.dtype)
    key_i, key_step = jax.random.split(key)
    j = jnp.clip(jnp.searchsorted(ts, t, side='left'), 1, MODEL_POOL_STEPS)      # states[0] is the sample
    x = states[j, jax.random.randint(key_i, t.shape, 0, n)]
    move = lambda xi, tj, ti, ki: step_fn(dynamics, xi[None], tj, ti, ki)[0]
    moved = jax.vmap(move)(x, ts[j], t, jax.random.split(key_step, t.shape[0]))
    return jnp.where(per_example(ts[j] == t, x), x, moved)

  return problem._replace(sample_x0=sample_x0, sample_pt=sample_pt)
