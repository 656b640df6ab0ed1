"""Log-likelihood through the probability-flow ODE (Song et al. 2021, "Score-Based Generative Modeling
through SDEs", section D.2; score_sde's ``likelihood.py``), with a fixed-step Heun integrator.

The probability-flow ODE of the path ``x_t = alpha(t) x0 + sigma(t) eps`` (ddm/samplers.py) is

    dx/dt = F(x, t) = f(t) x - g(t)^2 s(x, t) / 2,   f = alpha' / alpha,   g^2 = 2 sigma sigma' - 2 f sigma^2,

and along its solution ``d log p_t(x_t) / dt = -div_x F(x_t, t)`` (instantaneous change of variables), so

    log p_0(x_0) = log p_1(x_1) + int_0^1 div_x F(x_t, t) dt.

Integration variable. The ODE is integrated in ``lambda = log(sigma / alpha)`` (EDM's log noise level), on
``num_steps`` uniform steps between the path's two ends, with ``dx/dlambda = F / (dlambda/dt)`` and
``dlambda/dt = sigma'/sigma - alpha'/alpha`` (both from ``Path.derivatives``): a step count means the same
thing on every path and parametrisation. The state carried is the normalised ``y = x / n(t)``,
``n = sqrt(alpha^2 data_var + sigma^2)`` (the VP-like scaling of the path), with
``dy/dlambda = (dx/dlambda) / n - y dlog n/dlambda`` and, by the change of variables ``x = n y``,

    log p_0(x_0) = log p_1(n_1 y_1) + int div_y (dy/dlambda) dlambda + d (log n_1 - log n_0).

The flow is the same; only the variable Heun sees changes. On VE ``x`` grows like ``sigma`` (80 / 0.002) and
Heun's relative error on that growth, magnified by ``|x_1|^2 / var_1 ~ |x_0|^2``, dominated (1.7e-3 nats mean
error for 1-D N(0, 1/4) at 200 steps, 1.6e-2 in 8-D); in ``y`` it is 2.3e-5 and 1.7e-4, and exact when the data
are Gaussian with variance ``data_var``. Heun's method (2nd order) carries ``y`` and the divergence integral
together (the divergence at the Euler predictor is taken with the same probes).

Divergence. Exact (one forward-mode jvp per dimension of one example) when the per-example dimension is at
most ``exact_max_dim`` (default 4: the 1-D toy targets); otherwise Hutchinson's estimator
``div F ~ mean_p e_p^T (dF/dx) e_p`` with Rademacher probes ``e_p`` drawn once per trajectory (fixed along
it, so the integral is an unbiased estimate of the exact one), ``probes`` of them, evaluated by jvps of one
``jax.linearize`` per drift evaluation.

Prior. ``log p_1`` is the density of the Gaussian that ``ddm.samplers.prior_sample`` draws from,
``N(0, (alpha(1)^2 data_var + sigma(1)^2) I)`` with ``data_var = 1`` by default, which is prior_sample's own
law ("the law of x_1 for unit-variance data"). It is exact for isotropic Gaussian data of variance
``data_var``; for other data it is the usual approximation (score_sde's prior log-density), whose error is
``O(alpha(1)^2 |data_var - Var x0| / sigma(1)^2)`` per dimension: ~1e-4 nats for unit-scale data on VE with
sigma_max = 80, ~4e-5 on the linear-beta VP path (alpha(1) = 6.7e-3). The result is ``log p_{t=0}``, the
density of the path's data end (sigma(0) = sigma_min, not 0), in nats.
"""
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddm import chunked
from ddm.paths import Path, per_example
from ddm.targets import make_target

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]  # (x: f32[B, *S], t: f32[B]) -> f32[B, *S]

EXACT_MAX_DIM = 4  # per-example dimensions up to this get the exact divergence (one jvp per dimension)
DEQUANTIZE_LEVELS = {'digits': 17}  # intensity levels of the data in [-1, 1] (8-bit images: 256)


def log_lambda_grid(path: Path, num_steps: int, dtype=jnp.float32):
  """``(ts, lambdas)``: ``num_steps + 1`` times ascending from 0 to 1, uniform in ``log(sigma / alpha)``.

  The ends are exactly 0 and 1; ``lambdas = log ratio(ts)`` is recomputed from ``ts`` so that the steps
  are consistent with the times the drift is evaluated at.
  """
  lo, hi = jnp.log(path.ratio(jnp.asarray(0.0, dtype))), jnp.log(path.ratio(jnp.asarray(1.0, dtype)))
  ts = path.t_of_ratio(jnp.exp(jnp.linspace(lo, hi, num_steps + 1, dtype=dtype))).astype(dtype)
  ts = ts.at[0].set(0.0).at[-1].set(1.0)
  return ts, jnp.log(path.ratio(ts)).astype(dtype)


def prior_log_prob(path: Path, x1, data_var: float = 1.0):
  """``log N(x1; 0, (alpha(1)^2 data_var + sigma(1)^2) I)`` per example: f32[B] (see the module docstring)."""
  one = jnp.asarray(1.0, x1.dtype)
  var = path.alpha(one)**2 * data_var + path.sigma(one)**2
  d = int(np.prod(x1.shape[1:]))
  sq = jnp.sum(jnp.reshape(x1, (x1.shape[0], -1))**2, axis=1)
  return -0.5 * sq / var - 0.5 * d * jnp.log(2.0 * jnp.pi * var)


def log_likelihood(score_fn: ScoreFn, path: Path, x0, key, num_steps: int, probes: int = 1, *,
                   exact_max_dim: int = EXACT_MAX_DIM, data_var: float = 1.0):
  """``log p_0(x0)`` in nats through the probability-flow ODE (jit-able; ``num_steps``, ``probes`` static).

  Args:
    score_fn: ``(x: f32[B, *S], t: f32[B]) -> f32[B, *S]``; examples must not interact (batch statistics
      would couple their divergences).
    path: the diffusion path. x0: f32[B, *S], data points (in their own dtype: float64 under x64).
    key: PRNG key of the Rademacher probes (unused when the divergence is exact).
    num_steps: Heun steps, uniform in ``log(sigma / alpha)`` from t = 0 to t = 1 (2 drift evaluations each).
    probes: Hutchinson probes per example, fixed along the trajectory (ignored when exact).
    exact_max_dim: exact divergence when ``prod(S) <= exact_max_dim``.
    data_var: variance assumed in the prior at t = 1 (1: the law prior_sample draws from).
  Returns:
    f32[B] (x0's dtype), ``log p_1(x_1) + int_0^1 div F dt`` per example.
  """
  x0 = jnp.asarray(x0)
  if not jnp.issubdtype(x0.dtype, jnp.floating):
    x0 = x0.astype(jnp.float32)
  dtype, batch, shape = x0.dtype, x0.shape[0], x0.shape[1:]
  dim = int(np.prod(shape))
  ts, lambdas = log_lambda_grid(path, int(num_steps), dtype)

  def log_scale(t):
    """``(log n, d log n / dlambda)`` at scalar ``t``, ``n = sqrt(alpha^2 data_var + sigma^2)``."""
    alpha, sigma, dalpha, dsigma = path.derivatives(jnp.asarray(t, dtype))
    n2 = alpha**2 * data_var + sigma**2
    dlambda_dt = dsigma / sigma - dalpha / alpha
    return 0.5 * jnp.log(n2), (alpha * dalpha * data_var + sigma * dsigma) / n2 / dlambda_dt

  def velocity(y, t):
    """``dy/dlambda`` of the normalised state ``y = x / n`` at scalar time ``t``: f32[B, *S]."""
    t_b = jnp.full((batch,), t, dtype)
    alpha, sigma, dalpha, dsigma = path.derivatives(t_b)
    f = dalpha / alpha
    g2 = 2.0 * sigma * dsigma - 2.0 * f * sigma**2
    dlambda_dt = dsigma / sigma - dalpha / alpha
    log_n, dlog_n = log_scale(t)
    x = jnp.exp(log_n) * y
    drift = per_example(f, x) * x - 0.5 * per_example(g2, x) * score_fn(x, t_b)
    return drift / per_example(dlambda_dt, x) * jnp.exp(-log_n) - dlog_n * y

  if dim <= exact_max_dim:
    basis = jnp.eye(dim, dtype=dtype).reshape((dim,) + shape)                    # unit vectors e_j

    def velocity_and_div(x, t):
      v, lin = jax.linearize(lambda y: velocity(y, t), x)
      cols = jax.vmap(lambda e: lin(jnp.broadcast_to(e, x.shape)))(basis)       # [dim, B, *S]: J e_j
      diag = jnp.reshape(cols, (dim, batch, dim))[jnp.arange(dim), :, jnp.arange(dim)]  # [dim, B]
      return v, jnp.sum(diag, axis=0)
  else:
    eps = jax.random.rademacher(key, (int(probes), batch) + shape, dtype=dtype)

    def velocity_and_div(x, t):
      v, lin = jax.linearize(lambda y: velocity(y, t), x)
      jvps = jax.vmap(lin)(eps)                                                  # [P, B, *S]: J e_p
      quad = jnp.sum(jnp.reshape(jvps * eps, (eps.shape[0], batch, -1)), axis=-1)
      return v, jnp.mean(quad, axis=0)

  def step(carry, i):
    x, integral = carry
    t, t_next = ts[i], ts[i + 1]
    h = lambdas[i + 1] - lambdas[i]
    v, div = velocity_and_div(x, t)
    v_next, div_next = velocity_and_div(x + h * v, t_next)
    return (x + 0.5 * h * (v + v_next), integral + 0.5 * h * (div + div_next)), None

  log_n0, log_n1 = log_scale(ts[0])[0], log_scale(ts[-1])[0]
  (y1, integral), _ = jax.lax.scan(step, (x0 * jnp.exp(-log_n0), jnp.zeros((batch,), dtype)),
                                   jnp.arange(int(num_steps)))
  return prior_log_prob(path, jnp.exp(log_n1) * y1, data_var) + integral + dim * (log_n1 - log_n0)


def data_likelihood(eval_cfg, data_cfg, path: Path, score_fn: ScoreFn, x, key) -> dict:
  """Mean negative log-likelihood of the data examples ``x: f32[N, *S]`` of ``data_cfg`` (``config.data``) through
  the probability-flow ODE (``eval_cfg``: ``config.eval``'s likelihood steps, Hutchinson probes and batch size):
  ``{'nll_nats'}`` on toy targets (with the exact ``E[-log p0]`` beside it), ``{'bits_per_dim'}`` on 8-bit images
  (uniformly dequantised, ``DEQUANTIZE_LEVELS``)."""
  dim = int(np.prod(x.shape[1:]))
  key_deq, key_ode = jax.random.split(key)
  levels = DEQUANTIZE_LEVELS.get(data_cfg.dataset, 256)
  if data_cfg.dataset != 'toy':  # uniform dequantisation over one intensity bin of width 2 / (levels - 1)
    x = x + jax.random.uniform(key_deq, x.shape) * (2.0 / (levels - 1))
  fn = jax.jit(lambda xb, k: log_likelihood(score_fn, path, xb, k, eval_cfg.likelihood_steps,
                                            probes=eval_cfg.hutchinson_probes))
  ll = chunked.host_map(fn, np.asarray(x), eval_cfg.batch_size, key_ode)
  if data_cfg.dataset == 'toy':
    target = make_target(data_cfg)
    return {'nll_nats': float(-ll.mean()), 'exact_nll_nats': float(-np.mean(target.log_prob_data(x)))}
  # P(bin) = p(x) (2 / (levels - 1))^d, so -log2 P / d = -log p / (d ln 2) + log2((levels - 1) / 2).
  offset = np.log2((levels - 1) / 2.0)
  return {'bits_per_dim': float(np.mean(-ll / (dim * np.log(2.0)) + offset))}
