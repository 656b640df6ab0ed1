"""The image U-Net: shapes, parameter counts, smoothness in the noise level, dropout, bfloat16."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import cifar10
from ddm import networks, paths

TINY = dict(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.1,
            embedding='positional')


def _model(shape, dtype='float32', **unet):
  config = ml_collections.ConfigDict(dict(name='unet', dtype=dtype, unet=dict(TINY, **unet)))
  module = networks.make_network(config, shape)
  return module, networks.init_params(module, jax.random.PRNGKey(0), shape)


def _count(params):
  return sum(p.size for p in jax.tree.leaves(params))


@pytest.mark.parametrize('shape, unet', [((8, 8, 1), {}), ((28, 28, 1), dict(channel_mult=(1, 2, 2), attn_resolutions=(7,))),
                                         ((32, 32, 3), dict(embedding='fourier'))])
def test_output_shapes(shape, unet):
  module, params = _model(shape, **unet)
  out = module.apply({'params': params}, jnp.ones((2,) + shape), jnp.zeros(2))
  assert out.shape == (2,) + shape and out.dtype == jnp.float32


def _res_block(cin, cout, emb=64):
  """GroupNorm, 3x3 conv, embedding dense, GroupNorm, 3x3 conv, 1x1 skip if the channels change."""
  n = 2 * cin + 9 * cin * cout + cout + emb * cout + cout + 2 * cout + 9 * cout * cout + cout
  return n + (cin * cout + cout if cin != cout else 0)


def _attn(c):
  return 2 * c + 4 * (c * c + c)  # GroupNorm; query, key, value, output projections


def test_parameter_counts():
  # The tiny network layer by layer (channels 16, mult (1, 2), one block, attention at 4x4, 8x8x1 input).
  expected = ((16 * 64 + 64) + (64 * 64 + 64) + (9 * 16 + 16)                       # embedding MLP, input conv
              + _res_block(16, 16) + (9 * 16 * 16 + 16) + _res_block(16, 32) + _attn(32)  # down
              + 2 * _res_block(32, 32) + _attn(32)                                        # middle
              + _res_block(64, 32) + _attn(32) + _res_block(48, 32) + _attn(32) + (9 * 32 * 32 + 32)  # up 4x4
              + _res_block(48, 16) + _res_block(32, 16) + 2 * 16 + (9 * 16 + 1))          # up 8x8, output
  assert _count(_model((8, 8, 1))[1]) == expected
  # DDPM's published CIFAR-10 size (35.7M) for the default config, counted without allocating.
  config = cifar10.get_config()
  module = networks.make_network(config.model, (32, 32, 3))
  shapes = jax.eval_shape(lambda: networks.init_params(module, jax.random.PRNGKey(0), (32, 32, 3)))
  assert 35.6e6 < _count(shapes) < 35.8e6


def test_jvp_in_t_through_the_unet_matches_finite_difference():
  module, params = _model((8, 8, 1))
  params = jax.tree.map(lambda p: p + 0.01 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), params)
  path = paths.ve_path(0.002, 80.0)
  score = networks.make_score_fn(networks.make_denoiser(module, path, 'edm', 0.5), params, path)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
  t = jnp.array([0.4, 0.6])
  _, tangent = jax.jvp(lambda tt: score(x, tt), (t,), (jnp.ones(2),))
  h = 1e-3
  fd = (score(x, t + h) - score(x, t - h)) / (2 * h)
  np.testing.assert_allclose(tangent, fd, rtol=3e-2, atol=2e-3 * float(jnp.abs(fd).max()))


def test_dropout_only_in_training_and_bfloat16():
  module, params = _model((8, 8, 1))
  params = jax.tree.map(lambda p: p + 0.01, params)
  x, c = jnp.ones((2, 8, 8, 1)), jnp.zeros(2)
  apply = lambda train, key: module.apply({'params': params}, x, c, train=train, rngs={'dropout': key})
  np.testing.assert_array_equal(apply(False, jax.random.PRNGKey(0)), apply(False, jax.random.PRNGKey(1)))
  assert not np.allclose(apply(True, jax.random.PRNGKey(0)), apply(True, jax.random.PRNGKey(1)))
  module16, _ = _model((8, 8, 1), dtype='bfloat16')
  out16 = module16.apply({'params': params}, x, c)
  assert out16.dtype == jnp.float32 and np.all(np.isfinite(out16))
  np.testing.assert_allclose(out16, apply(False, jax.random.PRNGKey(0)), atol=0.05 * float(jnp.abs(out16).max()) + 1e-3)


def test_bad_shapes():
  with pytest.raises(ValueError, match=r'config.model.unet.channel_mult=\(1, 2, 2, 2\) halves the image 3 times; 28x28'):
    _model((28, 28, 1), channel_mult=(1, 2, 2, 2))
  with pytest.raises(ValueError, match="config.model.name='unet' needs images"):
    networks.make_network(ml_collections.ConfigDict(dict(name='unet', dtype='float32', unet=TINY)), (1,))


def test_noise_level_reaches_the_output():
  """Every block must see c_noise: the output's derivative in c_noise is far above rounding."""
  module, params = _model((8, 8, 1))
  params = jax.tree.map(lambda p: p + 0.01 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 1))
  _, d = jax.jvp(lambda c: module.apply({'params': params}, x, c), (jnp.zeros(2),), (jnp.ones(2),))
  assert float(jnp.abs(d).max()) > 1e-3
