"""Samplers against closed forms: the linear probability-flow map of Gaussian data, the moments of exact-score
samples, and the jit contract (a new schedule of the same length does not recompile)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddm import paths, samplers, targets
from ddm.paths import per_example
from schedule import baselines

PATHS = {'ve': paths.ve_path(0.002, 80.0), 'vp': paths.vp_path('linear')}
C = 0.5                                                   # std of the Gaussian data N(0, C^2 I_d)
BIMODAL = targets.gaussian_mixture([-1.0, 1.0], [0.1, 0.1], [0.5, 0.5])


def _gaussian(d):
  return targets.gaussian_mixture(np.zeros((1, d)), [C], [1.0])


def _run(name, path, target, ts, n, d, **kw):
  sample = jax.jit(samplers.make_sampler(name, path, target.score_fn(path), **kw))
  x_init = samplers.prior_sample(path, jax.random.PRNGKey(2), (n, d))
  return sample(jax.random.PRNGKey(1), ts, x_init)


def _run_from(name, path, x1, ts):
  sample = samplers.make_sampler(name, path, _gaussian(x1.shape[1]).score_fn(path), denoise_final=False)
  return jax.jit(sample)(jax.random.PRNGKey(0), ts, x1)


@pytest.mark.parametrize('path_name', sorted(PATHS))
def test_probability_flow_matches_linear_closed_form(path_name):
  # For p_0 = N(0, c^2 I) the PF-ODE is dx/dt = x d/dt log sqrt(v(t)), v = alpha^2 c^2 + sigma^2, so
  # x_0 = x_1 sqrt(v(0) / v(1)) exactly.
  path, d = PATHS[path_name], 3
  x1 = jax.random.normal(jax.random.PRNGKey(0), (16, d)) * 3.0
  v = lambda t: float(path.alpha(t))**2 * C**2 + float(path.sigma(t))**2
  exact = x1 * np.sqrt(v(0.0) / v(1.0))

  def error(name, k):
    x0 = _run_from(name, path, x1, jnp.linspace(0.0, 1.0, k + 1))
    return float(jnp.max(jnp.abs(x0 - exact) / jnp.abs(exact)))

  heun = [error('heun', k) for k in (100, 200)]
  euler = [error('euler', k) for k in (25, 50, 100, 200)]
  assert heun[1] < 3e-3, heun
  assert heun[0] / heun[1] > 3.0, heun                    # second order: error / 4 per doubling
  assert euler[-1] < 0.2, euler
  assert all(e0 / e1 > 1.6 for e0, e1 in zip(euler, euler[1:])), euler   # first order: error / 2


@pytest.mark.parametrize('path_name', sorted(PATHS))
@pytest.mark.parametrize('name', ['heun', 'euler_maruyama', 'pc'])
def test_gaussian_sample_variance(name, path_name):
  path = PATHS[path_name]
  n, d, allowance = 4000, 16, 0.01
  x = _run(name, path, _gaussian(d), baselines.edm_rho7(path, 200), n, d)
  ratio = float(jnp.var(x)) / C**2
  assert abs(ratio - 1.0) < 4 * np.sqrt(2.0 / (n * d)) + allowance, ratio


@pytest.mark.parametrize('path_name', sorted(PATHS))
def test_ancestral_variance_follows_its_gaussian_recursion(path_name):
  # Gaussian data: D(x, t) = k_t x with k_t = alpha c^2 / (alpha^2 c^2 + sigma^2), so a step t -> s maps the
  # variance V to (a_t + b_t k_t)^2 V + var_post (ddm.paths.posterior's coefficients): exact for any K. The
  # sampler is first order, so it loses variance at few steps (DDPM's "small" posterior variance).
  path, n, d = PATHS[path_name], 4000, 16
  ts = np.asarray(baselines.edm_rho7(path, 20), np.float64)
  k = lambda t: float(path.alpha(t)) * C**2 / (float(path.alpha(t))**2 * C**2 + float(path.sigma(t))**2)
  var = float(path.alpha(1.0))**2 + float(path.sigma(1.0))**2
  for i in range(len(ts) - 1, 0, -1):
    t, s = ts[i], ts[i - 1]
    a, _ = paths.posterior(path, s, t, jnp.ones(()), jnp.zeros(()))
    b, post = paths.posterior(path, s, t, jnp.zeros(()), jnp.ones(()))
    var = (float(a) + float(b) * k(t))**2 * var + float(post) * (i > 1)
  var *= k(ts[0])**2                                        # the final denoising step
  x = _run('ancestral', path, _gaussian(d), ts, n, d)
  assert abs(float(jnp.var(x)) / var - 1.0) < 4 * np.sqrt(2.0 / (n * d)), (float(jnp.var(x)), var)
  assert var / C**2 < 0.99                                  # and the recursion is not the trivial answer


@pytest.fixture(scope='module')
def bimodal_expected_log_prob():
  """``E_{p_0}[log p_0(x)]`` by Monte Carlo from true samples (standard error about 0.002)."""
  return float(jnp.mean(BIMODAL.log_prob_data(BIMODAL.sample_p0(jax.random.PRNGKey(9), 100_000))))


@pytest.mark.parametrize('path_name', sorted(PATHS))
@pytest.mark.parametrize('name', [
    'heun', 'euler_maruyama', 'pc', 'ancestral'])
def test_bimodal_modes_and_log_likelihood(name, path_name, bimodal_expected_log_prob):
  path, n = PATHS[path_name], 4000
  x = _run(name, path, BIMODAL, baselines.edm_rho7(path, 200), n, 1)
  assert float(jnp.mean(jnp.abs(x - 1.0) < 0.5) + jnp.mean(jnp.abs(x + 1.0) < 0.5)) > 0.99
  assert abs(float(jnp.mean(jnp.abs(x - 1.0) < 0.5)) - 0.5) < 4 * 0.5 / np.sqrt(n)
  log_prob = float(jnp.mean(BIMODAL.log_prob_data(x)))    # std of log p_0 under p_0 is about 0.71
  assert abs(log_prob - bimodal_expected_log_prob) < 4 * 0.71 / np.sqrt(n) + 0.005, (log_prob,
                                                                                  bimodal_expected_log_prob)


@pytest.mark.parametrize('name', ['euler', 'heun', 'euler_maruyama', 'pc', 'ancestral'])
def test_image_shapes_and_no_recompilation(name):
  path, shape = PATHS['ve'], (4, 8, 8, 1)
  score_fn = lambda x, t: -x / per_example(1.0 + path.sigma(t)**2, x)
  traces = []

  def counted(key, ts, x_init):
    traces.append(1)                                       # runs only when jit traces
    return samplers.make_sampler(name, path, score_fn, langevin_steps=2)(key, ts, x_init)

  sample = jax.jit(counted)
  x_init = samplers.prior_sample(path, jax.random.PRNGKey(0), shape)
  out = [sample(jax.random.PRNGKey(1), baselines.BASELINES.get(s)(path, 10), x_init)
         for s in ('edm_rho7', 'log_linear')]
  assert len(traces) == 1
  for x in out:
    assert x.shape == shape and x.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(x)))
  assert not np.allclose(out[0], out[1])                  # the new schedule was used


def test_euler_maruyama_adds_no_noise_on_final_step():
  path = PATHS['vp']
  sample = jax.jit(samplers.make_sampler('euler_maruyama', path, _gaussian(2).score_fn(path), denoise_final=False))
  x_init = samplers.prior_sample(path, jax.random.PRNGKey(0), (8, 2))
  ts = jnp.array([0.0, 1.0])                               # one step, which is the final one
  np.testing.assert_array_equal(sample(jax.random.PRNGKey(1), ts, x_init), sample(jax.random.PRNGKey(2), ts, x_init))


@pytest.mark.parametrize('path_name', sorted(PATHS))
def test_prior_sample_std(path_name):
  path = PATHS[path_name]
  x = samplers.prior_sample(path, jax.random.PRNGKey(0), (20000, 2))
  expected = np.sqrt(float(path.alpha(1.0))**2 + float(path.sigma(1.0))**2)
  assert x.shape == (20000, 2)
  assert abs(float(jnp.std(x)) / expected - 1.0) < 0.02


def test_unknown_sampler_lists_allowed_names():
  with pytest.raises(ValueError, match=r'config\.eval\.sampler=.*allowed: ancestral, euler, euler_maruyama, heun, pc'):
    samplers.make_sampler('rk4', PATHS['ve'], lambda x, t: -x)
