"""The few-step search: a K-step ladder made for the solver that will walk it (``config.fit.method='fewstep'``).

``config.fit.sampler`` names the solver (default ``config.eval.sampler``; any probability-flow sampler of
:mod:`ddm.samplers`, the multistep ones included). No data: the model is its own teacher (method.md section 8).

1. Teacher. ``M = fit.fewstep.num_noises`` prior draws are carried down the probability-flow ODE by Heun on a
   fine ladder (the grid of ``fit.fewstep.grid`` intervals uniform in ``log(sigma / alpha)``, each cut into
   ``fit.fewstep.teacher_substeps`` parts), as in :mod:`schedule.searches.trajectory`; its output ``X_0`` is the
   target, its states at the grid points feed step 2.
2. Start. The K-step ladder of least objective ``J(ts) = mean ||S_K(ts, x_N) - X_0||^2`` (per dimension, on the
   same noises; ``S_K`` is the solver's whole walk, history included) among the hand-made ladders and the plain
   dynamic programme over the grid (GITS, Chen et al. 2024: the cost of a step is one DDIM/Euler step from the
   teacher's state against the teacher's state at its end; for a multistep solver this is GITS's own
   approximation, measured here as the ``dp`` row).
3. Gradient polish (:func:`polish`, in the spirit of LD3, Tong et al. 2025): the free points are the log noise levels of
   ``ts[1..K-1]``, written as the cumulative sum of a softmax of K increments between the two fixed ends, so any
   parameter value is a strictly increasing ladder; Adam (``fit.fewstep.adam_steps`` steps of
   ``fit.fewstep.learning_rate``) descends ``J`` with ``jax.value_and_grad`` through the solver's ``lax.scan``.
   The best iterate on the fit noises is kept.
4. Check. On fresh noises with their own teacher, ``J`` of the refined ladder, of its start, of the dp ladder and
   of every hand-made ladder is reported (``objective``, ``start``, ``dp``, ``baselines``); the refined ladder is
   stored only if it is not worse there than its start (else the start is, and ``kept`` says so).

Stored per K: the K of ``config.eval.step_counts``, or the K at which the solver makes each NFE of
``config.eval.nfe`` (an NFE it cannot make is skipped).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from ddm import samplers
from ddm.registry import BASELINES
from schedule import baselines
from schedule.schedules import Ladders
from schedule.searches import problem as problem_lib, trajectory
from schedule.searches.dp_elbo import dp_grid, dynamic_programme
from schedule.searches.problem import Problem, Result



def steps_wanted(eval_cfg, sampler: str) -> list:
  """The K to store: ``config.eval.step_counts``, or the K at which ``sampler`` makes each reachable NFE of
  ``config.eval.nfe``."""
  if not len(eval_cfg.nfe):
    return sorted({int(k) for k in eval_cfg.step_counts})
  counts = samplers.steps_for_each_nfe(sampler, eval_cfg.nfe, eval_cfg.langevin_steps)
  return sorted({k for k in counts.values() if isinstance(k, int)})


def log_ratio_ends(path):
  """``(log r(0), log r(1))``: the fixed ends of every ladder in log noise level."""
  return float(np.log(path.ratio_min)), float(np.log(path.ratio_max))


def ladder_of(z, path, ends):
  """``ts: f[K+1]`` from the K increment logits ``z``: ``log r(ts) = u_0 + (u_1 - u_0) cumsum(softmax(z))``
  with ``ends = (u_0, u_1)`` (:func:`log_ratio_ends`), the ends exactly 0 and 1; strictly increasing for every
  finite ``z``."""
  lo, hi = ends
  u = lo + (hi - lo) * jnp.concatenate([jnp.zeros((1,), z.dtype), jnp.cumsum(jax.nn.softmax(z))])
  ts = path.t_of_ratio(jnp.exp(u))
  return ts.at[0].set(0.0).at[-1].set(1.0)


def logits_of(ts, path) -> jnp.ndarray:
  """The inverse of :func:`ladder_of` (up to a constant): ``z = log`` of the normalised log-ratio increments."""
  lo, hi = log_ratio_ends(path)
  u = np.log(np.asarray(path.ratio(jnp.asarray(ts, jnp.float32)), np.float64))
  u[0], u[-1] = lo, hi
  return jnp.asarray(np.log(np.maximum(np.diff(u) / (hi - lo), 1e-12)), jnp.float32)


def polish(objective, ts, path, iterations: int, learning_rate: float):
  """Adam on the logits of :func:`ladder_of` from the ladder ``ts``; returns ``(best ts f64[K+1], best J,
  history of J)``. The ends stay fixed and the ladder strictly increasing."""
  ends = log_ratio_ends(path)
  loss = jax.jit(jax.value_and_grad(lambda z: objective(ladder_of(z, path, ends))))
  optimizer = optax.adam(learning_rate)
  z = logits_of(ts, path)
  state = optimizer.init(z)
  best_z, best, history = z, np.inf, []
  for _ in range(int(iterations) + 1):
    value, grad = loss(z)
    value = float(value)
    history.append(value)
    if np.isfinite(value) and value < best:
      best_z, best = z, value
    if not np.all(np.isfinite(np.asarray(grad))):
      break
    updates, state = optimizer.update(grad, state)
    z = optax.apply_updates(z, updates)
  return np.asarray(ladder_of(best_z, path, ends), np.float64), best, history


def search(fit_cfg, cost_cfg, eval_cfg, problem: Problem, key) -> Result:
  """``config.fit.method = 'fewstep'`` (module docstring) for the K of :func:`steps_wanted`.

  Uses ``fit_cfg.fewstep``: ``grid``, ``teacher_substeps``, ``num_noises`` (M), ``iterations``,
  ``learning_rate``; the solver :func:`schedule.searches.problem.solver_name` at ``eval_cfg.solver_order``. Returns
  ``Result(Ladders({K: f64[K+1]}), meta)``; meta: ``sampler``, ``solver_order``, per K ``objective`` (stored
  ladder), ``start`` (its start and which ladder it was), ``dp``, ``baselines`` ``{name: {K: J}}`` (all on fresh
  noises), ``kept`` ('refined' or 'start'), ``time_s`` and ``network_evaluations`` (forward evaluations over
  all noises; a gradient step is counted as one forward walk, its backward pass costs about twice that more).
  """
  del cost_cfg
  start_time = time.perf_counter()
  cfg, sampler, order = fit_cfg.fewstep, problem_lib.solver_name(fit_cfg, eval_cfg), int(eval_cfg.get('solver_order', 0))
  n, substeps, m = int(cfg.grid), int(cfg.teacher_substeps), int(cfg.num_noises)
  path, shape = problem.path, tuple(problem.data_shape)
  ks = steps_wanted(eval_cfg, sampler)
  teacher_solver = trajectory.Solver(problem, trajectory.ode(trajectory.TEACHER))
  grid = dp_grid(path, n)
  fine = trajectory.fine_ladder(grid, substeps)
  key_fit, key_check = jax.random.split(key)
  x_fit = samplers.prior_sample(path, key_fit, (m,) + shape)
  states = trajectory.teacher(teacher_solver, x_fit, fine, substeps)
  teacher_evaluations = samplers.nfe(trajectory.TEACHER, len(fine) - 1)
  evaluations = teacher_evaluations + n * (n + 1) // 2                  # the teacher and the DDIM pair costs
  totals, dp_paths = dynamic_programme(trajectory.local_costs(trajectory.Solver(problem, trajectory.ode('euler')), grid,
                                                              states), min(max(ks), n))
  fit_objective = jax.jit(trajectory.make_objective(problem, sampler, order, x_fit, states[0]))
  logging.info('fewstep: teacher (%d Heun steps) and the dp on %d noises in %.0f s', len(fine) - 1, m,
               time.perf_counter() - start_time)

  ladders, starts, dp_ladders, kept = {}, {}, {}, {}
  for k in ks:
    candidates = {name: np.asarray(baselines.make_baseline(name, path, k, 'baseline'), np.float64)
                  for name in BASELINES.names()}
    if k <= n:
      dp_ladders[k] = candidates['dp'] = grid[np.asarray(dp_paths(k))]
    scores = {name: float(fit_objective(jnp.asarray(ts, jnp.float32))) for name, ts in candidates.items()}
    finite = {name: v for name, v in scores.items() if np.isfinite(v)}
    first = min(finite, key=finite.get) if finite else 'log_linear'
    evaluations += k * len(candidates)
    ts, value, history = (polish(fit_objective, candidates[first], path, cfg.adam_steps, cfg.learning_rate)
                          if k > 1 else (candidates[first], scores[first], [scores[first]]))
    evaluations += k * (len(history) - 1) if k > 1 else 0
    ladders[k], starts[k] = ts, (first, candidates[first])
    logging.info('fewstep: K = %d from %s, J %.4g -> %.4g (%.0f s)', k, first, scores[first], value,
                 time.perf_counter() - start_time)

  # Fresh noises and their own teacher: what is reported (and which ladder is kept) is not what was minimised.
  x_check = samplers.prior_sample(path, key_check, (m,) + shape)
  target = trajectory.teacher(teacher_solver, x_check, fine, substeps)[0]
  evaluations += teacher_evaluations
  check = jax.jit(trajectory.make_objective(problem, sampler, order, x_check, target))
  score = lambda ts: float(check(jnp.asarray(ts, jnp.float32)))
  found, started = {}, {}
  for k in ks:
    found[k], started[k] = score(ladders[k]), {'from': starts[k][0], 'objective': score(starts[k][1])}
    kept[k] = 'refined' if found[k] <= started[k]['objective'] else 'start'
    if kept[k] == 'start':
      ladders[k], found[k] = starts[k][1], started[k]['objective']
  dp = {k: score(ts) for k, ts in dp_ladders.items()}
  hand_made = {name: {k: score(baselines.make_baseline(name, path, k, 'baseline')) for k in ks}
               for name in BASELINES.names()}
  evaluations += sum(ks) * (2 + len(hand_made)) + sum(dp_ladders)
  meta = dict(sampler=sampler, solver_order=order, objective=found, start=started, dp=dp, baselines=hand_made,
              kept=kept, grid=n, num_noises=m, teacher=f'{trajectory.TEACHER}, {len(fine) - 1} steps',
              iterations=int(cfg.adam_steps), time_s=time.perf_counter() - start_time,
              network_evaluations=int(evaluations * m))
  return Result(Ladders(ladders, 'fewstep', 'fewstep'), meta=meta)
