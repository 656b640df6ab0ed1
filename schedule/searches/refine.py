"""Finite-step refinement of a score-optimal ladder: K steps of equal *finite* cost, not equal local rate.

``config.fit.method = 'score_optimal'`` with ``config.fit.refine = True``. The local rates (``L_c``'s ``delta``,
``L_p``'s ``E[kappa]``) are exact as the steps shrink and can be badly wrong for the long steps of a 5- or
10-step sampler (method.md sections 4 and 7). The finite cost of a step ``t' = t_{i+1} -> t = t_i`` is measured on
``fit.num_samples`` draws ``x ~ p_{t'}`` (``problem.sample_pt``, fixed across every evaluation: common random
numbers):

- ``schedule.cost = 'corrector'``: the two-evaluation ``L_c(t' -> t) = sigma(t)^2 E||s(x, t) - s(x, t')||^2``
  (:func:`schedule.costs.corrector_cost`; method.md section 4 warns that its clean-end weight can make a long
  last step look cheap: measure before trusting it);
- ``schedule.cost = 'predictor'``: the step's local error by step-doubling, ``E||F(x) - F_fine(x)||^2 /
  (sigma(t)^2 + sigma_data^2)``: one step of ``config.eval.sampler`` (its last step into the data end) against
  the same start points carried by ``fit.refine_substeps`` steps of the same sampler uniform in ``log sigma``,
  relative to the spread of ``p_t`` (``sigma_data``: ``config.model.sigma_data``, EDM's 0.5 in every committed run;
  absolute at the data end, relative at high noise): :func:`step_doubling_error`.

Equal costs are found by shooting rather than by iterating Algorithm 1 (measured: the fixed-point iteration of
Algorithm 1 on these costs does not settle within 8 damped passes where a long step costs almost nothing, e.g.
a Heun step at high noise on a 1-D mixture). For a cost level ``c`` the ladder is built from the noise end down:
each ``t_i`` is the point whose step from ``t_{i+1}`` costs ``c`` (found on ``CANDIDATES`` times uniform in
``log sigma``, then again inside the bracket, log-linear interpolation of the cost between the bracketing
candidates); ``c`` is bisected in ``log c`` until the last step, into ``t_0``, costs ``c`` too. This needs a cost
that grows with the step's length, which both costs do here except near the clean end of ``L_c``. The
score-optimal ladder read off the length function sets the initial bracket of ``c``.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ddm import samplers
from schedule import costs
from schedule.searches.problem import Problem
from schedule.searches.trajectory import ode_sampler

CANDIDATES = 32
BISECTIONS = 24
TOLERANCE = 0.003   # the bisection stops when the last step's cost is this close to the others'


def step_doubling_error(sampler, dynamics, path, x, t_next, t, last: bool, substeps: int, key, sigma_data: float):
  """The local error of one step ``t_next -> t`` of ``sampler`` by step-doubling (module docstring):
  ``E||F(x) - F_fine(x)||^2 / (sigma(t)^2 + sigma_data^2)`` over the draws ``x: f32[n, *S]`` of ``p_{t_next}``,
  with ``F_fine`` ``substeps`` steps of the same sampler uniform in ``log sigma`` (``last``: the step into the
  data end, the sampler's last step). ``sigma_data`` is ``config.model.sigma_data``. Returns a scalar."""
  into = sampler.last if last else sampler.step
  one = into(dynamics, x, t_next, t, key)
  u = jnp.linspace(jnp.log(path.ratio(t_next)), jnp.log(path.ratio(t)), substeps + 1)
  fine = path.t_of_ratio(jnp.exp(u)).at[0].set(t_next).at[-1].set(t)
  ref = jax.lax.fori_loop(0, substeps - 1, lambda k, y: sampler.step(dynamics, y, fine[k], fine[k + 1], key), x)
  ref = into(dynamics, ref, fine[-2], t, key)
  return jnp.mean(jnp.sum((one - ref).reshape(x.shape[0], -1)**2, axis=1)) / (path.sigma(t)**2 + sigma_data**2)


def make_step_cost(problem: Problem, cost: str, eval_cfg, num_samples: int, substeps: int, key, sigma_data: float):
  """``step_cost(t_next: float, t: f[G], last: bool) -> f64[G]``: the finite cost of the step ``t_next -> t``
  for each candidate ``t`` (module docstring); draws of ``p_{t_next}`` from ``key`` (the same for every call).
  ``sigma_data`` (``config.model.sigma_data``) scales the predictor's :func:`step_doubling_error`."""
  path, score_fn = problem.path, problem.score_fn
  chosen, dynamics, step_key = ode_sampler(problem, eval_cfg)
  sigma_data = float(sigma_data)

  def corrector(x, t_next, t):
    return jnp.mean(costs.corrector_cost(score_fn, path, x, t_next, t))

  @functools.partial(jax.jit, static_argnums=2)
  def on_candidates(t_next, ts, last):
    x = problem.sample_pt(key, jnp.full((int(num_samples),), t_next, jnp.float32))
    if cost == 'predictor':
      return jax.vmap(lambda t: step_doubling_error(chosen, dynamics, path, x, t_next, t, last, substeps, step_key,
                                                    sigma_data))(ts)
    return jax.vmap(lambda t: corrector(x, t_next, t))(ts)

  # score evaluations per candidate: two for L_c; one step and the reference's substeps of the sampler for L_p
  per_step = samplers.nfe(eval_cfg.sampler, 2) - samplers.nfe(eval_cfg.sampler, 1)   # an interior step's count
  per_candidate = int(num_samples) * (2 if cost != 'predictor' else (substeps + 1) * per_step)

  def step_cost(t_next, ts, last=False):
    step_cost.evaluations += len(ts) * per_candidate
    return np.asarray(on_candidates(jnp.float32(t_next), jnp.asarray(ts, jnp.float32), bool(last)), np.float64)

  step_cost.evaluations = 0
  return step_cost


def ladder_costs(step_cost, ts) -> np.ndarray:
  """The finite cost of every step of ``ts`` (ascending): f64[K], ``[i]`` for ``t_{i+1} -> t_i``."""
  return np.array([step_cost(ts[i + 1], [ts[i]], last=(i == 0))[0] for i in range(len(ts) - 1)])


def _next_point(step_cost, path, t_next, u_low, level):
  """The time below ``t_next`` whose step from it costs ``level``, or None when even the step down to ``u_low``
  (log ratio of the data end, exclusive) costs less."""
  u_top = float(np.log(path.ratio(t_next)))
  lo, hi = u_low, u_top
  for _ in range(2):  # a coarse pass over the whole span, then one inside the bracket
    u = np.linspace(hi, lo, CANDIDATES + 2)[1:-1]           # from short steps to long ones
    c = step_cost(t_next, np.asarray(path.t_of_ratio(np.exp(u))))
    above = np.nonzero(c >= level)[0]
    if not len(above):
      return None if lo == u_low else float(path.t_of_ratio(np.exp(lo)))
    j = above[0]
    u_short = hi if j == 0 else u[j - 1]
    c_short = 0.0 if j == 0 else c[j - 1]
    lo, hi = u[j], u_short
    # log-linear interpolation of the cost between the bracketing candidates
    if c_short > 0 and c[j] > c_short:
      w = np.log(level / c_short) / np.log(c[j] / c_short)
      best = u_short + w * (u[j] - u_short)
    else:
      best = u[j]
  return float(path.t_of_ratio(np.exp(best)))


def shoot(step_cost, path, num_steps: int, level: float):
  """The ladder built down from ``t = 1`` with every interior step costing ``level``: ``(ts, last_cost)``; the
  last step is from ``t_1`` into ``t_0 = 0``. ``last_cost = -inf`` when the ladder reached the data end early."""
  u_low = float(np.log(path.ratio(0.0)))
  ts = [1.0]
  for _ in range(num_steps - 1):
    t = _next_point(step_cost, path, ts[-1], u_low, level)
    if t is None or not t < ts[-1] or t <= 0.0:
      return None, -np.inf
    ts.append(t)
  ts.append(0.0)
  ladder = np.asarray(ts[::-1], np.float64)
  return ladder, float(step_cost(ladder[1], [0.0], last=True)[0])


def equalise_finite_costs(step_cost, path, start_ts, start_costs=None):
  """The ``len(start_ts) - 1``-step ladder of equal finite step costs (module docstring): ``(ts f64[K+1],
  costs f64[K])``. ``start_ts`` (the score-optimal ladder) brackets the cost level; ``start_costs``, its step
  costs when the caller has them already."""
  k = len(start_ts) - 1
  start = ladder_costs(step_cost, np.asarray(start_ts, np.float64)) if start_costs is None else start_costs
  if k == 1:
    return np.asarray(start_ts, np.float64), start
  positive = start[start > 0]
  lo, hi = np.log(np.min(positive)) - np.log(1e3), np.log(np.max(start)) + np.log(1e3)
  best = None
  for _ in range(BISECTIONS):
    mid = (lo + hi) / 2
    ts, last = shoot(step_cost, path, k, float(np.exp(mid)))
    if ts is None or last < np.exp(mid):
      hi = mid            # interior steps too long (the data end reached early, or a cheap last step)
    else:
      lo = mid            # interior steps too short: the last step carries the rest
    if ts is not None:
      best = ts
      if abs(last / np.exp(mid) - 1) < TOLERANCE:
        break
  if best is None:
    best = np.asarray(start_ts, np.float64)
  return best, ladder_costs(step_cost, best)
