"""Align Your Steps (Sabour, Fidler, Kreis, ICML 2024): the K-step ladder that minimises the KL upper bound
(KLUB) between the reverse SDE and its discretisation. ``config.fit.method = 'ays'``; a baseline from the field.

In EDM's variables (noise level ``r = sigma / alpha``, scaled state ``y = x / alpha``; every path is the EDM
one in them, ddm/samplers.py) the reverse SDE is ``dy = -2 (D(y, r) - y) / r dr + sqrt(2r) dw``. A
solver step from ``r_{i+1}`` down to ``r_i`` solves it with the denoiser frozen at the step's start,
``D(y_{r_{i+1}}, r_{i+1})``; by Girsanov the KL divergence of the true path measure from the discretised one is

    KLUB = sum_i int_{r_i}^{r_{i+1}} E || D(y_r, r) - D(y_{r_{i+1}}, r_{i+1}) ||^2 / r^3 dr,

the expectation over the forward path: ``y_r = x0 + r eps``, ``y_{r_{i+1}} = y_r + sqrt(r_{i+1}^2 - r^2) eps'``
(Brownian increments; AYS section 3, their Theorem for the EDM SDE). The integral is taken in ``log r`` by
Gauss-Legendre with ``fit.ays.nodes`` nodes per interval, on ``fit.ays.num_samples`` draws of ``x0`` (data, the
model's own samples or a toy target: ``problem.sample_x0``) and noises that stay fixed during the search
(common random numbers, so candidates are compared on the same draws).

The search is AYS's: coordinate-wise, each interior point in turn moves to the best of ``fit.ays.candidates``
values (uniform in ``log r``) strictly between its neighbours, or stays; ``fit.ays.passes`` passes. Coarse to fine:
a K whose half was searched before starts from that ladder with the midpoints (in ``log r``) inserted (10 -> 20
-> 40), any other K from the ``fit.ays.init`` baseline. The KLUB of each ladder is reported on fresh draws, beside
that of its initial ladder and of every hand-made ladder.

Which solver the bound is for (``SAMPLER``, recorded as the fit's ``sampler``). Freezing only ``D`` leaves a
linear SDE that a step solves exactly: from ``r`` to ``r' < r`` it is ``y' = D + (r'/r)^2 (y - D) + r' sqrt(1 -
(r'/r)^2) z``, the forward posterior ``q(y' | y, x0 = D)``, i.e. stochastic DDIM (eta = 1), which is this project's
``'ancestral'`` sampler (ddm/samplers.py) on every path. That is the solver AYS optimises for (the paper bounds
stochastic DDIM), and the one to evaluate its ladders with. Euler-Maruyama is not: it also freezes the linear
part, ``y' = y + 2 (1 - r'/r) (D - y) + sqrt(2 r (r - r')) z``, which for ``r'/r < 1/2`` multiplies ``y`` by
``2 r'/r - 1 < 0`` and injects noise of variance ``2 r (r - r')`` instead of about ``r'^2``; Heun's trapezoid rule
cannot take such a step either. On the 1-D toy targets (no structure above sigma ~ 1) the KLUB's own minimum
takes one step from ``sigma_max`` to below 1 (checked with the exact bound below and an exhaustive dynamic
programme; AYS's published Stable Video Diffusion ladder likewise starts 700 -> 54.5), so those ladders are
meant for ``'ancestral'`` and break Euler-Maruyama and Heun at any K: ``min_step_ratio`` in the record says
how long the longest step is.

Checks of the estimator (tests/schedule/test_ays*.py). For the exact posterior mean ``D`` the tower property
gives ``E[D(y_r, r) . D(y_hi, hi)] = E ||D(y_hi, hi)||^2``, so an interval's term is
``int (m(r) - m(hi)) / r^3 dr`` with ``m(r) = E ||D(y_r, r)||^2``: a smooth function of ``r``, which 8
Gauss-Legendre nodes in ``log r`` integrate to 2e-4 (relative) even from 0.2 to 80 on the Cantor target, where the
paired estimate agrees with it to about 1%. A trained model is not the posterior mean, so the search keeps the
paired estimator above (the expectation the paper states).

The search stops after ``fit.ays.passes`` passes or the first pass that moves no point; the record says which
(``passes``, ``converged``). With the default 3 passes from ``edm_rho7`` it stops short of the bound's minimum on
the toys (9% to 2x above an exhaustive dynamic programme over 600 levels), and there the minimum is not the better
ladder in samples at K = 5 and 10: the ``1 / r^3`` weight makes the last interval, down to ``sigma_min``, most of
the bound (9.5 of 14.9 at Cantor K = 5), and lowering it moves every point toward ``sigma_min``.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ddm.paths import per_example
from ddm.registry import BASELINES
from schedule import baselines
from schedule.schedules import Ladders
from schedule.searches.problem import Problem, Result

SAMPLER = 'ancestral'  # stochastic DDIM: the solver whose KL to the reverse SDE the bound is (module docstring)


class Draws:
  """Fixed Monte Carlo inputs: ``x0 f32[M, *S]`` and two noises per quadrature node ``f32[n, M, *S]``."""

  def __init__(self, problem: Problem, key, num_samples: int, nodes: int):
    key_x0, key_a, key_b = jax.random.split(key, 3)
    self.x0 = problem.sample_x0(key_x0, int(num_samples))
    shape = (int(nodes),) + tuple(self.x0.shape)
    self.eps_a = jax.random.normal(key_a, shape, self.x0.dtype)
    self.eps_b = jax.random.normal(key_b, shape, self.x0.dtype)
    self.nodes, self.weights = np.polynomial.legendre.leggauss(int(nodes))


def make_interval_klub(problem: Problem, draws: Draws):
  """``klub(r_lo, r_hi)``: each interval's term of the KLUB (module docstring), for scalars (a float) or arrays of
  intervals (``f64[G]``, one vmapped call: a search compares its candidates in one evaluation)."""
  path, denoise = problem.path, problem.denoise_fn
  nodes, weights = jnp.asarray(draws.nodes, jnp.float32), jnp.asarray(draws.weights, jnp.float32)

  def denoised(y, r):
    t = jnp.full(y.shape[:1], path.t_of_ratio(r), jnp.float32)
    return denoise(per_example(path.alpha(t), y) * y, t)

  def one(r_lo, r_hi):
    u_lo, u_hi = jnp.log(r_lo), jnp.log(r_hi)
    half = (u_hi - u_lo) / 2

    def term(carry, inputs):
      node, weight, eps_a, eps_b = inputs
      r = jnp.exp(u_lo + half * (node + 1))
      y = draws.x0 + r * eps_a
      y_start = y + jnp.sqrt(jnp.maximum(r_hi**2 - r**2, 0.0)) * eps_b
      diff = denoised(y, r) - denoised(y_start, r_hi)
      mean_sq = jnp.mean(jnp.sum(diff**2, axis=tuple(range(1, diff.ndim))))
      return carry + weight * half * mean_sq / r**2, None   # dr / r^3 = du / r^2

    total, _ = jax.lax.scan(term, jnp.float32(0.0), (nodes, weights, draws.eps_a, draws.eps_b))
    return total

  many = jax.jit(jax.vmap(one))

  def klub(r_lo, r_hi):
    lo, hi = np.atleast_1d(np.asarray(r_lo, np.float32)), np.atleast_1d(np.asarray(r_hi, np.float32))
    out = np.asarray(many(jnp.asarray(lo), jnp.asarray(hi)), np.float64)
    return float(out[0]) if np.ndim(r_lo) == 0 and np.ndim(r_hi) == 0 else out

  return klub


def klub_of(interval, ratios) -> float:
  """The KLUB of a ladder given by its noise levels ``ratios`` (ascending): the sum over its intervals."""
  ratios = np.asarray(ratios, np.float64)
  return float(np.sum(interval(ratios[:-1], ratios[1:])))


def local_search(interval, ratios, candidates: int, passes: int, report=None):
  """AYS's coordinate-wise search on the interior of ``ratios`` (ascending noise levels, ends fixed): each point
  moves to the candidate between its neighbours (uniform in log r) that lowers the two intervals it bounds.
  ``interval`` takes arrays of intervals (the current point and every candidate in one call). Stops after
  ``passes`` passes or after the first pass that moves no point; a dict ``report`` receives ``passes`` (run) and
  ``converged`` (whether the last pass moved nothing).
  Returns ``(ratios f64[K+1], evaluations)`` (interval evaluations)."""
  r = np.asarray(ratios, np.float64).copy()
  evaluations, done, moved = 0, 0, len(r) > 2
  for _ in range(passes):
    done += 1
    moved = False
    for k in range(1, len(r) - 1):
      grid = np.exp(np.linspace(np.log(r[k - 1]), np.log(r[k + 1]), candidates + 2)[1:-1])
      points = np.concatenate([[r[k]], grid])              # the current point first: it wins ties
      values = interval(np.full_like(points, r[k - 1]), points) + interval(points, np.full_like(points, r[k + 1]))
      best = int(np.argmin(values))
      evaluations += 2 * len(points)
      moved |= best != 0
      r[k] = points[best]
    if not moved:
      break
  if report is not None:
    report.update(passes=done, converged=not moved)
  return r, evaluations


def subdivide(ratios) -> np.ndarray:
  """``ratios`` (K + 1 levels) with the midpoint in ``log r`` inserted into every interval: 2K + 1 levels."""
  u = np.log(np.asarray(ratios, np.float64))
  fine = np.empty(2 * len(u) - 1)
  fine[0::2], fine[1::2] = u, (u[:-1] + u[1:]) / 2
  return np.exp(fine)


def _times(path, ratios):
  ts = np.asarray(path.t_of_ratio(np.asarray(ratios)), np.float64)
  ts[0], ts[-1] = 0.0, 1.0
  return ts


def search(fit_cfg, cost_cfg, eval_cfg, problem: Problem, key) -> Result:
  """``config.fit.method = 'ays'`` (module docstring) for every K of ``fit_cfg.ays.step_counts``.

  Uses ``fit_cfg.ays``: ``num_samples``, ``nodes``, ``candidates``, ``passes``, ``init``. Denoiser evaluations:
  ``2 nodes num_samples`` per interval evaluation (``network_evaluations``).
  Returns ``Result(Ladders({K: f64[K+1]}), meta)``; meta ``klub`` ``{K: value}`` on fresh draws, ``klub_init``,
  ``baselines`` ``{name: {K: value}}`` (fresh draws), ``num_samples``, ``sampler`` (``SAMPLER``: the solver the
  bound is for), ``min_step_ratio`` ``{K: min r_i / r_{i+1}}``, ``passes`` and ``converged`` ``{K: ...}`` (the
  search's), ``time_s``, ``network_evaluations``.
  """
  del cost_cfg, eval_cfg
  start = time.perf_counter()
  cfg = fit_cfg.ays
  path = problem.path
  key_fit, key_check = jax.random.split(key)
  fit_interval = make_interval_klub(problem, Draws(problem, key_fit, cfg.num_samples, cfg.nodes))
  check_interval = make_interval_klub(problem, Draws(problem, key_check, cfg.num_samples, cfg.nodes))
  ladders, inits, evaluations, reports = {}, {}, 0, {}
  for k in sorted(int(k) for k in cfg.step_counts):
    if k % 2 == 0 and k // 2 in ladders:
      init = subdivide(path.ratio(ladders[k // 2]))
    else:
      init = np.asarray(path.ratio(baselines.make_baseline(cfg.init, path, k, 'config.fit.ays.init')), np.float64)
    reports[k] = {}
    ratios, used = local_search(fit_interval, init, int(cfg.candidates), int(cfg.passes), reports[k])
    evaluations += used
    ts = _times(path, ratios)
    ladders[k] = ts if np.all(np.diff(ts) > 0) else _times(path, init)
    inits[k] = init
    logging.info('ays: K = %d searched in %d passes (%s; %.0f s)', k, reports[k]['passes'],
                 'converged' if reports[k]['converged'] else 'stopped by config.fit.ays.passes',
                 time.perf_counter() - start)
  klub = {k: klub_of(check_interval, path.ratio(ts)) for k, ts in ladders.items()}
  klub_init = {k: klub_of(check_interval, r) for k, r in inits.items()}
  hand_made = {name: {k: klub_of(check_interval, path.ratio(baselines.make_baseline(name, path, k)))
                      for k in ladders} for name in BASELINES.names()}
  evaluations += sum(len(ts) - 1 for ts in ladders.values()) * (2 + len(hand_made))
  ratio = {}
  for k, ts in ladders.items():
    r = np.asarray(path.ratio(ts), np.float64)
    ratio[k] = float(np.min(r[:-1] / r[1:]))
  meta = dict(klub=klub, klub_init=klub_init, baselines=hand_made, init=cfg.init, num_samples=int(cfg.num_samples),
              sampler=SAMPLER, min_step_ratio=ratio, passes={k: v['passes'] for k, v in reports.items()},
              converged={k: v['converged'] for k, v in reports.items()}, time_s=time.perf_counter() - start,
              network_evaluations=int(evaluations * 2 * int(cfg.nodes) * int(cfg.num_samples)))
  return Result(Ladders(ladders, 'ays', 'ays'), meta=meta)
