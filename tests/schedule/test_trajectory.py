"""The trajectory search (schedule/searches/trajectory.py): K = 2 on a Gaussian target against a brute-force
search of the closed-form flow; on the toy targets its K-step output is closer to the teacher's than that of
every hand-made ladder, on fresh noises; K distinct steps with fixed ends; the search's pieces (DP costs,
coordinate search) against direct computation; bad settings refused before compute."""
import itertools

import jax
import numpy as np
import pytest

from configs import toy1d
from configs.validate import problems
from ddm.paths import make_path
from ddm.registry import BASELINES
from ddm.targets import make_target
from schedule import baselines
from schedule.searches import dp_elbo, problem as problem_lib, trajectory


def _setup(target, **fit):
  config = toy1d.get_config()
  config.data.target = target
  config.data.std = 1.0 if target == 'gaussian' else config.data.std
  config.fit.trajectory.update(**fit)
  path = make_path(config.sde)
  return config, path, problem_lib.exact(make_target(config.data), path)


def _heun_two_steps(c, big, r, r_last):
  """The 2-step sampler's output over its input for N(0, c^2) data on a VE path (EDM variables y = x, r = sigma):
  dy/dr = y r / (c^2 + r^2); one Heun step big -> r, then the last step D(y, r) = c^2 / (c^2 + r^2) y. The
  teacher's output over its input is c^2 / (sqrt(c^2 + big^2) sqrt(c^2 + r_last^2)) (the exact flow to r_last,
  then D there)."""
  f = lambda s: s / (c**2 + s**2)
  d1 = f(big)
  d2 = f(r) * (1 + (r - big) * d1)
  h = 1 + (r - big) * (d1 + d2) / 2
  return h * c**2 / (c**2 + r**2), c**2 / (np.sqrt(c**2 + big**2) * np.sqrt(c**2 + r_last**2))


def test_k2_agrees_with_a_brute_force_search_of_the_closed_form_flow():
  config, path, problem = _setup('gaussian', step_counts=(2,), grid=64, num_noises=256, passes=2)
  result = trajectory.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(3))
  (ts,) = result.schedule.ladders.values()
  found = float(path.sigma(ts[1]))
  grid = dp_elbo.dp_grid(path, 64)
  fine = trajectory.fine_ladder(grid, config.fit.trajectory.teacher_substeps)
  r = np.exp(np.linspace(np.log(float(path.sigma(grid[1]))), np.log(float(path.sigma(grid[-2]))), 20001))
  g, g_star = _heun_two_steps(1.0, 80.0, r, float(path.sigma(fine[1])))
  best = r[np.argmin((g - g_star)**2)]
  cell = (80.0 / 0.002)**(1 / 64)          # one interval of the search grid, as a factor in sigma
  assert abs(np.log(found / best)) <= np.log(cell), (found, best)


@pytest.mark.parametrize('target', ['bimodal', 'cantor'])
def test_closer_to_the_teacher_than_every_hand_made_ladder_on_fresh_noises(target):
  config, path, problem = _setup(target, step_counts=(5, 10), num_noises=1024)
  result = trajectory.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0))
  # fresh noises and their own teacher, drawn here (not the search's)
  solver = trajectory.Solver(problem, config.eval)
  fine = trajectory.fine_ladder(dp_elbo.dp_grid(path, config.fit.trajectory.grid), 16)
  x = jax.random.normal(jax.random.PRNGKey(11), (2048, 1)) * 80.0
  target_out = trajectory.teacher(solver, x, fine, 16)[0]
  for k, ts in result.schedule.ladders.items():
    ours = trajectory.objective(solver, ts, x, target_out)
    for name in BASELINES.names():
      theirs = trajectory.objective(solver, baselines.make_baseline(name, path, k, 'baseline'), x, target_out)
      assert ours < theirs, (target, k, name, ours, theirs)
    assert result.meta['objective'][k] < min(v[k] for v in result.meta['baselines'].values())


def test_k_distinct_steps_with_fixed_ends_and_the_reported_figures():
  config, path, problem = _setup('bimodal', step_counts=(3, 6), grid=24, num_noises=128, passes=1)
  result = trajectory.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0))
  assert sorted(result.schedule.ladders) == [3, 6]
  for k, ts in result.schedule.ladders.items():
    assert len(ts) == k + 1 and ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
  meta = result.meta
  assert set(meta['baselines']) == set(BASELINES.names()) and meta['fewer_steps_closer'][3] is None
  assert meta['teacher_steps'] == 24 * config.fit.trajectory.teacher_substeps and meta['sampler'] == 'heun'
  # Heun: 2 evaluations a step, 1 for the last: teacher twice, 276 pair steps, the coordinate search's runs
  assert meta['network_evaluations'] > 128 * (2 * (2 * 24 * 8 - 1) + 23 * 24 // 2 * 2 + 24)


def test_local_costs_are_one_step_from_the_teacher_and_the_dp_minimises_their_sum():
  config, path, problem = _setup('bimodal', grid=6, num_noises=64)
  solver = trajectory.Solver(problem, config.eval)
  grid = dp_elbo.dp_grid(path, 6)
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 1)) * 80.0
  states = trajectory.teacher(solver, x, trajectory.fine_ladder(grid, 4), 4)
  assert np.allclose(states[-1], x)
  cost = trajectory.local_costs(solver, grid, states)
  np.testing.assert_allclose(cost[2, 5], trajectory.mean_squared(solver.move(states[5], grid[5], grid[2]), states[2]))
  np.testing.assert_allclose(cost[0, 3], trajectory.mean_squared(solver.run(states[3], grid[[0, 3]]), states[0]))
  assert np.all(np.isinf(cost[np.tril_indices(7)])) and np.all(np.isfinite(cost[np.triu_indices(7, 1)]))
  totals, paths = dp_elbo.dynamic_programme(cost, 3)
  brute = min(cost[0, i] + cost[i, j] + cost[j, 6] for i, j in itertools.combinations(range(1, 6), 2))
  assert totals[3] == pytest.approx(brute) and dp_elbo.path_cost(cost, paths(3)) == pytest.approx(brute)


def test_coordinate_search_finds_the_minimum_of_a_separable_objective():
  target = [0, 3, 7, 12, 20]
  fn = lambda index: sum((a - b)**2 for a, b in zip(index, target))
  index, value = trajectory.coordinate_search(fn, [0, 1, 2, 3, 20], passes=5)
  assert index == target and value == 0
  still, _ = trajectory.coordinate_search(fn, [0, 1, 2, 3, 20], passes=0)
  assert still == [0, 1, 2, 3, 20]


@pytest.mark.parametrize('overrides, message', [
    (dict(step_counts=()), 'config.fit.trajectory.step_counts=(); need a non-empty, strictly increasing list'),
    (dict(step_counts=(10, 5)), 'config.fit.trajectory.step_counts=(10, 5); need a non-empty, strictly increasing'),
    (dict(step_counts=(0, 5)), 'config.fit.trajectory.step_counts=(0, 5); need'),
    (dict(step_counts=(5, 100)), 'has K = 100 larger than the grid config.fit.trajectory.grid=64'),
    (dict(grid=1), 'config.fit.trajectory.grid=1; need an integer >= 2'),
    (dict(num_noises=0), 'config.fit.trajectory.num_noises=0; need an integer >= 1'),
    (dict(passes=-1), 'config.fit.trajectory.passes=-1; need an integer >= 0'),
])
def test_bad_settings_are_named(overrides, message):
  config = toy1d.get_config('smoke')
  config.fit.method = 'trajectory'
  config.fit.trajectory.update(**overrides)
  assert any(message in p for p in problems(config, 'fit_schedule')), problems(config, 'fit_schedule')


def test_a_stochastic_sampler_or_a_k_below_the_warm_up_is_refused():
  config = toy1d.get_config('smoke')
  config.fit.method, config.eval.sampler = 'trajectory', 'ancestral'
  assert any("config.fit.method='trajectory' follows the probability-flow ODE; its solver 'ancestral'"
             in p for p in problems(config, 'fit_schedule'))
  config.eval.sampler, config.fit.sampler = 'heun', 'ipndm'
  config.fit.trajectory.step_counts = (3, 6)
  assert problems(config, 'fit_schedule') == [
      "config.fit.sampler='ipndm' of order 4 needs at least 4 steps (its warm-up takes 3 lower-order steps); K = 3 "
      'is below: use config.fit.trajectory.step_counts >= 4 or a lower config.eval.solver_order']
  config.fit.trajectory.step_counts = (4, 6)
  assert problems(config, 'fit_schedule') == []


@pytest.mark.parametrize('sampler', ['dpmpp_2m', 'ipndm'])
def test_a_multistep_solver_walks_its_history_and_beats_a_brute_force_grid_search(sampler):
  """Made for a multistep solver, the K = 3 ladder's objective (the solver's whole walk, history included, on
  fresh noises) is at most that of the best ladder of an exhaustive search over the grid's points (on the same
  fresh noises and teacher), up to the sampling difference between fit and check noises; the dynamic
  programme's step costs are Euler's (the approximation), and its ladder is scored under the real walk."""
  config, path, problem = _setup('gaussian', step_counts=(3,), grid=16, teacher_substeps=8, num_noises=512,
                                 passes=2)
  config.fit.sampler, config.eval.solver_order = sampler, 2 if sampler == 'ipndm' else 0
  key = jax.random.PRNGKey(5)
  result = trajectory.search(config.fit, config.schedule, config.eval, problem, key)
  meta = result.meta
  assert meta['sampler'] == sampler and 'Euler (DDIM)' in meta['dp_costs'] and meta['teacher'].startswith('heun')
  # the check the search reports, rebuilt here: fresh noises, their own Heun teacher, the solver's walk
  _, key_check = jax.random.split(key)
  grid = dp_elbo.dp_grid(path, 16)
  fine = trajectory.fine_ladder(grid, 8)
  x = trajectory.samplers.prior_sample(path, key_check, (512, 1))
  target = trajectory.teacher(trajectory.Solver(problem, trajectory.ode('heun')), x, fine, 8)[0]
  check = jax.jit(trajectory.make_objective(problem, sampler, config.eval.solver_order, x, target))
  score = lambda ts: float(check(np.asarray(ts, np.float32)))
  assert score(result.schedule.steps(3)) == pytest.approx(meta['objective'][3], rel=1e-5)
  brute = min(score(grid[[0, i, j, 16]]) for i, j in itertools.combinations(range(1, 16), 2))
  assert meta['objective'][3] <= 1.05 * brute, (meta['objective'][3], brute)
  assert meta['objective'][3] <= meta['dp'][3] and meta['objective'][3] < min(
      v[3] for v in meta['baselines'].values())


def test_fit_schedule_stores_the_ladders_for_eval_by_name(tmp_path):
  from modes import fit_schedule as run
  from schedule import schedules
  config = toy1d.get_config('smoke')
  config.data.target, config.fit.method, config.fit.ladder_steps = 'bimodal', 'trajectory', 6
  config.fit.trajectory.update(step_counts=(3, 6), grid=16, teacher_substeps=4, num_noises=64, passes=1)
  record = run.fit_schedule(config, str(tmp_path))
  assert record['method'] == 'trajectory' and record['name'] == 'trajectory' and record['num_steps'] == 6
  stored = schedules.stored(str(tmp_path), 'trajectory')
  assert stored.has(3) and stored.has(6) and not stored.has(5)
  np.testing.assert_allclose(stored.steps(6), record['t'], atol=1e-6)
  with pytest.raises(ValueError, match=r"holds K = 3, 6 only, not K = 5"):
    stored.steps(5)
  config.fit.sampler = 'dpmpp_2m'             # made for a solver: stored under its name, the solver recorded
  record = run.fit_schedule(config, str(tmp_path))
  assert record['name'] == 'trajectory_dpmpp_2m' and record['sampler'] == 'dpmpp_2m'
  assert schedules.stored(str(tmp_path), 'trajectory_dpmpp_2m').sampler == 'dpmpp_2m'
  assert schedules.stored(str(tmp_path), 'trajectory').has(3)        # the earlier one is kept
