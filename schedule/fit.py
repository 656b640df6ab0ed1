"""Algorithm 1 (UpdateSchedule), the cumulative length and the score-optimal fit (method.md sections 3-4).

The mathematics only: everything here is pure ``jnp`` on arrays and jit-able; schedules are increasing arrays
``ts: f32[T+1]`` with ``ts[0] = 0`` (data end) and ``ts[T] = 1``. The length function as a schedule (``steps(K)``)
is :class:`schedule.schedules.LengthFunction`.
"""
from typing import Callable

import jax
import jax.numpy as jnp

# Each step of the cumulative length gets at least this fraction of the mean step, so a zero cost
# estimate cannot create a flat piece that the inverse interpolant would divide by.
MIN_RELATIVE_INCREMENT = 1e-6


def pchip_slopes(x, y):
  """Fritsch-Carlson slopes of the monotone cubic (PCHIP) interpolant through ``(x_k, y_k)``.

  Same rules as ``scipy.interpolate.PchipInterpolator``: weighted harmonic mean of the secants inside,
  zero where the secants change sign, a shape-preserving three-point formula at the ends.
  Args: x: f32[N] strictly increasing, y: f32[N]. Returns: f32[N].
  """
  h = jnp.diff(x)
  m = jnp.diff(y) / h
  if x.shape[0] == 2:
    return jnp.stack([m[0], m[0]])
  w1 = 2 * h[1:] + h[:-1]
  w2 = h[1:] + 2 * h[:-1]
  same_sign = (m[:-1] * m[1:]) > 0
  safe = lambda v: jnp.where(same_sign, v, 1.0)
  interior = jnp.where(same_sign, (w1 + w2) / (w1 / safe(m[:-1]) + w2 / safe(m[1:])), 0.0)

  def end(h0, h1, m0, m1):
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    d = jnp.where(jnp.sign(d) != jnp.sign(m0), 0.0, d)
    return jnp.where((jnp.sign(m0) != jnp.sign(m1)) & (jnp.abs(d) > 3 * jnp.abs(m0)), 3 * m0, d)

  return jnp.concatenate([end(h[0], h[1], m[0], m[1])[None], interior,
                          end(h[-1], h[-2], m[-1], m[-2])[None]])


def pchip_interpolate(x, y, xq):
  """Evaluates the PCHIP interpolant through ``(x, y)`` at ``xq`` (clipped to ``[x_0, x_{N-1}]``)."""
  x, y = jnp.asarray(x), jnp.asarray(y)
  d = pchip_slopes(x, y)
  xq = jnp.clip(xq, x[0], x[-1])
  k = jnp.clip(jnp.searchsorted(x, xq, side='right') - 1, 0, x.shape[0] - 2)
  h = x[k + 1] - x[k]
  s = (xq - x[k]) / h
  h00, h10 = (1 + 2 * s) * (1 - s)**2, s * (1 - s)**2
  h01, h11 = s**2 * (3 - 2 * s), s**2 * (s - 1)
  return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]


def cumulative(increments):
  """``[0, cumsum(increments)]`` with every increment floored at a tiny fraction of the mean."""
  floor = MIN_RELATIVE_INCREMENT * jnp.mean(increments)
  return jnp.concatenate([jnp.zeros(1, increments.dtype), jnp.cumsum(jnp.maximum(increments, floor))])


def equal_length_points(cum, ts, num_steps: int):
  """``t_k = Lambda^{-1}(k Lambda / K)`` through the monotone cubic inverse, endpoints pinned."""
  targets = jnp.linspace(0.0, 1.0, num_steps + 1) * cum[-1]
  new = pchip_interpolate(cum, ts, targets)
  return new.at[0].set(ts[0]).at[-1].set(ts[-1])


def equal_cost_schedule(ts, costs):
  """Algorithm 1 (method.md section 4): ``t_i* = Lhat^{-1}(i Lhat / T)``, ``Lhat(t_i) = sum_{j<i} sqrt(L_j)``.

  Args:
    ts: f32[T+1] increasing. costs: f32[T], ``costs[i] = L(t_{i+1} -> t_i)`` (finite, >= 0, not all 0).
  Returns:
    f32[T+1], strictly increasing, same endpoints.
  """
  return equal_length_points(cumulative(jnp.sqrt(costs)), ts, ts.shape[0] - 1)


def log_mean(a, b):
  """Logarithmic mean ``(a - b) / (log a - log b)`` of non-negative arrays (0 if either is 0, a if a = b)."""
  lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
  safe_lo, safe_hi = jnp.maximum(lo, 1e-30), jnp.maximum(hi, 1e-30)
  close = (hi - lo) <= 1e-6 * hi
  ratio = jnp.where(close, 1.0, (safe_hi - safe_lo) / jnp.log(safe_hi / safe_lo))
  return jnp.where(lo <= 0, 0.0, jnp.where(close, 0.5 * (lo + hi), ratio))


SUBSTEPS = 16  # fine points per step for the 'pchip_log' rule


def costs_from_rates(ts, delta, rule: str = 'pchip_log'):
  """Incremental costs from local rates at the schedule's points: ``sqrt(L_i) = int_{t_i}^{t_{i+1}} sqrt(delta)``.

  Rules for the integral between two measured points (method.md section 4, "Quadrature"):
  - 'trapezoid': ``(sqrt(delta_i) + sqrt(delta_{i+1})) / 2 (t_{i+1} - t_i)``, the formula of section 4;
    on coarse grids it overrates the steep steps near the data end (sqrt(delta) grows like a power of
    sigma there) and the fixed point drifts far from the optimum;
  - 'log_mean': the logarithmic mean instead, exact when ``sqrt(delta)`` is exponential across the step;
  - 'pchip_log' (default): ``log sqrt(delta)`` interpolated by a monotone cubic through all the points,
    integrated on ``SUBSTEPS`` fine points per step: it follows the curvature from the neighbours.
  All three agree on fine grids. Args: ts: f32[T+1]; delta: f32[T+1], the rate at each point.
  Returns: f32[T].
  """
  root = jnp.sqrt(jnp.maximum(delta, 0.0))
  if rule == 'trapezoid':
    return (0.5 * (root[1:] + root[:-1]) * jnp.diff(ts))**2
  if rule == 'log_mean':
    return (log_mean(root[1:], root[:-1]) * jnp.diff(ts))**2
  floor = 1e-12 * jnp.max(root) + 1e-30
  u = jnp.linspace(0.0, 1.0, SUBSTEPS + 1)
  fine = ts[:-1, None] + u[None, :] * jnp.diff(ts)[:, None]                         # [T, SUBSTEPS + 1]
  log_root = pchip_interpolate(ts, jnp.log(jnp.maximum(root, floor)), fine.reshape(-1)).reshape(fine.shape)
  values = jnp.where(log_root <= jnp.log(floor) + 1e-6, 0.0, jnp.exp(log_root))
  return jnp.sum(0.5 * (values[:, 1:] + values[:, :-1]) * jnp.diff(fine, axis=1), axis=1)**2


def length(costs):
  """``Lhat = sum_i sqrt(L_i)`` (method.md section 3)."""
  return jnp.sum(jnp.sqrt(costs))


def energy(costs):
  """``E = T sum_i L_i`` (method.md section 5); ``E >= Lhat^2`` with equality iff all steps cost the same."""
  return costs.shape[0] * jnp.sum(costs)


def blend(ts, ts_star, gamma):
  """``t <- gamma t* + (1 - gamma) t`` (method.md section 5, step 4): a convex blend stays increasing."""
  return gamma * ts_star + (1.0 - gamma) * ts


def valid_costs(costs):
  """True when the costs can drive Algorithm 1: all finite and non-negative, and not all zero."""
  return jnp.all(jnp.isfinite(costs)) & jnp.all(costs >= 0) & (jnp.sum(costs) > 0)


def length_on_grid(grid, delta):
  """``Lambda`` at the points of a fine grid (method.md section 3): ``[0, cumsum sqrt(L_i)]`` with the incremental
  costs of :func:`costs_from_rates`; zero-rate pieces get a tiny floor. Args: grid, delta: f32[N]. Returns: f32[N]."""
  return cumulative(jnp.sqrt(costs_from_rates(grid, delta)))


def densify(ts, grid_size: int):
  """A ``grid_size``-point grid that follows the schedule ``ts``: its generator ``phi`` read at uniform ``u``."""
  u = jnp.linspace(0.0, 1.0, ts.shape[0])
  return jnp.interp(jnp.linspace(0.0, 1.0, grid_size), u, ts)


def fit(rate_fn: Callable[[jax.Array], jax.Array], ts_init, num_steps: int, grid_size: int = 1024,
        iterations: int = 3):
  """Score-optimal ``num_steps``-step schedule from any start (method.md section 4, "Quadrature").

  The rate is estimated on a grid much finer than the schedule, the length is integrated there, and the
  ladder is read off the estimated length. Each iteration moves the fine grid to the current equal-length
  grid, where the trapezoid rule is most accurate; it is Algorithm 1 iterated to its fixed point on N points.

  Args:
    rate_fn: ``grid f32[N] -> delta f32[N]`` (e.g. :func:`schedule.costs.rate_on_grid` partially applied).
    ts_init: f32[T0+1], the starting schedule; only its shape of point density matters.
  Returns:
    ``(ts f32[num_steps+1], grid f32[N], lam f32[N])``: the ladder and the length function's table
    (``schedule.schedules.LengthFunction(grid, lam)`` answers any K).
  """
  grid = densify(jnp.asarray(ts_init, float), grid_size)
  for _ in range(iterations):
    table, lam = grid, length_on_grid(grid, rate_fn(grid))
    grid = equal_length_points(lam, table, grid_size - 1)
  return equal_length_points(lam, table, num_steps), table, lam
