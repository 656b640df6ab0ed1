"""Samplers against closed forms: the linear probability-flow map of Gaussian data, the moments of exact-score
samples, the field's conventions (the step into the data end is the denoiser, NFE counted at run time, samples
independent of the path's parametrisation), and the jit contract (a new schedule of the same length does not
recompile)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddm import paths, samplers, targets
from ddm.paths import per_example
from schedule import baselines

PATHS = {'ve': paths.ve_path(0.002, 80.0), 'vp': paths.vp_path('linear')}
C = 0.5                                                   # std of the Gaussian data N(0, C^2 I_d)
BIMODAL = targets.gaussian_mixture([-1.0, 1.0], [0.1, 0.1], [0.5, 0.5])


def _gaussian(d):
  return targets.gaussian_mixture(np.zeros((1, d)), [C], [1.0])


def _run(name, path, target, ts, n, d, **kw):
  sample = jax.jit(samplers.make_sampler(name, path, target.score_fn(path), **kw))
  x_init = samplers.prior_sample(path, jax.random.PRNGKey(2), (n, d))
  return sample(jax.random.PRNGKey(1), ts, x_init)


def _run_from(name, path, x1, ts):
  sample = samplers.make_sampler(name, path, _gaussian(x1.shape[1]).score_fn(path))
  return jax.jit(sample)(jax.random.PRNGKey(0), ts, x1)


@pytest.mark.parametrize('path_name', sorted(PATHS))
def test_probability_flow_matches_linear_closed_form(path_name):
  # For p_0 = N(0, c^2 I) the PF-ODE is dx/dt = x d/dt log sqrt(v(t)), v = alpha^2 c^2 + sigma^2, so the state
  # at t_1 is x_1 sqrt(v(t_1) / v(1)) exactly, and the last step returns its denoiser D = alpha c^2 x / v at t_1.
  path, d = PATHS[path_name], 3
  x1 = jax.random.normal(jax.random.PRNGKey(0), (16, d)) * 3.0
  v = lambda t: float(path.alpha(t))**2 * C**2 + float(path.sigma(t))**2

  def error(name, k):
    ts = jnp.linspace(0.0, 1.0, k + 1)
    t1 = float(ts[1])
    exact = x1 * np.sqrt(v(t1) / v(1.0)) * float(path.alpha(t1)) * C**2 / v(t1)
    x0 = _run_from(name, path, x1, ts)
    return float(jnp.max(jnp.abs(x0 - exact) / jnp.abs(exact)))

  heun = [error('heun', k) for k in (100, 200)]
  euler = [error('euler', k) for k in (25, 50, 100, 200)]
  assert heun[1] < 3e-3, heun
  assert heun[0] / heun[1] > 3.0, heun                    # second order: error / 4 per doubling
  assert euler[-1] < 0.2, euler
  assert all(e0 / e1 > 1.6 for e0, e1 in zip(euler, euler[1:])), euler   # first order: error / 2


@pytest.mark.parametrize('path_name', sorted(PATHS))
@pytest.mark.parametrize('name', ['heun', 'euler_maruyama', 'pc'])
def test_gaussian_sample_variance(name, path_name):
  path = PATHS[path_name]
  n, d, allowance = 4000, 16, 0.01
  x = _run(name, path, _gaussian(d), baselines.edm_rho7(path, 200), n, d)
  ratio = float(jnp.var(x)) / C**2
  assert abs(ratio - 1.0) < 4 * np.sqrt(2.0 / (n * d)) + allowance, ratio


@pytest.mark.parametrize('path_name', sorted(PATHS))
def test_ancestral_variance_follows_its_gaussian_recursion(path_name):
  # Gaussian data: D(x, t) = k_t x with k_t = alpha c^2 / (alpha^2 c^2 + sigma^2), so a step t -> s maps the
  # variance V to (a_t + b_t k_t)^2 V + var_post (ddm.paths.posterior's coefficients): exact for any K. The
  # sampler is first order, so it loses variance at few steps (DDPM's "small" posterior variance).
  path, n, d = PATHS[path_name], 4000, 16
  ts = np.asarray(baselines.edm_rho7(path, 20), np.float64)
  k = lambda t: float(path.alpha(t)) * C**2 / (float(path.alpha(t))**2 * C**2 + float(path.sigma(t))**2)
  var = float(path.alpha(1.0))**2 + float(path.sigma(1.0))**2
  for i in range(len(ts) - 1, 1, -1):
    t, s = ts[i], ts[i - 1]
    a, _ = paths.posterior(path, s, t, jnp.ones(()), jnp.zeros(()))
    b, post = paths.posterior(path, s, t, jnp.zeros(()), jnp.ones(()))
    var = (float(a) + float(b) * k(t))**2 * var + float(post)
  var *= k(ts[1])**2                                        # the last step: the posterior mean into zero noise, D
  x = _run('ancestral', path, _gaussian(d), ts, n, d)
  assert abs(float(jnp.var(x)) / var - 1.0) < 4 * np.sqrt(2.0 / (n * d)), (float(jnp.var(x)), var)
  assert var / C**2 < 0.99                                  # and the recursion is not the trivial answer


@pytest.fixture(scope='module')
def bimodal_expected_log_prob():
  """``E_{p_0}[log p_0(x)]`` by Monte Carlo from true samples (standard error about 0.002)."""
  return float(jnp.mean(BIMODAL.log_prob_data(BIMODAL.sample_p0(jax.random.PRNGKey(9), 100_000))))


@pytest.mark.parametrize('path_name', sorted(PATHS))
@pytest.mark.parametrize('name', [
    'heun', 'euler_maruyama', 'pc', 'ancestral'])
def test_bimodal_modes_and_log_likelihood(name, path_name, bimodal_expected_log_prob):
  path, n = PATHS[path_name], 4000
  x = _run(name, path, BIMODAL, baselines.edm_rho7(path, 200), n, 1)
  assert float(jnp.mean(jnp.abs(x - 1.0) < 0.5) + jnp.mean(jnp.abs(x + 1.0) < 0.5)) > 0.99
  assert abs(float(jnp.mean(jnp.abs(x - 1.0) < 0.5)) - 0.5) < 4 * 0.5 / np.sqrt(n)
  log_prob = float(jnp.mean(BIMODAL.log_prob_data(x)))    # std of log p_0 under p_0 is about 0.71
  assert abs(log_prob - bimodal_expected_log_prob) < 4 * 0.71 / np.sqrt(n) + 0.005, (log_prob,
                                                                                  bimodal_expected_log_prob)


@pytest.mark.parametrize('name', ['euler', 'heun', 'euler_maruyama', 'pc', 'ancestral', 'dpmpp_2m', 'ipndm'])
def test_image_shapes_and_no_recompilation(name):
  path, shape = PATHS['ve'], (4, 8, 8, 1)
  score_fn = lambda x, t: -x / per_example(1.0 + path.sigma(t)**2, x)
  traces = []

  def counted(key, ts, x_init):
    traces.append(1)                                       # runs only when jit traces
    return samplers.make_sampler(name, path, score_fn, langevin_steps=2)(key, ts, x_init)

  sample = jax.jit(counted)
  x_init = samplers.prior_sample(path, jax.random.PRNGKey(0), shape)
  out = [sample(jax.random.PRNGKey(1), baselines.BASELINES.get(s)(path, 10), x_init)
         for s in ('edm_rho7', 'log_linear')]
  assert len(traces) == 1
  for x in out:
    assert x.shape == shape and x.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(x)))
  assert not np.allclose(out[0], out[1])                  # the new schedule was used


def test_euler_maruyama_adds_no_noise_on_final_step():
  path = PATHS['vp']
  sample = jax.jit(samplers.make_sampler('euler_maruyama', path, _gaussian(2).score_fn(path)))
  x_init = samplers.prior_sample(path, jax.random.PRNGKey(0), (8, 2))
  ts = jnp.array([0.0, 1.0])                               # one step, which is the final one
  np.testing.assert_array_equal(sample(jax.random.PRNGKey(1), ts, x_init), sample(jax.random.PRNGKey(2), ts, x_init))


@pytest.mark.parametrize('path_name', sorted(PATHS))
def test_prior_sample_std(path_name):
  path = PATHS[path_name]
  x = samplers.prior_sample(path, jax.random.PRNGKey(0), (20000, 2))
  expected = np.sqrt(float(path.alpha(1.0))**2 + float(path.sigma(1.0))**2)
  assert x.shape == (20000, 2)
  assert abs(float(jnp.std(x)) / expected - 1.0) < 0.02


def test_unknown_sampler_lists_allowed_names():
  with pytest.raises(ValueError, match=r'config\.eval\.sampler=.*allowed: ancestral, dpmpp_2m, dpmpp_3m, euler, euler_maruyama, heun, ipndm, pc, unipc'):
    samplers.make_sampler('rk4', PATHS['ve'], lambda x, t: -x)


# --- The field's conventions (method.md section 9) ------------------------------------------------------------

ALL = ['euler', 'heun', 'euler_maruyama', 'pc', 'ancestral']


def _tweedie(target, path, x, t):
  """``D(x, t) = (x + sigma^2 s) / alpha`` from the closed-form score, in float64 NumPy."""
  x = np.asarray(x, np.float64)
  s = np.asarray(target.score(jnp.asarray(x, jnp.float32), jnp.full(x.shape[:1], t), path), np.float64)
  return (x + float(path.sigma(t))**2 * s) / float(path.alpha(t))


@pytest.mark.parametrize('path_name', sorted(PATHS))
@pytest.mark.parametrize('name', ALL)
def test_one_step_into_the_data_end_is_the_tweedie_mean(name, path_name):
  # K = 1: the only step is the step into the data end; for N(0, c^2 I) E[x0 | x1] = alpha c^2 x1 / v(1).
  path, d = PATHS[path_name], 2
  x1 = samplers.prior_sample(path, jax.random.PRNGKey(0), (64, d))
  x0 = samplers.make_sampler(name, path, _gaussian(d).score_fn(path), langevin_snr=0.0)(
      jax.random.PRNGKey(1), jnp.array([0.0, 1.0]), x1)
  alpha, sigma = float(path.alpha(1.0)), float(path.sigma(1.0))
  # D = (x + sigma^2 s) / alpha cancels in float32 at the noise end: exact to a few ulps of x / alpha, not of D.
  np.testing.assert_allclose(x0, alpha * C**2 / (alpha**2 * C**2 + sigma**2) * np.asarray(x1), rtol=1e-5,
                             atol=4e-7 * float(jnp.max(jnp.abs(x1))) / alpha)


@pytest.mark.parametrize('path_name', sorted(PATHS))
@pytest.mark.parametrize('name', ALL)
def test_every_sampler_ends_on_the_denoiser_output(name, path_name):
  # With the same noise, the sample is D(x, t_1) of the state at t_1 (pc with snr = 0: no corrector move);
  # the old EM/pc ended with a noise-free SDE step (about 2 D - x) and the old heun with a trapezoid step.
  path, ts = PATHS[path_name], baselines.edm_rho7(PATHS[path_name], 6)
  kw = dict(langevin_snr=0.0)
  key, x1 = jax.random.PRNGKey(4), samplers.prior_sample(path, jax.random.PRNGKey(3), (256, 1))
  sample = samplers.make_sampler(name, path, BIMODAL.score_fn(path), **kw)(key, ts, x1)
  states = samplers.make_trajectory(name, path, BIMODAL.score_fn(path), **kw)(key, ts, x1)
  np.testing.assert_allclose(states[0], sample, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(sample, _tweedie(BIMODAL, path, states[1], float(ts[1])), rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(states[-1], x1)


@pytest.mark.parametrize('name,langevin_steps', [('euler', 1), ('heun', 1), ('euler_maruyama', 1), ('pc', 1),
                                                 ('pc', 2), ('ancestral', 1)])
def test_nfe_counts_the_network_evaluations(name, langevin_steps):
  calls = []

  def score_fn(x, t):
    jax.debug.callback(lambda _: calls.append(1), t[0])      # runs at every evaluation, inside scan too
    return BIMODAL.score(x, t, PATHS['ve'])

  sample = jax.jit(samplers.make_sampler(name, PATHS['ve'], score_fn, langevin_steps=langevin_steps))
  x1 = samplers.prior_sample(PATHS['ve'], jax.random.PRNGKey(0), (8, 1))
  for k in (1, 2, 5):
    calls.clear()
    jax.block_until_ready(sample(jax.random.PRNGKey(1), baselines.edm_rho7(PATHS['ve'], k), x1))
    jax.effects_barrier()
    assert len(calls) == samplers.nfe(name, k, langevin_steps), (name, k, len(calls))
    assert samplers.steps_for_nfe(name, len(calls), langevin_steps) == k
  assert samplers.nfe('heun', 5) == 9 and samplers.nfe('pc', 5, 2) == 15 and samplers.nfe('euler', 5) == 5


def test_unreachable_nfe_is_refused_with_the_nearest_counts():
  with pytest.raises(ValueError, match=r"config\.eval\.nfe: NFE 10 is not reachable by config\.eval\.sampler='heun'.*9, 11"):
    samplers.steps_for_nfe('heun', 10)
  with pytest.raises(ValueError, match=r'NFE 5 is not reachable.*4, 6'):
    samplers.steps_for_nfe('pc', 5, langevin_steps=1)


@pytest.mark.parametrize('name', ['euler', 'heun', 'dpmpp_3m', 'unipc'])
def test_ode_samples_do_not_depend_on_the_time_parametrisation(name):
  # The same sigma ladder on the geometric and the linear VE path (and, in (sigma / alpha, x / alpha), on the VP
  # path): the same samples. Stepping in the path's own t (the old samplers) differs by O(1) at K = 10.
  sigmas = np.asarray(baselines.edm_rho7(PATHS['ve'], 10))
  sigmas = np.asarray(PATHS['ve'].sigma(sigmas), np.float64)
  y1 = samplers.prior_sample(PATHS['ve'], jax.random.PRNGKey(0), (512, 1))
  out = {}
  for parametrisation in ('geometric', 'linear'):
    path = paths.ve_path(0.002, 80.0, parametrisation)
    ts = np.asarray(path.t_of_ratio(sigmas))
    out[parametrisation] = samplers.make_sampler(name, path, BIMODAL.score_fn(path))(jax.random.PRNGKey(1), ts, y1)
  np.testing.assert_allclose(out['geometric'], out['linear'], rtol=1e-4, atol=1e-4)
  vp = PATHS['vp']
  ve = paths.ve_path(vp.ratio_min, vp.ratio_max, 'linear')
  ts_vp = np.asarray(baselines.edm_rho7(vp, 10))
  ts_ve = np.asarray(ve.t_of_ratio(vp.ratio(ts_vp)))
  from_vp = samplers.make_sampler(name, vp, BIMODAL.score_fn(vp))(jax.random.PRNGKey(1), ts_vp, vp.alpha(1.0) * y1)
  from_ve = samplers.make_sampler(name, ve, BIMODAL.score_fn(ve))(jax.random.PRNGKey(1), ts_ve, y1)
  np.testing.assert_allclose(from_vp, from_ve, rtol=1e-3, atol=1e-3)


def test_heun_with_the_score_optimal_ladder_at_five_steps():
  # Regression for the trapezoid step into sigma_min (W1 0.35 at K = 5): the L_c ladder of the exact bimodal
  # score (the toy config's target), 5 Heun steps (NFE 9), 20,000 samples, measures W1 0.075 with the Euler
  # step into the data end; the sample-size floor at this n is about 0.007.
  from configs import toy1d
  from eval import toy
  from schedule.searches import problem, score_optimal
  config = toy1d.get_config()
  config.data.target = 'bimodal'
  config.fit.update(grid=256, num_samples=256, ladder_steps=5)
  path, target = paths.make_path(config.sde), targets.make_target(config.data)
  lam = score_optimal.search(config.fit, config.schedule, config.eval, problem.exact(target, path),
                             jax.random.PRNGKey(0), sigma_data=config.model.sigma_data).schedule
  ts = lam.steps(config.fit.ladder_steps)
  x1 = samplers.prior_sample(path, jax.random.PRNGKey(1), (20_000, 1))
  x = jax.jit(samplers.make_sampler('heun', path, target.score_fn(path)))(jax.random.PRNGKey(2), ts, x1)
  assert toy.wasserstein1(target, np.asarray(x)) < 0.12
