"""Algorithm 1 and the score-optimal fit against closed forms (method.md sections 3-4)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.interpolate

from configs import toy1d
from ddm import paths, targets
from schedule import baselines, costs, fit
from schedule.searches import problem, score_optimal


def test_pchip_matches_scipy():
  rng = np.random.default_rng(0)
  x = np.sort(rng.uniform(0, 1, 40)).astype(np.float32)
  for y in (np.cumsum(rng.uniform(0, 1, 40)), rng.normal(size=40)):
    q = np.linspace(x[0], x[-1], 1001, dtype=np.float32)
    ours = fit.pchip_interpolate(jnp.asarray(x), jnp.asarray(y, jnp.float32), jnp.asarray(q))
    np.testing.assert_allclose(ours, scipy.interpolate.PchipInterpolator(x, y)(q), atol=1e-4)


def test_equal_cost_schedule_keeps_ends_and_increases():
  ts = baselines.cosine(paths.ve_path(0.002, 80.0), 20)
  c = jnp.asarray(np.random.default_rng(1).uniform(0, 5, 20), jnp.float32).at[3].set(0.0)
  new = jax.jit(fit.equal_cost_schedule)(ts, c)
  assert float(new[0]) == 0.0 and float(new[-1]) == 1.0
  assert np.all(np.diff(np.asarray(new)) > 0)


def test_equal_costs_leave_the_schedule_unchanged():
  ts = baselines.edm_rho7(paths.ve_path(0.002, 80.0), 30)
  np.testing.assert_allclose(fit.equal_cost_schedule(ts, jnp.full(30, 0.7)), ts, atol=1e-6)


def test_constant_rate_gives_uniform_grid():
  ts = baselines.edm_rho3(paths.ve_path(0.002, 80.0), 10)
  new = fit.equal_cost_schedule(ts, fit.costs_from_rates(ts, jnp.ones(11)))
  np.testing.assert_allclose(new, np.linspace(0, 1, 11), atol=1e-6)


def test_fixed_point_equalises_costs_for_a_known_rate():
  # delta(t) = exp(6 t): Lambda(t) = (exp(3 t) - 1) / 3; the optimum is t_i = log(1 + i/T (e^3 - 1)) / 3.
  delta = lambda t: jnp.exp(6 * t)
  ts, grid, lam = fit.fit(delta, jnp.linspace(0, 1, 11), 10)
  exact = np.log(1 + np.arange(11) / 10 * (np.e**3 - 1)) / 3
  np.testing.assert_allclose(ts, exact, atol=2e-4)
  np.testing.assert_allclose(lam[-1], (np.e**3 - 1) / 3, rtol=1e-4)
  assert grid.shape == lam.shape == (1024,) and float(grid[0]) == 0.0 and float(grid[-1]) == 1.0


def test_blend_and_energy_bound():
  a, b = jnp.linspace(0, 1, 6), jnp.linspace(0, 1, 6)**2
  m = fit.blend(a, b, 0.3)
  assert np.all(np.diff(np.asarray(m)) > 0)
  c = jnp.array([1.0, 4.0, 0.25])
  assert float(fit.energy(c)) >= float(fit.length(c))**2
  np.testing.assert_allclose(fit.energy(jnp.full(4, 2.0)), fit.length(jnp.full(4, 2.0))**2, rtol=1e-6)


def _config(**data):
  config = toy1d.get_config()
  config.data.update(data)
  return config


def _fit_exact(config, path, target, key):
  """The score-optimal ``config.fit.ladder_steps``-step ladder of ``target``'s exact score on ``path`` (what
  --mode=fit_schedule finds on a toy workdir without a checkpoint): ``(ts f32[K+1], the length function)``."""
  lam = score_optimal.search(config.fit, config.schedule, config.eval, problem.exact(target, path), key,
                             sigma_data=config.model.sigma_data).schedule
  return lam.steps(config.fit.ladder_steps), lam


def _gaussian_ladder(c, d, num_steps, sigma_min=0.002, sigma_max=80.0):
  """Closed-form optimal ladder: Lambda(sigma) = 2 sqrt(d) (asinh(sigma/c) - sigma/sqrt(c^2 + sigma^2))."""
  lam = lambda s: 2 * np.sqrt(d) * (np.arcsinh(s / c) - s / np.sqrt(c**2 + s**2))
  grid = np.geomspace(sigma_min, sigma_max, 400_001)
  cum = lam(grid) - lam(sigma_min)
  return np.interp(np.linspace(0, cum[-1], num_steps + 1), cum, grid), cum[-1]


@pytest.mark.parametrize('num_steps', [10, 100])
@pytest.mark.parametrize('c, d', [(0.5, 1), (1.0, 4)])
def test_gaussian_length_and_ladder_match_closed_form(num_steps, c, d):
  config = _config(target='gaussian', std=c, dim=d)
  config.fit.ladder_steps = num_steps
  path = paths.make_path(config.sde)
  ts, lam = _fit_exact(config, path, targets.make_target(config.data), jax.random.PRNGKey(0))
  ladder, total = _gaussian_ladder(c, d, num_steps)
  assert abs(float(lam.total) / total - 1) < 0.01
  np.testing.assert_allclose(np.asarray(path.sigma(ts)), ladder, rtol=0.02)


def test_trapezoid_on_the_schedule_points_alone_is_measurably_wrong_at_small_T():
  """The reason for the fine grid (method.md section 4): Algorithm 1 iterated on 10 points drifts."""
  c, d = 0.5, 1
  g = targets.gaussian_mixture(np.zeros((1, d)), [c], [1.0])
  path = paths.ve_path(0.002, 80.0)
  rate = jax.jit(lambda grid: costs.rate_on_grid(costs.corrector_rate, g.score_fn(path), path,
                                                 lambda k, t: g.sample_pt(k, path, t), grid,
                                                 jax.random.PRNGKey(0), 4096))
  ts = jnp.linspace(0.0, 1.0, 11)
  for _ in range(30):
    ts = fit.equal_cost_schedule(ts, fit.costs_from_rates(ts, rate(ts), 'trapezoid'))
  ladder, _ = _gaussian_ladder(c, d, 10)
  assert np.max(np.abs(np.asarray(path.sigma(ts)) / ladder - 1)) > 0.1


def test_ladder_does_not_depend_on_time_parametrisation():
  ladders = []
  for param in ('geometric', 'linear'):
    config = _config(target='bimodal')
    config.sde.parametrisation = param
    config.fit.ladder_steps = 20
    path = paths.make_path(config.sde)
    ts, _ = _fit_exact(config, path, targets.make_target(config.data), jax.random.PRNGKey(0))
    ladders.append(np.asarray(path.sigma(ts)))
  np.testing.assert_allclose(ladders[0], ladders[1], rtol=0.02)


def _independent_step_costs(path, target, ts, key, per_step=64, num_samples=512):
  """Incremental costs of ``ts`` re-estimated from scratch: fresh samples, a fine sub-grid inside each step."""
  u = jnp.linspace(0.0, 1.0, per_step + 1)
  sub = ts[:-1, None] + u[None, :] * jnp.diff(ts)[:, None]                  # [T, per_step + 1]
  rate = costs.rate_on_grid(costs.corrector_rate, target.score_fn(path), path,
                            lambda k, t: target.sample_pt(k, path, t), sub.reshape(-1), key, num_samples)
  root = jnp.sqrt(rate.reshape(sub.shape))
  return jnp.sum(0.5 * (root[:, 1:] + root[:, :-1]) * jnp.diff(sub, axis=1), axis=1)**2


@pytest.mark.parametrize('target', ['bimodal', 'cantor'])
def test_fitted_schedule_has_equal_step_costs(target):
  config = _config(target=target)
  config.fit.ladder_steps = 10
  path = paths.make_path(config.sde)
  g = targets.make_target(config.data)
  ts, _ = _fit_exact(config, path, g, jax.random.PRNGKey(0))
  step_costs = jax.jit(lambda ts_, key: _independent_step_costs(path, g, ts_, key))
  step = np.asarray(step_costs(ts, jax.random.PRNGKey(7)))
  assert step.max() / step.min() < 1.10, step
  init = baselines.linear(path, 10)
  base = np.asarray(step_costs(init, jax.random.PRNGKey(7)))
  assert base.max() / base.min() > 2.0  # the check would notice an unequal schedule
