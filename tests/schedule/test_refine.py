"""Finite-step refinement (schedule/searches/refine.py, fit.refine=True): the step-doubling local error of one
Euler/Heun step against its closed form on a Gaussian target; refined ladders have equal finite step costs on
fresh draws, are strictly increasing with fixed ends, are a fixed point of the refinement, and approach the
unrefined score-optimal ladder at large K; bad settings refused before compute."""
import jax
import numpy as np
import pytest

from configs import toy1d
from configs.validate import problems
from ddm.paths import make_path
from ddm.targets import make_target
from schedule.searches import problem as problem_lib, refine, score_optimal

C = 1.0


def _setup(target, cost='corrector', sampler='heun', **fit):
  config = toy1d.get_config()
  config.data.target, config.data.std = target, (C if target == 'gaussian' else config.data.std)
  config.schedule.cost, config.schedule.cost_solver, config.eval.sampler = cost, 'heun', sampler
  config.fit.update(refine=True, **fit)
  path = make_path(config.sde)
  return config, path, problem_lib.exact(make_target(config.data), path)


@pytest.mark.parametrize('sampler', ['euler', 'heun'])
def test_the_local_error_of_one_step_matches_its_closed_form_on_a_gaussian(sampler):
  config, path, problem = _setup('gaussian', 'predictor', sampler)
  step_cost = refine.make_step_cost(problem, 'predictor', config.eval, 20000, 64, jax.random.PRNGKey(0),
                                    config.model.sigma_data)
  f = lambda r: r / (C**2 + r**2)                              # dy/dr = y f(r) (EDM variables, VE)
  for r_next, r in [(10.0, 3.0), (2.0, 0.8), (0.5, 0.1)]:
    t_next, t = float(path.t_of_ratio(r_next)), float(path.t_of_ratio(r))
    h = r - r_next
    one = 1 + h * f(r_next) if sampler == 'euler' else 1 + h / 2 * (f(r_next) + f(r) * (1 + h * f(r_next)))
    exact = np.sqrt(C**2 + r**2) / np.sqrt(C**2 + r_next**2)
    closed = (one - exact)**2 * (C**2 + r_next**2) / (r**2 + config.model.sigma_data**2)
    assert step_cost(t_next, [t])[0] == pytest.approx(closed, rel=0.06), (sampler, r_next, r)


@pytest.mark.parametrize('target, cost, samples, ks', [('cantor', 'corrector', 4096, (5,)),
                                                       pytest.param('cantor', 'corrector', 4096, (10,),
                                                                    marks=pytest.mark.slow),
                                                       pytest.param('bimodal', 'predictor', 8192, (5,),
                                                                    marks=pytest.mark.slow)])
def test_refined_ladders_have_equal_finite_costs_on_fresh_draws(target, cost, samples, ks):
  config, path, problem = _setup(target, cost, 'euler', refine_step_counts=ks, num_samples=samples, grid=256,
                                 grid_passes=2, refine_substeps=8)
  result = score_optimal.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0),
                                sigma_data=config.model.sigma_data)
  fresh = refine.make_step_cost(problem, cost, config.eval, 4 * samples, 8, jax.random.PRNGKey(5),
                                config.model.sigma_data)
  for k in ks:
    ts = result.schedule.steps(k)
    assert len(ts) == k + 1 and ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
    costs = refine.ladder_costs(fresh, ts)
    # The step-doubling local error is a squared error, heavy-tailed: fitted on 2,048 draws per step the bimodal
    # K = 5 ladder's fresh costs were within 7% or 23% depending on the fit's key, on 8,192 within 5-7%. At K = 10
    # one step (t 0.0022 -> 0.0043) is heavier-tailed still: fitted on 8,192 draws its fresh cost is 1.4-1.7 times
    # the others' (32,768 fresh draws, three keys), fitted on 32,768 draws 1.03 or 1.18 (65,536 fresh draws, two
    # keys: the fresh estimate itself varies by 14% there). Not asserted: it needs more draws than a test affords.
    assert costs.max() / costs.min() < 1.1, (k, costs)
    assert result.meta['cost_ratio_after'][k] < 1.05 < result.meta['cost_ratio_before'][k]
  # the same draws as the fit (score_optimal's refinement key): a ladder of equal costs is left where it is
  same = refine.make_step_cost(problem, cost, config.eval, samples, 8, jax.random.fold_in(jax.random.PRNGKey(0), 0x2EF1E),
                               config.model.sigma_data)
  again, _ = refine.equalise_finite_costs(same, path, result.schedule.steps(ks[0]))
  np.testing.assert_allclose(np.log(path.ratio(again)), np.log(path.ratio(result.schedule.steps(ks[0]))), atol=0.02)


@pytest.mark.slow
def test_at_large_k_the_refined_ladder_approaches_the_score_optimal_one():
  """Finite L_c = delta dt^2 (1 + O(dt)): the refined ladder tends to the local-rate one as K grows. Measured
  max relative difference in sigma: 6.6% at K = 200 (the issue hoped for 2%: the O(dt) term of a cost weighted
  at the step's clean end shifts every point by a fraction of its step), and it shrinks with K."""
  config, path, problem = _setup('cantor', refine_step_counts=(50, 200), num_samples=4096)
  result = score_optimal.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0),
                                sigma_data=config.model.sigma_data)
  gap = {}
  for k in (50, 200):
    refined, unrefined = result.schedule.steps(k), np.asarray(result.meta['refined_from'][k])
    gap[k] = np.max(np.abs(np.asarray(path.sigma(refined)) / np.asarray(path.sigma(unrefined)) - 1))
  assert gap[200] < 0.08 and gap[200] < 0.6 * gap[50], gap


def test_fit_schedule_stores_the_refined_ladders(tmp_path):
  from modes import fit_schedule as run
  from schedule import schedules
  config = toy1d.get_config('smoke')
  config.data.target, config.fit.ladder_steps = 'bimodal', 5
  config.fit.update(refine=True, refine_step_counts=(3, 5))
  record = run.fit_schedule(config, str(tmp_path))
  assert record['name'] == 'corrector_refined' and record['num_steps'] == 5
  stored = schedules.stored(str(tmp_path), 'corrector_refined')
  assert stored.has(3) and stored.has(5) and not stored.has(4)


@pytest.mark.parametrize('overrides, message', [
    (dict(method='dp_elbo'), "config.fit.refine=True refines a score-optimal ladder; config.fit.method='dp_elbo'"),
    (dict(refine_step_counts=()), 'config.fit.refine_step_counts=(); need a non-empty, strictly increasing list'),
    (dict(refine_step_counts=(10, 5)), 'config.fit.refine_step_counts=(10, 5); need'),
    (dict(refine_substeps=0), 'config.fit.refine_substeps=0; need an integer >= 1'),
])
def test_bad_settings_are_named(overrides, message):
  config = toy1d.get_config('smoke')
  config.fit.refine = True
  config.fit.update(**overrides)
  assert any(message in p for p in problems(config, 'fit_schedule')), problems(config, 'fit_schedule')


def test_the_predictor_refinement_needs_an_ode_sampler():
  config = toy1d.get_config('smoke')
  config.fit.refine, config.schedule.cost, config.eval.sampler = True, 'predictor', 'pc'
  assert any("config.fit.refine=True with the predictor cost measures an ODE step's local error; "
             "config.eval.sampler='pc'" in p for p in problems(config, 'fit_schedule'))
