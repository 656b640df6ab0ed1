"""The FID Inception-v3 (eval/inception.py) on random weights: shapes, the exact parameter count of the
pool3 network, the forward pass against a torch-layout reference, and the messages when the weights file is
missing. The weight conversion and its command are tested in tests/tools/test_inception_weights.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eval import inception
from tools import inception_weights

# torchvision / pytorch-fid layer list: (module path, in channels, out channels, kernel h, kernel w).
STEM = [('Conv2d_1a_3x3', 3, 32, 3, 3), ('Conv2d_2a_3x3', 32, 32, 3, 3), ('Conv2d_2b_3x3', 32, 64, 3, 3),
        ('Conv2d_3b_1x1', 64, 80, 1, 1), ('Conv2d_4a_3x3', 80, 192, 3, 3)]


def block_a(cin, pool):
  return [('branch1x1', cin, 64, 1, 1), ('branch5x5_1', cin, 48, 1, 1), ('branch5x5_2', 48, 64, 5, 5),
          ('branch3x3dbl_1', cin, 64, 1, 1), ('branch3x3dbl_2', 64, 96, 3, 3),
          ('branch3x3dbl_3', 96, 96, 3, 3), ('branch_pool', cin, pool, 1, 1)]


def block_b(cin):
  return [('branch3x3', cin, 384, 3, 3), ('branch3x3dbl_1', cin, 64, 1, 1),
          ('branch3x3dbl_2', 64, 96, 3, 3), ('branch3x3dbl_3', 96, 96, 3, 3)]


def block_c(cin, c7):
  return [('branch1x1', cin, 192, 1, 1), ('branch7x7_1', cin, c7, 1, 1), ('branch7x7_2', c7, c7, 1, 7),
          ('branch7x7_3', c7, 192, 7, 1), ('branch7x7dbl_1', cin, c7, 1, 1), ('branch7x7dbl_2', c7, c7, 7, 1),
          ('branch7x7dbl_3', c7, c7, 1, 7), ('branch7x7dbl_4', c7, c7, 7, 1),
          ('branch7x7dbl_5', c7, 192, 1, 7), ('branch_pool', cin, 192, 1, 1)]


def block_d(cin):
  return [('branch3x3_1', cin, 192, 1, 1), ('branch3x3_2', 192, 320, 3, 3), ('branch7x7x3_1', cin, 192, 1, 1),
          ('branch7x7x3_2', 192, 192, 1, 7), ('branch7x7x3_3', 192, 192, 7, 1),
          ('branch7x7x3_4', 192, 192, 3, 3)]


def block_e(cin):
  return [('branch1x1', cin, 320, 1, 1), ('branch3x3_1', cin, 384, 1, 1), ('branch3x3_2a', 384, 384, 1, 3),
          ('branch3x3_2b', 384, 384, 3, 1), ('branch3x3dbl_1', cin, 448, 1, 1),
          ('branch3x3dbl_2', 448, 384, 3, 3), ('branch3x3dbl_3a', 384, 384, 1, 3),
          ('branch3x3dbl_3b', 384, 384, 3, 1), ('branch_pool', cin, 192, 1, 1)]


BLOCKS = [('Mixed_5b', block_a(192, 32)), ('Mixed_5c', block_a(256, 64)), ('Mixed_5d', block_a(288, 64)),
          ('Mixed_6a', block_b(288)), ('Mixed_6b', block_c(768, 128)), ('Mixed_6c', block_c(768, 160)),
          ('Mixed_6d', block_c(768, 160)), ('Mixed_6e', block_c(768, 192)), ('Mixed_7a', block_d(768)),
          ('Mixed_7b', block_e(1280)), ('Mixed_7c', block_e(2048))]
LAYERS = STEM + [(f'{block}.{name}', *rest) for block, layers in BLOCKS for name, *rest in layers]

# torchvision's inception_v3 has 27,161,264 parameters; without its auxiliary head (3,326,696) and its
# 1000-class fc layer (2,049,000) that is the pool3 network's 21,785,568.
POOL3_PARAMS = 21_785_568


@pytest.fixture(scope='module')
def variables():
  return inception.init_params(0)


@pytest.fixture(scope='module')
def features(variables):
  return inception.feature_fn(variables)


def test_parameter_count_is_the_fid_inception(variables):
  from_layers = sum(cin * cout * kh * kw + 2 * cout for _, cin, cout, kh, kw in LAYERS)  # conv + BN scale/offset
  assert from_layers == POOL3_PARAMS
  assert inception.count_params(variables) == POOL3_PARAMS
  assert len(LAYERS) == 94


def test_features_rgb_and_grey(features):
  key1, key2 = jax.random.split(jax.random.PRNGKey(0))
  rgb = jax.random.uniform(key1, (2, 32, 32, 3), minval=-1.0, maxval=1.0)
  grey = jax.random.uniform(key2, (2, 28, 28, 1), minval=-1.0, maxval=1.0)
  for x in (rgb, grey):
    f = features(x)
    assert f.shape == (2, inception.FEATURE_DIM) and f.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(f)))
    assert float(jnp.abs(f[0] - f[1]).max()) > 0   # the images are told apart
  # Grey is the same image on three channels.
  np.testing.assert_allclose(np.asarray(features(grey)), np.asarray(features(jnp.tile(grey, (1, 1, 1, 3)))),
                             rtol=1e-5, atol=1e-6)


def test_preprocess_resizes_half_pixel_bilinear():
  x = jnp.arange(4.0).reshape(1, 1, 4, 1) * jnp.ones((1, 4, 1, 1))   # a horizontal ramp 0..3
  y = inception.preprocess(x / 3.0 * 2.0 - 1.0, size=8)
  assert y.shape == (1, 8, 8, 3)
  # align_corners=False: output column j samples input column (j + 0.5) / 2 - 0.5, clamped at the ends.
  src = np.clip((np.arange(8) + 0.5) / 2.0 - 0.5, 0.0, 3.0)
  np.testing.assert_allclose(np.asarray(y[0, 0, :, 0]), src / 3.0 * 2.0 - 1.0, atol=1e-6)


def test_fid_pooling_quirks():
  x = jnp.ones((1, 5, 5, 1))
  # Padded zeros are not counted: the average of ones stays one at the border.
  np.testing.assert_allclose(np.asarray(inception._avg_pool_same(x)), 1.0)
  # The last E block pools with a max, the one before with an average.
  e = inception.InceptionE(max_pool=True)
  shapes = jax.eval_shape(e.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1280)))
  assert shapes['params']['branch_pool']['conv']['kernel'].shape == (1, 1, 1280, 192)


def test_conv_layout_matches_torch_semantics():
  """A (1, 7) kernel with (0, 3) padding, given in torch's OIHW layout and converted, computes torch's
  cross-correlation (evaluated here with lax in NCHW/OIHW)."""
  rng = np.random.default_rng(0)
  w_oihw = rng.normal(size=(5, 4, 1, 7)).astype(np.float32)
  x = rng.normal(size=(2, 6, 9, 4)).astype(np.float32)
  conv = inception.BasicConv(5, (1, 7), 1, (0, 3))
  v = {'params': {'conv': {'kernel': jnp.asarray(np.transpose(w_oihw, (2, 3, 1, 0)))},
                  'bn': {'scale': jnp.ones(5), 'bias': jnp.zeros(5)}},
       'batch_stats': {'bn': {'mean': jnp.zeros(5), 'var': jnp.ones(5) - inception.BN_EPSILON}}}
  ours = conv.apply(v, jnp.asarray(x))
  ref = jax.lax.conv_general_dilated(jnp.asarray(x.transpose(0, 3, 1, 2)), jnp.asarray(w_oihw), (1, 1),
                                     ((0, 0), (3, 3)), precision=jax.lax.Precision.HIGHEST)
  np.testing.assert_allclose(np.asarray(ours), np.maximum(np.asarray(ref), 0).transpose(0, 2, 3, 1),
                             rtol=1e-4, atol=1e-4)


def test_load_params_round_trip(tmp_path, variables, features):
  path = str(tmp_path / 'inception_fid.npz')
  inception.save_npz(variables, path)
  loaded = inception.load_params(path)
  assert inception.count_params(loaded) == POOL3_PARAMS
  x = jnp.linspace(-1.0, 1.0, 2 * 16 * 16 * 3).reshape(2, 16, 16, 3)
  np.testing.assert_array_equal(np.asarray(inception.feature_fn(loaded)(x)), np.asarray(features(x)))


@pytest.mark.parametrize('make', ['empty', 'absent', 'garbage', 'wrong_arrays'])
def test_load_params_clear_errors(tmp_path, make):
  path = str(tmp_path / 'inception_fid.npz')
  if make == 'empty':
    path = ''
  elif make == 'garbage':
    with open(path, 'wb') as f:
      f.write(b'not an npz')
  elif make == 'wrong_arrays':
    np.savez(path, weights=np.zeros(3))
  error = FileNotFoundError if make in ('empty', 'absent') else ValueError
  with pytest.raises(error) as info:
    inception.load_params(path)
  message = str(info.value)
  assert 'config.eval.inception_path' in message
  assert 'python -m tools.inception_weights --convert --out=inception_fid.npz' in message


# An independent forward pass written the way the torch code reads: NCHW, weights looked up by state-dict
# key in OIHW, branches in torch's concatenation order, pools as torch's F.avg_pool2d / F.max_pool2d.

def _ref_conv(sd, name, x, stride=1, pad=(0, 0)):
  w = jnp.asarray(sd[f'{name}.conv.weight'])
  y = jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad[0], pad[0]), (pad[1], pad[1])),
                                   precision=jax.lax.Precision.HIGHEST)
  bn = lambda k: jnp.asarray(sd[f'{name}.bn.{k}'])[None, :, None, None]
  y = (y - bn('running_mean')) / jnp.sqrt(bn('running_var') + 1e-3) * bn('weight') + bn('bias')
  return jax.nn.relu(y)


def _ref_pool(x, kind, stride, pad):
  dims, strides, padding = (1, 1, 3, 3), (1, 1, stride, stride), ((0, 0), (0, 0), (pad, pad), (pad, pad))
  if kind == 'max':
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, padding)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, padding)
  count = jax.lax.reduce_window(jnp.ones_like(x[:1, :1]), 0.0, jax.lax.add, dims, strides, padding)
  return total / count   # count_include_pad=False


def _ref_forward(sd, x):
  c = lambda name, x, s=1, p=(0, 0): _ref_conv(sd, name, x, s, p)
  cat = lambda *xs: jnp.concatenate(xs, axis=1)
  x = c('Conv2d_1a_3x3', x, 2)
  x = c('Conv2d_2a_3x3', x)
  x = c('Conv2d_2b_3x3', x, 1, (1, 1))
  x = _ref_pool(x, 'max', 2, 0)
  x = c('Conv2d_3b_1x1', x)
  x = c('Conv2d_4a_3x3', x)
  x = _ref_pool(x, 'max', 2, 0)
  for m in ('Mixed_5b', 'Mixed_5c', 'Mixed_5d'):
    x = cat(c(f'{m}.branch1x1', x),
            c(f'{m}.branch5x5_2', c(f'{m}.branch5x5_1', x), 1, (2, 2)),
            c(f'{m}.branch3x3dbl_3', c(f'{m}.branch3x3dbl_2', c(f'{m}.branch3x3dbl_1', x), 1, (1, 1)), 1, (1, 1)),
            c(f'{m}.branch_pool', _ref_pool(x, 'avg', 1, 1)))
  m = 'Mixed_6a'
  x = cat(c(f'{m}.branch3x3', x, 2),
          c(f'{m}.branch3x3dbl_3', c(f'{m}.branch3x3dbl_2', c(f'{m}.branch3x3dbl_1', x), 1, (1, 1)), 2),
          _ref_pool(x, 'max', 2, 0))
  for m in ('Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e'):
    b7 = c(f'{m}.branch7x7_3', c(f'{m}.branch7x7_2', c(f'{m}.branch7x7_1', x), 1, (0, 3)), 1, (3, 0))
    bd = c(f'{m}.branch7x7dbl_1', x)
    for i, p in ((2, (3, 0)), (3, (0, 3)), (4, (3, 0)), (5, (0, 3))):
      bd = c(f'{m}.branch7x7dbl_{i}', bd, 1, p)
    x = cat(c(f'{m}.branch1x1', x), b7, bd, c(f'{m}.branch_pool', _ref_pool(x, 'avg', 1, 1)))
  m = 'Mixed_7a'
  b3 = c(f'{m}.branch3x3_2', c(f'{m}.branch3x3_1', x), 2)
  b7 = c(f'{m}.branch7x7x3_3', c(f'{m}.branch7x7x3_2', c(f'{m}.branch7x7x3_1', x), 1, (0, 3)), 1, (3, 0))
  x = cat(b3, c(f'{m}.branch7x7x3_4', b7, 2), _ref_pool(x, 'max', 2, 0))
  for m, pool in (('Mixed_7b', 'avg'), ('Mixed_7c', 'max')):
    b3 = c(f'{m}.branch3x3_1', x)
    bd = c(f'{m}.branch3x3dbl_2', c(f'{m}.branch3x3dbl_1', x), 1, (1, 1))
    x = cat(c(f'{m}.branch1x1', x),
            c(f'{m}.branch3x3_2a', b3, 1, (0, 1)), c(f'{m}.branch3x3_2b', b3, 1, (1, 0)),
            c(f'{m}.branch3x3dbl_3a', bd, 1, (0, 1)), c(f'{m}.branch3x3dbl_3b', bd, 1, (1, 0)),
            c(f'{m}.branch_pool', _ref_pool(x, pool, 1, 1)))
  return jnp.mean(x, axis=(2, 3))


def test_network_matches_torch_layout_reference(variables):
  """The Flax network against the NCHW reference above on a 75 x 75 input, with non-trivial BatchNorm
  statistics, so every padding, pool and concatenation order is exercised at the smallest input size."""
  rng = np.random.default_rng(1)
  sd = inception_weights.state_dict_from_variables(variables)
  for k in sd:
    if k.endswith(('bn.running_mean', 'bn.bias')):
      sd[k] = (0.1 * rng.normal(size=sd[k].shape)).astype(np.float32)
    elif k.endswith(('bn.running_var', 'bn.weight')):
      sd[k] = rng.uniform(0.5, 1.5, size=sd[k].shape).astype(np.float32)
  v = inception_weights.convert_state_dict(sd)
  x = rng.uniform(-1.0, 1.0, size=(1, 75, 75, 3)).astype(np.float32)
  ours = np.asarray(jax.jit(inception.InceptionV3().apply)(v, jnp.asarray(x)))
  ref = np.asarray(jax.jit(_ref_forward)(sd, jnp.asarray(x.transpose(0, 3, 1, 2))))
  assert ours.shape == ref.shape == (1, 2048)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
