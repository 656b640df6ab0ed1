"""Gaussian diffusion paths (method.md section 1).

Time convention, stated once for the whole project: ``t in [0, 1]``, ``t = 0`` is the data end and
``t = 1`` the Gaussian reference end, with marginals

    x_t = alpha(t) x0 + sigma(t) eps,   eps ~ N(0, I).

A path owns no time grid: schedules are arrays ``ts: f32[T+1]`` passed to whoever needs them.
``ratio(t) = sigma(t) / alpha(t)`` is EDM's noise level (equal to sigma on VE paths); baseline
schedules are defined on it so they mean the same thing on every path.
"""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from ddm.registry import PATHS

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Path:
  """A Gaussian path ``x_t = alpha(t) x0 + sigma(t) eps`` on ``t in [0, 1]`` (t = 0: data end).

  Attributes:
    name: registry name of the family ('ve' or 'vp').
    alpha_fn, sigma_fn: ``f32[...] -> f32[...]``, smooth in t (time derivatives come from jax.jvp).
    t_of_ratio_fn: inverse of ``ratio = sigma / alpha``, ``f32[...] -> f32[...]``.
  """
  name: str
  alpha_fn: Callable[[Array], Array]
  sigma_fn: Callable[[Array], Array]
  t_of_ratio_fn: Callable[[Array], Array]

  def alpha(self, t):
    return self.alpha_fn(jnp.asarray(t, float))

  def sigma(self, t):
    return self.sigma_fn(jnp.asarray(t, float))

  def ratio(self, t):
    """EDM noise level ``sigma(t) / alpha(t)``, increasing in t."""
    return self.sigma(t) / self.alpha(t)

  def t_of_ratio(self, ratio):
    """Inverse of ``ratio``; clipped to [0, 1]."""
    return jnp.clip(self.t_of_ratio_fn(jnp.asarray(ratio, float)), 0.0, 1.0)

  def derivatives(self, t):
    """``(alpha, sigma, d alpha/dt, d sigma/dt)`` at ``t``, the derivatives by forward-mode jax.jvp."""
    t = jnp.asarray(t, float)
    alpha, dalpha = jax.jvp(self.alpha_fn, (t,), (jnp.ones_like(t),))
    sigma, dsigma = jax.jvp(self.sigma_fn, (t,), (jnp.ones_like(t),))
    return alpha, sigma, dalpha, dsigma

  @property
  def ratio_min(self) -> float:
    return float(self.ratio(0.0))

  @property
  def ratio_max(self) -> float:
    return float(self.ratio(1.0))

  def marginal_sample(self, x0, t, eps):
    """``x_t = alpha(t) x0 + sigma(t) eps`` for per-example times ``t: f32[B]``, ``x0, eps: f32[B, *S]``."""
    return per_example(self.alpha(t), x0) * x0 + per_example(self.sigma(t), x0) * eps


def per_example(v, x):
  """Reshapes a per-example scalar ``f32[B]`` so it broadcasts against ``x: f32[B, *S]``."""
  v = jnp.asarray(v)
  return jnp.reshape(v, v.shape + (1,) * (jnp.ndim(x) - jnp.ndim(v)))


# Parametrisation conversions (Tweedie, method.md section 1); alpha, sigma broadcast against x.

def score_from_denoiser(x, denoised, alpha, sigma):
  """``s = (alpha D - x) / sigma^2`` (Tweedie)."""
  return (alpha * denoised - x) / sigma**2


def denoiser_from_score(x, score, alpha, sigma):
  """``D = (x + sigma^2 s) / alpha``, the inverse of :func:`score_from_denoiser`."""
  return (x + sigma**2 * score) / alpha


def score_from_eps(eps, sigma):
  """``s = -eps / sigma``."""
  return -eps / sigma


def eps_from_score(score, sigma):
  """``eps = -sigma s``."""
  return -sigma * score


def denoiser_from_eps(x, eps, alpha, sigma):
  """``D = (x - sigma eps) / alpha``."""
  return (x - sigma * eps) / alpha


# Path families. Each factory takes ``config.sde`` and returns a Path.

VE_PARAMETRISATIONS = ('geometric', 'linear')
VP_BETA_SCHEDULES = ('linear', 'cosine')
COSINE_OFFSET = 0.008  # Nichol & Dhariwal (2021), eq. 17.


def posterior(path: Path, s, t, x_t, x0):
  """``q(x_s | x_t, x0) = N(mean, var I)`` for times ``s < t`` (scalars, or f32[B] per example):
  ``(mean f32[B, *S], var)``. With ``a = alpha_t / alpha_s`` and ``v = sigma_t^2 - a^2 sigma_s^2`` (the
  transition's variance), ``mean = (a sigma_s^2 x_t + alpha_s v x0) / sigma_t^2``, ``var = v sigma_s^2 / sigma_t^2``
  (Kingma et al. 2021, VDM eq. 21-22; DDPM's posterior on VP paths)."""
  alpha_s, sigma_s, alpha_t, sigma_t = path.alpha(s), path.sigma(s), path.alpha(t), path.sigma(t)
  a = alpha_t / alpha_s
  v = sigma_t**2 - a**2 * sigma_s**2
  coef_t, coef_0 = a * sigma_s**2 / sigma_t**2, alpha_s * v / sigma_t**2
  if jnp.ndim(coef_t):
    coef_t, coef_0 = per_example(coef_t, x_t), per_example(coef_0, x_t)
  return coef_t * x_t + coef_0 * x0, v * sigma_s**2 / sigma_t**2


def ve_path(sigma_min: float, sigma_max: float, parametrisation: str = 'geometric') -> Path:
  """VE / EDM path: ``alpha = 1``; sigma geometric (score_sde) or linear (EDM's sigma(t) = t)."""
  lo, hi = float(sigma_min), float(sigma_max)
  if parametrisation == 'geometric':
    log_ratio = jnp.log(hi / lo)
    sigma_fn = lambda t: lo * jnp.exp(t * log_ratio)
    t_of_ratio = lambda r: jnp.log(r / lo) / log_ratio
  elif parametrisation == 'linear':
    sigma_fn = lambda t: lo + t * (hi - lo)
    t_of_ratio = lambda r: (r - lo) / (hi - lo)
  else:
    raise ValueError(f'config.sde.parametrisation={parametrisation!r} is not allowed for the VE path; '
                     f'allowed: {", ".join(VE_PARAMETRISATIONS)}')
  return Path('ve', jnp.ones_like, sigma_fn, t_of_ratio)


def vp_path(beta_schedule: str = 'linear', beta_min: float = 0.1, beta_max: float = 20.0,
            eps: float = 1e-3) -> Path:
  """VP path, ``alpha^2 + sigma^2 = 1``, run on internal time ``tau in [eps, 1]`` (cosine: ``[eps, 1 - eps]``).

  The offset ``eps`` keeps sigma > 0 at the data end (score_sde's sampling eps).
  linear-beta: ``log alpha(tau) = -tau^2 (beta_max - beta_min) / 4 - tau beta_min / 2`` (Song et al. 2021).
  cosine: ``alpha(tau) = cos(f(tau)) / cos(f(0))``, ``f(tau) = (tau + s) / (1 + s) pi / 2`` (Nichol & Dhariwal 2021).
  """
  eps = float(eps)
  if beta_schedule == 'linear':
    b0, db = float(beta_min), float(beta_max) - float(beta_min)
    tau = lambda t: eps + t * (1.0 - eps)
    log_alpha = lambda t: -0.25 * tau(t)**2 * db - 0.5 * tau(t) * b0

    def t_of_ratio(r):
      # Solve db tau^2 / 2 + b0 tau = log(1 + r^2) for tau.
      tau_r = (-b0 + jnp.sqrt(b0**2 + 2.0 * db * jnp.log1p(r**2))) / db
      return (tau_r - eps) / (1.0 - eps)
  elif beta_schedule == 'cosine':
    s = COSINE_OFFSET
    f = lambda tau: (tau + s) / (1.0 + s) * jnp.pi / 2
    tau = lambda t: eps + t * (1.0 - 2.0 * eps)
    log_alpha = lambda t: jnp.log(jnp.cos(f(tau(t)))) - jnp.log(jnp.cos(f(0.0)))

    def t_of_ratio(r):
      f_r = jnp.arccos(jnp.cos(f(0.0)) / jnp.sqrt(1.0 + r**2))
      return (f_r * 2.0 / jnp.pi * (1.0 + s) - s - eps) / (1.0 - 2.0 * eps)
  else:
    raise ValueError(f'config.sde.beta_schedule={beta_schedule!r} is not allowed; '
                     f'allowed: {", ".join(VP_BETA_SCHEDULES)}')
  alpha_fn = lambda t: jnp.exp(log_alpha(t))
  sigma_fn = lambda t: jnp.sqrt(-jnp.expm1(2.0 * log_alpha(t)))
  return Path('vp', alpha_fn, sigma_fn, t_of_ratio)


@PATHS.register('ve')
def _ve_from_config(sde):
  return ve_path(sde.sigma_min, sde.sigma_max, sde.parametrisation)


@PATHS.register('vp')
def _vp_from_config(sde):
  return vp_path(sde.beta_schedule, sde.beta_min, sde.beta_max, sde.eps)


def make_path(sde) -> Path:
  """Builds the path named by ``config.sde.name`` from the ``config.sde`` section."""
  return PATHS.get(sde.name, 'config.sde.name')(sde)
