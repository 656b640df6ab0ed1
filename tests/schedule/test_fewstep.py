"""The few-step search (fit.method='fewstep') on Gaussian data, whose probability-flow map is exact: the gradient
through the solver's walk against finite differences, brute-force searches at K = 2 and 3, and the searched
ladder against the dynamic programme and every hand-made ladder for the same solver."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from ddm import paths, samplers, targets
from ddm.registry import BASELINES
from schedule import baselines
from schedule.searches import fewstep, problem as problem_lib, trajectory

PATH = paths.ve_path(0.002, 80.0)
C = 0.5


def _problem():
  return problem_lib.exact(targets.gaussian_mixture(np.zeros((1, 1)), [C], [1.0]), PATH)


def _exact_objective(sampler, x1):
  """J(ts) against the exact probability-flow map of N(0, C^2) from ``x1`` at ``R = r(1)`` to zero noise,
  ``x1 C / sqrt(C^2 + R^2)`` (``x(r) = x1 sqrt(C^2 + r^2) / sqrt(C^2 + R^2)``, method.md section 10)."""
  r_max = float(PATH.ratio(1.0))
  target = x1 * C / np.sqrt(C**2 + r_max**2)
  return trajectory.make_objective(_problem(), sampler, 0, x1, target)


def test_gradient_through_the_walk_matches_finite_differences():
  with jax.enable_x64(True):
    x1 = jax.random.normal(jax.random.PRNGKey(0), (64, 1), jnp.float64) * 80.0
    objective = _exact_objective('dpmpp_3m', x1)
    ends = fewstep.log_ratio_ends(PATH)
    loss = jax.jit(lambda z: objective(fewstep.ladder_of(z, PATH, ends)))
    z = jnp.asarray([0.3, -0.2, 0.1, 0.5], jnp.float64)
    grad = np.asarray(jax.jit(jax.grad(loss))(z))
    eps = 1e-6
    numeric = [(float(loss(z.at[i].add(eps))) - float(loss(z.at[i].add(-eps)))) / (2 * eps) for i in range(4)]
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-12)
  assert np.max(np.abs(grad)) > 1e-6                                   # a gradient that says something


def test_ladders_stay_ordered_with_fixed_ends():
  z = jnp.asarray([5.0, -40.0, 0.0, 30.0, -3.0])
  ts = np.asarray(fewstep.ladder_of(z, PATH, fewstep.log_ratio_ends(PATH)))
  assert ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) >= 0)
  back = fewstep.ladder_of(fewstep.logits_of(baselines.edm_rho7(PATH, 5), PATH), PATH, fewstep.log_ratio_ends(PATH))
  np.testing.assert_allclose(np.asarray(back), np.asarray(baselines.edm_rho7(PATH, 5)), atol=1e-5)


@pytest.mark.parametrize('k', [2, 3])
def test_refinement_finds_the_brute_force_ladder(k):
  # dpmpp_2m at K = 2 and 3 (one and two free log noise levels): a grid of every ladder against the refinement
  # started from log-linear.
  x1 = jax.random.normal(jax.random.PRNGKey(1), (128, 1)) * 80.0
  objective = jax.jit(_exact_objective('dpmpp_2m', x1))
  lo, hi = fewstep.log_ratio_ends(PATH)
  u = np.linspace(lo, hi, 121 if k == 2 else 41)[1:-1]
  points = [(a,) for a in u] if k == 2 else [(a, b) for a in u for b in u if a < b]

  def ts_of(free):
    ts = np.asarray(PATH.t_of_ratio(np.exp(np.asarray(free))), np.float64)
    return jnp.asarray(np.concatenate([[0.0], ts, [1.0]]), jnp.float32)

  values = np.asarray(jax.vmap(objective)(jnp.stack([ts_of(p) for p in points])))
  brute = float(np.min(values))
  ts, value, _ = fewstep.polish(objective, np.asarray(baselines.log_linear(PATH, k)), PATH, 300, 0.05)
  assert value <= brute * 1.01, (value, brute)
  found = np.log(np.asarray(PATH.ratio(jnp.asarray(ts[1:-1], jnp.float32))))
  best = np.asarray(points[int(np.argmin(values))])
  assert np.max(np.abs(found - best)) < 2 * (u[1] - u[0]), (found, best)


def _config(sampler):
  config = base.get_config()
  config.eval.step_counts = (4, 6)
  config.fit.sampler = sampler
  config.fit.fewstep.update(grid=16, teacher_substeps=4, num_noises=128, adam_steps=60)
  return config


@pytest.mark.parametrize('sampler', [pytest.param('dpmpp_2m', marks=pytest.mark.slow), 'ipndm'])
def test_search_beats_the_dp_and_every_hand_made_ladder_for_its_solver(sampler):
  config = _config(sampler)
  result = fewstep.search(config.fit, config.schedule, config.eval, _problem(), jax.random.PRNGKey(3))
  meta = result.meta
  assert meta['sampler'] == sampler and sorted(result.schedule.ladders) == [4, 6]
  for k in (4, 6):
    ts = result.schedule.steps(k)
    assert ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
    assert meta['objective'][k] <= meta['dp'][k], (k, meta['objective'][k], meta['dp'][k])
    for name in BASELINES.names():
      assert meta['objective'][k] < meta['baselines'][name][k], (k, name, meta['objective'][k], meta['baselines'])
  assert meta['network_evaluations'] > 0 and meta['time_s'] > 0


def test_steps_wanted_follow_the_solver():
  eval_cfg = ml_collections.ConfigDict(dict(step_counts=(), nfe=(4, 5, 6, 9), langevin_steps=1, sampler='heun'))
  assert fewstep.steps_wanted(eval_cfg, 'heun') == [3, 5]               # NFE 5 and 9: 2K - 1
  assert fewstep.steps_wanted(eval_cfg, 'unipc') == [4, 5, 6, 9]
  assert samplers.nfe('ipndm', 4) == 4


def test_mmd_matches_its_closed_form_between_gaussians():
  # X ~ N(0, a^2), Y ~ N(0, b^2), k = exp(-(x - y)^2 / (2 h^2)): E k(X, X') = h / sqrt(h^2 + 2 a^2),
  # E k(X, Y) = h / sqrt(h^2 + a^2 + b^2); MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y), averaged over the h
  a, b, hs = 1.0, 0.6, np.asarray([0.3, 1.0, 2.0])
  exact = np.mean(hs / np.sqrt(hs**2 + 2 * a**2) + hs / np.sqrt(hs**2 + 2 * b**2) - 2 * hs / np.sqrt(hs**2 + a**2 + b**2))
  kx, ky = jax.random.split(jax.random.PRNGKey(0))
  x, y = a * jax.random.normal(kx, (4000, 1)), b * jax.random.normal(ky, (4000, 1))
  assert float(fewstep.mmd2(x, y, hs)) == pytest.approx(exact, rel=0.05)
  assert abs(float(fewstep.mmd2(x[:2000], x[2000:], hs))) < 0.05 * exact     # same law: zero up to sampling
  # D dimensions with the squared distance divided by D: the same value for i.i.d. coordinates scaled to match
  x3, y3 = a * jax.random.normal(kx, (4000, 3)), b * jax.random.normal(ky, (4000, 3))
  three = np.mean((hs / np.sqrt(hs**2 + 2 * a**2 / 3))**3 + (hs / np.sqrt(hs**2 + 2 * b**2 / 3))**3
                  - 2 * (hs / np.sqrt(hs**2 + (a**2 + b**2) / 3))**3)
  assert float(fewstep.mmd2(x3, y3, hs)) == pytest.approx(three, rel=0.05)
  # pairs from the same noise (y_i = x_i + a little): still MMD^2 of the two laws, the pairing left out
  y_paired = x * b / a + 0.01 * jax.random.normal(ky, x.shape)
  assert float(fewstep.mmd2(x, y_paired, hs)) == pytest.approx(exact, rel=0.05)
  assert abs(float(fewstep.mmd2(x[:256], x[:256], hs))) < 1e-6    # k(x_i, x_i) = 1 kept would give -2 (1 - k) / M


def test_the_mmd_objective_keeps_the_fine_scale_the_paired_one_averages_away():
  # Cantor's components (std 0.005) sit at every scale down to ~0.01: with 6 Euler steps the paired distance's
  # ladder jumps into the data end from a noise level above the finest gaps (its last step returns the posterior
  # mean, between components); MMD^2 with kernels from r(0) keeps its last noise level near the finest scale,
  # and its samples' histogram KL to the exact law is the lower. Exact score; 20,000 fresh noises.
  from configs import toy1d
  from ddm.paths import make_path
  from eval import toy
  config = toy1d.get_config()
  config.data.target, config.fit.sampler, config.eval.step_counts, config.eval.nfe = 'cantor', 'euler', (6,), ()
  path, target = make_path(config.sde), targets.make_target(config.data)
  problem = problem_lib.exact(target, path)
  walk = samplers.make_sampler('euler', path, problem.score_fn)
  x = samplers.prior_sample(path, jax.random.PRNGKey(123), (20000, 1))
  sigma_1, kl = {}, {}
  for objective in ('paired', 'mmd'):
    config.fit.fewstep.update(objective=objective, num_noises=256, adam_steps=100)
    result = fewstep.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0))
    assert result.meta['objective_kind'] == objective
    ts = result.schedule.steps(6)
    sigma_1[objective] = float(path.sigma(ts[1]))
    kl[objective] = toy.metrics(target, np.asarray(walk(jax.random.PRNGKey(0), jnp.asarray(ts, jnp.float32), x)))['kl']
  assert sigma_1['mmd'] < 0.5 * sigma_1['paired'] and kl['mmd'] < 0.7 * kl['paired'], (sigma_1, kl)
  h = fewstep.mmd_bandwidths(path, 0.02 * jnp.sign(jax.random.normal(jax.random.PRNGKey(0), (256, 1))))
  assert h[0] == pytest.approx(0.002, rel=1e-6) and h[-1] == pytest.approx(0.02, rel=1e-2) and np.all(np.diff(h) > 0)
