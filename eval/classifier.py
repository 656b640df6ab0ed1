"""The offline feature extractor for ``fd_classifier``: a small CNN the project trains on its own dataset.

Where no Inception-v3 weights are available (no network), schedules are compared by the Frechet distance
between the statistics of data and samples in the 128-d penultimate layer of this classifier. The number
is called ``fd_classifier``, never FID: it depends on this network and its training, and is comparable
only between runs that use the same cached classifier (same dataset, steps and seed).

Network: 3 convolutions (32, 64 stride 2, 64 stride 2; 3x3, ReLU), global average pooling, a dense 128-d
feature layer (SiLU; the features) and a linear softmax head over the 10 classes. Trained with Adam on the
labelled training split of ``config.data.dataset`` (images in [-1, 1], the training pipeline's scaling), its
accuracy measured on the held-out test split. Parameters are cached in ``<workdir>/classifier/``
(``params.npz`` and ``classifier.json``: dataset, steps, seed, test accuracy, feature dimension) and reused
while dataset, steps, seed, image shape and architecture match; anything else retrains.
"""
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from ddm import files, streams
from train import data as data_lib

CACHE_FOLDER = 'classifier'
PARAMS_FILE, INFO_FILE = 'params.npz', 'classifier.json'
ARCHITECTURE = 'conv32-conv64s2-conv64s2-gap-dense128silu-softmax10'  # in the cache key
DATASETS = ('digits', 'mnist', 'mnist5k', 'cifar10')
NUM_CLASSES = 10
FEATURE_DIM = 128
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
DIGITS_TEST_FRACTION = 0.2  # held-out part of scikit-learn's 1797 digits (fixed permutation, seed 0)


class Classifier(nn.Module):
  """``x: f32[B, H, W, C] in [-1, 1] -> (logits f32[B, 10], features f32[B, 128])``."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    x = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(x))
    x = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(x))
    x = jnp.mean(x, axis=(1, 2))
    features = nn.silu(nn.Dense(FEATURE_DIM)(x))  # smooth: no dead feature units (ReLU left ~1/5 dead)
    return nn.Dense(NUM_CLASSES)(features), features


def _check_dataset(data_cfg):
  name = data_cfg.dataset
  if name not in DATASETS:
    raise ValueError(f'config.data.dataset={name!r} has no labels to train the fd_classifier feature '
                     f'classifier on; allowed: {", ".join(DATASETS)} (provide Inception weights through '
                     f'config.eval.inception_path for FID instead)')
  return name


def _tfds_split(name: str, split: str, data_dir: str):
  """``(u8[N, H, W, C], i32[N])`` of a TFDS split through ``tfds.data_source`` (no TensorFlow)."""
  if split == 'train':
    source = data_lib.tfds_source(name, data_dir)  # its error message explains how to prepare the data
  else:
    import tensorflow_datasets as tfds
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:
      raise ValueError(f'the {split!r} split of the TFDS dataset {name!r} is not prepared in array_record '
                       f'format (config.data.tfds_data_dir={data_dir!r}); prepare it as the README says '
                       f'(tfds build {name} --file_format=array_record). TFDS said: {type(e).__name__}: {e}') from e

  def read(keys):
    try:
      return source.__getitems__(keys)
    except TypeError:  # tfds.testing.mock_data's __getitems__ is broken (tfds 4.9): one by one
      return [source[k] for k in keys]

  images, labels = [], []
  for start in range(0, len(source), data_lib.READ_CHUNK):
    for example in read(list(range(start, min(start + data_lib.READ_CHUNK, len(source))))):
      images.append(np.asarray(example['image'], np.uint8))
      labels.append(int(example['label']))
  return np.stack(images), np.asarray(labels, np.int32)


def load_labelled(data_cfg):
  """``(x_train, y_train, x_test, y_test)`` of ``data_cfg`` (``config.data``): images f32[N, H, W, C] in [-1, 1]
  (as train/data.py scales them) and labels i32[N]. digits: a fixed 80/20 split of scikit-learn's 1797 images;
  TFDS datasets (mnist5k included, :mod:`train.mnist5k`): their train and test splits."""
  name = _check_dataset(data_cfg)
  if name == 'digits':
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None] / np.float32(16 / 2) - 1.0   # values / 8 - 1
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(images))
    n_test = int(round(DIGITS_TEST_FRACTION * len(images)))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]
  to_float = lambda u8: u8.astype(np.float32) / np.float32(255 / 2) - 1.0
  tfds_name, data_dir = data_lib.tfds_location(data_cfg)
  x_train, y_train = _tfds_split(tfds_name, 'train', data_dir)
  x_test, y_test = _tfds_split(tfds_name, 'test', data_dir)
  if x_train.shape[1:] != data_lib.IMAGE_SHAPES[name]:
    raise ValueError(f'TFDS {name!r} images have shape {x_train.shape[1:]}, expected {data_lib.IMAGE_SHAPES[name]}')
  return to_float(x_train), y_train, to_float(x_test), y_test


def train_classifier(seed: int, x_train, y_train, x_test, y_test, steps: int):
  """Adam on the cross-entropy for ``steps`` steps of ``BATCH_SIZE`` examples, initialised and shuffled from
  ``seed``'s 'classifier' stream; returns (params, test accuracy)."""
  model = Classifier()
  key = streams.key(seed, 'classifier')
  params = model.init(key, jnp.zeros((1,) + x_train.shape[1:]))['params']
  tx = optax.adam(LEARNING_RATE)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      logits, _ = model.apply({'params': p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng((seed, streams.STREAMS['classifier']))
  batch = min(BATCH_SIZE, len(x_train))
  order, pos = rng.permutation(len(x_train)), 0
  for _ in range(int(steps)):
    if pos + batch > len(order):
      order, pos = rng.permutation(len(x_train)), 0
    idx = order[pos:pos + batch]
    pos += batch
    params, opt_state = step(params, opt_state, x_train[idx], y_train[idx])

  predict = jax.jit(lambda p, x: jnp.argmax(model.apply({'params': p}, x)[0], axis=-1))
  correct = sum(int(np.sum(np.asarray(predict(params, x_test[i:i + 1000])) == y_test[i:i + 1000]))
                for i in range(0, len(x_test), 1000))
  return params, correct / len(x_test)


def _cache_key(dataset: str, steps: int, seed: int, shape) -> dict:
  return {'dataset': dataset, 'steps': int(steps), 'seed': int(seed), 'image_shape': list(shape),
          'architecture': ARCHITECTURE}


def _save(folder, params, info):
  folder.mkdir(parents=True, exist_ok=True)
  flat = {'/'.join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
  tmp = folder / (PARAMS_FILE + '.tmp.npz')
  with tmp.open('wb') as f:
    np.savez(f, **flat)
  tmp.replace(folder / PARAMS_FILE)
  files.write_json(info, folder / INFO_FILE)  # written last


def _load(folder, key: dict):
  """The cached ``(params, info)`` when ``classifier.json`` matches ``key``; else None."""
  try:
    info = files.read_json(folder / INFO_FILE)  # damaged: retrained (it is a cache)
    if any(info.get(k) != v for k, v in key.items()):
      return None
    with (folder / PARAMS_FILE).open('rb') as f, np.load(f) as npz:
      params = traverse_util.unflatten_dict({tuple(k.split('/')): jnp.asarray(npz[k]) for k in npz.files})
    return params, info
  except (OSError, ValueError, KeyError):
    return None


def get_feature_fn(data_cfg, steps: int, seed: int, workdir):
  """``(features, info)``: the jitted ``features(x: f32[B, *S] in [-1, 1]) -> f32[B, 128]`` of the classifier
  trained on ``data_cfg.dataset`` (``config.data``) for ``steps`` steps (``config.eval.classifier_steps``) from
  ``seed`` (``config.seed``), and the info dict
  ``{dataset, steps, seed, image_shape, architecture, test_accuracy, feature_dim, train_seconds, cached}``.

  The classifier is trained once and cached in ``<workdir>/classifier/`` (``workdir`` None or '': no cache).
  Raises ValueError for datasets without labels (toy, fake), naming config.data.dataset and the allowed ones.
  """
  name = _check_dataset(data_cfg)
  shape = tuple(data_lib.IMAGE_SHAPES[name])
  key = _cache_key(name, steps, seed, shape)
  folder = files.as_path(workdir) / CACHE_FOLDER if workdir else None
  cached = _load(folder, key) if folder else None
  if cached is not None:
    params, info = cached
    info = dict(info, cached=True)
  else:
    start = time.time()
    x_train, y_train, x_test, y_test = load_labelled(data_cfg)
    params, accuracy = train_classifier(seed, x_train, y_train, x_test, y_test, steps)
    info = dict(key, test_accuracy=float(accuracy), feature_dim=FEATURE_DIM, num_train=int(len(x_train)),
                num_test=int(len(x_test)), train_seconds=round(time.time() - start, 2))
    if folder:
      if jax.process_index() == 0:
        _save(folder, params, info)
    info = dict(info, cached=False)
  model = Classifier()

  @jax.jit
  def features(x):
    if tuple(x.shape[1:]) != shape:
      raise ValueError(f'fd_classifier features expect images of shape {shape} ({name}); got {x.shape[1:]}')
    return model.apply({'params': params}, x.astype(jnp.float32))[1]

  return features, info
