"""The probability-flow ODE log-likelihood (eval/likelihood.py) against closed forms: Gaussian data on VE
and VP paths (exact and Hutchinson divergences), 1-D mixtures at the default 200 eval steps, the
Hutchinson estimator against the exact divergence in 8-D, the ODE's call on images (jit, probes from the config), and
the data likelihood --mode=eval reports (:func:`eval.likelihood.data_likelihood`: nats on toys, dequantised bits/dim)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from ddm.paths import make_path, ve_path, vp_path
from ddm.targets import GaussianMixture, gaussian_mixture, make_target
from eval import likelihood as lik

PATHS = {'ve': lambda: ve_path(0.002, 80.0), 've_linear': lambda: ve_path(0.002, 80.0, 'linear'),
         'vp': lambda: vp_path('linear'), 'vp_cosine': lambda: vp_path('cosine')}


def ode_log_likelihood(target, path, x, steps, probes=1, key=0, **kw):
  fn = jax.jit(lambda xb, k: lik.log_likelihood(target.score_fn(path), path, xb, k, steps, probes=probes, **kw))
  return np.asarray(fn(x, jax.random.PRNGKey(key)))


def test_grid_uniform_in_log_ratio():
  for make in PATHS.values():
    path = make()
    with jax.enable_x64(True):
      ts, lambdas = map(np.asarray, lik.log_lambda_grid(path, 50, jnp.float64))
      assert ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
      np.testing.assert_allclose(np.diff(lambdas), np.diff(lambdas).mean(), rtol=1e-6)
      np.testing.assert_allclose(lambdas[[0, -1]], np.log([path.ratio(0.0), path.ratio(1.0)]), rtol=1e-9)


@pytest.mark.parametrize('path_name', ['ve', 've_linear', 'vp', 'vp_cosine'])
def test_gaussian_exact_divergence_1d(path_name):
  """N(0, c^2) on every path: the ODE value is log p_{t=0}(x) = log N(x; 0, alpha(0)^2 c^2 + sigma(0)^2)."""
  path, c = PATHS[path_name](), 0.5
  target = gaussian_mixture([[0.0]], [c], [1.0])
  with jax.enable_x64(True):
    x = jnp.linspace(-2.0, 2.0, 41, dtype=jnp.float64)[:, None]
    exact = np.asarray(target.log_prob(x, 0.0, path))
    # The prior at t = 1 matched to the data (data_var = c^2): the normalised state is then constant and the
    # integral exact, so this checks the prior, the divergence and the change of variables to round-off.
    ll = ode_log_likelihood(target, path, x, 20, data_var=c**2)
    np.testing.assert_allclose(ll, exact, atol=1e-10)
    # prior_sample's prior (unit data variance): a real trajectory, Heun error only (measured max 1.3e-3 on
    # VE at x = +-2, mean 3e-5 over N(0, c^2) draws).
    ll = ode_log_likelihood(target, path, x, 200)
    np.testing.assert_allclose(ll, exact, atol=2e-3)
    ll20 = ode_log_likelihood(target, path, x, 20)
    assert np.abs(ll20 - exact).max() > 10 * np.abs(ll - exact).max()  # 2nd order: 10x steps, ~100x error
  # float32, as eval runs it
  x32 = target.sample_p0(jax.random.PRNGKey(1), 512)
  err = ode_log_likelihood(target, path, x32, 200) - np.asarray(target.log_prob(x32, 0.0, path))
  assert abs(err.mean()) < 2e-4 and np.abs(err).max() < 3e-3


@pytest.mark.parametrize('path_name', ['ve', 'vp'])
def test_gaussian_hutchinson_8d(path_name):
  """N(0, c^2 I_8): the Jacobian of the flow is a multiple of I, so one Rademacher probe is already exact
  (e^T a I e = a d); the ODE value equals the closed form up to the Heun error."""
  path, c, d = PATHS[path_name](), 0.5, 8
  target = make_target(_data(target='gaussian', dim=d, std=c))
  with jax.enable_x64(True):
    x = target.sample_p0(jax.random.PRNGKey(2), 256).astype(jnp.float64)
    exact = np.asarray(target.log_prob(x, 0.0, path))
    ll = ode_log_likelihood(target, path, x, 200, probes=1)
    assert abs(np.mean(ll - exact)) < 2e-4 and np.abs(ll - exact).max() < 5e-3
    np.testing.assert_allclose(ode_log_likelihood(target, path, x, 20, data_var=c**2), exact, atol=1e-9)


def _data(**fields):
  data = base.get_config().data
  data.update(fields)
  return data


def test_hutchinson_unbiased_against_exact_divergence_8d():
  """An anisotropic 8-D two-component mixture: Hutchinson (probes fixed along each trajectory) is unbiased
  for the exact-divergence value, and its spread falls like 1 / sqrt(probes)."""
  d = 8
  means = np.zeros((2, d), np.float32)
  means[0, :3] = [1.0, -0.5, 0.3]
  means[1] = -means[0]
  target = GaussianMixture(means, np.array([0.2, 0.4], np.float32), np.array([0.4, 0.6], np.float32))
  path = ve_path(0.002, 80.0)
  with jax.enable_x64(True):
    x = target.sample_p0(jax.random.PRNGKey(1), 512).astype(jnp.float64)
    exact_div = ode_log_likelihood(target, path, x, 100, exact_max_dim=d)   # d jvps per drift evaluation
    closed = np.asarray(target.log_prob(x, 0.0, path))
    assert abs(np.mean(exact_div - closed)) < 5e-3 and np.abs(exact_div - closed).max() < 0.03
    err1 = ode_log_likelihood(target, path, x, 100, probes=1) - exact_div
    err16 = ode_log_likelihood(target, path, x, 100, probes=16) - exact_div
  for err in (err1, err16):
    assert abs(err.mean()) < 4.0 * err.std() / np.sqrt(len(err))             # unbiased (measured -0.09 and -0.19 SE)
  assert 0.15 < err16.std() / err1.std() < 0.4                               # ~ 1/4 (measured 0.25)


@pytest.mark.parametrize('path_name', ['ve', 'vp', 'vp_cosine'])
@pytest.mark.parametrize('target_name', ['bimodal', 'gmm'])
def test_mixture_1d_mean_log_likelihood(path_name, target_name):
  """1-D mixtures at the default 200 eval steps in float32 (as eval runs): mean ODE log-likelihood within
  0.02 nats of the closed-form mean log p0 of the same points (measured |error| <= 1.4e-4 nats)."""
  config = base.get_config()
  config.data.target = target_name
  target, path = make_target(config.data), PATHS[path_name]()
  x = target.sample_p0(jax.random.PRNGKey(3), 1024)
  ll = ode_log_likelihood(target, path, x, config.eval.likelihood_steps)
  assert ll.dtype == np.float32 and ll.shape == (1024,)
  assert abs(ll.mean() - float(np.mean(target.log_prob_data(x)))) < 0.02
  assert abs(ll.mean() - float(np.mean(target.log_prob(x, 0.0, path)))) < 1e-3


def test_eval_run_call_on_images():
  """The ODE as data_likelihood calls it: jit over (batch, key) with steps and probes from the config, on image-shaped
  data (Hutchinson), against the closed form of N(0, c^2 I) per pixel; the probes depend on the key."""
  config = base.get_config()
  path, c, shape = make_path(config.sde), 0.5, (4, 4, 2)
  var = lambda t: path.alpha(t)**2 * c**2 + path.sigma(t)**2
  score_fn = lambda x, t: -x / var(t).reshape((-1, 1, 1, 1))
  x = c * jax.random.normal(jax.random.PRNGKey(4), (6,) + shape)
  fn = jax.jit(lambda xb, k: lik.log_likelihood(score_fn, path, xb, k, 50, probes=config.eval.hutchinson_probes))
  ll = np.asarray(fn(x, jax.random.PRNGKey(0)))
  d = np.prod(shape)
  exact = -0.5 * np.sum(np.asarray(x).reshape(6, -1)**2, 1) / var(0.0) - 0.5 * d * np.log(2 * np.pi * var(0.0))
  assert ll.shape == (6,) and ll.dtype == np.float32
  np.testing.assert_allclose(ll, exact, atol=0.05)

  # A score whose Jacobian is not diagonal (Rademacher probes are exact for diagonal ones): the estimate
  # depends on the probes, which are drawn from the key.
  score2 = lambda x, t: score_fn(x, t) + 0.1 * jnp.tanh(jnp.roll(x, 1, axis=1)) / var(t).reshape((-1, 1, 1, 1))
  fn2 = jax.jit(lambda xb, k: lik.log_likelihood(score2, path, xb, k, 50, probes=1))
  a, b = np.asarray(fn2(x, jax.random.PRNGKey(0))), np.asarray(fn2(x, jax.random.PRNGKey(1)))
  assert np.all(np.isfinite(a)) and np.abs(a - b).max() > 1e-3


def test_data_likelihood_in_nats_on_toys_and_dequantised_bits_per_dim_on_images():
  """On a toy target: the ODE's mean NLL beside the exact one of the same points. On 8-bit-like images (a
  Gaussian per pixel, exact score): bits/dim of the uniformly dequantised data, ``-log p / (d ln 2) + log2(127.5)``
  for 256 levels, against the closed form at the dequantised points (the same key split)."""
  config = base.get_config()
  config.data.target = 'bimodal'
  path, target = make_path(config.sde), make_target(config.data)
  x = np.asarray(target.sample_p0(jax.random.PRNGKey(5), 512))
  out = lik.data_likelihood(config.eval, config.data, path, target.score_fn(path), x, jax.random.PRNGKey(6))
  assert set(out) == {'nll_nats', 'exact_nll_nats'} and abs(out['nll_nats'] - out['exact_nll_nats']) < 0.02

  config.data.dataset, config.eval.likelihood_steps = 'cifar10', 50
  c, shape = 0.5, (4, 4, 2)
  var = lambda t: path.alpha(t)**2 * c**2 + path.sigma(t)**2
  x = np.asarray(c * jax.random.normal(jax.random.PRNGKey(7), (6,) + shape))
  out = lik.data_likelihood(config.eval, config.data, path, lambda y, t: -y / var(t).reshape((-1, 1, 1, 1)), x,
                            jax.random.PRNGKey(8))
  deq = x + np.asarray(jax.random.uniform(jax.random.split(jax.random.PRNGKey(8))[0], x.shape)) * (2.0 / 255)
  d = np.prod(shape)
  exact = -0.5 * np.sum(deq.reshape(6, -1)**2, 1) / var(0.0) - 0.5 * d * np.log(2 * np.pi * var(0.0))
  expected = np.mean(-exact / (d * np.log(2.0)) + np.log2(127.5))
  assert set(out) == {'bits_per_dim'}
  np.testing.assert_allclose(out['bits_per_dim'], expected, atol=0.05 / (d * np.log(2.0)) + 1e-3)
