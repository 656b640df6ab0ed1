"""Input pipelines: every dataset yields ``{'x': f32[host_batch, *S]}`` (images in [-1, 1]) forever.

Batches are a pure function of ``(config.seed, step)``: the example order of epoch e is a permutation
drawn from ``(seed, e)``, so a run started at ``start_step = k`` sees exactly the batches an uninterrupted
run sees from step k on (resumed training is bit-for-bit the same). Each host reads a disjoint slice
(``jax.process_index()`` of ``jax.process_count()``); :func:`shard` splits a host batch across devices.
"""
import numpy as np
import jax

from ddm.registry import DATASETS
from ddm.targets import make_target
from train.state import stream_key

IMAGE_SHAPES = {'digits': (8, 8, 1), 'mnist': (28, 28, 1), 'cifar10': (32, 32, 3)}
FAKE_POOL = 512  # images in the in-memory fake dataset


def data_shape(config) -> tuple:
  """The per-example shape ``S``."""
  name = config.data.dataset
  if name == 'toy':
    return (config.data.dim,) if config.data.target == 'gaussian' else (1,)
  if name == 'fake':
    return tuple(config.data.fake_shape)
  DATASETS.get(name, 'config.data.dataset')
  return IMAGE_SHAPES[name]


def host_batch_size(config) -> int:
  return config.train.batch_size // jax.process_count()


def shard(batch: dict, num_devices: int) -> dict:
  """``[host_batch, ...] -> [num_devices, host_batch // num_devices, ...]`` for every array (the one place)."""
  def split(x):
    if x.shape[0] % num_devices:
      raise ValueError(f'config.train.batch_size gives {x.shape[0]} examples per host, which is not divisible '
                       f'by the {num_devices} local devices')
    return x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])
  return {k: split(v) for k, v in batch.items()}


def to_unit_range(images, max_value: float = 255.0):
  """``u8[..]`` in ``[0, max_value]`` -> ``f32`` in ``[-1, 1]``."""
  return np.asarray(images, np.float32) * (2.0 / max_value) - 1.0


def _array_iterator(images: np.ndarray, config, start_step: int):
  """Epoch-permuted batches of an in-memory ``f32[N, *S]`` array, this host's slice only, seekable."""
  images = images[jax.process_index()::jax.process_count()]
  batch = host_batch_size(config)
  per_epoch = len(images) // batch
  if per_epoch == 0:
    raise ValueError(f'config.train.batch_size={config.train.batch_size} exceeds the {len(images)} examples '
                     'of this host')
  step, order, epoch = start_step, None, None
  while True:
    e, i = divmod(step, per_epoch)
    if e != epoch:
      epoch, order = e, np.random.default_rng((config.seed, jax.process_index(), e)).permutation(len(images))
    x = images[order[i * batch:(i + 1) * batch]]
    if config.data.random_flip:
      flip = np.random.default_rng((config.seed, jax.process_index(), e, i, 1)).random(batch) < 0.5
      x = np.where(flip.reshape((-1,) + (1,) * (x.ndim - 1)), x[:, :, ::-1], x)
    yield {'x': x}
    step += 1


@DATASETS.register('toy')
def _toy(config, start_step):
  """Fresh draws from the toy target for every step, from a key folded from ``(seed, step, host)``."""
  target, batch = make_target(config.data), host_batch_size(config)
  sample = jax.jit(target.sample_p0, static_argnums=1)
  key = jax.random.fold_in(stream_key(config.seed, 'data'), jax.process_index())
  step = start_step
  while True:
    yield {'x': np.asarray(sample(jax.random.fold_in(key, step), batch))}
    step += 1


@DATASETS.register('fake')
def _fake(config, start_step):
  """A fixed pool of random images in [-1, 1] of shape ``config.data.fake_shape`` (tests, benchmarks)."""
  rng = np.random.default_rng(config.seed)
  pool = rng.uniform(-1.0, 1.0, (FAKE_POOL,) + tuple(config.data.fake_shape)).astype(np.float32)
  return _array_iterator(pool, config, start_step)


@DATASETS.register('digits')
def _digits(config, start_step):
  """scikit-learn's 1797 8x8 handwritten digits (values 0..16), shipped with the package: works offline."""
  from sklearn.datasets import load_digits
  images = load_digits().images.astype(np.float32)[..., None]
  return _array_iterator(to_unit_range(images, 16.0), config, start_step)


def load_tfds_images(name: str, data_dir: str = '') -> np.ndarray:
  """All training images of a TFDS dataset as ``u8[N, H, W, C]``, through ``tfds.data_source`` (no TensorFlow)."""
  import tensorflow_datasets as tfds
  try:
    source = tfds.data_source(name, split='train', data_dir=data_dir or None, download=False)
  except Exception as e:  # TFDS raises several types for a dataset that is not on disk.
    raise ValueError(
        f'the TFDS dataset {name!r} is not prepared in config.data.tfds_data_dir={data_dir!r} '
        f'(empty = ~/tensorflow_datasets). On a machine with network run `tfds build {name}` '
        f'(pip install tensorflow-datasets array_record), then copy the folder here. Cause: {e}') from e
  return np.stack([np.asarray(source[i]['image']) for i in range(len(source))])


def _tfds(config, start_step):
  images = load_tfds_images(config.data.dataset, config.data.tfds_data_dir)
  return _array_iterator(to_unit_range(images), config, start_step)


DATASETS.register('mnist')(_tfds)
DATASETS.register('cifar10')(_tfds)


def make_train_iterator(config, start_step: int = 0):
  """Batches ``{'x': f32[host_batch, *S]}`` for steps ``start_step, start_step + 1, ...``."""
  return DATASETS.get(config.data.dataset, 'config.data.dataset')(config, start_step)
