"""Inception-v3 of the standard FID code, in Flax (NHWC), and its pool3 features: what the evaluation
loads and runs (``load_params`` then ``feature_fn``) to compute the FID.

The network is the TensorFlow 2015-12-05 Inception graph that the original FID code (Heusel et al. 2017)
uses, as ported to PyTorch by pytorch-fid (``fid_inception_v3``: torchvision's ``Inception3`` layout with
its ``FIDInceptionA/C/E_1/E_2`` blocks). It differs from torchvision's ImageNet Inception-v3 in

  * the average pools of the A, C and first E blocks ignore the zero padding
    (``count_include_pad=False``, TensorFlow's behaviour);
  * the pool branch of the last E block (``Mixed_7c``) is a 3x3 *max* pool, not an average pool;
  * the weights (1008 ImageNet classes; the classifier is not used here).

Features are the 2048-d output of the final global average pool ("pool3"), taken from images in [-1, 1]
resized bilinearly to 299 x 299 (pytorch-fid's ``InceptionV3(resize_input=True)`` on images in [0, 1]).
Every convolution has no bias and is followed by BatchNorm (running statistics, eps = 1e-3) and a ReLU.

Weights: the ``.npz`` at ``config.eval.inception_path``, made once on a machine with network access and
PyTorch by ``tools/inception_weights.py``:

    python -m tools.inception_weights --convert --out=inception_fid.npz

which downloads pytorch-fid's published ``pt_inception-2015-12-05-6726825d.pth`` and converts its state
dict. The ``.npz`` holds float32 arrays under keys ``params/<path>/kernel|scale|bias``
and ``batch_stats/<path>/mean|var``, where ``<path>`` is the torch module path with '/' for '.', e.g.
``params/Mixed_5b/branch5x5_2/conv/kernel`` (HWIO) from ``Mixed_5b.branch5x5_2.conv.weight`` (OIHW).
"""
import functools
import os
from typing import Any, Callable, Dict, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FID_WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'   # pytorch-fid's published weights
CONVERT_COMMAND = 'python -m tools.inception_weights --convert --out=inception_fid.npz'
CONFIG_FIELD = 'config.eval.inception_path'
INPUT_SIZE = 299            # the network's input resolution (pytorch-fid resizes every image to it)
FEATURE_DIM = 2048          # pool3
BN_EPSILON = 1e-3
INIT_SIZE = 75              # smallest input the network accepts (used for shape-only initialisation)

Pad = Union[int, Tuple[int, int]]


def _pair(v) -> Tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv(nn.Module):
  """torchvision's ``BasicConv2d``: conv (no bias, explicit symmetric padding) -> BatchNorm -> ReLU."""
  features: int
  kernel: Pad
  stride: int = 1
  padding: Pad = 0
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel), strides=(self.stride, self.stride),
                padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name='bn')(x)
    return nn.relu(x)


def _avg_pool_same(x):
  """3x3, stride 1, padding 1, padded zeros not counted (TensorFlow's average pool)."""
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_valid(x):
  return nn.max_pool(x, (3, 3), (2, 2), padding='VALID')


class InceptionA(nn.Module):
  """``FIDInceptionA``: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1; 224 + pool_features channels."""
  pool_features: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    c = lambda f, k, p, name: BasicConv(f, k, 1, p, self.precision, name=name)
    b1 = c(64, 1, 0, 'branch1x1')(x)
    b5 = c(64, 5, 2, 'branch5x5_2')(c(48, 1, 0, 'branch5x5_1')(x))
    b3 = c(64, 1, 0, 'branch3x3dbl_1')(x)
    b3 = c(96, 3, 1, 'branch3x3dbl_3')(c(96, 3, 1, 'branch3x3dbl_2')(b3))
    bp = c(self.pool_features, 1, 0, 'branch_pool')(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """torchvision's ``InceptionB`` (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    c = lambda f, k, s, p, name: BasicConv(f, k, s, p, self.precision, name=name)
    b3 = c(384, 3, 2, 0, 'branch3x3')(x)
    bd = c(64, 1, 1, 0, 'branch3x3dbl_1')(x)
    bd = c(96, 3, 2, 0, 'branch3x3dbl_3')(c(96, 3, 1, 1, 'branch3x3dbl_2')(bd))
    return jnp.concatenate([b3, bd, _max_pool_valid(x)], axis=-1)


class InceptionC(nn.Module):
  """``FIDInceptionC``: factorised 7x7 convolutions; 768 channels."""
  channels_7x7: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    c = lambda f, k, p, name: BasicConv(f, k, 1, p, self.precision, name=name)
    b1 = c(192, 1, 0, 'branch1x1')(x)
    b7 = c(c7, 1, 0, 'branch7x7_1')(x)
    b7 = c(c7, (1, 7), (0, 3), 'branch7x7_2')(b7)
    b7 = c(192, (7, 1), (3, 0), 'branch7x7_3')(b7)
    bd = c(c7, 1, 0, 'branch7x7dbl_1')(x)
    bd = c(c7, (7, 1), (3, 0), 'branch7x7dbl_2')(bd)
    bd = c(c7, (1, 7), (0, 3), 'branch7x7dbl_3')(bd)
    bd = c(c7, (7, 1), (3, 0), 'branch7x7dbl_4')(bd)
    bd = c(192, (1, 7), (0, 3), 'branch7x7dbl_5')(bd)
    bp = c(192, 1, 0, 'branch_pool')(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """torchvision's ``InceptionD`` (grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    c = lambda f, k, s, p, name: BasicConv(f, k, s, p, self.precision, name=name)
    b3 = c(320, 3, 2, 0, 'branch3x3_2')(c(192, 1, 1, 0, 'branch3x3_1')(x))
    b7 = c(192, 1, 1, 0, 'branch7x7x3_1')(x)
    b7 = c(192, (1, 7), 1, (0, 3), 'branch7x7x3_2')(b7)
    b7 = c(192, (7, 1), 1, (3, 0), 'branch7x7x3_3')(b7)
    b7 = c(192, 3, 2, 0, 'branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_valid(x)], axis=-1)


class InceptionE(nn.Module):
  """``FIDInceptionE_1`` (avg pool, padding not counted) or ``FIDInceptionE_2`` (``max_pool=True``);
  2048 channels."""
  max_pool: bool = False
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    c = lambda f, k, p, name: BasicConv(f, k, 1, p, self.precision, name=name)
    b1 = c(320, 1, 0, 'branch1x1')(x)
    b3 = c(384, 1, 0, 'branch3x3_1')(x)
    b3 = jnp.concatenate([c(384, (1, 3), (0, 1), 'branch3x3_2a')(b3),
                          c(384, (3, 1), (1, 0), 'branch3x3_2b')(b3)], axis=-1)
    bd = c(448, 1, 0, 'branch3x3dbl_1')(x)
    bd = c(384, 3, 1, 'branch3x3dbl_2')(bd)
    bd = jnp.concatenate([c(384, (1, 3), (0, 1), 'branch3x3dbl_3a')(bd),
                          c(384, (3, 1), (1, 0), 'branch3x3dbl_3b')(bd)], axis=-1)
    if self.max_pool:   # the FID graph's quirk in its last block
      pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_same(x)
    bp = c(192, 1, 0, 'branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """The FID Inception-v3 up to pool3.

  ``__call__(x: f32[B, H, W, 3]) -> f32[B, 2048]`` on images already scaled to [-1, 1] and resized
  (H = W = 299 for FID; any H, W >= 75 runs).
  """
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    p = self.precision
    x = BasicConv(32, 3, 2, 0, p, name='Conv2d_1a_3x3')(x)      # 149 x 149 x 32
    x = BasicConv(32, 3, 1, 0, p, name='Conv2d_2a_3x3')(x)      # 147 x 147 x 32
    x = BasicConv(64, 3, 1, 1, p, name='Conv2d_2b_3x3')(x)      # 147 x 147 x 64
    x = _max_pool_valid(x)                                       # 73 x 73 x 64
    x = BasicConv(80, 1, 1, 0, p, name='Conv2d_3b_1x1')(x)      # 73 x 73 x 80
    x = BasicConv(192, 3, 1, 0, p, name='Conv2d_4a_3x3')(x)     # 71 x 71 x 192
    x = _max_pool_valid(x)                                       # 35 x 35 x 192
    x = InceptionA(32, p, name='Mixed_5b')(x)                    # 35 x 35 x 256
    x = InceptionA(64, p, name='Mixed_5c')(x)                    # 35 x 35 x 288
    x = InceptionA(64, p, name='Mixed_5d')(x)                    # 35 x 35 x 288
    x = InceptionB(p, name='Mixed_6a')(x)                        # 17 x 17 x 768
    x = InceptionC(128, p, name='Mixed_6b')(x)
    x = InceptionC(160, p, name='Mixed_6c')(x)
    x = InceptionC(160, p, name='Mixed_6d')(x)
    x = InceptionC(192, p, name='Mixed_6e')(x)                   # 17 x 17 x 768
    x = InceptionD(p, name='Mixed_7a')(x)                        # 8 x 8 x 1280
    x = InceptionE(False, p, name='Mixed_7b')(x)                 # 8 x 8 x 2048
    x = InceptionE(True, p, name='Mixed_7c')(x)                  # 8 x 8 x 2048
    return jnp.mean(x, axis=(1, 2))                              # pool3: 2048


# ----------------------------------------------------------------------------------------------------
# Parameters: random initialisation, .npz layout, loading.


def init_params(seed: int = 0):
  """Randomly initialised variables ``{'params': ..., 'batch_stats': ...}`` (tests; no weights needed).

  He-normal kernels (std ``sqrt(2 / fan_in)``, so activations keep their scale through the ReLUs),
  BatchNorm at identity (scale 1, offset 0, mean 0, variance 1). Built from the abstract shapes, so no
  forward pass is compiled.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for name, shape in variable_shapes().items():
    leaf = name.rsplit('/', 1)[-1]
    if leaf == 'kernel':
      fan_in = int(np.prod(shape[:-1]))
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    elif leaf in ('scale', 'var'):
      value = np.ones(shape)
    else:
      value = np.zeros(shape)
    flat[name] = jnp.asarray(value, jnp.float32)
  return unflatten(flat)


def variable_shapes() -> Dict[str, Tuple[int, ...]]:
  """``{'params/...': shape, 'batch_stats/...': shape}`` of the network, from abstract evaluation."""
  return dict(_variable_shapes())


@functools.lru_cache(maxsize=None)
def _variable_shapes():
  x = jax.ShapeDtypeStruct((1, INIT_SIZE, INIT_SIZE, 3), jnp.float32)
  shapes = jax.eval_shape(InceptionV3().init, jax.random.PRNGKey(0), x)
  return tuple((k, tuple(v.shape)) for k, v in flatten(shapes).items())


def flatten(tree, prefix: str = '') -> Dict[str, Any]:
  """Nested dict -> ``{'a/b/c': leaf}``."""
  out = {}
  for k, v in tree.items():
    name = f'{prefix}/{k}' if prefix else str(k)
    if hasattr(v, 'items'):
      out.update(flatten(v, name))
    else:
      out[name] = v
  return out


def unflatten(flat: Dict[str, Any]) -> Dict[str, Any]:
  """``{'a/b/c': leaf}`` -> nested dict."""
  tree: Dict[str, Any] = {}
  for name, v in flat.items():
    node = tree
    *parents, leaf = name.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def count_params(variables) -> int:
  """Number of trainable parameters (convolution kernels and BatchNorm scales and offsets)."""
  return int(sum(np.prod(np.shape(v)) for v in jax.tree_util.tree_leaves(variables['params'])))


def save_npz(variables, path: str) -> None:
  """Writes ``variables`` in the ``.npz`` layout ``load_params`` reads (float32)."""
  flat = {k: np.asarray(v, np.float32) for k, v in flatten(variables).items()}
  with open(path, 'wb') as f:
    np.savez(f, **flat)


def _missing_message(path: str, why: str) -> str:
  return (f'FID Inception weights {why} ({CONFIG_FIELD}={path!r}). Make the file once, on a machine with '
          f'network access and PyTorch (pip install torch), with\n    {CONVERT_COMMAND}\n'
          f'(it downloads pytorch-fid\'s {FID_WEIGHTS_FILE} and converts it), copy it here '
          f'and pass --{CONFIG_FIELD}=/path/to/inception_fid.npz.')


def load_params(path: str):
  """Reads the FID Inception weights from the ``.npz`` at ``path`` (``config.eval.inception_path``).

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` of float32 ``jnp`` arrays for ``InceptionV3().apply``.

  Raises:
    FileNotFoundError: ``path`` is empty or names no file (the message says how to make it).
    ValueError: the file is not a readable ``.npz`` or its arrays are not the network's (missing, extra
      or mis-shaped keys).
  """
  if not path:
    raise FileNotFoundError(_missing_message(path, 'not configured'))
  if not os.path.isfile(path):
    raise FileNotFoundError(_missing_message(path, 'not found'))
  try:
    with np.load(path, allow_pickle=False) as f:
      flat = {k: np.asarray(f[k]) for k in f.files}
  except Exception as e:  # zipfile.BadZipFile, OSError, ValueError, EOFError, ...
    raise ValueError(_missing_message(path, f'unreadable: {type(e).__name__}: {e}')) from e
  expected = variable_shapes()
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  bad = sorted(k for k in set(expected) & set(flat) if tuple(flat[k].shape) != expected[k])
  if missing or extra or bad:
    detail = '; '.join(f'{what}: {keys[:3]}{" ..." if len(keys) > 3 else ""} ({len(keys)})'
                       for what, keys in (('missing', missing), ('unexpected', extra), ('mis-shaped', bad))
                       if keys)
    raise ValueError(_missing_message(path, f'not the FID Inception layout ({detail})'))
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), unflatten(flat))


# ----------------------------------------------------------------------------------------------------
# Features.


def preprocess(x, size: int = INPUT_SIZE):
  """``f32[B, H, W, C]`` in [-1, 1], C in {1, 3} -> ``f32[B, size, size, 3]``: grey replicated to three
  channels, then bilinear resizing with half-pixel centres and no antialiasing (``F.interpolate(...,
  mode='bilinear', align_corners=False)`` as pytorch-fid resizes)."""
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f'images must be [B, H, W, 1 or 3], got {x.shape}')
  if x.shape[-1] == 1:
    x = jnp.tile(x, (1, 1, 1, 3))
  if x.shape[1:3] != (size, size):
    x = jax.image.resize(x, (x.shape[0], size, size, 3), method='bilinear', antialias=False)
  return x


# Jitted once per process: every feature_fn shares the compiled network (variables are an argument).
_network = jax.jit(lambda variables, x: InceptionV3().apply(variables, x))
_preprocess = jax.jit(preprocess, static_argnames='size')


def feature_fn(variables, quantize: bool = False) -> Callable[[jax.Array], jax.Array]:
  """``features(x: f32[B, H, W, C] in [-1, 1]) -> f32[B, 2048]``, the pool3 features of the FID.

  Args:
    variables: ``load_params(config.eval.inception_path)`` (or ``init_params()`` in tests).
    quantize: round the images to 8 bits first, as when samples are saved to PNG before the FID (what
      the reference numbers use); leave False to differentiate through the features.

  The preprocessing (``preprocess``) and the network are jitted separately, so the network compiles once
  per batch size whatever the image size and the weights.
  """
  def features(x):
    x = jnp.asarray(x, jnp.float32)
    if quantize:
      x = jnp.round(jnp.clip((x + 1.0) * 127.5, 0.0, 255.0)) / 127.5 - 1.0
    return _network(variables, _preprocess(x))

  return features
