"""The offline fd_classifier feature network (eval/classifier.py): accuracy on scikit-learn's digits, feature
shapes, the workdir cache (reused, invalidated by a changed config), TFDS mock data, clear errors."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import base, digits
from eval import classifier, frechet

STEPS = 300  # measured: test accuracy 0.972 on the 359 held-out digits, ~5 s on 2 cores


def _digits_config(steps=STEPS):
  config = digits.get_config()
  config.eval.classifier_steps = steps
  return config


def _feature_fn(config, workdir):
  """The classifier's features as the runners ask for them (its data section, steps and seed)."""
  return classifier.get_feature_fn(config.data, config.eval.classifier_steps, config.seed, workdir)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  features, info = _feature_fn(_digits_config(), workdir)
  return workdir, features, info


def test_digits_accuracy_and_features(trained):
  workdir, features, info = trained
  assert info['cached'] is False and info['dataset'] == 'digits' and info['steps'] == STEPS
  assert info['test_accuracy'] > 0.9, info
  assert info['feature_dim'] == classifier.FEATURE_DIM == 128
  x_train, _, x_test, _ = classifier.load_labelled(_digits_config().data)
  assert x_train.min() == -1.0 and x_train.max() == 1.0 and len(x_train) + len(x_test) == 1797
  f = np.asarray(features(x_test[:37]))
  assert f.shape == (37, 128) and f.dtype == np.float32 and np.all(np.isfinite(f))
  with pytest.raises(ValueError, match='expect images of shape'):
    features(np.zeros((2, 28, 28, 1), np.float32))
  # The features tell digits from noise: fd_classifier(test, train) << fd_classifier(noise, train) (measured 3.4 and 419).
  stats = lambda x: frechet.statistics(np.asarray(features(x)))
  ref = stats(x_train)
  noise = np.random.default_rng(0).uniform(-1, 1, x_test.shape).astype(np.float32)
  assert frechet.frechet_distance(*stats(x_test), *ref) * 10 < frechet.frechet_distance(*stats(noise), *ref)


def test_the_eval_table_states_the_classifiers_held_out_accuracy(trained):
  from eval import metrics, tables
  workdir, _, info = trained
  config = _digits_config()
  metric, _, net = metrics.image_features(config.eval, config.data, config.seed, workdir)   # the run's cached one
  assert metric == 'fd_classifier' and net['network'] == 'classifier'
  assert net['test_accuracy'] == info['test_accuracy'] and net['num_test'] == 359 and net['num_train'] == 1438
  record = {'results': {'cosine': {'5': {'fd_classifier': 3.0, 'fd_classifier_std': 0.5, 'nfe': 9}}},
            'columns': [{'num_steps': 5, 'nfe': 9}], 'metrics': {'fd_classifier': 'min'}, 'num_samples': 64,
            'seeds': 3, 'step': 100, 'sampler': 'heun', 'feature_network': net}
  text = tables.markdown_report(record)
  assert f'classifies {100 * info["test_accuracy"]:.1f}% of the 359 held-out images' in text, text
  assert f'{STEPS} steps on 1438 digits training images' in text


def test_cache_reused_and_invalidated(trained, monkeypatch):
  workdir, features, info = trained
  folder = os.path.join(workdir, classifier.CACHE_FOLDER)
  with open(os.path.join(folder, classifier.INFO_FILE)) as f:
    stored = json.load(f)
  assert stored['dataset'] == 'digits' and stored['steps'] == STEPS and stored['feature_dim'] == 128
  assert stored['test_accuracy'] == info['test_accuracy']
  assert os.path.exists(os.path.join(folder, classifier.PARAMS_FILE))

  calls = []
  real_train = classifier.train_classifier
  monkeypatch.setattr(classifier, 'train_classifier', lambda *a, **k: calls.append(a[-1]) or real_train(*a, **k))
  again, info2 = _feature_fn(_digits_config(), workdir)
  assert calls == [] and info2['cached'] is True and info2['test_accuracy'] == info['test_accuracy']
  x = classifier.load_labelled(_digits_config().data)[2][:16]
  np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(features(x)))

  _, info3 = _feature_fn(_digits_config(steps=20), workdir)   # changed steps: retrain
  assert calls == [20] and info3['cached'] is False and info3['steps'] == 20
  with open(os.path.join(folder, classifier.INFO_FILE)) as f:
    assert json.load(f)['steps'] == 20

  mnist = base.get_config()                                                   # changed dataset: retrain
  mnist.data.dataset, mnist.eval.classifier_steps = 'mnist', 20
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    mnist_features, info4 = _feature_fn(mnist, workdir)
  assert calls == [20, 20] and info4['cached'] is False and info4['dataset'] == 'mnist'
  assert info4['image_shape'] == [28, 28, 1] and info4['num_test'] == 20
  assert np.asarray(mnist_features(np.zeros((3, 28, 28, 1), np.float32))).shape == (3, 128)


@pytest.mark.parametrize('name', ['fake', 'toy'])
def test_unlabelled_dataset_is_a_clear_error(name, tmp_path):
  config = base.get_config()
  config.data.dataset = name
  with pytest.raises(ValueError, match=rf"config.data.dataset='{name}'.*allowed: digits, mnist, mnist5k, cifar10"):
    _feature_fn(config, str(tmp_path))
  assert not os.listdir(tmp_path)
