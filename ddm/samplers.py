"""Samplers that walk a schedule ``ts: f32[K+1]`` from ``t_K = 1`` (noise end) down to ``t_0`` (data end).

For the path ``x_t = alpha(t) x0 + sigma(t) eps`` (ddm/paths.py) the forward SDE ``dx = f x dt + g dw`` has

    f(t) = alpha' / alpha,   g(t)^2 = 2 sigma sigma' - 2 f sigma^2

(matching ``d sigma^2/dt = 2 f sigma^2 + g^2``), and with the score ``s = grad_x log p_t``
(Song et al. 2021, "Score-Based Generative Modeling through SDEs", eqs. 6 and 13):

    probability-flow ODE:  dx/dt = f x - g^2 s / 2,
    reverse-time SDE:      dx = [f x - g^2 s] dt + g dw,   dt < 0 (time runs from 1 down to 0).

The drift is written once (:func:`_drift`); each registered sampler is one step ``t -> t_next < t``.
The grid is an argument, never owned here: a new ``ts`` of the same length reuses the compiled sampler.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ddm.paths import Path, denoiser_from_score, per_example, posterior
from ddm.registry import SAMPLERS

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]  # (x: f32[B, *S], t: f32[B]) -> f32[B, *S]


class _Dynamics(NamedTuple):
  """What a step needs: the path, the score and the pc corrector's settings."""
  path: Path
  score_fn: ScoreFn
  langevin_snr: float
  langevin_steps: int


def _drift(dyn: _Dynamics, x, t, ode: bool):
  """``f x - w g^2 s`` with ``w = 1/2`` (probability-flow ODE) or ``w = 1`` (reverse SDE) at scalar ``t``.

  Returns:
    (drift f32[B, *S], g^2 f32[B] per example); dx/dt in forward time, so a step to an
    earlier time multiplies it by the negative ``t_next - t``.
  """
  t_b = jnp.full(x.shape[:1], t, x.dtype)
  alpha, sigma, dalpha, dsigma = dyn.path.derivatives(t_b)
  f = dalpha / alpha
  g2 = 2.0 * sigma * dsigma - 2.0 * f * sigma**2
  score = dyn.score_fn(x, t_b)
  weight = 0.5 if ode else 1.0
  return per_example(f, x) * x - weight * per_example(g2, x) * score, g2


@SAMPLERS.register('euler')
def _euler_step(dyn, x, t, t_next, key, is_last):
  """Probability-flow ODE, Euler: ``x <- x + (t_next - t) (f x - g^2 s / 2)``."""
  del key, is_last
  return x + (t_next - t) * _drift(dyn, x, t, ode=True)[0]


@SAMPLERS.register('heun')
def _heun_step(dyn, x, t, t_next, key, is_last):
  """Probability-flow ODE, Heun's 2nd order (Karras et al. 2022, Algorithm 1), corrected on every step
  (``t_0`` has sigma > 0 on every path, so there is no zero-sigma last step)."""
  del key, is_last
  h = t_next - t
  d = _drift(dyn, x, t, ode=True)[0]
  x_euler = x + h * d
  return x + h * 0.5 * (d + _drift(dyn, x_euler, t_next, ode=True)[0])


@SAMPLERS.register('euler_maruyama')
def _euler_maruyama(dyn, x, t, t_next, key, is_last):
  """Reverse SDE, Euler-Maruyama: ``x <- x + (t_next - t) (f x - g^2 s) + g sqrt(t - t_next) z``, ``z ~ N(0, I)``;
  no noise on the final step."""
  drift, g2 = _drift(dyn, x, t, ode=False)
  noise_std = jnp.sqrt(jnp.maximum(g2 * (t - t_next), 0.0)) * jnp.where(is_last, 0.0, 1.0)
  return x + (t_next - t) * drift + per_example(noise_std, x) * jax.random.normal(key, x.shape, x.dtype)


@SAMPLERS.register('pc')
def _pc_step(dyn, x, t, t_next, key, is_last):
  """Predictor-corrector (Song et al. 2021, App. G): an Euler-Maruyama predictor to ``t_next``, then
  ``langevin_steps`` Langevin steps targeting ``p_{t_next}``: ``x <- x + h s + sqrt(2 h) z`` with
  ``h = 2 a snr^2 sigma(t_next)^2`` and ``a = (alpha(t) / alpha(t_next))^2`` (DDPM's ``1 - beta_i``, 1 on VE).

  score_sde's ``LangevinCorrector`` uses ``h = 2 a (snr ||z|| / ||s||)^2`` with norms averaged over the
  batch (a collective); per example that ratio is heavy-tailed in low dimension (``||s|| -> 0`` at a mode)
  and the chain diverges on 1-D targets. ``sigma^2`` is the expected ``||z||^2 / ||s||^2`` for data much
  narrower than the noise, i.e. the annealed-Langevin step of Song & Ermon (2019), and needs no batch.
  """
  x = _euler_maruyama(dyn, x, t, t_next, jax.random.fold_in(key, 0), is_last)
  a_i = (dyn.path.alpha(t) / dyn.path.alpha(t_next))**2
  t_b = jnp.full(x.shape[:1], t_next, x.dtype)
  step = 2.0 * a_i * (dyn.langevin_snr * dyn.path.sigma(t_next))**2
  for j in range(dyn.langevin_steps):
    score = dyn.score_fn(x, t_b)
    z = jax.random.normal(jax.random.fold_in(key, j + 1), x.shape, x.dtype)
    x = x + step * score + jnp.sqrt(2.0 * step) * z
  return x


@SAMPLERS.register('ancestral')
def _ancestral_step(dyn, x, t, t_next, key, is_last):
  """Ancestral sampling (DDPM; Watson et al.'s ELBO-optimal schedules are optimal for this sampler): draw
  ``x_next ~ q(x_next | x, x0 = D(x, t))``, the forward posterior with the denoised estimate in place of
  ``x0``; no noise on the final step (its mean is the estimate at ``t_0``)."""
  x0_hat = denoise_at(dyn.path, dyn.score_fn, x, t)
  mean, var = posterior(dyn.path, t_next, t, x, x0_hat)
  std = jnp.sqrt(jnp.maximum(var, 0.0)) * jnp.where(is_last, 0.0, 1.0)
  return mean + std * jax.random.normal(key, x.shape, x.dtype)


def prior_sample(path: Path, key, shape) -> Array:
  """``x_1 ~ N(0, (alpha(1)^2 + sigma(1)^2) I)``: the law of ``x_1`` for unit-variance data (method.md section 1).

  Args:
    path: the diffusion path. key: PRNG key. shape: ``(B, *S)``.
  Returns:
    f32[B, *S], a sample at the noise end ``t = 1``.
  """
  std = jnp.sqrt(path.alpha(1.0)**2 + path.sigma(1.0)**2)
  return std * jax.random.normal(key, shape)


def _walk(step_fn, dyn, key, ts, x_init, keep_states: bool):
  """``lax.scan`` of ``step_fn`` from ``ts[K]`` down to ``ts[0]``; step ``i`` uses ``fold_in(key, i)``.
  Returns ``(x at ts[0], states f32[K, B, *S] at ts[K-1], ..., ts[0] or None)``."""
  def body(x, i):
    x = step_fn(dyn, x, ts[i + 1], ts[i], jax.random.fold_in(key, i), i == 0)
    return x, x if keep_states else None
  return jax.lax.scan(body, x_init, jnp.arange(ts.shape[0] - 1)[::-1])


def denoise_at(path: Path, score_fn: ScoreFn, x, t0):
  """Tweedie's ``D(x, t_0) = (x + sigma^2 s) / alpha`` at the scalar time ``t0``: f32[B, *S]."""
  t_b = jnp.full(x.shape[:1], t0, x.dtype)
  alpha, sigma = path.alpha(t_b), path.sigma(t_b)
  return denoiser_from_score(x, score_fn(x, t_b), per_example(alpha, x), per_example(sigma, x))


def make_sampler(name: str, path: Path, score_fn: ScoreFn, *, langevin_snr: float = 0.16,
                 langevin_steps: int = 1, denoise_final: bool = True):
  """Builds ``sample(key, ts, x_init)``, which integrates the reverse dynamics from ``ts[K]`` down to ``ts[0]``.

  Args:
    name: a sampler in ``SAMPLERS`` ('euler', 'heun', 'euler_maruyama', 'pc'); ``config.eval.sampler``.
    path: the diffusion path. score_fn: ``(x: f32[B, *S], t: f32[B]) -> f32[B, *S]``, the score at ``(x, t)``.
    langevin_snr, langevin_steps: the pc corrector's signal-to-noise ratio and steps per level.
    denoise_final: return the Tweedie denoiser ``D(x, t_0) = (x + sigma^2 s) / alpha`` after the last step.
  Returns:
    A pure ``sample(key, ts: f32[K+1], x_init: f32[B, *S]) -> f32[B, *S]``, jit-able with no static
    arguments; ``ts`` ascends (``ts[0]`` data end, ``ts[K] = 1`` noise end) and is walked from the end down.
    Step ``i`` (from ``ts[i+1]`` to ``ts[i]``) uses the key ``fold_in(key, i)``.
  """
  step_fn = SAMPLERS.get(name, 'config.eval.sampler')
  dyn = _Dynamics(path, score_fn, float(langevin_snr), int(langevin_steps))

  def sample(key, ts, x_init):
    ts = jnp.asarray(ts, x_init.dtype)
    x, _ = _walk(step_fn, dyn, key, ts, x_init, keep_states=False)
    return denoise_at(path, score_fn, x, ts[0]) if denoise_final else x

  return sample


def make_trajectory(name: str, path: Path, score_fn: ScoreFn, *, langevin_snr: float = 0.16,
                    langevin_steps: int = 1):
  """Builds ``trajectory(key, ts, x_init)``: the states of :func:`make_sampler`'s walk at every point of ``ts``.

  Same steps and keys as ``make_sampler(name, ...)`` (step ``i`` from ``ts[i+1]`` to ``ts[i]`` uses
  ``fold_in(key, i)``), without the final denoising. Used to draw ``p_t`` from a model's own reverse process.
  Returns:
    A pure ``trajectory(key, ts: f32[K+1], x_init: f32[B, *S]) -> f32[K+1, B, *S]`` whose entry ``i`` is the
    state at ``ts[i]`` (entry ``K`` is ``x_init``).
  """
  step_fn = SAMPLERS.get(name, 'config.eval.sampler')
  dyn = _Dynamics(path, score_fn, float(langevin_snr), int(langevin_steps))

  def trajectory(key, ts, x_init):
    ts = jnp.asarray(ts, x_init.dtype)
    _, states = _walk(step_fn, dyn, key, ts, x_init, keep_states=True)           # at ts[K-1], ..., ts[0]
    return jnp.concatenate([states[::-1], x_init[None]])

  return trajectory
