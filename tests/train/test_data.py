"""Input pipelines: TFDS through mock data, the offline digits set, toy targets, seeking and flips."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import base
from train import data


def _config(dataset, **train):
  config = base.get_config()
  config.data.dataset = dataset
  config.train.batch_size = 8
  config.train.update(train)
  return config


@pytest.mark.parametrize('name, shape', [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_tfds_pipeline_on_mock_data(name, shape):
  config = _config(name)
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    batches = data.make_train_iterator(config)
    x = next(batches)['x']
  assert data.data_shape(config) == shape
  assert x.shape == (8,) + shape and x.dtype == np.float32
  assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.1
  sharded = data.shard({'x': x}, 2)['x']
  assert sharded.shape == (2, 4) + shape
  np.testing.assert_array_equal(sharded[1], x[4:])


def test_missing_tfds_dataset_has_a_clear_message(tmp_path):
  config = _config('mnist')
  config.data.tfds_data_dir = str(tmp_path)
  with pytest.raises(ValueError, match=r'TFDS dataset .mnist. is not prepared.*tfds build mnist'):
    next(data.make_train_iterator(config))


def test_digits_are_real_images_in_range():
  x = next(data.make_train_iterator(_config('digits', batch_size=256)))['x']
  assert x.shape == (256, 8, 8, 1)
  assert x.min() == -1.0 and x.max() == 1.0
  assert x[:, :, 0].mean() < x[:, :, 3:5].mean()  # strokes in the middle, blank borders


def test_toy_samples_follow_the_target():
  config = _config('toy', batch_size=20_000)
  config.data.target = 'bimodal'
  x = next(data.make_train_iterator(config))['x']
  assert x.shape == (20_000, 1)
  assert abs(np.mean(x > 0) - 0.5) < 0.02
  np.testing.assert_allclose(np.std(np.abs(x)), 0.1, rtol=0.05)


@pytest.mark.parametrize('dataset', ['toy', 'digits', 'fake'])
def test_seeking_gives_the_same_batches(dataset):
  config = _config(dataset, batch_size=512 if dataset == 'digits' else 16)  # digits: several epochs
  full = data.make_train_iterator(config)
  batches = [next(full)['x'] for _ in range(9)]
  seeked = data.make_train_iterator(config, start_step=6)
  for k in range(6, 9):
    np.testing.assert_array_equal(next(seeked)['x'], batches[k])
  assert not np.array_equal(batches[0], batches[1])


def test_flips_only_when_enabled():
  config = _config('digits', batch_size=64)
  plain = next(data.make_train_iterator(config))['x']
  config.data.random_flip = True
  flipped = next(data.make_train_iterator(config))['x']
  same = np.array([np.array_equal(a, b) for a, b in zip(plain, flipped)])
  mirrored = np.array([np.array_equal(a[:, ::-1], b) for a, b in zip(plain, flipped)])
  assert np.all(same | mirrored) and 10 < (~same).sum() < 54


def test_bad_dataset_and_batch():
  with pytest.raises(ValueError, match="config.data.dataset='imagenet' is not a known dataset"):
    data.make_train_iterator(_config('imagenet'))
  with pytest.raises(ValueError, match='config.train.batch_size gives 6 examples per host, which is not divisible'):
    data.shard({'x': np.zeros((6, 1))}, 4)
