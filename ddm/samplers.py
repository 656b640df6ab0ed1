"""Samplers that walk a schedule ``ts: f32[K+1]`` from ``t_K = 1`` (noise end) down to ``t_0`` (data end).

Conventions of the field (method.md section 9; Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Algorithm 1; NVlabs/edm ``edm_sampler``; k-diffusion ``sample_heun``):

- The data end ``t_0`` plays EDM's ``sigma = 0``: the step from ``t_1`` into ``t_0`` returns the denoiser's
  output ``D(x, t_1)`` (for the ODE samplers this *is* the Euler step into sigma = 0; for the stochastic
  ones it is their noise-free last step taken to zero noise). No sampler adds a denoising evaluation after
  its last step, and none applies a second-order correction into the data end.
- The probability-flow samplers ('euler', 'heun') integrate in EDM's variables, the noise level
  ``r = sigma / alpha`` (``ddm.paths.Path.ratio``) and the scaled state ``y = x / alpha``:

      dy/dr = (y - D(x, t)) / r = -sigma(t) s(x, t),     x = alpha(t) y,

  so a schedule supplies only its noise ladder ``r(t_i)``: the samples of a ladder are the same on every
  parametrisation of the same path (VE geometric or linear), and on VP paths the Euler step is DDIM.
- The stochastic samplers keep their published forms and step in the path's own time ``t``. For the path
  ``x_t = alpha(t) x0 + sigma(t) eps`` the forward SDE ``dx = f x dt + g dw`` has ``f = alpha'/alpha``,
  ``g^2 = 2 sigma sigma' - 2 f sigma^2``, and the reverse-time SDE is ``dx = [f x - g^2 s] dt + g dw``
  (Song et al. 2021, eq. 6).

Each registered :class:`Sampler` is an interior step ``t -> t_next > t_0``, the last step ``t_1 -> t_0`` and
its network-evaluation count (NFE) for K steps; :func:`nfe` and :func:`steps_for_nfe` convert between them.
The grid is an argument, never owned here: a new ``ts`` of the same length reuses the compiled sampler.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ddm.paths import Path, denoiser_from_score, per_example, posterior
from ddm.registry import SAMPLERS

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]  # (x: f32[B, *S], t: f32[B]) -> f32[B, *S]


class Dynamics(NamedTuple):
  """What a step needs: the path, the score and the pc corrector's settings."""
  path: Path
  score_fn: ScoreFn
  langevin_snr: float
  langevin_steps: int


class Sampler(NamedTuple):
  """A registered sampler.

  Attributes:
    step: ``(dynamics, x f32[B, *S], t, t_next, key) -> x at t_next``, scalar times with ``t_0 < t_next < t``.
    last: ``(dynamics, x, t_1, t_0, key) -> the sample``, the step into the data end.
    nfe: ``(K, langevin_steps) -> int``, network evaluations per sample for K steps.
  """
  step: Callable
  last: Callable
  nfe: Callable[[int, int], int]


def _score(dynamics: Dynamics, x, t):
  return dynamics.score_fn(x, jnp.full(x.shape[:1], t, x.dtype))


def denoise_at(path: Path, score_fn: ScoreFn, x, t):
  """Tweedie's ``D(x, t) = (x + sigma^2 s) / alpha`` at the scalar time ``t``: f32[B, *S]."""
  t_b = jnp.full(x.shape[:1], t, x.dtype)
  alpha, sigma = path.alpha(t_b), path.sigma(t_b)
  return denoiser_from_score(x, score_fn(x, t_b), per_example(alpha, x), per_example(sigma, x))


def _denoise_last(dynamics, x, t, t_next, key):
  """The step into the data end: ``D(x, t_1)``, one evaluation."""
  del t_next, key
  return denoise_at(dynamics.path, dynamics.score_fn, x, t)


# --- Probability flow, in EDM's variables --------------------------------------------------------------

def _slope(dynamics: Dynamics, x, t):
  """``dy/dr = (y - D) / r = -sigma(t) s(x, t)`` at scalar ``t`` (module docstring): f32[B, *S]."""
  return -dynamics.path.sigma(t) * _score(dynamics, x, t)


def _euler_step(dynamics, x, t, t_next, key):
  """'euler': the probability-flow ODE by Euler steps in ``(r, y)``: ``y <- y + (r' - r) dy/dr``, ``x = alpha y``
  (DDIM on VP paths; k-diffusion ``sample_euler``); the last step is ``D(x, t_1)``. NFE = K."""
  del key
  path = dynamics.path
  h = path.ratio(t_next) - path.ratio(t)
  return path.alpha(t_next) * (x / path.alpha(t) + h * _slope(dynamics, x, t))


def _heun_step(dynamics, x, t, t_next, key):
  """'heun': Karras et al. (2022) Algorithm 1 (deterministic, ``S_churn = 0``) in ``(r, y)``: an Euler predictor,
  then the trapezoid rule; the last step into the data end is a plain Euler step, ``D(x, t_1)``. NFE = 2K - 1."""
  del key
  path = dynamics.path
  alpha_next, h = path.alpha(t_next), path.ratio(t_next) - path.ratio(t)
  y, d = x / path.alpha(t), _slope(dynamics, x, t)
  x_euler = alpha_next * (y + h * d)
  return alpha_next * (y + 0.5 * h * (d + _slope(dynamics, x_euler, t_next)))


SAMPLERS.register('euler')(Sampler(_euler_step, _denoise_last, lambda k, n: int(k)))

SAMPLERS.register('heun')(Sampler(_heun_step, _denoise_last, lambda k, n: 2 * int(k) - 1))


# --- Reverse SDE, in the path's own time ---------------------------------------------------------------

def _reverse_sde(dynamics: Dynamics, x, t, t_next, key):
  """'euler_maruyama': Euler-Maruyama of the reverse SDE in ``t`` (Song et al. 2021, eq. 6; score_sde's
  ``EulerMaruyamaPredictor``): ``x <- x + (t' - t)(f x - g^2 s) + g sqrt(t - t') z``. The last step returns
  ``D(x, t_1)``, not the noise-free SDE step ``x + 2 sigma (sigma - sigma_0) s`` (which reflects ``x`` through
  ``D``). NFE = K."""
  t_b = jnp.full(x.shape[:1], t, x.dtype)
  alpha, sigma, dalpha, dsigma = dynamics.path.derivatives(t_b)
  f = dalpha / alpha
  g2 = 2.0 * sigma * dsigma - 2.0 * f * sigma**2
  drift = per_example(f, x) * x - per_example(g2, x) * dynamics.score_fn(x, t_b)
  noise_std = jnp.sqrt(jnp.maximum(g2 * (t - t_next), 0.0))
  return x + (t_next - t) * drift + per_example(noise_std, x) * jax.random.normal(key, x.shape, x.dtype)


def _langevin(dynamics: Dynamics, x, t, t_next, key):
  """``langevin_steps`` Langevin steps targeting ``p_t``: ``x <- x + h s + sqrt(2 h) z`` with
  ``h = 2 a (snr sigma(t))^2``, ``a = (alpha(t) / alpha(t_next))^2`` (DDPM's ``1 - beta_i``, 1 on VE).

  score_sde's ``LangevinCorrector`` uses ``h = 2 a (snr ||z|| / ||s||)^2`` with norms averaged over the
  batch (a collective); per example that ratio is heavy-tailed in low dimension (``||s|| -> 0`` at a mode)
  and the chain diverges on 1-D targets. ``sigma^2`` is the expected ``||z||^2 / ||s||^2`` for data much
  narrower than the noise, i.e. the annealed-Langevin step of Song & Ermon (2019), and needs no batch.
  """
  a = (dynamics.path.alpha(t) / dynamics.path.alpha(t_next))**2
  h = 2.0 * a * (dynamics.langevin_snr * dynamics.path.sigma(t))**2
  for j in range(dynamics.langevin_steps):
    z = jax.random.normal(jax.random.fold_in(key, j + 1), x.shape, x.dtype)
    x = x + h * _score(dynamics, x, t) + jnp.sqrt(2.0 * h) * z
  return x


def _pc_step(dynamics, x, t, t_next, key):
  """'pc': predictor-corrector (Song et al. 2021, Algorithm 1 of App. G; score_sde ``pc_sampler``): at each level
  the Langevin corrector at ``t``, then the Euler-Maruyama predictor to ``t'``; the last predictor returns
  ``D(x, t_1)``. NFE = K (1 + langevin_steps)."""
  x = _langevin(dynamics, x, t, t_next, key)
  return _reverse_sde(dynamics, x, t, t_next, jax.random.fold_in(key, 0))


def _pc_last(dynamics, x, t, t_next, key):
  """The corrector at ``t_1``, then the predictor into the data end: ``D``."""
  return _denoise_last(dynamics, _langevin(dynamics, x, t, t_next, key), t, t_next, key)


def _ancestral_step(dynamics, x, t, t_next, key):
  """'ancestral': DDPM's ancestral sampling on the ladder (Ho et al. 2020, Algorithm 2; Watson et al. 2021's
  ELBO-optimal schedules are optimal for it): ``x' ~ q(x' | x, x0 = D(x, t))``, the forward posterior with the
  denoised estimate in place of ``x0``. The last step is DDPM's noise-free posterior mean into zero noise,
  which is ``D(x, t_1)``. NFE = K."""
  x0_hat = denoise_at(dynamics.path, dynamics.score_fn, x, t)
  mean, var = posterior(dynamics.path, t_next, t, x, x0_hat)
  return mean + jnp.sqrt(jnp.maximum(var, 0.0)) * jax.random.normal(key, x.shape, x.dtype)


SAMPLERS.register('euler_maruyama')(Sampler(_reverse_sde, _denoise_last, lambda k, n: int(k)))

SAMPLERS.register('pc')(Sampler(_pc_step, _pc_last, lambda k, n: int(k) * (1 + int(n))))

SAMPLERS.register('ancestral')(Sampler(_ancestral_step, _denoise_last, lambda k, n: int(k)))


# --- NFE -------------------------------------------------------------------------------------------------

def nfe(name: str, num_steps: int, langevin_steps: int = 1) -> int:
  """Network evaluations per sample of ``name`` for ``num_steps`` steps (the registered sampler's count)."""
  return SAMPLERS.get(name, 'config.eval.sampler').nfe(int(num_steps), int(langevin_steps))


def steps_for_nfe(name: str, evaluations: int, langevin_steps: int = 1, setting: str = 'config.eval.nfe') -> int:
  """The step count K at which ``name`` makes exactly ``evaluations`` network evaluations per sample.

  Raises:
    ValueError naming ``setting`` and the nearest reachable NFEs when none does (Heun reaches odd counts only).
  """
  sampler = SAMPLERS.get(name, 'config.eval.sampler')
  counts = {sampler.nfe(k, int(langevin_steps)): k for k in range(1, max(int(evaluations), 1) + 2)}
  if int(evaluations) in counts:
    return counts[int(evaluations)]
  below = max([c for c in counts if c < evaluations], default=None)
  above = min(c for c in counts if c > evaluations)
  near = ', '.join(str(c) for c in (below, above) if c is not None)
  raise ValueError(f'{setting}: NFE {evaluations} is not reachable by config.eval.sampler={name!r} '
                   f'(langevin_steps={langevin_steps}); nearest reachable NFE: {near}')


# --- Walking a schedule ----------------------------------------------------------------------------------

def prior_std(path: Path) -> Array:
  """The prior's standard deviation ``sqrt(alpha(1)^2 + sigma(1)^2)`` (unit-variance data, method.md section 1)."""
  return jnp.sqrt(path.alpha(1.0)**2 + path.sigma(1.0)**2)


def prior_sample(path: Path, key, shape) -> Array:
  """``x_1 ~ N(0, (alpha(1)^2 + sigma(1)^2) I)``: the law of ``x_1`` for unit-variance data (method.md section 1).

  Args:
    path: the diffusion path. key: PRNG key. shape: ``(B, *S)``.
  Returns:
    f32[B, *S], a sample at the noise end ``t = 1``.
  """
  std = prior_std(path)
  return std * jax.random.normal(key, shape)


def _walk(sampler: Sampler, dynamics, key, ts, x_init, keep_states: bool):
  """Interior steps ``ts[i+1] -> ts[i]`` for ``i = K-1, ..., 1`` by ``lax.scan``, then ``sampler.last`` from
  ``ts[1]``; step ``i`` uses ``fold_in(key, i)``. Returns ``(sample, states f32[K-1, B, *S] at ts[K-1], ...,
  ts[1], or None)``."""
  def body(x, i):
    x = sampler.step(dynamics, x, ts[i + 1], ts[i], jax.random.fold_in(key, i))
    return x, x if keep_states else None
  x, states = jax.lax.scan(body, x_init, jnp.arange(1, ts.shape[0] - 1)[::-1])
  return sampler.last(dynamics, x, ts[1], ts[0], jax.random.fold_in(key, 0)), states


def make_sampler(name: str, path: Path, score_fn: ScoreFn, *, langevin_snr: float = 0.16,
                 langevin_steps: int = 1):
  """Builds ``sample(key, ts, x_init)``, which walks the reverse dynamics from ``ts[K]`` into the data end.

  Args:
    name: a sampler in ``SAMPLERS`` ('euler', 'heun', 'euler_maruyama', 'pc', 'ancestral'); ``config.eval.sampler``.
    path: the diffusion path. score_fn: ``(x: f32[B, *S], t: f32[B]) -> f32[B, *S]``, the score at ``(x, t)``.
    langevin_snr, langevin_steps: the pc corrector's signal-to-noise ratio and steps per level.
  Returns:
    A pure ``sample(key, ts: f32[K+1], x_init: f32[B, *S]) -> f32[B, *S]`` (data space), jit-able with no
    static arguments; ``ts`` ascends (``ts[0]`` data end, ``ts[K] = 1`` noise end) and is walked from the end
    down. Step ``i`` (from ``ts[i+1]`` to ``ts[i]``) uses the key ``fold_in(key, i)``; the step into ``ts[0]``
    returns the denoiser's output (module docstring). It makes ``nfe(name, K, langevin_steps)`` evaluations.
  """
  sampler = SAMPLERS.get(name, 'config.eval.sampler')
  dynamics = Dynamics(path, score_fn, float(langevin_snr), int(langevin_steps))

  def sample(key, ts, x_init):
    return _walk(sampler, dynamics, key, jnp.asarray(ts, x_init.dtype), x_init, keep_states=False)[0]

  return sample


def make_trajectory(name: str, path: Path, score_fn: ScoreFn, *, langevin_snr: float = 0.16,
                    langevin_steps: int = 1):
  """Builds ``trajectory(key, ts, x_init)``: the states of :func:`make_sampler`'s walk at every point of ``ts``.

  Same steps and keys as ``make_sampler(name, ...)``. Used to draw ``p_t`` from a model's own reverse process.
  Returns:
    A pure ``trajectory(key, ts: f32[K+1], x_init: f32[B, *S]) -> f32[K+1, B, *S]`` whose entry ``i`` is the
    state at ``ts[i]`` for ``i >= 1`` (entry ``K`` is ``x_init``) and entry 0 the sample (``make_sampler``'s
    output, the denoiser's at ``ts[1]``).
  """
  sampler = SAMPLERS.get(name, 'config.eval.sampler')
  dynamics = Dynamics(path, score_fn, float(langevin_snr), int(langevin_steps))

  def trajectory(key, ts, x_init):
    ts = jnp.asarray(ts, x_init.dtype)
    x0, states = _walk(sampler, dynamics, key, ts, x_init, keep_states=True)           # at ts[K-1], ..., ts[1]
    return jnp.concatenate([x0[None], states[::-1], x_init[None]])

  return trajectory
