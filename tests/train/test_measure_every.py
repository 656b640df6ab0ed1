"""``schedule.measure_every``: rates on every m-th step only, m x cost_fraction of its batch, a plain step between.

The denoiser trains exactly as with a rate on every step, and the statistics are the rates of the measuring
steps' examples: the same estimator, grouped in time."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.validate import problems
from ddm import streams
from ddm.paths import make_path
from tests.configs import smoke
from train import checkpoints, data, model as model_lib, step as step_lib

STEPS, EVERY = 6, 3


def _run(config, steps=STEPS):
  """``steps`` loop steps on one device, the step chosen as the loop chooses it; the state after each."""
  path, shape = make_path(config.sde), data.data_shape(config.data)
  model = model_lib.make_model(config.model, config.data, path, streams.key(config.seed, 'init'))
  pmapped = step_lib.make_train_steps(config.model, config.loss, config.schedule, config.optim, path, model, shape,
                                      wrap=lambda f: jax.pmap(f, axis_name=step_lib.AXIS, devices=jax.devices()[:1]))
  rep = lambda tree: jax.tree.map(lambda v: jnp.asarray(v)[None], tree)
  state = rep(step_lib.initial_state(config.schedule, config.optim, path, model))
  key = rep(streams.key(config.seed, 'train'))
  states = []
  for i in range(steps):
    batch = {'x': jax.random.normal(jax.random.PRNGKey(i), (1, config.train.batch_size) + shape)}
    state, metrics = pmapped[step_lib.measures(i, config.schedule)](state, batch, key)
    assert set(metrics) == {'train/loss', 'train/nonfinite_steps', 'train/grad_norm', 'train/param_norm',
                            'schedule/nonfinite_rates'}
    states.append(jax.device_get(step_lib.unreplicate(state)))
  return states


@pytest.mark.parametrize('rate_pass', ['fused', 'separate'])
def test_measuring_every_mth_step_trains_alike_and_keeps_the_measuring_steps_rates(rate_pass):
  # no schedule update inside the run: the statistics only accumulate
  settings = dict(schedule__rate_pass=rate_pass, schedule__min_count=10**6, schedule__update_every=10**6)
  grouped = _run(smoke(schedule__cost_fraction=1 / EVERY, schedule__measure_every=EVERY, **settings))
  every_step = _run(smoke(schedule__cost_fraction=1.0, **settings))
  for a, b in zip(jax.tree.leaves(grouped[-1].params), jax.tree.leaves(every_step[-1].params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)   # the plain step trains as the measuring one
  # the rates every-step measurement added on steps 0 and 3 (whole batch), and nothing else
  added = lambda states, i, f: getattr(states[i], f) - (getattr(states[i - 1], f) if i else 0)
  for field in ('cost_count', 'cost_sum'):
    expected = sum(added(every_step, i, field) for i in range(0, STEPS, EVERY))
    np.testing.assert_allclose(getattr(grouped[-1], field), expected, rtol=1e-5, atol=1e-6)
    for i in range(STEPS):   # the plain steps leave the statistics alone
      if i % EVERY:
        np.testing.assert_array_equal(added(grouped, i, field), 0)
  assert float(np.sum(grouped[-1].cost_count)) == 2 * smoke().train.batch_size


def test_measured_share_and_the_choice_of_step():
  config = smoke(schedule__cost_fraction=1 / 16, schedule__measure_every=16).schedule
  assert step_lib.measured_examples(128, config) == 128
  assert [step_lib.measures(s, config) for s in (0, 1, 15, 16, 32, 33)] == [True, False, False, True, True, False]
  assert step_lib.measured_examples(128, smoke(schedule__cost_fraction=1 / 16).schedule) == 8
  assert all(step_lib.measures(s, smoke().schedule) for s in range(5))


def test_bad_measure_every_is_refused_before_compute():
  found = problems(smoke(schedule__cost_fraction=1 / 8, schedule__measure_every=16), 'train')
  assert any('config.schedule.measure_every=16 with config.schedule.cost_fraction=0.125' in p
             and 'measure_every <= 8' in p for p in found), found
  found = problems(smoke(schedule__measure_every=0), 'train')
  assert any('config.schedule.measure_every=0' in p and 'an integer >= 1' in p for p in found), found
  assert not problems(smoke(schedule__cost_fraction=1 / 8, schedule__measure_every=8), 'train')


def test_a_run_stored_before_the_field_resumes_at_measure_every_1(tmp_path):
  config = smoke()
  checkpoints.write_config(tmp_path, config)
  stored = (tmp_path / checkpoints.CONFIG_FILE).read_text()
  (tmp_path / checkpoints.CONFIG_FILE).write_text(stored.replace('"measure_every": 1,', ''))
  assert 'measure_every' not in (tmp_path / checkpoints.CONFIG_FILE).read_text()
  checkpoints.check_compatible(tmp_path, config, resume=True)   # the value it ran with
  with pytest.raises(ValueError, match=r'config.schedule.measure_every: 1 -> 4'):
    checkpoints.check_compatible(tmp_path, smoke(schedule__measure_every=4), resume=True)
