"""MLP, preconditioning and the denoiser/score wrappers."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddm import networks, paths
from ddm.registry import PRECONDS

PATH = paths.ve_path(0.002, 80.0)


def _model_config(**mlp):
  return ml_collections.ConfigDict(dict(name='mlp', mlp=dict(dict(width=32, depth=2, embedding_dim=16), **mlp)))


def test_mlp_shape_and_exact_parameter_count():
  module = networks.make_network(_model_config(), (3,))
  params = networks.init_params(module, jax.random.PRNGKey(0), (3,))
  # embedding dense 16->32; per layer: x-dense (in->32) + emb-dense (32->32); output 32->3.
  expected = (16 * 32 + 32) + (3 * 32 + 32) + (32 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 3 + 3)
  assert sum(p.size for p in jax.tree.leaves(params)) == expected
  out = module.apply({'params': params}, jnp.ones((5, 3)), jnp.zeros(5))
  assert out.shape == (5, 3)


@pytest.mark.parametrize('name', ['edm', 'vp', 've'])
def test_skip_gap_is_one_minus_c_skip(name):
  r = jnp.array([0.01, 0.5, 3.0, 80.0])
  c = PRECONDS.get(name)(r, 0.5)
  np.testing.assert_allclose(c.skip_gap, 1.0 - c.c_skip, atol=1e-6)


def test_edm_precond_limits_as_sigma_goes_to_zero():
  c = networks.edm_coefficients(jnp.array([1e-4]), 0.5)
  np.testing.assert_allclose(c.c_skip, 1.0, atol=1e-7)
  np.testing.assert_allclose(c.c_out, 0.0, atol=1e-3)
  module = networks.make_network(_model_config(), (1,))
  params = networks.init_params(module, jax.random.PRNGKey(0), (1,))
  params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero output layer
  x = jnp.array([[0.3], [-0.7]])
  for sigma_min, tol in ((1e-3, 2e-2), (1e-5, 2e-4)):  # D(x, sigma) -> x linearly in sigma
    denoise = networks.make_denoiser(module, paths.ve_path(sigma_min, 80.0), 'edm', 0.5)
    np.testing.assert_allclose(denoise(params, x, jnp.zeros(2)), x, atol=tol)


def _denoiser(precond='edm', path=PATH):
  module = networks.make_network(_model_config(), (2,))
  params = jax.tree.map(lambda p: p + 0.05, networks.init_params(module, jax.random.PRNGKey(0), (2,)))
  return networks.make_denoiser(module, path, precond, 0.5), params


@pytest.mark.parametrize('precond', ['edm', 'vp', 've'])
@pytest.mark.parametrize('path', [PATH, paths.vp_path('linear')], ids=['ve', 'vp'])
def test_score_is_tweedie_of_the_denoiser(precond, path):
  denoise, params = _denoiser(precond, path)
  x, t = jnp.array([[0.3, 1.0], [-0.7, 0.1]]), jnp.array([0.3, 0.8])
  alpha, sigma = path.alpha(t)[:, None], path.sigma(t)[:, None]
  expected = (alpha * denoise(params, x, t) - x) / sigma**2
  np.testing.assert_allclose(networks.make_score_fn(denoise, params, path)(x, t), expected, rtol=1e-4)


def test_jvp_in_t_matches_finite_difference():
  denoise, params = _denoiser()
  score = networks.make_score_fn(denoise, params, PATH)
  x, t = jnp.array([[0.3, 1.0], [-0.7, 0.1]]), jnp.array([0.4, 0.6])
  _, tangent = jax.jvp(lambda tt: score(x, tt), (t,), (jnp.ones(2),))
  h = 1e-3
  fd = (score(x, t + h) - score(x, t - h)) / (2 * h)
  np.testing.assert_allclose(tangent, fd, rtol=2e-2, atol=1e-3 * float(jnp.abs(fd).max()))


def test_unknown_names():
  with pytest.raises(ValueError, match="config.model.name='resnet' is not a known network; allowed: mlp"):
    networks.make_network(ml_collections.ConfigDict(dict(name='resnet')), (1,))
  with pytest.raises(ValueError, match="config.model.precond='karras' is not a known preconditioning"):
    networks.make_denoiser(None, PATH, 'karras', 0.5)
