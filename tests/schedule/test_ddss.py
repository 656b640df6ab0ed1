"""DDSS (Watson et al. 2022): gradient search of sampler times through the sampling chain (schedule/ddss.py)."""
import json
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits, toy1d
from ddm import samplers
from ddm.paths import make_path, ve_path, vp_path
from modes import fit_schedule as run
from schedule import schedules
from schedule.searches import ddss, problem as problem_lib


@pytest.mark.parametrize('path', [ve_path(0.002, 80.0, 'linear'), vp_path('cosine')], ids=['ve', 'vp'])
def test_logits_give_increasing_schedules_with_fixed_ends(path):
  logits = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (12,))
  ts = np.asarray(ddss.logits_to_schedule(path, logits))
  assert ts.shape == (13,) and ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
  # zero logits: uniform in log(sigma / alpha), the log-linear schedule
  u = np.log(np.asarray(path.ratio(ddss.logits_to_schedule(path, jnp.zeros(8))), np.float64))
  np.testing.assert_allclose(np.diff(u), np.diff(u).mean(), rtol=2e-3)
  # a schedule's own logits give it back
  np.testing.assert_allclose(ddss.logits_to_schedule(path, ddss.schedule_to_logits(path, ts)), ts, atol=2e-5)


@pytest.mark.parametrize('sampler', ['euler', 'heun', 'euler_maruyama', 'pc', 'ancestral'])
def test_chain_matches_the_evaluation_sampler(sampler):
  """Without learned coefficients the chain is ``ddm.samplers.make_sampler``'s walk, step for step."""
  config = toy1d.get_config('smoke')
  config.data.target = 'bimodal'
  path = make_path(config.sde)
  problem = run.exact_problem(config, path)
  ts = ddss.logits_to_schedule(path, jax.random.normal(jax.random.PRNGKey(1), (7,)))
  x1 = samplers.prior_sample(path, jax.random.PRNGKey(2), (64, 1))
  key = jax.random.PRNGKey(3)
  chain = ddss.make_chain(path, problem.score_fn, problem.denoise_fn, sampler)
  reference = samplers.make_sampler(sampler, path, problem.score_fn)(key, ts, x1)
  np.testing.assert_allclose(chain(ts, jnp.zeros((7, 3)), x1, key), reference, rtol=1e-5, atol=1e-5)


def test_ggdm_step_starts_at_ddim():
  """Zero coefficients: ``x_s = (sigma_s / sigma_t) x_t + (alpha_s - alpha_t sigma_s / sigma_t) D(x_t, t)``, and
  the step into the data end is DDIM into zero noise, ``D(x, t_1)``."""
  path = vp_path('linear')
  config = toy1d.get_config('smoke')
  config.data.target = 'bimodal'
  problem = run.exact_problem(config, path)
  ts = ddss.logits_to_schedule(path, jnp.zeros(5))
  x = x1 = samplers.prior_sample(path, jax.random.PRNGKey(0), (32, 1))
  for i in range(4, 0, -1):
    t, s = ts[i + 1], ts[i]
    d = problem.denoise_fn(x, jnp.full((32,), t))
    x = path.sigma(s) / path.sigma(t) * x + (path.alpha(s) - path.alpha(t) * path.sigma(s) / path.sigma(t)) * d
  x = problem.denoise_fn(x, jnp.full((32,), ts[1]))
  chain = ddss.make_chain(path, problem.score_fn, problem.denoise_fn, 'ggdm')
  np.testing.assert_allclose(chain(ts, jnp.zeros((5, 3)), x1, jax.random.PRNGKey(9)), x, rtol=1e-5, atol=1e-5)
  # the DDIM chain is the Euler sampler in EDM's variables
  euler = samplers.make_sampler('euler', path, problem.score_fn)(jax.random.PRNGKey(9), ts, x1)
  np.testing.assert_allclose(euler, x, rtol=1e-4, atol=1e-4)
  # the memory term acts from the second step on
  moved = chain(ts, jnp.zeros((5, 3)).at[:, 2].set(0.5), x1, jax.random.PRNGKey(9))
  assert float(jnp.max(jnp.abs(moved - x))) > 1e-3


def test_quantile_w2_loss_is_the_exact_distance_at_stratified_noise():
  """1-D: the loss of the target's own quantiles is 0, and of a shifted copy the squared shift."""
  config = toy1d.get_config('smoke')
  config.data.target = 'bimodal'
  target = run.exact_problem(config, make_path(config.sde)).target
  levels = np.array([0.01, 0.25, 0.5, 0.75, 0.99])
  q = ddss.mixture_quantiles(target, levels)[:, 0]
  from scipy.special import ndtr
  cdf = 0.5 * ndtr((q + 1.0) / 0.1) + 0.5 * ndtr((q - 1.0) / 0.1)
  np.testing.assert_allclose(cdf, levels, atol=1e-12)
  loss = ddss.quantile_w2_loss(target, 256)
  exact = jnp.asarray(ddss.mixture_quantiles(target, (np.arange(256) + 0.5) / 256), jnp.float32)
  perm = jax.random.permutation(jax.random.PRNGKey(0), 256)
  assert float(loss(exact[perm])) == pytest.approx(0.0, abs=1e-10)
  assert float(loss(exact + 0.1)) == pytest.approx(0.01, rel=1e-4)
  noise = ddss.prior_noise(make_path(config.sde), jax.random.PRNGKey(0), (256, 1), stratified=True)
  assert float(jnp.mean(noise)) == pytest.approx(0.0, abs=1e-3) and np.all(np.diff(np.asarray(noise)[:, 0]) > 0)


def _toy_config(target='bimodal', **ddss_settings):
  config = toy1d.get_config('smoke')
  config.data.target = target
  config.fit.ddss.update(step_counts=(5,), adam_steps=40, batch_size=128, learning_rate=0.05)
  config.fit.ddss.update(**ddss_settings)
  return config


@pytest.mark.parametrize('target, learn_coefficients', [('bimodal', False), ('cantor', False),
                                                        ('bimodal', True)])
def test_ddss_decreases_the_loss_and_keeps_a_valid_schedule(target, learn_coefficients):
  config = _toy_config(target, learn_coefficients=learn_coefficients)
  path = make_path(config.sde)
  problem = run.exact_problem(config, path)
  result = ddss.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0))
  assert isinstance(result.schedule, schedules.Ladders) and sorted(result.schedule.ladders) == [5]
  ts = result.schedule.ladders[5]
  assert ts.shape == (6,) and ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
  history = result.meta['loss_history'][5]
  assert len(history) == 41 and all(np.isfinite(history))
  assert history[-1] < 0.5 * history[0]                                  # from the log-linear start
  start, end = result.meta['heldout_loss'][5]
  assert end < start                                                     # not only on its own noise
  assert result.meta['loss'] == 'w2_squared' and result.meta['time_s'] > 0
  assert result.meta['sampler'] == ('ggdm' if learn_coefficients else 'heun')
  per_sample = 5 if learn_coefficients else 2 * 5 - 1                   # heun: NFE 2K - 1 (Euler step into t_0)
  assert result.meta['network_evaluations'] == 43 * 128 * per_sample
  if learn_coefficients:
    assert np.asarray(result.meta['coefficients'][5]).shape == (5, 3)


def test_ddss_takes_the_loss_as_an_argument_for_images():
  """The image path (KID in a feature space) with a stand-in feature function: a fixed random linear map."""
  from eval import frechet
  c, shape = 0.5, (4, 4, 1)
  path = ve_path(0.002, 5.0)
  score_fn = lambda x, t: -x / (c**2 + path.sigma(t)**2).reshape(-1, 1, 1, 1)
  denoise_fn = lambda x, t: x * (c**2 / (c**2 + path.sigma(t)**2)).reshape(-1, 1, 1, 1)
  sample_x0 = lambda key, n: c * jax.random.normal(key, (n,) + shape)
  problem = problem_lib.Problem(path, shape, score_fn, denoise_fn, sample_x0, problem_lib.forward_sampler(path, sample_x0))
  weights = jax.random.normal(jax.random.PRNGKey(1), (16, 8))
  features = lambda x: x.reshape(x.shape[0], -1) @ weights / 2.0
  data_features = features(sample_x0(jax.random.PRNGKey(2), 512))
  loss_fn = frechet.kid_loss(features, data_features)
  x = sample_x0(jax.random.PRNGKey(3), 64)
  kid = frechet.kid_loss(features, data_features, unbiased=True)
  assert float(kid(x)) == pytest.approx(float(frechet.kernel_distance(features(x), data_features)))
  # the biased estimate: KID plus the diagonal terms it leaves out, a squared norm
  f, n = features(x), 64
  kxx = frechet.polynomial_kernel(f, f)
  expected = float(kid(x)) + float(jnp.sum(kxx) / n**2 - (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1)))
  expected += float(jnp.mean(frechet.polynomial_kernel(data_features, data_features)))
  expected -= float(jnp.sum(frechet.polynomial_kernel(data_features, data_features)
                            - jnp.diag(jnp.diag(frechet.polynomial_kernel(data_features, data_features))))
                    / (512 * 511))
  assert float(loss_fn(x)) == pytest.approx(expected, rel=1e-4) and float(loss_fn(x)) >= 0
  config = toy1d.get_config('smoke')
  config.fit.ddss.update(step_counts=(4,), adam_steps=25, batch_size=64, learning_rate=0.05)
  result = ddss.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0), loss_fn=loss_fn, loss_name='kid_stand_in')
  history = result.meta['loss_history'][4]
  assert result.meta['loss'] == 'kid_stand_in' and 0 <= history[-1] < 0.5 * history[0]
  start, end = result.meta['heldout_loss'][4]
  assert 0 <= end < start
  ts = result.schedule.ladders[4]
  assert ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)


def test_default_image_loss_uses_the_classifier_features(monkeypatch):
  """Without a target (images), the runner's loss is KID in ``eval.classifier.get_feature_fn``'s features."""
  import eval as eval_package
  calls = []
  weights = jax.random.normal(jax.random.PRNGKey(1), (4, 3))

  def get_feature_fn(data_cfg, steps, seed, workdir):
    calls.append(workdir)
    return (lambda x: x.reshape(x.shape[0], -1) @ weights), {'stand_in': True}

  fake = types.SimpleNamespace(get_feature_fn=get_feature_fn)
  monkeypatch.setitem(sys.modules, 'eval.classifier', fake)
  monkeypatch.setattr(eval_package, 'classifier', fake, raising=False)
  path = ve_path(0.002, 80.0)
  sample_x0 = lambda key, n: jax.random.normal(key, (n, 2, 2, 1))
  problem = problem_lib.Problem(path, (2, 2, 1), None, None, sample_x0, None)
  config = digits.get_config('smoke')
  config.fit.ddss.batch_size = 32
  loss = run.ddss_loss(config, '/some/run', problem, jax.random.PRNGKey(0))
  name, loss_fn = loss['loss_name'], loss['loss_fn']
  assert name == 'kid_classifier' and calls == ['/some/run']
  assert np.isfinite(float(loss_fn(sample_x0(jax.random.PRNGKey(5), 32))))


def test_trained_toy_checkpoint_keeps_the_exact_w2_loss():
  """A toy model's checkpoint has no closed-form score (problem.target is None), but its data do: the loss is
  the exact W2 to the true density, never the image classifier's KID."""
  config = toy1d.get_config('smoke')
  config.data.target = 'bimodal'
  config.fit.ddss.batch_size = 64
  problem = problem_lib.Problem(ve_path(0.002, 80.0), (1,), None, None, None, None)
  loss = run.ddss_loss(config, '/some/run', problem, jax.random.PRNGKey(0))
  name, loss_fn = loss['loss_name'], loss['loss_fn']
  exact = run.exact_problem(config, ve_path(0.002, 80.0)).target
  reference = run.ddss_loss(config, '/some/run', problem._replace(target=exact), jax.random.PRNGKey(0))['loss_fn']
  x = jnp.linspace(-1.5, 1.5, 64)[:, None]
  assert name == 'w2_squared' and float(loss_fn(x)) == pytest.approx(float(reference(x)))


def test_fit_schedule_with_ddss_stores_its_ladders(tmp_path):
  config = toy1d.get_config('smoke')
  config.data.target = 'bimodal'
  config.fit.method = 'ddss'
  record = run.fit_schedule(config, str(tmp_path))
  assert record['method'] == 'ddss' and record['num_steps'] == 5          # the one K searched (smoke: 5)
  stored = schedules.stored(str(tmp_path), 'ddss')
  assert stored.has(5) and not stored.has(10)
  saved = json.load(open(tmp_path / 'schedules' / 'ddss.json'))
  assert len(saved['loss_history']['5']) == 6 and saved['network_evaluations'] > 0


@pytest.mark.parametrize('learning_rate', [0.0, -1e-3])
def test_non_positive_learning_rate_is_refused(tmp_path, learning_rate):
  config = toy1d.get_config('smoke')
  config.fit.method = 'ddss'
  config.fit.ddss.learning_rate = learning_rate
  with pytest.raises(ValueError, match=f'config.fit.ddss.learning_rate={learning_rate}; need > 0'):
    run.fit_schedule(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
