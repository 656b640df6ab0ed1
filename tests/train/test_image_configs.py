"""Image configs: one pmapped training step on 2 fake CPU devices each (tiny U-Net), and a digits smoke run."""
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import jax_utils

from configs import cifar10, digits, mnist
from ddm.paths import make_path
from modes import sample as sample_mode
from train import data, model as model_lib
from train import step as step_lib
from modes import train as train_mode


# MNIST's config module and U-Net also train end to end in the default suite (tests/train/test_mnist5k.py's
# smoke run of mnist.py:offline,smoke on 2 devices); its TFDS step here is slow-marked for the suite's time.
@pytest.mark.parametrize('module', [digits, pytest.param(mnist, marks=pytest.mark.slow), cifar10],
                         ids=['digits', 'mnist', 'cifar10'])
def test_one_pmapped_step_per_image_config(module):
  config = module.get_config('smoke')
  config.train.batch_size = 4
  path, shape = make_path(config.sde), data.data_shape(config.data)
  model = model_lib.make_model(config.model, config.data, path, jax.random.PRNGKey(0))
  p_step = jax.pmap(step_lib.make_train_step(config.model, config.loss, config.schedule, config.optim, path, model,
                                             shape), axis_name=step_lib.AXIS)
  p_state = jax_utils.replicate(step_lib.initial_state(config.schedule, config.optim, path, model))
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
    batches = data.make_train_iterator(config.data, config.train.batch_size, config.seed)
    batch = data.shard(next(batches), jax.local_device_count())
  p_state, metrics = p_step(p_state, batch, jax_utils.replicate(jax.random.PRNGKey(1)))
  state = step_lib.unreplicate(p_state)
  assert batch['x'].shape == (2, 2) + shape
  assert int(state.step) == 1 and np.isfinite(float(metrics['train/loss'][0]))
  # ceil(cost_fraction * 2) = 1 jvp cost sample per device (image configs: 1/16 of each batch), summed
  assert config.schedule.cost_fraction == 1 / 16 and float(np.sum(state.cost_count)) == 2
  assert np.all(np.isfinite(state.cost_sum))


@pytest.mark.slow
def test_digits_smoke_run_writes_samples_and_resumes(tmp_path):
  config = digits.get_config('smoke')
  state = train_mode.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 20 and int(state.num_updates) > 0
  assert (tmp_path / 'samples' / '20.png').exists() and (tmp_path / 'schedule.json').exists()
  config.train.num_train_steps = 25
  assert int(train_mode.train_and_evaluate(config, str(tmp_path)).step) == 25
  for name in ('learned', 'cosine'):
    config.eval.schedules = (name,)
    x = sample_mode.sample(config, str(tmp_path))
    assert x.shape == (256, 8, 8, 1) and np.all(np.isfinite(x))
    assert (tmp_path / f'samples_{name}_5.png').exists() and (tmp_path / f'samples_{name}_5.npz').exists()
