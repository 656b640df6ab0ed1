"""The online learner of method.md section 5 (Algorithm 2, steps 2-4), as pure jit-able functions.

Statistics are per-level running sums and counts of the per-example coefficient ``kappa`` of the cost (for
``L_c`` the rate ``delta``: one jvp per training example at its own level; :mod:`schedule.costs`); the update
turns their means into rates (``mean^(1/p)``), then incremental costs, runs Algorithm 1 and blends.
"""
import jax
import jax.numpy as jnp
import numpy as np

from schedule import costs as costs_lib, fit


def accumulate(cost_sum, cost_count, rate, level):
  """Adds per-example rates ``rate: f32[B]`` at levels ``level: i32[B]`` into ``f32[T+1]`` sums and counts.

  Non-finite rates are dropped (and counted by the caller), so one bad sample cannot poison a level.
  """
  ok = jnp.isfinite(rate)
  n = cost_sum.shape[0]
  cost_sum = cost_sum + jax.ops.segment_sum(jnp.where(ok, rate, 0.0), level, n)
  cost_count = cost_count + jax.ops.segment_sum(ok.astype(cost_count.dtype), level, n)
  return cost_sum, cost_count


def level_rates(ts, cost_sum, cost_count):
  """Mean rate per level, ``f32[T+1]``; levels without samples are linearly interpolated in t from the
  nearest levels that have some (all zeros if no level has any)."""
  valid = cost_count > 0
  mean = cost_sum / jnp.maximum(cost_count, 1.0)
  idx = jnp.arange(ts.shape[0])
  last = jax.lax.cummax(jnp.where(valid, idx, -1))                       # nearest valid level below
  nxt = jax.lax.cummin(jnp.where(valid, idx, ts.shape[0]), reverse=True)  # nearest valid level above
  lo = jnp.where(last >= 0, last, nxt).clip(0, ts.shape[0] - 1)
  hi = jnp.where(nxt < ts.shape[0], nxt, last).clip(0, ts.shape[0] - 1)
  w = jnp.where(hi > lo, (ts - ts[lo]) / jnp.where(hi > lo, ts[hi] - ts[lo], 1.0), 0.0)
  return jnp.where(valid, mean, (1 - w) * mean[lo] + w * mean[hi])


def ready(cost_count, steps_since_update, min_count, update_every):
  """Update when every level holds ``min_count`` samples, or ``update_every`` steps have passed."""
  return (jnp.min(cost_count) >= min_count) | (steps_since_update >= update_every)


def simulate_counts(num_levels: int, per_step: int, min_count: int, update_every: int, updates: int, seed=0):
  """Per-level sample counts at ``updates`` simulated updates, ``f64[updates, num_levels]``, and the steps each
  took, ``i64[updates]``: ``per_step`` levels drawn uniformly a step (as the loss draws them) until
  :func:`ready` (every level at ``min_count``, or ``update_every`` steps). NumPy, for tools sizing the cadence."""
  rng, counts, steps = np.random.default_rng(seed), [], []
  for _ in range(updates):
    count = np.zeros(num_levels)
    for step in range(1, update_every + 1):
      count += np.bincount(rng.integers(0, num_levels, per_step), minlength=num_levels)
      if count.min() >= min_count:
        break
    counts.append(count)
    steps.append(step)
  return np.stack(counts), np.asarray(steps)


def step_costs(path, ts, rates):
  """Incremental costs ``L_i = (int_{t_i}^{t_{i+1}} sqrt(delta) dt)^2`` from the rates at the points.

  The integral is taken in ``u = log(sigma / alpha)``, where ``sqrt(delta)`` grows like a power of sigma near
  the data end, i.e. exponentially in u (method.md section 4: "integrate in log sigma"): the result does not
  depend on how t is parametrised. ``delta_u = delta_t (dt/du)^2`` with ``du/dt`` by jax.jvp.
  """
  log_ratio = lambda t: jnp.log(path.ratio(t))
  u, du_dt = jax.jvp(log_ratio, (ts,), (jnp.ones_like(ts),))
  return fit.costs_from_rates(u, rates / du_dt**2)


def update(path, ts, cost_sum, cost_count, gamma, p: int = 1):
  """Steps 3-4 of Algorithm 2: ``t <- gamma UpdateSchedule(t, L) + (1 - gamma) t``.

  ``p`` is the order of the accumulated coefficients (:func:`schedule.costs.order`): each level's mean becomes
  the rate ``mean^(1/p)`` (:func:`schedule.costs.to_rate`) before the costs are integrated.

  Returns ``(ts_new f32[T+1], ok bool[], costs f32[T])``. When the costs are unusable (non-finite, negative,
  all zero) the schedule is returned unchanged and ``ok`` is False, for the caller to log.
  """
  costs = step_costs(path, ts, costs_lib.to_rate(level_rates(ts, cost_sum, cost_count), p))
  ok = fit.valid_costs(costs) & jnp.any(cost_count > 0)
  safe_costs = jnp.where(ok, costs, jnp.ones_like(costs))
  new = fit.blend(ts, fit.equal_cost_schedule(ts, safe_costs), gamma)
  return jnp.where(ok, new, ts), ok, costs
