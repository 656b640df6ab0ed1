"""Watson et al. (2021)'s ELBO dynamic programme (schedule/dp_elbo.py, method.md section 8)."""
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import toy1d
from ddm import paths
from ddm.paths import make_path, ve_path, vp_path
from modes import fit_schedule as run
from schedule.searches import dp_elbo


def _brute_force(cost, num_steps):
  """Least ``sum cost[i_{k-1}, i_k]`` over every path 0 = i_0 < ... < i_K = N."""
  n = cost.shape[0] - 1
  best, best_path = np.inf, None
  for inner in itertools.combinations(range(1, n), num_steps - 1):
    index = (0,) + inner + (n,)
    total = dp_elbo.path_cost(cost, index)
    if total < best:
      best, best_path = total, index
  return best, np.asarray(best_path)


@pytest.mark.parametrize('seed', range(4))
def test_dynamic_programme_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  n = 8                                                                # 9 grid points
  cost = rng.exponential(size=(n + 1, n + 1))
  cost[np.tril_indices(n + 1)] = np.inf
  totals, paths = dp_elbo.dynamic_programme(cost, n)
  assert np.isinf(totals[0])
  for k in range(1, n + 1):
    best, best_path = _brute_force(cost, k)
    assert totals[k] == pytest.approx(best, rel=1e-12)
    np.testing.assert_array_equal(paths(k), best_path)               # continuous costs: a unique optimum
    assert dp_elbo.path_cost(cost, paths(k)) == pytest.approx(totals[k], rel=1e-12)


def test_dynamic_programme_on_an_elbo_shaped_cost_matrix():
  """Cost matrices of the form the search builds (coefficient times a column error) against brute force."""
  rng = np.random.default_rng(7)
  snrs = np.sort(rng.exponential(size=10) * 100.0)[::-1]              # decreasing SNR along the grid
  mse = np.sort(rng.uniform(0.0, 1.0, size=10))                        # error grows with the noise
  cost = dp_elbo.cost_matrix(snrs, mse)
  assert cost[3, 5] == pytest.approx(0.5 * (snrs[3] - snrs[5]) * mse[5]) and np.isinf(cost[5, 3])
  totals, paths = dp_elbo.dynamic_programme(cost, 9)
  for k in range(1, 10):
    assert totals[k] == pytest.approx(_brute_force(cost, k)[0], rel=1e-12)
  # A monotone error makes splitting a step never worse: the optimum cannot increase with K.
  assert np.all(np.diff(totals[1:]) <= 1e-12)


def test_dynamic_programme_rejects_too_many_steps():
  with pytest.raises(ValueError, match='1 <= K <= 4'):
    dp_elbo.dynamic_programme(np.ones((5, 5)), 5)


@pytest.mark.parametrize('path', [ve_path(0.002, 80.0, 'linear'), vp_path('linear'), vp_path('cosine')],
                         ids=['ve', 'vp_linear', 'vp_cosine'])
def test_posterior_is_the_gaussian_conditional(path):
  """``q(z_s | z_t, x0)`` from the joint Gaussian of ``(z_s, z_t)`` given x0, and the simplified coefficient."""
  s, t = 0.3, 0.55
  a_s, g_s, a_t, g_t = (float(v) for v in (path.alpha(s), path.sigma(s), path.alpha(t), path.sigma(t)))
  a = a_t / a_s                                                         # z_t = a z_s + N(0, v)
  cov_st, var_t = a * g_s**2, g_t**2
  x0, z_t = jnp.array([[0.7, -1.2]]), jnp.array([[0.1, 0.4]])
  mean, var = paths.posterior(path, s, t, z_t, x0)
  np.testing.assert_allclose(mean, a_s * x0 + cov_st / var_t * (z_t - a_t * x0), rtol=1e-5, atol=1e-6)
  assert float(var) == pytest.approx(g_s**2 - cov_st**2 / var_t, rel=1e-4)
  # alpha_s^2 v / (2 sigma_s^2 sigma_t^2) = (SNR(s) - SNR(t)) / 2
  v = g_t**2 - a**2 * g_s**2
  coeff = dp_elbo.step_coefficient(dp_elbo.snr(path, s), dp_elbo.snr(path, t))
  assert coeff == pytest.approx(a_s**2 * v / (2 * g_s**2 * g_t**2), rel=1e-4)


@pytest.mark.parametrize('path', [ve_path(0.002, 80.0), vp_path('linear')], ids=['ve', 'vp'])
def test_step_kl_matches_monte_carlo(path):
  """``KL(q(z_s | z_t, x0) || q(z_s | z_t, x0_hat))`` = coefficient ``||x0 - x0_hat||^2``: sample z_s from the
  first Gaussian and average the difference of the two log densities."""
  s, t, dim, n = 0.35, 0.45, 3, 400_000
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x0 = jax.random.normal(keys[0], (1, dim))
  x0_hat = x0 + 0.3 * jax.random.normal(keys[1], (1, dim))
  z_t = path.marginal_sample(x0, jnp.full((1,), t), jax.random.normal(keys[2], (1, dim)))
  mean_q, var = paths.posterior(path, s, t, z_t, x0)
  mean_p, var_p = paths.posterior(path, s, t, z_t, x0_hat)
  assert float(var_p) == float(var)
  z_s = np.asarray(mean_q, np.float64) + np.sqrt(float(var)) * np.asarray(jax.random.normal(keys[3], (n, dim)),
                                                                           np.float64)
  log_q = -0.5 * np.sum((z_s - np.asarray(mean_q, np.float64))**2, axis=1) / float(var)
  log_p = -0.5 * np.sum((z_s - np.asarray(mean_p, np.float64))**2, axis=1) / float(var)
  monte_carlo, stderr = np.mean(log_q - log_p), np.std(log_q - log_p) / np.sqrt(n)
  closed = dp_elbo.step_coefficient(dp_elbo.snr(path, s), dp_elbo.snr(path, t)) * float(jnp.sum((x0 - x0_hat)**2))
  assert monte_carlo == pytest.approx(closed, abs=4 * stderr)
  assert abs(monte_carlo - closed) < 0.05 * closed


@pytest.mark.parametrize('sde', ['ve', 'vp'])
def test_grid_uniform_in_log_ratio_with_exact_ends(sde):
  config = toy1d.get_config('smoke')
  config.sde.name = sde
  path = make_path(config.sde)
  grid = dp_elbo.dp_grid(path, 50)
  assert grid.shape == (51,) and grid[0] == 0.0 and grid[-1] == 1.0 and np.all(np.diff(grid) > 0)
  np.testing.assert_allclose(np.diff(np.log(np.asarray(path.ratio(grid), np.float64))),
                             np.log(path.ratio_max / path.ratio_min) / 50, rtol=2e-3)


def test_search_elbo_is_the_sum_of_the_chosen_terms():
  config = toy1d.get_config('smoke')
  config.data.target = 'bimodal'
  config.fit.update(num_samples=64, ladder_steps=6)
  config.fit.dp_elbo.grid = 40
  path = make_path(config.sde)
  problem = run.exact_problem(config, path)
  key = jax.random.PRNGKey(3)
  result = dp_elbo.search(config.fit, config.schedule, config.eval, problem, key)
  assert sorted(result.schedule.ladders) == [1, 2, 3, 4, 5, 6, 10]               # 1..num_steps and eval.step_counts (5, 10)
  assert result.meta['network_evaluations'] == 41 * 64 and result.meta['time_s'] > 0
  grid = dp_elbo.dp_grid(path, 40)
  errors, x0 = dp_elbo.column_errors(problem, grid, key, 64, config.schedule.cost_batch_size)
  cost = dp_elbo.cost_matrix(dp_elbo.snr(path, grid), errors.mean(axis=1))
  constant = dp_elbo.reconstruction_nats(path, 1) + dp_elbo.prior_nats(path, x0)
  assert result.meta['reconstruction_nats'] + result.meta['prior_nats'] == pytest.approx(constant)
  previous = np.inf
  for k, ts in result.schedule.ladders.items():
    assert len(ts) == k + 1 and ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
    index = np.searchsorted(grid, ts)
    np.testing.assert_array_equal(grid[index], ts)                        # a sub-path of the grid
    assert result.meta['neg_elbo'][k] == pytest.approx(dp_elbo.path_cost(cost, index) + constant, rel=1e-9)
    assert result.meta['neg_elbo'][k] <= previous + 1e-9
    previous = result.meta['neg_elbo'][k]
    assert result.meta['neg_elbo_bits_per_dim'][k] == pytest.approx(result.meta['neg_elbo'][k] / np.log(2.0))


def test_control_variate_keeps_the_mean():
  """The correction has mean zero: on a large batch the corrected and raw column means agree."""
  rng = np.random.default_rng(0)
  eps = rng.normal(size=(200_000, 2))
  errors = np.stack([0.3 * np.sum(eps**2, axis=1) + 0.1 * rng.normal(size=200_000), rng.exponential(size=200_000)])
  corrected = dp_elbo.control_variate(errors, eps)
  np.testing.assert_allclose(corrected.mean(axis=1), [0.6, 1.0], atol=0.01)
  assert corrected[0].std() < 0.2 * errors[0].std()


@pytest.mark.parametrize('target', ['gaussian', 'bimodal'])
def test_large_k_approaches_the_true_negative_log_likelihood(target):
  """With the exact score, the NELBO of the best K-step path falls with K towards the data's continuous
  NLL ``E[-log p_0(x0)]``, from above (it is a bound), within its discretisation and Monte Carlo error."""
  config = toy1d.get_config('smoke')
  config.data.target = target
  config.fit.update(num_samples=1024, ladder_steps=5)
  config.fit.dp_elbo.grid = 1000
  config.eval.step_counts = (10, 20, 100, 1000)
  path = make_path(config.sde)
  problem = run.exact_problem(config, path)
  result = dp_elbo.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0))
  target_ = problem.target
  if target == 'gaussian':
    nll = 0.5 * np.log(2 * np.pi * np.e * config.data.std**2)
  else:
    nll = -float(np.mean(target_.log_prob_data(target_.sample_p0(jax.random.PRNGKey(1), 200_000))))
  neg_elbo, stderr = result.meta['neg_elbo'], result.meta['neg_elbo_stderr']
  assert neg_elbo[5] > neg_elbo[10] > neg_elbo[20] > neg_elbo[100] > neg_elbo[1000]
  assert neg_elbo[5] > nll + 5.0                                          # few steps: a loose bound
  # K = 1000 (the whole grid): the discretisation gap of this grid is ~0.04 nats (closed form for the Gaussian).
  assert nll - 4 * stderr[1000] < neg_elbo[1000] < nll + 0.08 + 4 * stderr[1000]
  assert stderr[1000] < 0.1


def test_fit_schedule_with_dp_elbo_stores_ladders(tmp_path):
  from schedule import schedules
  config = toy1d.get_config('smoke')
  config.data.target = 'bimodal'
  config.fit.update(method='dp_elbo', ladder_steps=8)
  config.fit.dp_elbo.grid = 32
  record = run.fit_schedule(config, str(tmp_path))
  assert record['method'] == 'dp_elbo' and record['name'] == 'dp_elbo' and len(record['t']) == 9
  stored = schedules.stored(str(tmp_path), 'dp_elbo')
  assert isinstance(stored, schedules.Ladders) and stored.has(5) and stored.has(10) and stored.has(8)
  assert len(stored.steps(10)) == 11 and not stored.has(11)
  saved = json.load(open(tmp_path / 'schedules' / 'dp_elbo.json'))
  assert set(saved['neg_elbo']) >= {'5', '8', '10'} and saved['network_evaluations'] == 33 * 32


def test_fit_schedule_refuses_more_steps_than_the_grid(tmp_path):
  config = toy1d.get_config('smoke')
  config.fit.update(method='dp_elbo', ladder_steps=65)
  config.fit.dp_elbo.grid = 64
  with pytest.raises(ValueError, match='larger than the dp_elbo grid'):
    run.fit_schedule(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_unknown_method_is_refused(tmp_path):
  config = toy1d.get_config('smoke')
  config.fit.method = 'dp_kl'
  with pytest.raises(ValueError, match="config.fit.method='dp_kl'; allowed: score_optimal, trajectory, ays, dp_elbo, ddss"):
    run.fit_schedule(config, str(tmp_path))
