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

``fit.fewstep.objective='mmd'`` replaces ``J`` by ``MMD^2`` between the solver's outputs and the teacher's
(:func:`make_mmd_objective`: laws, not pairs; the paired distance averages fine structure away). ``config.fit.method
='polish'`` (:func:`polish_search`) runs steps 3 and 4 from a ladder the user names instead of from step 2's best.
"""
import time
from typing import Callable, NamedTuple

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


class Teacher(NamedTuple):
  """The model's own many-step solution on two sets of M prior draws (module docstring, steps 1 and 4).

  Attributes: grid: f64[N+1] (uniform in log noise level); states: f32[N+1, M, *S], the teacher's states at the
  grid points from the fit noises (``[0]``: its output ``X_0``); fit, check: ``J(ts)`` (jitted) of the solver on
  the fit noises and on fresh noises against their own teacher; evaluations: the teacher's network evaluations
  per noise, both runs.
  """
  grid: np.ndarray
  states: jax.Array
  fit: Callable
  check: Callable
  evaluations: int


OBJECTIVES = ('paired', 'mmd')   # config.fit.fewstep.objective
MMD_BANDWIDTHS = 8               # kernels of the 'mmd' objective, geometric from r(0) to the teacher's output scale


def mmd_bandwidths(path, target, count: int = MMD_BANDWIDTHS) -> np.ndarray:
  """f64[count]: geometric from ``r(0)`` (the data end's noise level: no finer scale is resolved by any ladder) to
  the RMS per dimension of the teacher's output ``target`` about its mean (the data's own scale); read from the
  path and the model, not from the data."""
  x = np.asarray(target, np.float64).reshape(target.shape[0], -1)
  scale = float(np.sqrt(np.mean((x - x.mean(0))**2)))
  lo = float(path.ratio_min)
  return np.geomspace(lo, max(scale, 2 * lo), count)


def mmd2(x, y, bandwidths) -> jax.Array:
  """Unbiased ``MMD^2_u`` (Gretton et al. 2012) between the rows of ``x: f[M, *S]`` and ``y: f[M, *S]`` under the
  mean of Gaussian kernels ``k(a, b) = exp(-||a - b||^2 / (2 D h^2))`` over ``bandwidths`` h (D: dimensions per row,
  so h is a scale per dimension): ``E k(x, x') + E k(y, y') - 2 E k(x, y')`` over distinct indices only. The
  cross term leaves out ``k(x_i, y_i)`` too: here ``x_i`` and ``y_i`` come from the same noise, and keeping them
  would put back a paired term of weight ``2 / M``."""
  x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
  n, d, h2 = x.shape[0], x.shape[1], jnp.asarray(bandwidths, x.dtype)**2

  def off_diagonal_mean(a, b):
    sq = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2 * a @ b.T
    k = jnp.mean(jnp.exp(-jnp.maximum(sq, 0)[..., None] / (2 * d * h2)), -1)
    return (jnp.sum(k) - jnp.trace(k)) / (n * (n - 1))

  return off_diagonal_mean(x, x) + off_diagonal_mean(y, y) - 2 * off_diagonal_mean(x, y)


def make_mmd_objective(problem: Problem, sampler: str, solver_order: int, x_init, target, bandwidths):
  """``J(ts) = MMD^2`` (:func:`mmd2`) between ``sampler``'s K-step outputs from ``x_init`` and the teacher's outputs
  ``target``: the student's law against the model's own, not sample against sample. The paired distance rewards a
  last step into the data end from a large noise level, whose output is the denoiser's posterior mean: close to
  every sample on average, but with the data's fine structure averaged away (docs/fewstep.md)."""
  walk = samplers.make_sampler(sampler, problem.path, problem.score_fn, solver_order=solver_order)

  def objective(ts):
    return mmd2(walk(jax.random.PRNGKey(0), ts, x_init), target, bandwidths)

  return objective


def make_teacher(cfg, problem: Problem, sampler: str, order: int, key) -> Teacher:
  """:class:`Teacher` from ``config.fit.fewstep`` (``grid``, ``teacher_substeps``, ``num_noises``, ``objective``)
  for ``sampler`` at ``order``; ``key`` splits into the fit and the check noises."""
  n, substeps, m = int(cfg.grid), int(cfg.teacher_substeps), int(cfg.num_noises)
  path, shape = problem.path, tuple(problem.data_shape)
  solver = trajectory.Solver(problem, trajectory.ode(trajectory.TEACHER))
  grid = dp_grid(path, n)
  fine = trajectory.fine_ladder(grid, substeps)
  key_fit, key_check = jax.random.split(key)
  x_fit, x_check = (samplers.prior_sample(path, k, (m,) + shape) for k in (key_fit, key_check))
  states = trajectory.teacher(solver, x_fit, fine, substeps)
  target = trajectory.teacher(solver, x_check, fine, substeps)[0]
  if cfg.get('objective', 'paired') == 'mmd':
    h = mmd_bandwidths(path, states[0])
    make = lambda x, y: make_mmd_objective(problem, sampler, order, x, y, h)
  else:
    make = lambda x, y: trajectory.make_objective(problem, sampler, order, x, y)
  return Teacher(grid, states, jax.jit(make(x_fit, states[0])), jax.jit(make(x_check, target)),
                 2 * samplers.nfe(trajectory.TEACHER, len(fine) - 1))


def _meta(cfg, teacher: Teacher, sampler: str, order: int, start_time: float, evaluations: int, **found) -> dict:
  """What fewstep's and polish's records share (the fields that say whether two records' fresh-noise objectives
  are comparable among them), and ``found``."""
  n = len(teacher.grid) - 1
  return dict(sampler=sampler, solver_order=order, objective_kind=cfg.get('objective', 'paired'), **found, grid=n,
              num_noises=int(cfg.num_noises), teacher=f'{trajectory.TEACHER}, {n * int(cfg.teacher_substeps)} steps',
              iterations=int(cfg.adam_steps), time_s=time.perf_counter() - start_time,
              network_evaluations=int(evaluations * int(cfg.num_noises)))


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
  path, ks = problem.path, steps_wanted(eval_cfg, sampler)
  teacher = make_teacher(cfg, problem, sampler, order, key)
  n, m = len(teacher.grid) - 1, int(cfg.num_noises)
  evaluations = teacher.evaluations + n * (n + 1) // 2                  # the teacher and the DDIM pair costs
  totals, dp_paths = dynamic_programme(trajectory.local_costs(trajectory.Solver(problem, trajectory.ode('euler')),
                                                              teacher.grid, teacher.states), min(max(ks), n))
  logging.info('fewstep: teachers and the dp on %d noises in %.0f s', m, time.perf_counter() - start_time)

  ladders, starts, dp_ladders, kept = {}, {}, {}, {}
  for k in ks:
    candidates = {name: np.asarray(baselines.make_baseline(name, path, k, 'baseline'), np.float64)
                  for name in BASELINES.names()}
    if k <= n:
      dp_ladders[k] = candidates['dp'] = teacher.grid[np.asarray(dp_paths(k))]
    scores = {name: trajectory.score(teacher.fit, ts) for name, ts in candidates.items()}
    finite = {name: v for name, v in scores.items() if np.isfinite(v)}
    first = min(finite, key=finite.get) if finite else 'log_linear'
    evaluations += k * len(candidates)
    ts, value, history = (polish(teacher.fit, candidates[first], path, cfg.adam_steps, cfg.learning_rate)
                          if k > 1 else (candidates[first], scores[first], [scores[first]]))
    evaluations += k * (len(history) - 1) if k > 1 else 0
    ladders[k], starts[k] = ts, (first, candidates[first])
    logging.info('fewstep: K = %d from %s, J %.4g -> %.4g (%.0f s)', k, first, scores[first], value,
                 time.perf_counter() - start_time)

  # Fresh noises and their own teacher: what is reported (and which ladder is kept) is not what was minimised.
  found, started = {}, {}
  for k in ks:
    found[k], started[k] = trajectory.score(teacher.check, ladders[k]), {'from': starts[k][0],
                                                                'objective': trajectory.score(teacher.check, starts[k][1])}
    kept[k] = 'refined' if found[k] <= started[k]['objective'] else 'start'
    if kept[k] == 'start':
      ladders[k], found[k] = starts[k][1], started[k]['objective']
  dp = {k: trajectory.score(teacher.check, ts) for k, ts in dp_ladders.items()}
  hand_made = {name: {k: trajectory.score(teacher.check, baselines.make_baseline(name, path, k, 'baseline')) for k in ks}
               for name in BASELINES.names()}
  evaluations += sum(ks) * (2 + len(hand_made)) + sum(dp_ladders)
  meta = _meta(cfg, teacher, sampler, order, start_time, evaluations, objective=found, start=started, dp=dp,
               baselines=hand_made, kept=kept)
  return Result(Ladders(ladders, 'fewstep', 'fewstep'), meta=meta)


def polish_search(fit_cfg, cost_cfg, eval_cfg, problem: Problem, key, start_name: str, start) -> Result:
  """``config.fit.method = 'polish'``: steps 3 and 4 of the module docstring from a ladder the user names
  (``config.fit.polish.start``: a baseline, the training run's learned schedule, or any stored schedule, resolved
  by the runner into ``start``, a :class:`schedule.schedules.Schedule` holding every K of :func:`steps_wanted`),
  instead of from the best of the hand-made ladders and the dp. Teacher and Adam settings: ``fit_cfg.fewstep``;
  the same key gives the same noises as fewstep, so polishing fewstep's own start repeats fewstep.

  Returns ``Result(Ladders({K: f64[K+1]}), meta)``; meta: ``sampler``, ``solver_order``, per K ``objective`` (the
  stored ladder, fresh noises), ``start`` (``{'from': start_name, 'objective'}``, fresh noises), ``fit`` (J on the
  fit noises before and after), ``kept``, ``time_s``, ``network_evaluations``.
  """
  del cost_cfg
  start_time = time.perf_counter()
  cfg, sampler, order = fit_cfg.fewstep, problem_lib.solver_name(fit_cfg, eval_cfg), int(eval_cfg.get('solver_order', 0))
  path, ks = problem.path, steps_wanted(eval_cfg, sampler)
  teacher = make_teacher(cfg, problem, sampler, order, key)
  evaluations = teacher.evaluations
  ladders, started, found, fitted, kept = {}, {}, {}, {}, {}
  for k in ks:
    first = np.asarray(start.steps(k), np.float64)
    before = trajectory.score(teacher.fit, first)
    ts, after, history = (polish(teacher.fit, first, path, cfg.adam_steps, cfg.learning_rate)
                          if k > 1 else (first, before, [before]))
    evaluations += k * (len(history) + 3)
    fitted[k] = {'start': before, 'polished': after}
    found[k], started[k] = trajectory.score(teacher.check, ts), {'from': start_name, 'objective': trajectory.score(teacher.check, first)}
    kept[k] = 'refined' if found[k] <= started[k]['objective'] else 'start'
    ladders[k] = ts if kept[k] == 'refined' else first
    found[k] = min(found[k], started[k]['objective'])
    logging.info('polish: K = %d from %s, J %.4g -> %.4g on the fit noises, %.4g -> %.4g on fresh ones (%s kept)',
                 k, start_name, before, after, started[k]['objective'], found[k], kept[k])
  meta = _meta(cfg, teacher, sampler, order, start_time, evaluations, objective=found, start=started, fit=fitted,
               kept=kept)
  return Result(Ladders(ladders, f'polish_{start_name}', 'polish'), meta=meta)
