"""The score-optimal schedule of a score: Algorithm 1 on a fine grid (method.md sections 3-4).

``config.fit.method = 'score_optimal'``; the cost whose rate is equalised is ``config.schedule.cost``
('corrector': ``delta`` of ``L_c``; 'predictor': ``E[kappa]^(1/p)`` of ``L_p``, :mod:`schedule.predictor`).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from schedule import baselines, costs, fit, predictor
from schedule.schedules import Ladders, LengthFunction
from schedule.searches import refine as refine_lib
from schedule.searches.problem import Problem, Result


def search(fit_cfg, cost_cfg, eval_cfg, problem: Problem, key, *, sigma_data: float) -> Result:
  """Algorithm 1 on ``fit_cfg.grid`` points, ``fit_cfg.grid_passes`` passes, ``fit_cfg.num_samples`` draws of
  ``p_t`` per point, from ``cost_cfg.init``'s ``fit_cfg.ladder_steps``-step ladder.

  Args:
    fit_cfg: ``config.fit``. cost_cfg: ``config.schedule`` (cost, predictor, hutchinson_probes, cost_batch_size,
      init). eval_cfg: ``config.eval`` (the refined ladders' sampler; the unrefined ladder does not depend on it).
    problem, key: as any search. sigma_data: ``config.model.sigma_data``, the scale of the refined predictor
      cost's step-doubling error (:func:`schedule.searches.refine.step_doubling_error`).
  Returns:
    ``Result(LengthFunction, meta)``, meta ``time_s`` and ``rate_evaluations`` (one rate per sample per grid
    point per pass). The predictor cost needs a twice-differentiable score (checked first, with a message
    naming ``config.schedule.cost``); it is evaluated in chunks of ``cost_cfg.cost_batch_size``.
  """
  start = time.perf_counter()
  if cost_cfg.cost == 'predictor':
    check_predictor_cost(problem, key)
  rate_fn = costs.make_rate_fn(cost_cfg)
  if cost_cfg.cost == 'predictor':  # nested derivatives: compiled once, alone, for one chunk
    score, params = problem.score_fn, None
    if problem.model is not None and problem.params is not None:  # parameters as arguments, not constants
      score, params = (lambda params: problem.model.score(params, problem.path)), problem.params
    rate_on_grid = costs.host_rate_on_grid(rate_fn, score, problem.path, problem.sample_pt, fit_cfg.num_samples,
                                           costs.order(cost_cfg), params)
  else:
    rate_on_grid = jax.jit(lambda grid, k: costs.rate_on_grid(
        rate_fn, problem.score_fn, problem.path, problem.sample_pt, grid, k, fit_cfg.num_samples,
        costs.order(cost_cfg)))
  key_refine = jax.random.fold_in(key, 0x2EF1E)   # the fit's own draws stay those of every earlier result
  keys = iter(jax.random.split(key, fit_cfg.grid_passes))
  init = baselines.make_baseline(cost_cfg.init, problem.path, fit_cfg.ladder_steps)
  _, grid, cumulative = fit.fit(lambda grid: rate_on_grid(grid, next(keys)), init, fit_cfg.ladder_steps, fit_cfg.grid,
                                fit_cfg.grid_passes)
  lam = LengthFunction(grid, cumulative)
  meta = dict(rate_evaluations=int(fit_cfg.grid_passes * fit_cfg.grid * fit_cfg.num_samples))
  if not fit_cfg.refine:
    return Result(lam, meta=dict(time_s=time.perf_counter() - start, **meta))
  # Finite-step refinement per K (schedule/searches/refine.py); the unrefined ladders are kept in meta.
  step_cost = refine_lib.make_step_cost(problem, cost_cfg.cost, eval_cfg, fit_cfg.num_samples,
                                        fit_cfg.refine_substeps, key_refine, sigma_data)
  ladders, spread_before, spread_after = {}, {}, {}
  for k in sorted(int(k) for k in fit_cfg.refine_step_counts):
    start_ts = np.asarray(lam.steps(k), np.float64)
    before = refine_lib.ladder_costs(step_cost, start_ts)
    ladders[k], after = refine_lib.equalise_finite_costs(step_cost, problem.path, start_ts, before)
    spread_before[k], spread_after[k] = float(before.max() / before.min()), float(after.max() / after.min())
  meta.update(refined_from={k: np.asarray(lam.steps(k)).tolist() for k in ladders},
              cost_ratio_before=spread_before, cost_ratio_after=spread_after, time_s=time.perf_counter() - start,
              refine_evaluations=int(step_cost.evaluations))
  return Result(Ladders(ladders, f'{cost_cfg.cost}_refined', 'score_optimal'), meta=meta)


def check_predictor_cost(problem: Problem, key, num_probes: int = 8):
  """The predictor cost needs second derivatives of the score in x: a network (``problem.model``) is probed
  with perturbed parameters (:func:`schedule.predictor.check_model`), any other non-exact score at draws of
  ``p_t``; the closed-form scores of toy targets are smooth and pass."""
  if problem.model is not None:
    predictor.check_model(problem.model, problem.path, problem.data_shape, key)
  elif problem.target is None:
    t = jnp.linspace(0.2, 0.8, num_probes)
    x = problem.sample_pt(key, t)
    predictor.require_twice_differentiable(problem.score_fn, x, t, key, 'the score')
