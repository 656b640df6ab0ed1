"""Exact Gaussian-mixture targets: score = grad log p_t, densities normalised, p_t moments closed-form."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddm import paths, targets

PATH = paths.ve_path(0.002, 80.0)


def _data(**kw):
  d = ml_collections.ConfigDict(dict(target='gmm', dim=1, std=0.1, offset=1.0, cantor_depth=3, cantor_tau=0.01,
                                     means=[-1.0, 0.5], stds=[0.1, 0.3], weights=[0.3, 0.7]))
  d.update(kw)
  return d


ALL = {name: targets.make_target(_data(target=name)) for name in ('gaussian', 'bimodal', 'cantor', 'gmm')}


@pytest.mark.parametrize('name', sorted(ALL))
@pytest.mark.parametrize('path', [paths.ve_path(0.002, 80.0), paths.vp_path('linear')], ids=['ve', 'vp'])
def test_score_is_gradient_of_log_density(name, path):
  g = ALL[name]
  t = jnp.array([0.0, 0.2, 0.5, 0.9])
  x = g.sample_pt(jax.random.PRNGKey(1), path, t)
  grad = jax.vmap(jax.grad(lambda xi, ti: g.log_prob(xi[None], ti, path)[0]))(x, t)
  np.testing.assert_allclose(g.score(x, t, path), grad, rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize('name', sorted(ALL))
def test_density_integrates_to_one(name):
  g = ALL[name]
  for t in (0.0, 0.3, 0.7):
    scale = float(PATH.sigma(t)) + 0.5
    x = jnp.linspace(-2 - 4 * scale, 2 + 4 * scale, 400001)[:, None]
    mass = jnp.trapezoid(jnp.exp(g.log_prob(x, t, PATH)), x[:, 0])
    assert abs(float(mass) - 1.0) < 2e-3, (name, t, float(mass))


def test_pt_moments_match_closed_form():
  g = ALL['gmm']
  t = 0.4
  alpha, sigma = float(PATH.alpha(t)), float(PATH.sigma(t))
  x = np.asarray(g.sample_pt(jax.random.PRNGKey(0), PATH, jnp.full((200_000,), t)))[:, 0]
  w, m, s = np.array([0.3, 0.7]), np.array([-1.0, 0.5]), np.array([0.1, 0.3])
  mean = alpha * np.sum(w * m)
  var = np.sum(w * (alpha**2 * s**2 + sigma**2 + (alpha * m)**2)) - mean**2
  assert abs(x.mean() - mean) < 4 * np.sqrt(var / x.size)
  assert abs(x.var() / var - 1) < 0.02


def test_cantor_components():
  means = targets.cantor_means(3)
  assert means.shape == (8,)
  np.testing.assert_allclose(np.sort(means)[:2], [0.0, 2 / 27], atol=1e-7)
  np.testing.assert_allclose(means.max(), 2 / 3 + 2 / 9 + 2 / 27, rtol=1e-6)


def test_log_prob_data_is_the_mixture():
  g = ALL['bimodal']
  x = jnp.array([[1.0], [0.0]])
  expected = np.log(0.5 * np.exp(-0.5 * (np.array([0.0, 1.0]) / 0.1)**2) / (np.sqrt(2 * np.pi) * 0.1)
                    + 0.5 * np.exp(-0.5 * (np.array([2.0, 1.0]) / 0.1)**2) / (np.sqrt(2 * np.pi) * 0.1))
  np.testing.assert_allclose(g.log_prob_data(x), expected, rtol=1e-5)


@pytest.mark.parametrize('override, message', [
    (dict(target='moon'), "config.data.target='moon' is not a known target; allowed: bimodal, cantor, gaussian, gmm"),
    (dict(weights=[0.5, 0.6]), 'config.data.weights must be positive and sum to 1'),
    (dict(stds=[0.1]), 'must be non-empty lists of the same length'),
    (dict(stds=[0.1, -1.0]), 'config.data.stds must all be > 0'),
])
def test_bad_targets(override, message):
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
    targets.make_target(_data(**override))
