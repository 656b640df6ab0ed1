"""Input pipelines: TFDS (mock data and real array_record files), offline digits, toy targets, seeking, flips."""
import io
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from configs import base
from ddm import streams, targets
from train import data


def _config(dataset, batch_size=8, **data_fields):
  config = base.get_config()
  config.data.dataset = dataset
  config.data.update(data_fields)
  config.train.batch_size = batch_size
  return config


def _rows(x):
  return {row.tobytes() for row in x}


def _batches(config, start_step=0):
  """The training pipeline of ``config`` (its data section, batch size and seed) from ``start_step``."""
  return data.make_train_iterator(config.data, config.train.batch_size, config.seed, start_step)


@pytest.mark.parametrize('name, shape', [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_tfds_pipeline_on_mock_data(name, shape):
  config = _config(name)
  # AUTO would fall back to USE_CODE too: the pip package ships no metadata files for USE_FILES.
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    batches = _batches(config)
  x = next(batches)['x']
  assert data.data_shape(config.data) == shape
  assert x.shape == (8,) + shape and x.dtype == np.float32
  assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.3  # uniform random u8 pixels
  sharded = data.shard({'x': x}, 2)['x']
  assert sharded.shape == (2, 4) + shape
  np.testing.assert_array_equal(sharded[1], x[4:])
  assert 'tensorflow' not in sys.modules


def _build_fake_tfds(name, data_dir, images):
  """Writes ``images: u8[N, H, W, C]`` as the real TFDS ``name`` (train split, array_record), without TensorFlow."""
  import PIL.Image
  features = tfds.builder(name, data_dir=data_dir).info.features

  class Fake(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.builder_cls(name).VERSION
    url_infos = None  # nothing is downloaded (TFDS would look for a checksums file beside this module)

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      for i, image in enumerate(images):
        png = io.BytesIO()
        PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(png, format='PNG')
        yield i, {'image': png.getvalue(), 'label': i % 10, **({'id': f'train_{i}'} if 'id' in features else {})}

  Fake.name = name
  Fake(data_dir=data_dir, file_format='array_record').download_and_prepare()


def test_tfds_pipeline_reads_real_array_record_files(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
  _build_fake_tfds('mnist', str(tmp_path), images)
  config = _config('mnist', batch_size=16, tfds_data_dir=str(tmp_path))
  batches = _batches(config)
  seen = np.concatenate([next(batches)['x'] for _ in range(2)])            # 2 of the 40 // 16 batches per epoch
  assert seen.shape == (32, 28, 28, 1) and seen.dtype == np.float32
  assert _rows(seen) <= _rows(images / np.float32(127.5) - 1) and len(_rows(seen)) == 32  # no repeats in an epoch
  assert 'tensorflow' not in sys.modules


def test_missing_tfds_dataset_says_how_to_get_it(tmp_path):
  config = _config('mnist', tfds_data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"'mnist' is not prepared .*tfds_data_dir.*tfds build mnist --file_format"):
    _batches(config)


def test_digits_are_real_images_in_range():
  x = next(_batches(_config('digits', batch_size=256)))['x']
  assert x.shape == (256, 8, 8, 1) and x.dtype == np.float32
  assert x.min() == -1.0 and x.max() == 1.0
  assert np.mean(x[:, :, 0]) < -0.9 < np.mean(x[:, :, 3:5])              # blank borders, strokes in the middle
  assert data.data_shape(_config('digits').data) == (8, 8, 1)


def test_toy_samples_follow_the_target():
  config = _config('toy', batch_size=20_000, target='bimodal')
  x = next(_batches(config))['x']
  assert x.shape == (20_000, 1) == (20_000,) + data.data_shape(config.data) and x.dtype == np.float32
  assert abs(np.mean(x > 0) - 0.5) < 0.02 and abs(np.mean(x)) < 0.03
  np.testing.assert_allclose(np.mean(np.abs(x)), 1.0, atol=0.01)          # components at -offset, +offset
  np.testing.assert_allclose(np.std(np.abs(x)), 0.1, rtol=0.05)
  config = _config('toy', batch_size=20_000, target='gaussian', dim=3, std=0.5)
  x = next(_batches(config))['x']
  assert x.shape == (20_000, 3) == (20_000,) + data.data_shape(config.data)
  np.testing.assert_allclose(np.cov(x.T), 0.25 * np.eye(3), atol=0.015)


@pytest.mark.parametrize('dataset, batch_size', [('toy', 16), ('digits', 512), ('fake', 128)])
def test_starting_at_k_equals_advancing_k_times(dataset, batch_size):
  config = _config(dataset, batch_size, random_flip=dataset != 'toy')     # digits, fake: 3, 4 steps per epoch
  full = _batches(config)
  batches = [next(full)['x'] for _ in range(9)]
  seeked = _batches(config, start_step=6)
  for k in range(6, 9):
    np.testing.assert_array_equal(next(seeked)['x'], batches[k])
  assert not np.array_equal(batches[0], batches[1])
  config.seed = 1
  assert not np.array_equal(next(_batches(config, start_step=6))['x'], batches[6])


def test_the_orders_are_those_runs_always_drew():
  """Image orders and flips draw from the seed sequences ``(seed, stream, 0, epoch or step)``, toy batches from
  ``fold_in(fold_in(seed's 'data' key, 0), step)``: the 0s are kept, so every seed gives the batches it always gave."""
  config = _config('digits', batch_size=64, random_flip=True)
  config.seed = 3
  images = load_digits().images.astype(np.float32)[..., None] / np.float32(8) - 1
  expected = images[np.random.default_rng((3, data.PERMUTE, 0, 0)).permutation(len(images))[:64]]
  flip = np.random.default_rng((3, data.FLIP, 0, 0)).random(64) < 0.5
  expected[flip] = expected[flip, :, ::-1]
  np.testing.assert_array_equal(next(_batches(config))['x'], expected)
  toy = _config('toy', batch_size=16, target='bimodal')
  key = jax.random.fold_in(jax.random.fold_in(streams.key(toy.seed, 'data'), 0), 0)
  drawn = jax.jit(targets.make_target(toy.data).sample_p0, static_argnums=1)(key, 16)
  np.testing.assert_array_equal(next(_batches(toy))['x'], np.asarray(drawn))


def test_flips_only_when_enabled():
  originals = _rows(load_digits().images.astype(np.float32)[..., None] / np.float32(8) - 1)
  plain = _batches(_config('digits', batch_size=64))
  flipped = _batches(_config('digits', batch_size=64, random_flip=True))
  masks = []
  for _ in range(2):
    a, b = next(plain)['x'], next(flipped)['x']   # same order: flips draw from their own stream
    assert _rows(a) <= originals                    # never flipped when disabled
    same = np.array([np.array_equal(u, v) for u, v in zip(a, b)])
    mirrored = np.array([np.array_equal(u[:, ::-1], v) for u, v in zip(a, b)])
    assert np.all(same | mirrored) and 16 < np.sum(~same) < 48
    masks.append(same)
  assert not np.array_equal(*masks)                 # fresh flips at every step


@pytest.mark.parametrize('dataset, fields', [('fake', {'random_flip': True}), ('digits', {}), ('toy', {})])
def test_hosts_read_their_rows_of_the_one_host_batch(monkeypatch, dataset, fields):
  """P hosts together see exactly the global batches of one host: what makes a multi-process run train
  like a one-process run with the same global batch."""
  steps = data.FAKE_POOL // 16 + 2                                       # into the second epoch
  one = _batches(_config(dataset, batch_size=16, **fields), start_step=3)
  single = [next(one)['x'] for _ in range(steps)]
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  hosts = []
  for host in range(2):
    monkeypatch.setattr(jax, 'process_index', lambda host=host: host)
    batches = _batches(_config(dataset, batch_size=16, **fields), start_step=3)
    hosts.append([next(batches)['x'] for _ in range(steps)])
  for k in range(steps):
    assert hosts[0][k].shape[0] == hosts[1][k].shape[0] == 8            # host batch 8 of the global 16
    np.testing.assert_array_equal(np.concatenate([hosts[0][k], hosts[1][k]]), single[k])
  if dataset != 'toy':                                                   # a finite pool: disjoint per epoch
    epoch = data.FAKE_POOL // 16 if dataset == 'fake' else 1797 // 16
    first = [np.concatenate(h[:epoch - 3]) for h in hosts]
    assert not _rows(first[0]) & _rows(first[1])


def test_errors_name_the_setting():
  with pytest.raises(ValueError, match="config.data.dataset='imagenet' is not a known dataset; allowed: cifar10"):
    _batches(_config('imagenet'))
  with pytest.raises(ValueError, match='config.train.batch_size gives 6 examples per host, which is not divisible'):
    data.shard({'x': np.zeros((6, 1))}, 4)
  with pytest.raises(ValueError, match='config.train.batch_size=2048 is larger than the 1797 training examples'):
    _batches(_config('digits', batch_size=2048))
  with pytest.raises(ValueError, match=r'config.data.random_flip needs images \[H, W, C\]'):
    _batches(_config('fake', fake_shape=(16,), random_flip=True))
  assert data.data_shape(_config('fake', fake_shape=(16,)).data) == (16,)
