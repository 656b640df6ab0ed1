"""Toy targets with exact scores: isotropic Gaussian mixtures (method.md section 7).

Under any Gaussian path a mixture stays a mixture: component k of ``p_t`` is
``N(alpha(t) m_k, (alpha(t)^2 s_k^2 + sigma(t)^2) I_d)``, so the score ``s(x, t)``, its time derivative
and ``log p_t(x)`` are closed-form. Every other estimator is tested against these.
"""
import dataclasses
import itertools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddm.paths import Path, per_example
from ddm.registry import TARGETS


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """``p_0 = sum_k w_k N(m_k, s_k^2 I_d)``.

  Attributes:
    means: f32[K, d]. stds: f32[K] (> 0). weights: f32[K] (sum to 1).
  """
  means: np.ndarray
  stds: np.ndarray
  weights: np.ndarray

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  def sample_p0(self, key, n: int):
    """Draws ``f32[n, d]`` from the data distribution ``p_0``."""
    key_k, key_x = jax.random.split(key)
    k = jax.random.choice(key_k, len(self.weights), (n,), p=jnp.asarray(self.weights))
    eps = jax.random.normal(key_x, (n, self.dim))
    return jnp.asarray(self.means)[k] + jnp.asarray(self.stds)[k][:, None] * eps

  def sample_pt(self, key, path: Path, t):
    """Draws ``x_t ~ p_t`` for per-example times ``t: f32[n]``; returns ``f32[n, d]``."""
    t = jnp.asarray(t, float)
    key0, key_eps = jax.random.split(key)
    x0 = self.sample_p0(key0, t.shape[0])
    return path.marginal_sample(x0, t, jax.random.normal(key_eps, x0.shape))

  def _log_joint(self, x, alpha, sigma):
    """``log w_k + log N(x; alpha m_k, v_k I)`` per component: f32[B, K]; alpha, sigma: f32[B]."""
    var = alpha[:, None]**2 * jnp.asarray(self.stds)**2 + sigma[:, None]**2            # [B, K]
    diff = x[:, None, :] - alpha[:, None, None] * jnp.asarray(self.means)             # [B, K, d]
    sq = jnp.sum(diff**2, axis=-1)
    return (jnp.log(jnp.asarray(self.weights)) - 0.5 * sq / var
            - 0.5 * self.dim * jnp.log(2 * jnp.pi * var))

  def _coefficients(self, x, path, t):
    t = jnp.broadcast_to(jnp.asarray(t, float), x.shape[:1])
    return path.alpha(t), path.sigma(t)

  def log_prob(self, x, t, path: Path):
    """``log p_t(x)``: f32[B] for ``x: f32[B, d]`` and ``t`` scalar or f32[B]."""
    alpha, sigma = self._coefficients(x, path, t)
    return jax.nn.logsumexp(self._log_joint(x, alpha, sigma), axis=1)

  def log_prob_data(self, x):
    """``log p_0(x)`` of the data distribution itself (no noise): f32[B]."""
    ones = jnp.ones(x.shape[:1])
    return jax.nn.logsumexp(self._log_joint(x, ones, 0.0 * ones), axis=1)

  def score(self, x, t, path: Path):
    """``s(x, t) = sum_k r_k(x) (alpha m_k - x) / v_k``: f32[B, d], exact (method.md section 7)."""
    alpha, sigma = self._coefficients(x, path, t)
    resp = jax.nn.softmax(self._log_joint(x, alpha, sigma), axis=1)                  # [B, K]
    var = alpha[:, None]**2 * jnp.asarray(self.stds)**2 + sigma[:, None]**2            # [B, K]
    diff = alpha[:, None, None] * jnp.asarray(self.means) - x[:, None, :]
    return jnp.sum((resp / var)[:, :, None] * diff, axis=1)

  def score_fn(self, path: Path):
    """The exact score as a ``score_fn(x: f32[B, d], t: f32[B]) -> f32[B, d]``."""
    return lambda x, t: self.score(x, t, path)

  def denoiser(self, x, t, path: Path):
    """``E[x0 | x_t = x]`` by Tweedie: f32[B, d]."""
    alpha, sigma = self._coefficients(x, path, t)
    s = self.score(x, t, path)
    return (x + per_example(sigma, x)**2 * s) / per_example(alpha, x)


def gaussian_mixture(means: Sequence, stds: Sequence[float], weights: Sequence[float]) -> GaussianMixture:
  """Checks and builds a mixture; 1-D means may be given as a flat list."""
  means = np.asarray(means, np.float32)
  if means.ndim == 1:
    means = means[:, None]
  stds, weights = np.asarray(stds, np.float32), np.asarray(weights, np.float32)
  if not (len(means) == len(stds) == len(weights)) or len(means) == 0:
    raise ValueError(f'config.data.means, config.data.stds and config.data.weights must be non-empty lists of '
                     f'the same length; got lengths {len(means)}, {len(stds)}, {len(weights)}')
  if np.any(stds <= 0):
    raise ValueError(f'config.data.stds must all be > 0; got {stds.tolist()}')
  if np.any(weights <= 0) or abs(float(weights.sum()) - 1.0) > 1e-5:
    raise ValueError(f'config.data.weights must be positive and sum to 1; got {weights.tolist()} '
                     f'(sum {float(weights.sum()):.6g})')
  return GaussianMixture(means, stds, weights)


def cantor_means(depth: int) -> np.ndarray:
  """Points ``sum_{k=1..K} 2 b_k 3^-k`` of the depth-K middle-thirds Cantor set: f32[2^K]."""
  bits = np.array(list(itertools.product((0, 1), repeat=depth)), np.float64)
  return (bits @ (2.0 * 3.0**-np.arange(1, depth + 1))).astype(np.float32)


@TARGETS.register('gaussian')
def _gaussian(data) -> GaussianMixture:
  """``N(0, c^2 I_d)`` with ``c = config.data.std``, ``d = config.data.dim``."""
  return gaussian_mixture(np.zeros((1, data.dim)), [data.std], [1.0])


@TARGETS.register('bimodal')
def _bimodal(data) -> GaussianMixture:
  """``(N(-offset, std^2) + N(offset, std^2)) / 2``."""
  return gaussian_mixture([-data.offset, data.offset], [data.std, data.std], [0.5, 0.5])


@TARGETS.register('cantor')
def _cantor(data) -> GaussianMixture:
  """Depth-K Cantor set convolved with ``N(0, tau^2)``: a ``2^K``-component equal-weight mixture."""
  if data.cantor_depth < 1:
    raise ValueError(f'config.data.cantor_depth must be >= 1; got {data.cantor_depth}')
  n = 2**data.cantor_depth
  return gaussian_mixture(cantor_means(data.cantor_depth), [data.cantor_tau] * n, [1.0 / n] * n)


@TARGETS.register('gmm')
def _gmm(data) -> GaussianMixture:
  """A 1-D mixture from ``config.data.means``, ``stds`` and ``weights``."""
  return gaussian_mixture(list(data.means), list(data.stds), list(data.weights))


def make_target(data) -> GaussianMixture:
  """Builds the toy target named by ``config.data.target``."""
  return TARGETS.get(data.target, 'config.data.target')(data)
