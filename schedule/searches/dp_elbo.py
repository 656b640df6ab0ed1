"""Watson et al. (2021), "Learning to Efficiently Sample from Diffusion Probabilistic Models": the K-step
sub-path of a fine grid with the least negative ELBO, found by an exact dynamic programme, for every K at
once (method.md section 8). A baseline schedule search: ``config.fit.method = 'dp_elbo'``.

The model of a K-step sub-path ``0 = t_0 < t_1 < ... < t_K = 1`` of the path ``z_t = alpha_t x0 + sigma_t eps``
(ddm/paths.py) is the Gaussian chain

    p(z_1) = N(0, (alpha_1^2 + sigma_1^2) I)                 (the prior of ``ddm.samplers.prior_sample``),
    p(z_s | z_t) = q(z_s | z_t, x0 = D(z_t, t))              (each step, s = t_{k-1}, t = t_k),
    p(x0 | z_{t_0}) = N(x0; z_{t_0} / alpha_0, (sigma_0 / alpha_0)^2 I)   (reconstruction),

with ``D`` the denoiser ``E[x0 | z_t]`` (``problem.denoise_fn``; on VP paths too it predicts x0 itself, the
alpha scaling is in the posterior mean below, ``ddm.paths.posterior``). Its negative ELBO decomposes over the steps:

    NELBO = E[-log p(x0 | z_0)] + sum_{k=1..K} C(t_{k-1}, t_k) + E[KL(q(z_1 | x0) || p(z_1))].

Per-step term. For s < t, ``q(z_t | z_s) = N(a z_s, v I)`` with ``a = alpha_t / alpha_s`` and
``v = sigma_t^2 - a^2 sigma_s^2``; the posterior is

    q(z_s | z_t, x0) = N(mu(z_t, x0), var I),   var = v sigma_s^2 / sigma_t^2,
    mu = (a sigma_s^2 / sigma_t^2) z_t + (alpha_s v / sigma_t^2) x0          (linear in x0).

Two Gaussians of equal covariance ``var I`` have ``KL = ||mean difference||^2 / (2 var)``, and here the
means differ by ``(alpha_s v / sigma_t^2) (x0 - D)``, so

    C(s, t) = alpha_s^2 v / (2 sigma_s^2 sigma_t^2) E||x0 - D(z_t, t)||^2
            = (SNR(s) - SNR(t)) / 2 * E||x0 - D(z_t, t)||^2,     SNR = alpha^2 / sigma^2 = 1 / ratio^2

(the coefficient simplifies exactly; it is Kingma et al.'s (2021) VDM form). The expectation depends on
``t`` alone: one batch of denoiser evaluations at each grid time fills the whole column ``C(., t)``.

Reconstruction and prior (both depend only on the fixed ends t = 0 and t = 1, so they shift every path's
NELBO by the same constant and do not move the DP's choice):
- ``E[-log p(x0 | z_0)] = d/2 log(2 pi e sigma_0^2 / alpha_0^2)``: the decoder undoes the data end's scaling
  and keeps its noise. With it, and an exact denoiser, the NELBO tends as K grows (Gaussian steps become
  exact) to ``-E[log p_{z_0/alpha_0}] + KL(q(z_1) || p(z_1))``: the continuous NLL of the data blurred by the
  data end's noise ``sigma_0 / alpha_0`` (0.002 on the EDM path), plus the prior mismatch (tiny) — within a
  few 1e-4 nats of the data's own ``E[-log p_0]`` for targets much wider than ``sigma_0``.
- ``E[KL(q(z_1 | x0) || p(z_1))] = 1/2 E[sum_d (sigma_1^2 + alpha_1^2 x0^2) / P - 1 - log(sigma_1^2 / P)]``,
  ``P = alpha_1^2 + sigma_1^2``, closed-form given the data batch.

The data are continuous (no dequantisation): the NELBO is a bound on a continuous negative log-density,
in nats per example (``neg_elbo``) and nats / (d ln 2) (``neg_elbo_bits_per_dim``, without the 8-bit bin
offset that ``eval.likelihood.data_likelihood`` adds for dequantised images).

The grid has ``N + 1`` times, ``N = config.fit.dp_elbo.grid`` (so that every ``K <= dp_grid`` that the config
validation allows is a sub-path), uniform in ``u = log(sigma / alpha)`` with ``t = 0`` and ``t = 1`` exact.
Why that spacing: the coefficient is a function of ``SNR = exp(-2u)`` alone and the denoiser's error changes
on the scale of ``u`` (it goes from ``~sigma^2`` per dimension at the data end to the data variance at
the noise end over many decades of sigma), so a grid uniform in ``u`` resolves both ends equally; it is
also the same sigma grid whatever the path's time parametrisation (EDM's linear ``sigma(t)`` would put
all but a few points of a uniform-in-t grid above sigma = 0.1).
"""
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddm import chunked, samplers
from ddm.paths import Path
from schedule.schedules import Ladders
from schedule.searches.problem import Result

CHUNK_ELEMENTS = 2**18  # denoiser batches hold at least this many numbers (1-D targets: 262144 examples a call)


def dp_grid(path: Path, num_intervals: int) -> np.ndarray:
  """``N + 1`` times (f64[N+1], ascending, exactly 0 and 1 at the ends) uniform in ``log(sigma / alpha)``."""
  log_r = np.linspace(np.log(path.ratio_min), np.log(path.ratio_max), int(num_intervals) + 1)
  t = np.asarray(path.t_of_ratio(np.exp(log_r)), np.float64)
  t[0], t[-1] = 0.0, 1.0
  t = np.maximum.accumulate(t)
  if np.any(np.diff(t) <= 0):
    raise ValueError(f'config.fit.dp_elbo.grid={num_intervals} is too fine for float32 times on this path '
                     f'(two grid times coincide); use a coarser grid')
  return t


def snr(path: Path, t) -> np.ndarray:
  """``SNR(t) = alpha(t)^2 / sigma(t)^2 = ratio(t)^-2``, in float64: f64[...]."""
  return np.asarray(path.ratio(np.asarray(t, np.float32)), np.float64)**-2


def step_coefficient(snr_s, snr_t):
  """``(SNR(s) - SNR(t)) / 2``: ``C(s, t)`` per unit of ``E||x0 - D(z_t, t)||^2`` (module docstring).

  Equals ``alpha_s^2 (sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2) / (2 sigma_s^2 sigma_t^2)``. Broadcasts.
  """
  return 0.5 * (snr_s - snr_t)


def cost_matrix(snrs, mse) -> np.ndarray:
  """``C[i, j] = C(t_i, t_j)`` for ``i < j`` and ``+inf`` elsewhere: f64[N+1, N+1].

  Args:
    snrs: f[N+1] ``SNR(t_j)`` on the ascending grid. mse: f[N+1] ``E||x0 - D(z_{t_j}, t_j)||^2``.
  """
  snrs, mse = np.asarray(snrs, np.float64), np.asarray(mse, np.float64)
  c = step_coefficient(snrs[:, None], snrs[None, :]) * mse[None, :]
  n = len(snrs)
  return np.where(np.arange(n)[:, None] < np.arange(n)[None, :], c, np.inf)


def dynamic_programme(cost, max_steps: int):
  """Least-cost paths from grid point 0 to grid point N with exactly K steps, for every K <= max_steps.

  ``D_1[j] = C[0, j]``, ``D_k[j] = min_{i<j} D_{k-1}[i] + C[i, j]``; the K-step optimum is ``D_K[N]`` and its
  path is read back through the argmins. O(max_steps N^2) time, vectorised over (i, j) per k.

  Args:
    cost: f[N+1, N+1], ``cost[i, j]`` the cost of a step between grid points i < j (+inf for i >= j).
    max_steps: largest K (<= N).
  Returns:
    ``(totals f64[max_steps + 1], paths)``: ``totals[K] = D_K[N]`` (``totals[0] = inf``) and
    ``paths(K) -> int[K+1]`` the grid indices of an optimal K-step path (0 first, N last).
  """
  cost = np.asarray(cost, np.float64)
  n = cost.shape[0] - 1
  if not 1 <= max_steps <= n:
    raise ValueError(f'the dynamic programme needs 1 <= K <= {n} (grid intervals); got K = {max_steps}')
  best = cost[0].copy()                                                   # D_1
  back = np.zeros((max_steps + 1, n + 1), np.int64)
  totals = np.full(max_steps + 1, np.inf)
  totals[1] = best[n]
  for k in range(2, max_steps + 1):
    candidates = best[:, None] + cost                                     # [i, j]
    back[k] = np.argmin(candidates, axis=0)
    best = candidates[back[k], np.arange(n + 1)]
    totals[k] = best[n]

  def paths(num_steps: int) -> np.ndarray:
    index = [n]
    for k in range(num_steps, 1, -1):
      index.append(int(back[k, index[-1]]))
    index.append(0)
    return np.asarray(index[::-1])

  return totals, paths


def path_cost(cost, index) -> float:
  """Sum of the chosen terms ``sum_k cost[index[k-1], index[k]]``."""
  index = np.asarray(index)
  return float(np.sum(np.asarray(cost)[index[:-1], index[1:]]))


def denoiser_errors(denoise_fn: Callable, path: Path, grid, x0, eps, chunk: int = 4096) -> np.ndarray:
  """``||x0_b - D(z_t, t)||^2`` for every grid time and example (sum over dimensions): f64[N+1, B].

  ``z_t = alpha_t x0_b + sigma_t eps_b`` with the same ``x0``, ``eps`` (f32[B, *S]) at every time: common
  random numbers. The DP compares paths, and with shared draws the difference of two paths' costs is far
  more precise than either cost (the Monte Carlo error is then mostly one factor common to the whole
  column, which moves no argmin); the absolute NELBO keeps a relative error of order ``sqrt(2 / B)``,
  reported as a standard error. All ``(time, example)`` pairs are evaluated in jitted chunks of ``chunk``
  examples, ``(N+1) B`` denoiser evaluations in all.
  """
  grid = np.asarray(grid, np.float32)
  b = x0.shape[0]
  t_all = np.repeat(grid, b)
  idx = np.tile(np.arange(b), len(grid))
  chunk = max(1, min(int(chunk), len(t_all)))
  (t_all, _), (idx, _) = chunked.pad_rows(t_all, chunk), chunked.pad_rows(idx, chunk)
  x0, eps = jnp.asarray(x0), jnp.asarray(eps)

  @jax.jit
  def errors(t, i):
    x, e = x0[i], eps[i]
    z = path.marginal_sample(x, t, e)
    err = (x - denoise_fn(z, t)).reshape(x.shape[0], -1)
    return jnp.sum(err.astype(jnp.float32)**2, axis=1)

  out = np.concatenate([np.asarray(errors(jnp.asarray(t_all[k:k + chunk]), jnp.asarray(idx[k:k + chunk])),
                                   np.float64) for k in range(0, len(t_all), chunk)])
  return out[:len(grid) * b].reshape(len(grid), b)


def control_variate(errors, eps) -> np.ndarray:
  """``errors[t, b] - beta_t (||eps_b||^2 - d)``: the same expectations, far less Monte Carlo variance. f64[N+1, B].

  Near the data end ``x0 - D(z_t, t) ~ -(sigma_t / alpha_t) eps``, so the per-example error is mostly
  ``(sigma_t / alpha_t)^2 ||eps||^2``, which the coefficient ``~ (alpha / sigma)^2`` turns into an O(1)
  chi-square term per decade of sigma, the same for every grid time under common random numbers: the
  NELBO's standard error would be about ``sqrt(2 / B)`` of the whole sum. ``||eps||^2 - d`` has mean zero
  exactly; ``beta_t`` is its least-squares coefficient at each grid time (from the same batch, an O(1/B)
  bias; no network is involved, so this holds for trained denoisers as for exact ones).

  Args: errors: f[N+1, B] from :func:`denoiser_errors`. eps: f[B, *S], the noise they were drawn with.
  """
  errors = np.asarray(errors, np.float64)
  e2 = np.sum(np.asarray(eps, np.float64).reshape(errors.shape[1], -1)**2, axis=1)
  c = e2 - (np.asarray(eps).size // errors.shape[1])
  centred = c - c.mean()
  beta = (errors - errors.mean(axis=1, keepdims=True)) @ centred / max(float(centred @ centred), 1e-300)
  return errors - beta[:, None] * c[None, :]


def path_terms(snrs, errors, index) -> np.ndarray:
  """Per-example sums ``sum_k C-coefficient(t_{k-1}, t_k) errors[index[k]]`` along a path: f64[B].

  Their mean is the path's ``sum_k C(t_{k-1}, t_k)`` (the DP's total) and their spread its standard error.
  """
  index = np.asarray(index)
  snrs = np.asarray(snrs, np.float64)
  coeff = step_coefficient(snrs[index[:-1]], snrs[index[1:]])
  return coeff @ np.asarray(errors)[index[1:]]


def reconstruction_nats(path: Path, dim: int) -> float:
  """``E[-log N(x0; z_0 / alpha_0, (sigma_0 / alpha_0)^2 I)] = d/2 log(2 pi e (sigma_0 / alpha_0)^2)``."""
  return 0.5 * dim * (np.log(2.0 * np.pi) + 1.0 + 2.0 * np.log(path.ratio_min))


def prior_nats(path: Path, x0) -> float:
  """``E[KL(N(alpha_1 x0, sigma_1^2 I) || N(0, (alpha_1^2 + sigma_1^2) I))]`` over the batch ``x0``."""
  a, s = float(path.alpha(1.0)), float(path.sigma(1.0))
  p = a**2 + s**2
  x = np.asarray(x0, np.float64).reshape(x0.shape[0], -1)
  per_dim = (s**2 + a**2 * x**2) / p - 1.0 - np.log(s**2 / p)
  return float(0.5 * np.mean(np.sum(per_dim, axis=1)))


def requested_steps(num_steps: int, eval_cfg, num_intervals: int) -> list:
  """Every K from 1 to ``num_steps`` (``config.fit.ladder_steps``), each of ``eval_cfg.step_counts`` and the K that reaches
  each of ``eval_cfg.nfe`` with ``eval_cfg.sampler`` (``eval_cfg``: ``config.eval``), capped at the grid."""
  ks = set(range(1, int(num_steps) + 1)) | {int(k) for k in eval_cfg.step_counts}
  # an NFE the sampler cannot make exactly adds no K: eval leaves its column out too
  ks |= {k for k in samplers.steps_for_each_nfe(eval_cfg.sampler, eval_cfg.nfe, eval_cfg.langevin_steps).values()
         if isinstance(k, int)}
  return sorted(k for k in ks if k <= num_intervals)


def column_errors(problem, grid, key, num_samples: int, min_batch: int = 1):
  """The Monte Carlo inputs of the cost matrix: ``(errors f64[N+1, B], x0 f32[B, *S])``.

  ``B = num_samples`` data examples ``x0 ~ problem.sample_x0`` and noises, shared by every grid time
  (:func:`denoiser_errors`), with the control variate of :func:`control_variate` applied. Denoiser batches
  hold ``min_batch`` examples or ``CHUNK_ELEMENTS`` numbers, whichever is more examples.
  """
  key_x0, key_eps = jax.random.split(key)
  x0 = problem.sample_x0(key_x0, int(num_samples))
  eps = jax.random.normal(key_eps, x0.shape, x0.dtype)
  dim = int(np.prod(x0.shape[1:]))
  chunk = max(int(min_batch), CHUNK_ELEMENTS // dim)
  errors = denoiser_errors(problem.denoise_fn, problem.path, grid, x0, eps, chunk=chunk)
  return control_variate(errors, eps), x0


def search(fit_cfg, cost_cfg, eval_cfg, problem, key):
  """``config.fit.method = 'dp_elbo'``: the least-NELBO K-step sub-path of the grid for every K.

  Uses ``fit_cfg.dp_elbo.grid`` (N) and ``fit_cfg.num_samples`` data examples (B) per grid time:
  ``(N+1) B`` denoiser evaluations (``network_evaluations``), in batches of at least
  ``cost_cfg.cost_batch_size`` examples (:func:`column_errors`); the K of :func:`requested_steps` from
  ``fit_cfg.ladder_steps`` and ``eval_cfg`` (``config.eval``).
  Returns:
    ``Result(Ladders({K: f64[K+1]}), meta)`` for every K of :func:`requested_steps`; meta ``neg_elbo``,
    its Monte Carlo ``neg_elbo_stderr`` (the prior term's own error excluded; it is tiny) and
    ``neg_elbo_bits_per_dim`` ``{K: value}``, the constant ``reconstruction_nats`` and ``prior_nats``,
    ``dp_grid``, ``num_samples``, ``time_s`` and ``network_evaluations``.
  """
  start = time.perf_counter()
  n, b = int(fit_cfg.dp_elbo.grid), int(fit_cfg.num_samples)
  path = problem.path
  grid = dp_grid(path, n)
  errors, x0 = column_errors(problem, grid, key, b, cost_cfg.cost_batch_size)
  snrs = snr(path, grid)
  cost = cost_matrix(snrs, errors.mean(axis=1))
  ks = requested_steps(fit_cfg.ladder_steps, eval_cfg, n)
  totals, paths = dynamic_programme(cost, max(ks))
  dim = int(np.prod(x0.shape[1:]))
  recon, prior = reconstruction_nats(path, dim), prior_nats(path, x0)
  ladders = {k: grid[paths(k)] for k in ks}
  neg_elbo = {k: float(totals[k] + recon + prior) for k in ks}
  stderr = {k: float(np.std(path_terms(snrs, errors, paths(k))) / np.sqrt(b)) for k in ks}
  meta = dict(neg_elbo=neg_elbo, neg_elbo_stderr=stderr,
              neg_elbo_bits_per_dim={k: v / (dim * np.log(2.0)) for k, v in neg_elbo.items()},
              reconstruction_nats=recon, prior_nats=prior, dp_grid=n, num_samples=b,
              time_s=time.perf_counter() - start, network_evaluations=int(len(grid) * b))
  return Result(Ladders(ladders, 'dp_elbo', 'dp_elbo'), meta=meta)
