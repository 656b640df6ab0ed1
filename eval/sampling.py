"""Sampling with any schedule for evaluation and monitoring: one compiled sampler, reused."""
import jax
import jax.numpy as jnp
import numpy as np

from ddm import samplers


def make_draw(config, path, model):
  """Returns ``draw(params, ts, key, num_samples, data_shape) -> f32[N, *S]`` with ``config.eval.sampler``.

  Parameters and the schedule ``ts: f32[K+1]`` are arguments of one jitted function, so new weights or a
  new schedule of the same length reuse the compiled sampler (one compilation per K and batch shape).
  """
  @jax.jit
  def sample_batch(params, key, ts, x_init):
    sampler = samplers.make_sampler(
        config.eval.sampler, path, model.score_fn(params, path), langevin_snr=config.eval.langevin_snr,
        langevin_steps=config.eval.langevin_steps, denoise_final=config.eval.denoise_final)
    return sampler(key, ts, x_init)

  def draw(params, ts, key, num_samples: int, data_shape):
    out, batch = [], min(config.eval.batch_size, num_samples)
    for i in range(-(-num_samples // batch)):
      key_prior, key_sample = jax.random.split(jax.random.fold_in(key, i))
      x_init = samplers.prior_sample(path, key_prior, (batch,) + tuple(data_shape))
      out.append(np.asarray(sample_batch(params, key_sample, jnp.asarray(ts, jnp.float32), x_init)))
    return np.concatenate(out)[:num_samples]

  return draw
