"""The fused corrector rate (a jvp in t inside the loss's pass) is the separate jvp's estimator."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits, toy1d
from configs.validate import problems
from ddm import losses, streams
from ddm.paths import make_path
from schedule import baselines, costs
from train import data, model as model_lib, step as step_lib


def _setup(config):
  path, shape = make_path(config.sde), data.data_shape(config.data)
  model = model_lib.make_model(config.model, config.data, path, streams.key(config.seed, 'init'))
  ts = jnp.asarray(baselines.make_baseline('linear', path, config.schedule.num_levels))
  return path, shape, model, ts


@pytest.mark.parametrize('make_config', [lambda: toy1d.get_config('smoke'), lambda: digits.get_config('smoke')],
                         ids=['mlp', 'unet'])
def test_fused_rates_loss_and_gradients_equal_the_separate_ones(make_config):
  config = make_config()
  path, shape, model, ts = _setup(config)
  # trained-looking parameters: the zero-initialised output layer would make every derivative trivial
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(p.size), p.shape), model.params)
  loss_fn = losses.make_loss_fn(model.denoise, path, config.model.precond, config.model.sigma_data,
                                config.loss.weighting, model.denoise_and_score)
  x0 = jax.random.normal(jax.random.PRNGKey(1), (8,) + shape)
  keys = jax.random.split(jax.random.PRNGKey(2), 8)
  n = 3

  def mean_loss(p, num_measured):
    loss, level, x_t, t, score_dt = loss_fn(p, x0, ts, keys, jax.random.PRNGKey(3), train=True,
                                            num_measured=num_measured)
    return jnp.mean(loss), (loss, x_t, t, score_dt)

  # jitted: op by op, the U-Net's gradient of a jvp took 100 s on the 2-core CPU
  value_and_grad = jax.jit(jax.value_and_grad(mean_loss, has_aux=True), static_argnums=1)
  (_, (loss_f, x_t, t, score_dt)), grad_f = value_and_grad(params, n)
  (_, (loss_s, x_t2, t2, none)), grad_s = value_and_grad(params, 0)
  assert none is None and score_dt.shape == (n,) + shape
  np.testing.assert_array_equal(x_t, x_t2)
  np.testing.assert_allclose(loss_f, loss_s, rtol=1e-5)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grad_s))
  for a, b in zip(jax.tree.leaves(grad_f), jax.tree.leaves(grad_s)):   # the tangent is not in the gradient
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
  fused = costs.corrector_rate_from_derivative(path, t[:n], score_dt)
  separate = jax.jit(lambda p, x, t: costs.corrector_rate(model.score(p, path), path, x, t))(params, x_t[:n], t[:n])
  assert float(jnp.min(separate)) > 0
  np.testing.assert_allclose(fused, separate, rtol=1e-4)   # per example, same keys


def test_the_train_step_measures_with_the_pre_update_parameters():
  config = toy1d.get_config('smoke')
  config.schedule.rate_pass, config.schedule.learn = 'fused', False
  path, shape, model, _ = _setup(config)
  state = step_lib.initial_state(config.schedule, config.optim, path, model)
  state = state.replace(params=jax.tree.map(lambda p: p + 0.05, state.params))
  batch = {'x': jax.random.normal(jax.random.PRNGKey(4), (config.train.batch_size,) + shape)}
  key = streams.key(config.seed, 'train')
  sections = (config.model, config.loss, config.schedule, config.optim, path, model, shape)
  fused_step = jax.pmap(step_lib.make_train_step(*sections), axis_name=step_lib.AXIS, devices=jax.devices()[:1])
  config.schedule.rate_pass = 'separate'
  separate_step = jax.pmap(step_lib.make_train_step(*sections), axis_name=step_lib.AXIS, devices=jax.devices()[:1])
  rep = lambda tree: jax.tree.map(lambda v: jnp.asarray(v)[None], tree)
  state, _ = separate_step(rep(state), rep(batch), rep(key))  # the first step's learning rate is 0 (warm-up)
  state = state.replace(cost_sum=jnp.zeros_like(state.cost_sum), cost_count=jnp.zeros_like(state.cost_count))
  after_fused, _ = fused_step(state, rep(batch), rep(key))
  after_separate, _ = separate_step(state, rep(batch), rep(key))
  assert not np.array_equal(jax.tree.leaves(after_separate.params)[0], jax.tree.leaves(state.params)[0])
  np.testing.assert_array_equal(after_fused.cost_count, after_separate.cost_count)  # the same levels
  for a, b in zip(jax.tree.leaves(after_fused.params), jax.tree.leaves(after_separate.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # the separate rates are taken after the update, the fused ones before it: they differ, by little
  a, b = np.asarray(after_fused.cost_sum[0]), np.asarray(after_separate.cost_sum[0])
  assert not np.array_equal(a, b)
  np.testing.assert_allclose(a, b, rtol=0.05, atol=1e-6 * np.max(b))


def test_fused_is_refused_where_it_is_another_estimator():
  config = toy1d.get_config('smoke')
  config.schedule.rate_pass, config.schedule.cost = 'fused', 'predictor'
  assert any("rate_pass='fused' needs config.schedule.cost='corrector'" in p for p in problems(config, 'train'))
  config = digits.get_config('smoke')
  config.schedule.rate_pass, config.model.unet.dropout = 'fused', 0.1
  assert any('dropout=0.1' in p for p in problems(config, 'train'))
  config.schedule.rate_pass = 'auto'
  assert not step_lib.fused_rate(config.model, config.schedule, model_lib.Model(None, None, None, lambda *a, **k: None))
  config.model.unet.dropout = 0.0
  assert step_lib.fused_rate(config.model, config.schedule, model_lib.Model(None, None, None, lambda *a, **k: None))
  config.schedule.rate_pass = 'sometimes'
  assert any("config.schedule.rate_pass='sometimes'" in p for p in problems(config, 'train'))
