"""Paths against their closed forms; derivatives from jax.jvp against hand-derived ones."""
import jax.numpy as jnp
import numpy as np
import pytest

from ddm import paths

T = jnp.linspace(0.0, 1.0, 11)
ALL_PATHS = {
    've_geometric': paths.ve_path(0.002, 80.0, 'geometric'),
    've_linear': paths.ve_path(0.002, 80.0, 'linear'),
    'vp_linear': paths.vp_path('linear'),
    'vp_cosine': paths.vp_path('cosine'),
}


def test_ve_geometric_closed_form_and_derivative():
  p = ALL_PATHS['ve_geometric']
  alpha, sigma, dalpha, dsigma = p.derivatives(T)
  np.testing.assert_allclose(sigma, 0.002 * (80 / 0.002)**T, rtol=1e-5)
  np.testing.assert_allclose(dsigma, sigma * np.log(80 / 0.002), rtol=1e-5)
  np.testing.assert_allclose(alpha, 1.0)
  np.testing.assert_allclose(dalpha, 0.0)


def test_vp_linear_derivative_is_minus_half_beta_alpha():
  eps, b0, b1 = 1e-3, 0.1, 20.0
  p = paths.vp_path('linear', b0, b1, eps)
  alpha, sigma, dalpha, dsigma = p.derivatives(T)
  tau = eps + T * (1 - eps)
  beta = b0 + tau * (b1 - b0)
  np.testing.assert_allclose(dalpha, -0.5 * beta * alpha * (1 - eps), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-6)
  # sigma sigma' = -alpha alpha' on a VP path.
  np.testing.assert_allclose(sigma * dsigma, -alpha * dalpha, rtol=1e-3, atol=1e-6)


def test_vp_cosine_matches_nichol_dhariwal():
  eps, s = 1e-3, paths.COSINE_OFFSET
  p = paths.vp_path('cosine', eps=eps)
  tau = eps + T * (1 - 2 * eps)
  f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2)**2
  np.testing.assert_allclose(p.alpha(T)**2, f(tau) / f(0.0), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('name', sorted(ALL_PATHS))
def test_ratio_inverse_and_monotone(name):
  p = ALL_PATHS[name]
  r = p.ratio(T)
  assert np.all(np.diff(np.asarray(r)) > 0)
  np.testing.assert_allclose(p.t_of_ratio(r), T, atol=2e-4)


def test_parametrisation_conversions_round_trip():
  x = jnp.array([[0.3], [-1.2]])
  d = jnp.array([[0.1], [-0.9]])
  alpha, sigma = 0.8, 0.6
  s = paths.score_from_denoiser(x, d, alpha, sigma)
  np.testing.assert_allclose(paths.denoiser_from_score(x, s, alpha, sigma), d, rtol=1e-6)
  eps = paths.eps_from_score(s, sigma)
  np.testing.assert_allclose(paths.score_from_eps(eps, sigma), s, rtol=1e-6)
  np.testing.assert_allclose(paths.denoiser_from_eps(x, eps, alpha, sigma), d, rtol=1e-5)
  # x = alpha D + sigma eps: the noise implied by a denoiser reconstructs x.
  np.testing.assert_allclose(alpha * d + sigma * eps, x, rtol=1e-6)


def test_per_example_broadcast():
  x = jnp.zeros((3, 4, 5, 2))
  assert paths.per_example(jnp.arange(3.0), x).shape == (3, 1, 1, 1)


def test_bad_parametrisation_and_schedule_names():
  with pytest.raises(ValueError, match='config.sde.parametrisation.*geometric, linear'):
    paths.ve_path(0.002, 80.0, 'cubic')
  with pytest.raises(ValueError, match='config.sde.beta_schedule.*linear, cosine'):
    paths.vp_path('sigmoid')
