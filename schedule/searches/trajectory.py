"""Trajectory search: the K-step ladder whose sampler output is closest to the model's own many-step
probability-flow solution from the same noise (the model is its own teacher; no data).

``config.fit.method = 'trajectory'``. In the spirit of Chen et al. (2024), "On the Trajectory Regularity of
ODE-based Diffusion Sampling" (GITS), and Pei et al. (2025), "Optimal Stepsize for Diffusion Sampling":

The solver is ``config.fit.sampler`` (default ``config.eval.sampler``): any probability-flow solver of
:mod:`ddm.samplers`, the multistep ones included.

1. Teacher. ``M = fit.trajectory.num_noises`` prior draws ``x_N`` are carried down the probability-flow ODE by
   the solver's interior step (Heun for a multistep solver, whose step reads earlier evaluations) on a fine ladder: the search grid (``N + 1`` times uniform in
   ``log(sigma / alpha)``, :func:`schedule.searches.dp_elbo.dp_grid`) with every interval cut into
   ``fit.trajectory.teacher_substeps`` equal parts in t. The teacher's state at grid point ``j``
   is ``X_j``; its output ``X_0`` is the sampler's last step from the finest point (EDM's step into sigma = 0).
2. Dynamic programme (GITS). The cost of a step between grid points ``j < i`` is the mean squared distance,
   per dimension, of one sampler step from ``X_i`` (the last step when ``j = 0``) to ``X_j``. For a multistep
   solver that step is one Euler (DDIM) step, the step it starts with: its later steps read the evaluations of
   the steps before, which a cost of one pair cannot know (GITS's own approximation; the refinement below
   walks the real solver, history included, and ``dp`` reports what the dynamic programme's ladder scores
   under it, so the approximation's effect is measured, not assumed); the K-step path
   of least total cost is found exactly for every K (:func:`schedule.searches.dp_elbo.dynamic_programme`).
   Its K points are K + 1 distinct grid times, so the K-step sampler takes K distinct steps.
3. Refinement. The sum of local errors is a surrogate of the quantity that matters, the distance of the
   K-step solver's output (its whole walk, history included) from ``X_0``. For a multistep solver the ladder
   the continuous search starts from is the best on that distance of the grid ladder and the hand-made ladders
   (``start`` says which), since its dynamic programme only approximates the solver's steps: ``fit.trajectory.passes`` passes of coordinate search move each
   interior point to the grid time between its neighbours that minimises that distance (same noises), then
   off the grid, to the minimiser in ``log sigma`` between its neighbours (bounded Brent, 12 evaluations).

The objective reported (``objective``, per K) is the mean squared distance per dimension of the K-step
output from the teacher's on ``M`` fresh noises, beside that of each hand-made ladder and of shorter searched
ladders: if fewer steps come out closer, ``fewer_steps_closer`` says so instead of the search hiding it.
"""
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from scipy import optimize

from ddm import samplers
from ddm.registry import BASELINES, SAMPLERS
from schedule import baselines
from schedule.schedules import Ladders
from schedule.searches import problem as problem_lib
from schedule.searches.dp_elbo import dp_grid, dynamic_programme
from schedule.searches.problem import Problem, Result


def fine_ladder(grid, substeps: int) -> np.ndarray:
  """``grid`` (f64[N+1], ascending t) with every interval cut into ``substeps`` parts uniform in t between
  grid points: f64[N substeps + 1]; ``fine[substeps * j] = grid[j]``."""
  parts = [np.linspace(grid[j], grid[j + 1], substeps + 1)[:-1] for j in range(len(grid) - 1)]
  return np.concatenate(parts + [grid[-1:]])


TEACHER = 'heun'   # the teacher of the searches made for a multistep solver


def ode(name: str):
  """The sampler settings of the probability-flow solver ``name`` (no Langevin corrector)."""
  return types.SimpleNamespace(sampler=name, langevin_snr=0.16, langevin_steps=1)


def make_objective(problem: Problem, sampler: str, solver_order: int, x_init, target):
  """``J(ts)``: mean squared distance per dimension of ``sampler``'s K-step output on ``ts`` from ``target``, its
  whole walk (a multistep solver's history included; jit-able and differentiable in ``ts``; the key is a
  placeholder, the ODE solvers draw no noise)."""
  walk = samplers.make_sampler(sampler, problem.path, problem.score_fn, solver_order=solver_order)

  def objective(ts):
    return jnp.mean((walk(jax.random.PRNGKey(0), ts, x_init) - target)**2)

  return objective


def score(objective, ts) -> float:
  """``objective(ts)`` (a jitted ``J`` of :func:`make_objective`) as a float, ``ts`` cast to f32."""
  return float(objective(jnp.asarray(ts, jnp.float32)))


def ode_sampler(problem: Problem, eval_cfg):
  """``(sampler, dynamics, key)`` of ``config.eval.sampler`` on ``problem``'s score, for the searches that follow
  the probability-flow ODE (the key is a placeholder: ODE samplers ignore it; validation refuses the others)."""
  chosen = SAMPLERS.get(eval_cfg.sampler, 'config.eval.sampler')
  dynamics = samplers.Dynamics(problem.path, problem.score_fn, float(eval_cfg.langevin_snr),
                               int(eval_cfg.langevin_steps))
  return chosen, dynamics, jax.random.PRNGKey(0)


class Solver:
  """The sampler's steps on a fixed set of noises, jitted once (times are arguments)."""

  def __init__(self, problem: Problem, eval_cfg):
    self.path = problem.path
    chosen, dynamics, key = ode_sampler(problem, eval_cfg)
    self.step = jax.jit(lambda x, t, t_next: chosen.step(dynamics, x, t, t_next, key))
    self.last = jax.jit(lambda x, t, t_next: chosen.last(dynamics, x, t, t_next, key))

  def move(self, x, t, t_next):
    """One step from scalar ``t`` to ``t_next < t``; into the data end (``t_next`` the ladder's first point,
    ``last=True`` below) the sampler's last step."""
    return self.step(x, jnp.float32(t), jnp.float32(t_next))

  def run(self, x, ts, from_index=None):
    """The sampler on the ladder ``ts`` (ascending, ``ts[0]`` the data end) from ``x`` at ``ts[from_index]``
    (default: the last point): the output f32[M, *S]."""
    i = len(ts) - 1 if from_index is None else from_index
    for k in range(i, 1, -1):
      x = self.move(x, ts[k], ts[k - 1])
    return self.last(x, jnp.float32(ts[1]), jnp.float32(ts[0]))


def teacher(solver: Solver, x_init, fine, substeps: int):
  """The states at every grid point (``fine[::substeps]``), ``[N+1, M, *S]`` with ``[0]`` the output."""
  states = [None] * (len(fine) // substeps + 1)
  x, top = x_init, len(fine) - 1
  states[-1] = x
  for k in range(top, 1, -1):
    x = solver.move(x, fine[k], fine[k - 1])
    if (k - 1) % substeps == 0:
      states[(k - 1) // substeps] = x
  states[0] = solver.last(x, jnp.float32(fine[1]), jnp.float32(fine[0]))
  return jnp.stack(states)


def mean_squared(a, b) -> float:
  """Mean over examples and dimensions of ``(a - b)^2`` (non-finite stays non-finite)."""
  return float(_mean_squared(a, b))


def _mean_squared(a, b):
  return jnp.mean((jnp.asarray(a, jnp.float32) - b)**2)


def local_costs(solver: Solver, grid, states) -> np.ndarray:
  """``cost[j, i]`` (f64[N+1, N+1], +inf unless j < i): one sampler step from the teacher's state at grid
  point i to grid point j, against the teacher's state there."""
  n = len(grid) - 1
  pairs, values = [], []
  for i in range(1, n + 1):
    for j in range(i):
      moved = (solver.last(states[i], jnp.float32(grid[i]), jnp.float32(grid[0])) if j == 0
               else solver.move(states[i], grid[i], grid[j]))
      pairs.append((j, i))
      values.append(_mean_squared(moved, states[j]))   # on the device: one transfer below, not one per pair
  cost = np.full((n + 1, n + 1), np.inf)
  cost[tuple(np.asarray(pairs).T)] = np.asarray(jax.device_get(jnp.stack(values)), np.float64)
  return cost


def objective(solver: Solver, ts, x_init, target) -> float:
  """Mean squared distance per dimension of the K-step output on ``ts`` from ``target`` (the teacher's)."""
  return mean_squared(solver.run(x_init, np.asarray(ts)), target)


def coordinate_search(fn, index, passes: int):
  """Moves each interior entry of the increasing integer ``index`` to the value strictly between its
  neighbours that minimises ``fn(index)``, ``passes`` times (stopping early when nothing moves); ends fixed.
  Returns ``(index, value)``."""
  index = list(index)
  value = fn(index)
  for _ in range(passes):
    moved = False
    for k in range(1, len(index) - 1):
      for candidate in range(index[k - 1] + 1, index[k + 1]):
        if candidate == index[k]:
          continue
        trial = index[:k] + [candidate] + index[k + 1:]
        v = fn(trial)
        if v < value:
          index, value, moved = trial, v, True
    if not moved:
      break
  return index, value


def continuous_search(fn, u, passes: int, evaluations: int = 12):
  """Moves each interior entry of the increasing ``u`` (log noise levels) to the minimiser of ``fn(u)`` over
  the open interval between its neighbours (bounded Brent, ``evaluations`` calls), ``passes`` times; a move
  is kept only when it lowers ``fn``. Returns ``(u, value)``."""
  u = np.asarray(u, np.float64).copy()
  value = fn(u)
  for _ in range(passes):
    for k in range(1, len(u) - 1):
      def at(v, k=k):
        trial = u.copy()
        trial[k] = v
        return fn(trial)
      found = optimize.minimize_scalar(at, bounds=(u[k - 1], u[k + 1]), method='bounded',
                                       options={'maxiter': evaluations, 'xatol': 1e-4})
      if found.fun < value and u[k - 1] < found.x < u[k + 1]:
        u[k], value = found.x, float(found.fun)
  return u, value


def search(fit_cfg, cost_cfg, eval_cfg, problem: Problem, key) -> Result:
  """``config.fit.method = 'trajectory'`` (module docstring) for every K of ``fit_cfg.trajectory.step_counts``.

  Uses ``fit_cfg.trajectory``: ``grid`` (N), ``teacher_substeps``, ``num_noises`` (M), ``passes``; the solver
  :func:`schedule.searches.problem.solver_name` at ``eval_cfg.solver_order``. Score evaluations: the teacher's
  ``N teacher_substeps`` steps, ``N (N + 1) / 2`` single steps for the costs, and one K-step run per candidate
  of the coordinate search, and the check on fresh noises (``network_evaluations``, over all M examples).
  Returns ``Result(Ladders({K: f64[K+1]}), meta)``; meta ``objective`` ``{K: value}`` on fresh noises,
  ``baselines`` ``{name: {K: value}}`` and ``dp`` ``{K: value}`` (the dynamic programme's ladder before the
  refinement) on the same noises, ``dp_objective`` (the surrogate), ``dp_costs`` (which step the pair costs
  take), ``fewer_steps_closer``, ``sampler``, ``solver_order``, ``grid``, ``num_noises``, ``teacher``,
  ``teacher_steps``, ``start`` (the ladder each K's continuous search began from), ``time_s`` and
  ``network_evaluations``.
  """
  del cost_cfg
  start = time.perf_counter()
  cfg = fit_cfg.trajectory
  n, substeps, m, passes = int(cfg.grid), int(cfg.teacher_substeps), int(cfg.num_noises), int(cfg.passes)
  ks = sorted(int(k) for k in cfg.step_counts)
  name, order = problem_lib.solver_name(fit_cfg, eval_cfg), int(eval_cfg.get('solver_order', 0))
  multistep = SAMPLERS.get(name, 'config.fit.sampler').multistep
  teacher_name, pair_name = (TEACHER, 'euler') if multistep else (name, name)
  path, shape = problem.path, tuple(problem.data_shape)
  teacher_solver, pair_solver = Solver(problem, ode(teacher_name)), Solver(problem, ode(pair_name))
  grid = dp_grid(path, n)
  fine = fine_ladder(grid, substeps)
  key_fit, key_check = jax.random.split(key)
  nfe = lambda k: samplers.nfe(name, k, eval_cfg.langevin_steps)   # per example, the solver's k-step walk
  pair_nfe = lambda k: samplers.nfe(pair_name, k)

  def scorer(x, target):
    """``ts -> J(ts)`` on the noises ``x``: the solver's walk (the jitted scan of a multistep solver)."""
    if not multistep:
      return lambda ts: objective(pair_solver, ts, x, target)
    fn = jax.jit(make_objective(problem, name, order, x, target))
    return lambda ts: score(fn, ts)

  x_fit = samplers.prior_sample(path, key_fit, (m,) + shape)
  states = teacher(teacher_solver, x_fit, fine, substeps)
  cost = local_costs(pair_solver, grid, states)
  # teacher; every pair (j > 0: an interior step, j = 0: the last step)
  evaluations = (samplers.nfe(teacher_name, len(fine) - 1) + (n * (n - 1) // 2) * (pair_nfe(2) - pair_nfe(1))
                 + n * pair_nfe(1))
  totals, dp_paths = dynamic_programme(cost, max(ks))
  logging.info('trajectory: teacher (%d steps) and %d step costs on %d noises in %.0f s', len(fine) - 1,
               n * (n + 1) // 2, m, time.perf_counter() - start)

  ladders, dp_ladders, dp_objective, counted = {}, {}, {}, [0]
  fit_score = scorer(x_fit, states[0])

  def fit_objective(index):
    counted[0] += nfe(len(index) - 1)
    return fit_score(grid[np.asarray(index)])

  def ladder(u):  # log noise levels -> times, the ends exact
    ts = np.asarray(path.t_of_ratio(np.exp(u)), np.float64)
    ts[0], ts[-1] = 0.0, 1.0
    return ts

  def continuous_objective(u):
    counted[0] += nfe(len(u) - 1)
    return fit_score(ladder(u))

  starts = {}
  for k in ks:
    dp_ladders[k] = grid[np.asarray(dp_paths(k))]
    index, value = coordinate_search(fit_objective, dp_paths(k).tolist(), passes)
    first, begin = 'dp', grid[np.asarray(index)]
    if multistep:  # the DP's costs only approximate this solver's steps: its ladder competes with the hand-made
      for hand in BASELINES.names():
        ts = np.asarray(baselines.make_baseline(hand, path, k, 'baseline'), np.float64)
        counted[0] += nfe(k)
        v = fit_score(ts)
        if np.isfinite(v) and v < value:
          first, begin, value = hand, ts, v
    u, _ = continuous_search(continuous_objective, np.log(np.asarray(path.ratio(begin))), passes)
    ts = ladder(u)
    ladders[k], starts[k] = (ts if np.all(np.diff(ts) > 0) else begin), first
    dp_objective[k] = float(totals[k])
    logging.info('trajectory: K = %d searched from %s (%.0f s)', k, first, time.perf_counter() - start)
  evaluations += counted[0]

  # Fresh noises and their own teacher: the figures reported are not those the search minimised.
  x_check = samplers.prior_sample(path, key_check, (m,) + shape)
  target = teacher(teacher_solver, x_check, fine, substeps)[0]
  evaluations += samplers.nfe(teacher_name, len(fine) - 1)
  check = scorer(x_check, target)
  found = {k: check(ladders[k]) for k in ks}
  dp = {k: check(dp_ladders[k]) for k in ks}
  hand_made = {b: {k: check(baselines.make_baseline(b, path, k, 'baseline')) for k in ks} for b in BASELINES.names()}
  evaluations += sum(nfe(k) for k in ks) * (2 + len(hand_made))
  fewer = {k: next((j for j in ks if j < k and found[j] < found[k]), None) for k in ks}
  dp_costs = ('one Euler (DDIM) step per pair: the first step of the multistep solver, whose later steps read '
              'earlier evaluations' if multistep else f'one {name} step per pair')
  meta = dict(objective=found, baselines=hand_made, dp=dp, start=starts, dp_objective=dp_objective, dp_costs=dp_costs,
              fewer_steps_closer=fewer, grid=n, num_noises=m, teacher=f'{teacher_name}, {len(fine) - 1} steps',
              teacher_steps=len(fine) - 1, sampler=name, solver_order=order, time_s=time.perf_counter() - start,
              network_evaluations=int(evaluations * m))
  return Result(Ladders(ladders, 'trajectory', 'trajectory'), meta=meta)
