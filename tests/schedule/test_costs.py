"""Cost estimators against closed forms and finite differences (method.md sections 2-3)."""
import jax
import jax.numpy as jnp
import numpy as np

from ddm import paths, targets
from schedule import costs

PATH = paths.ve_path(0.002, 80.0)


def test_jvp_rate_matches_central_finite_difference():
  g = targets.gaussian_mixture([-1.0, 0.5], [0.1, 0.3], [0.3, 0.7])
  score = g.score_fn(PATH)
  t = jnp.linspace(0.05, 0.95, 64)
  x = g.sample_pt(jax.random.PRNGKey(0), PATH, t)
  rate32 = costs.corrector_rate(score, PATH, x, t)
  with jax.enable_x64(True):  # float64, so the finite difference itself is accurate
    x64, t64 = jnp.asarray(x, jnp.float64), jnp.asarray(t, jnp.float64)
    rate64 = costs.corrector_rate(score, PATH, x64, t64)
    h = 1e-6
    ds = (g.score(x64, t64 + h, PATH) - g.score(x64, t64 - h, PATH)) / (2 * h)
    fd = np.asarray(PATH.sigma(t64)**2 * jnp.sum(ds**2, axis=1))
  assert rate64.dtype == jnp.float64
  np.testing.assert_allclose(rate64, fd, rtol=1e-5, atol=1e-9 * fd.max())
  np.testing.assert_allclose(rate32, fd, rtol=2e-2, atol=1e-6 * fd.max())  # float32 round-off only


def test_gaussian_rate_closed_form():
  """delta(t) = 4 d sigma^4 sigma'^2 / (c^2 + sigma^2)^3 for N(0, c^2 I_d) on VE (method.md section 3)."""
  c, d = 0.7, 3
  g = targets.gaussian_mixture(np.zeros((1, d)), [c], [1.0])
  t = jnp.array([0.2, 0.5, 0.8])
  rate = costs.rate_on_grid(costs.corrector_rate, g.score_fn(PATH), PATH, lambda k, tt: g.sample_pt(k, PATH, tt),
                            t, jax.random.PRNGKey(0), 20000)
  _, sigma, _, dsigma = PATH.derivatives(t)
  exact = 4 * d * sigma**4 * dsigma**2 / (c**2 + sigma**2)**3
  np.testing.assert_allclose(rate, exact, rtol=0.03)


def test_two_evaluation_cost_is_rate_times_dt_squared_on_short_steps():
  g = targets.gaussian_mixture([-1.0, 1.0], [0.2, 0.2], [0.5, 0.5])
  score = g.score_fn(PATH)
  t, dt = 0.4, 1e-3
  x = g.sample_pt(jax.random.PRNGKey(3), PATH, jnp.full((50000,), t + dt))
  two_point = jnp.mean(costs.corrector_cost(score, PATH, x, t + dt, t))
  rate = jnp.mean(costs.corrector_rate(score, PATH, x, jnp.full((50000,), t + dt / 2)))
  np.testing.assert_allclose(two_point, rate * dt**2, rtol=0.02)


def test_make_rate_fn_binds_the_schedule_settings():
  """``make_rate_fn(config.schedule)`` -> ``rate(score_fn, path, x, t, key)``; a cost name alone still works."""
  from configs import toy1d
  sch = toy1d.get_config('smoke').schedule
  g = targets.gaussian_mixture([-1.0, 0.5], [0.1, 0.3], [0.3, 0.7])
  t = jnp.linspace(0.1, 0.9, 10)
  x = g.sample_pt(jax.random.PRNGKey(0), PATH, t)
  corrector = costs.corrector_rate(g.score_fn(PATH), PATH, x, t)
  np.testing.assert_allclose(costs.make_rate_fn(sch)(g.score_fn(PATH), PATH, x, t, jax.random.PRNGKey(1)), corrector)
  np.testing.assert_allclose(costs.make_rate_fn('corrector')(g.score_fn(PATH), PATH, x, t), corrector)
  sch.update(cost='predictor', cost_solver='identity', cost_batch_size=3)
  np.testing.assert_allclose(costs.make_rate_fn(sch)(g.score_fn(PATH), PATH, x, t, jax.random.PRNGKey(1)), corrector,
                             rtol=1e-5)
  sch.cost_solver = 'euler'
  euler = costs.make_rate_fn(sch)(g.score_fn(PATH), PATH, x, t, jax.random.PRNGKey(1))
  assert euler.shape == (10,) and np.all(np.isfinite(euler)) and np.all(euler > 0)


def test_online_learning_with_the_predictor_cost(tmp_path):
  """Algorithm 2 with ``config.schedule.cost='predictor'``: the train step accumulates the L_p coefficient kappa
  of the network (second derivatives through the MLP) and the schedule moves."""
  from configs import toy1d
  from modes import train as train_mode
  config = toy1d.get_config('smoke')
  config.schedule.cost = 'predictor'
  state = train_mode.train_and_evaluate(config, str(tmp_path))
  assert int(state.num_updates) > 0 and int(state.num_skipped) == 0
  assert np.all(np.diff(state.schedule) > 0) and not np.allclose(state.schedule, np.linspace(0, 1, 17), atol=1e-4)
