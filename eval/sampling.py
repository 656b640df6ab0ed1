"""Sampling with any schedule for evaluation and monitoring: one compiled sampler, every local device."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from ddm import samplers


def make_draw(config, path, model):
  """Returns ``draw(params, ts, key, num_samples, data_shape) -> f32[N, *S]`` with ``config.eval.sampler``.

  Each batch of ``config.eval.batch_size`` (rounded up to a multiple of the local device count) is split
  across the local devices with ``pmap``; with several hosts each draws ``N / process_count`` samples from
  its own key and the result is gathered, so every host returns the same ``N`` samples. The starting noise
  depends on ``key`` only, so deterministic samplers give the same samples on any number of devices.
  Parameters and the schedule ``ts: f32[K+1]`` are arguments of one compiled function: new weights or a new
  schedule of the same length reuse it (one compilation per K and batch shape).
  """
  num_devices = jax.local_device_count()

  def sample_shard(params, key, ts, x_init):
    sampler = samplers.make_sampler(
        config.eval.sampler, path, model.score_fn(params, path), langevin_snr=config.eval.langevin_snr,
        langevin_steps=config.eval.langevin_steps, solver_order=config.eval.get('solver_order', 0))
    return sampler(key, ts, x_init)

  p_sample = jax.pmap(sample_shard, in_axes=(None, 0, None, 0))

  def draw(params, ts, key, num_samples: int, data_shape):
    hosts = jax.process_count()
    per_host = -(-num_samples // hosts)
    key = jax.random.fold_in(key, jax.process_index()) if hosts > 1 else key
    batch = min(config.eval.batch_size, per_host)
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
