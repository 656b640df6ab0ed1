"""The training loop: device-count invariance, exact resume, the online learner, TensorBoard, bad input."""
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import jax_utils

from ddm.paths import make_path
from ddm.targets import make_target
from schedule.searches import problem, score_optimal
from train import checkpoints, data, model as model_lib, state as state_lib
from train import step as step_lib
from modes import train as train_mode
from tests.configs import smoke


_smoke = smoke  # tests/configs.py


def _train_step(config, path, model, shape):
  """The loop's (measuring) train step of ``config``, not yet pmapped."""
  return step_lib.make_train_step(config.model, config.loss, config.schedule, config.optim, path, model, shape)


def _run_steps(config, devices, num_steps):
  """``num_steps`` pmapped train steps on ``devices``, from the same initial state and batches."""
  path, shape = make_path(config.sde), data.data_shape(config.data)
  model = model_lib.make_model(config.model, config.data, path, jax.random.PRNGKey(0))
  p_step = jax.pmap(_train_step(config, path, model, shape), axis_name=step_lib.AXIS, devices=devices)
  p_state = jax_utils.replicate(step_lib.initial_state(config.schedule, config.optim, path, model), devices)
  key = jax_utils.replicate(jax.random.PRNGKey(1), devices)
  batches = data.make_train_iterator(config.data, config.train.batch_size, config.seed)
  for _ in range(num_steps):
    p_state, _ = p_step(p_state, data.shard(next(batches), len(devices)), key)
  return jax.device_get(step_lib.unreplicate(p_state))


def test_two_devices_match_one():
  assert jax.local_device_count() == 2
  config = _smoke(schedule__update_every=2, schedule__min_count=1)
  one = _run_steps(config, jax.local_devices()[:1], 6)
  two = _run_steps(config, jax.local_devices()[:2], 6)
  assert int(two.num_updates) >= 2
  np.testing.assert_allclose(two.schedule, one.schedule, atol=1e-5)
  for a, b in zip(jax.tree.leaves(two.params), jax.tree.leaves(one.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_resume_is_bit_for_bit(tmp_path):
  full = train_mode.train_and_evaluate(_smoke(), str(tmp_path / 'full'))
  train_mode.train_and_evaluate(_smoke(train__num_train_steps=10), str(tmp_path / 'split'))
  resumed = train_mode.train_and_evaluate(_smoke(), str(tmp_path / 'split'))
  assert int(resumed.step) == int(full.step) == 20
  for a, b in zip(jax.tree.leaves(state_lib.to_host_dict(full)), jax.tree.leaves(state_lib.to_host_dict(resumed))):
    np.testing.assert_array_equal(a, b)
  assert int(full.num_updates) > 0 and not np.array_equal(full.schedule, np.linspace(0, 1, 17, dtype=np.float32))


def test_checkpoint_round_trip_keeps_schedule_and_statistics(tmp_path):
  final = train_mode.train_and_evaluate(_smoke(), str(tmp_path))
  config = _smoke()
  path = make_path(config.sde)
  model = model_lib.make_model(config.model, config.data, path, jax.random.PRNGKey(5))
  restored = checkpoints.restore_latest(checkpoints.manager(str(tmp_path), 3),
                                        step_lib.initial_state(config.schedule, config.optim, path, model))
  for field in ('schedule', 'cost_sum', 'cost_count', 'step_costs', 'num_updates'):
    np.testing.assert_array_equal(getattr(restored, field), getattr(final, field))
  record = json.load(open(tmp_path / 'schedule.json'))
  np.testing.assert_allclose(record['t'], final.schedule, atol=1e-7)


@pytest.mark.parametrize('parametrisation', ['linear', 'geometric'])
def test_online_learner_with_exact_score_converges_to_the_fitted_ladder(parametrisation):
  config = _smoke(sde__parametrisation=parametrisation, model__exact_score=True, data__target='bimodal', schedule__num_levels=200,
                  schedule__gamma=0.5, schedule__min_count=128, schedule__update_every=10_000,
                  train__batch_size=512)
  path, shape = make_path(config.sde), data.data_shape(config.data)
  model = model_lib.make_model(config.model, config.data, path, jax.random.PRNGKey(0))
  p_step = jax.pmap(_train_step(config, path, model, shape), axis_name=step_lib.AXIS)
  p_state = jax_utils.replicate(step_lib.initial_state(config.schedule, config.optim, path, model))
  key = jax_utils.replicate(jax.random.PRNGKey(1))
  batches = data.make_train_iterator(config.data, config.train.batch_size, config.seed)
  ladders = []
  for step in range(2000):
    p_state, _ = p_step(p_state, data.shard(next(batches), 2), key)
    if step % 10 == 9:
      ts = np.asarray(step_lib.unreplicate(p_state).schedule)
      assert np.all(np.diff(ts) > 0) and ts[0] == 0 and ts[-1] == 1  # strictly increasing after updates
      if step >= 1200:
        ladders.append(np.asarray(path.sigma(ts)))
  state = jax.device_get(step_lib.unreplicate(p_state))
  assert int(state.num_updates) > 10 and int(state.num_skipped) == 0
  config.fit.update(grid=2048, num_samples=1024, ladder_steps=200)  # an accurate reference, K = T
  exact = problem.exact(make_target(config.data), path)
  fitted = score_optimal.search(config.fit, config.schedule, config.eval, exact, jax.random.PRNGKey(0),
                                sigma_data=config.model.sigma_data).schedule
  fitted_ts = fitted.steps(config.fit.ladder_steps)
  np.testing.assert_allclose(np.mean(ladders, axis=0), path.sigma(fitted_ts), rtol=0.05)


def test_cost_fraction_measures_rates_on_that_share_of_each_device_batch():
  config = _smoke(schedule__cost_fraction=0.25, schedule__update_every=1000, schedule__min_count=1000)
  state = _run_steps(config, jax.local_devices()[:2], 3)
  per_device = config.train.batch_size // 2
  assert step_lib.cost_examples(per_device, 0.25) == -(-per_device // 4)
  assert float(state.cost_count.sum()) == 3 * 2 * step_lib.cost_examples(per_device, 0.25)
  assert float(state.cost_sum.sum()) > 0
  assert step_lib.cost_examples(3, 0.01) == 1 and step_lib.cost_examples(32, 1.0) == 32


def test_nonfinite_costs_never_corrupt_the_schedule():
  from schedule import online
  ts = jnp.linspace(0.0, 1.0, 9)
  count = jnp.ones(9)
  for bad in (jnp.full(9, jnp.nan), jnp.zeros(9), jnp.full(9, jnp.inf)):
    new, ok, _ = online.update(make_path(_smoke().sde), ts, bad, count, 0.5)
    assert not bool(ok)
    np.testing.assert_array_equal(new, ts)
  s, c = online.accumulate(jnp.zeros(9), jnp.zeros(9), jnp.array([1.0, jnp.nan, 2.0]), jnp.array([0, 0, 1]))
  np.testing.assert_array_equal(s[:2], [1.0, 2.0])
  np.testing.assert_array_equal(c[:2], [1.0, 1.0])


def test_tensorboard_events_hold_the_expected_tags(tmp_path):
  from absl import logging
  from tensorboard.backend.event_processing import event_accumulator
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)  # what app.run sets; pytest leaves absl at WARNING
  try:
    train_mode.train_and_evaluate(_smoke(), str(tmp_path))
  finally:
    logging.set_verbosity(previous)
  acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={'images': 0, 'scalars': 0})
  acc.Reload()
  scalars = set(acc.Tags()['scalars'])
  assert {'train/loss', 'train/steps_per_sec', 'train/grad_norm', 'train/param_norm', 'schedule/length',
          'schedule/energy', 'eval/log_likelihood', 'eval/kl', 'eval/w1', 'eval/score_error'} <= scalars
  assert {'schedule/ladder', 'schedule/step_costs', 'eval/density'} <= set(acc.Tags()['images'])
  assert [e.step for e in acc.Scalars('train/loss')] == [5, 10, 15, 20]
  assert len(acc.Images('schedule/ladder')) == 2  # the plot moves over training
  for name in ('schedule.json', 'schedule.png', 'costs.png', 'density.png', 'eval_history.json', 'config.json'):
    assert (tmp_path / name).exists(), name
  # progress: compilation and sampling logged apart from the steps/s; the config as text and as hparams
  assert {'train/compile_seconds', 'train/sample_seconds'} <= scalars
  assert acc.Scalars('train/compile_seconds')[0].value > 0
  assert 'config/text_summary' in acc.Tags()['tensors']
  hparams = acc.PluginTagToContent('hparams')
  assert {'_hparams_/experiment', '_hparams_/session_start_info'} <= set(hparams)
  for field in (b'optim.learning_rate', b'schedule.init', b'schedule.cost_fraction', b'train.batch_size'):
    assert field in hparams['_hparams_/session_start_info'], field   # runs filter by these in the HPARAMS tab
  log = (tmp_path / 'log.txt').read_text()
  assert 'step 20/20' in log and 'steps/s' in log and 'ETA 0:00:00' in log
  # orbax saved checkpoints during the run, and its INFO lines stayed out of the log (--verbosity=1 lets them in)
  assert list((tmp_path / 'checkpoints').iterdir()) and 'orbax' not in log and 'checkpoint_manager' not in log


@pytest.mark.parametrize('overrides, message', [
    (dict(optim__optimizer='sgdw'), "config.optim.optimizer='sgdw'; allowed: adam, adamw"),
    (dict(train__batch_size=63), 'config.train.batch_size=63 is not divisible by the 2 devices'),
    (dict(schedule__gamma=0.0), 'config.schedule.gamma=0.0; need 0 < gamma <= 1'),
    (dict(schedule__gamma=1.5), 'config.schedule.gamma=1.5; need 0 < gamma <= 1'),
    (dict(schedule__cost_fraction=0.0), 'config.schedule.cost_fraction=0.0; need 0 < cost_fraction <= 1'),
    (dict(eval__sampler='ddim'), "config.eval.sampler='ddim' is not a known sampler"),
])
def test_bad_training_input(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    train_mode.train_and_evaluate(_smoke(**overrides), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_incompatible_checkpoint_is_refused_and_kept(tmp_path):
  train_mode.train_and_evaluate(_smoke(train__num_train_steps=10), str(tmp_path))
  before = {f: os.path.getmtime(f) for f in glob.glob(str(tmp_path / '**'), recursive=True) if os.path.isfile(f)}
  with pytest.raises(ValueError, match=r'(?s)incompatible config.*config.model.mlp.width: 32 -> 64'):
    train_mode.train_and_evaluate(_smoke(model__mlp=dict(width=64, depth=2, embedding_dim=16)), str(tmp_path))
  after = {f: os.path.getmtime(f) for f in glob.glob(str(tmp_path / '**'), recursive=True) if os.path.isfile(f)}
  assert before == after


def test_the_step_compiles_once():
  """The replicated state is laid out as the step's outputs are, so step 2 does not compile the step again."""
  config = _smoke()
  path, shape = make_path(config.sde), data.data_shape(config.data)
  model = model_lib.make_model(config.model, config.data, path, jax.random.PRNGKey(0))
  p_step = step_lib.make_train_steps(config.model, config.loss, config.schedule, config.optim, path, model, shape,
                                     wrap=step_lib.pmapped())[True]   # as modes/train.py builds it
  p_state = step_lib.replicate(step_lib.initial_state(config.schedule, config.optim, path, model))
  key = step_lib.replicate(jax.random.PRNGKey(1))
  batches = data.make_train_iterator(config.data, config.train.batch_size, config.seed)
  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, seconds, **kw: compiles.append(event) if event.endswith('backend_compile_duration') else None)
  counts = []
  for _ in range(3):
    batch = data.shard(next(batches), jax.local_device_count())
    before = len(compiles)
    p_state, _ = p_step(p_state, batch, key)
    jax.block_until_ready(p_state)
    counts.append(len(compiles) - before)
  assert counts[0] >= 1 and counts[1:] == [0, 0], counts  # the step compiles at the first call only
