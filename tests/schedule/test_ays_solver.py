"""Align Your Steps and the solver its bound is for (schedule/searches/ays.py, ``SAMPLER``).

The KLUB freezes the denoiser over a step and nothing else; the linear SDE left is solved exactly by stochastic
DDIM, which is the project's 'ancestral' sampler, not Euler-Maruyama (which also freezes the linear part). The
fit records that sampler, and under it the exact-score AYS ladders do not get worse as K grows; under
Euler-Maruyama they did (docs/*_searches_eval_euler_maruyama.md: Cantor W1 0.036, 0.139, 0.141 at K = 5, 10, 20).
Also: the interval estimator against the bound's one-dimensional form on the Cantor target (the quadrature in
``log r`` converged at the default 8 nodes, on the long first interval too); the record of how the search ended.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import toy1d
from ddm import samplers
from ddm.paths import make_path
from ddm.targets import make_target
from eval import toy
from schedule.searches import ays, problem as problem_lib

C = 1.0  # the Gaussian target's std


def _setup(target, **fit):
  config = toy1d.get_config()
  config.data.target = target
  if target == 'gaussian':
    config.data.std = C
  config.fit.ays.update(**fit)
  path = make_path(config.sde)
  data = make_target(config.data)
  return config, path, data, problem_lib.exact(data, path)


def _frozen_denoiser_solution(r_hi, r_lo, substeps=200_000):
  """The reverse SDE ``dy = -2 (D - y) / r dr + sqrt(2 r) dw`` with ``D`` frozen, from ``r_hi`` down to ``r_lo``,
  integrated by ``substeps`` Euler-Maruyama substeps uniform in ``log r`` (converges to the exact solution):
  ``y' = D + a (y - D) + s z``; returns ``(a, s^2)``."""
  r = np.exp(np.linspace(np.log(r_hi), np.log(r_lo), substeps + 1))
  h = r[:-1] - r[1:]                                     # > 0
  gain = 1 - 2 * h / r[:-1]                              # y - D <- gain (y - D) + noise of variance 2 r h
  after = np.concatenate([np.cumprod(gain[::-1])[::-1][1:], [1.0]])   # the gain of the later substeps
  return float(np.prod(gain)), float(np.sum(2 * r[:-1] * h * after**2))


def _denoised_energy(path, data, r):
  """``m(r) = E D(y_r, r)^2`` for a 1-D mixture, by the trapezoid rule over ``y`` on a grid finer than its
  narrowest component."""
  m, s, w = data.means[:, 0].astype(np.float64), data.stds.astype(np.float64), data.weights.astype(np.float64)
  sd = np.sqrt(s**2 + r**2)
  y = np.linspace(np.min(m - 9 * sd), np.max(m + 9 * sd), 20_001)
  density = np.sum(w * np.exp(-0.5 * ((y[:, None] - m) / sd)**2) / (sd * np.sqrt(2 * np.pi)), axis=1)
  t = jnp.full((y.size,), path.t_of_ratio(r), jnp.float32)
  d = np.asarray(data.denoiser(jnp.asarray(y[:, None], jnp.float32), t, path), np.float64)[:, 0]
  return np.trapezoid(density * d**2, y)


@pytest.mark.parametrize('lo, hi', [(0.2, 80.0), (0.0116, 0.0425), (0.002, 0.0116)])
def test_the_interval_klub_on_the_cantor_target_matches_its_one_dimensional_form(lo, hi):
  """For the exact posterior mean the tower property makes an interval's term ``int (m(r) - m(hi)) / r^3 dr``,
  ``m(r) = E D(y_r, r)^2`` (module docstring): the paired Monte Carlo estimate of the search agrees with it on a
  non-Gaussian target, on the long first interval too, and 8 Gauss-Legendre nodes in ``log r`` (the default)
  integrate that smooth integrand as well as 48."""
  config, path, data, problem = _setup('cantor')

  def quadrature(nodes):
    x, w = np.polynomial.legendre.leggauss(nodes)
    u = np.log(lo) + (np.log(hi) - np.log(lo)) / 2 * (x + 1)
    m_hi = _denoised_energy(path, data, hi)
    values = np.array([(_denoised_energy(path, data, r) - m_hi) / r**2 for r in np.exp(u)])
    return np.sum(w * values) * (np.log(hi) - np.log(lo)) / 2

  exact = quadrature(48)
  assert quadrature(8) == pytest.approx(exact, rel=2e-3)
  interval = ays.make_interval_klub(problem, ays.Draws(problem, jax.random.PRNGKey(0), 20_000, 8))
  assert interval(lo, hi) == pytest.approx(exact, rel=0.04), (interval(lo, hi), exact)


@pytest.mark.parametrize('r_hi, r_lo', [(80.0, 0.5), (2.0, 0.3), (0.05, 0.04)])
def test_the_ancestral_sampler_is_the_exact_solver_of_the_bounds_frozen_denoiser_sde(r_hi, r_lo):
  """One step from ``r_hi`` to ``r_lo`` of 'ancestral' (a Gaussian target: ``D = k y``, so the step is linear in
  ``y``) against the exact solution of the SDE that the KLUB compares with the true one; Euler-Maruyama's step is
  another map, far off on the long step (its gain ``2 r_lo / r_hi - 1`` is negative: a reflection)."""
  config, path, data, problem = _setup('gaussian')
  a, var = _frozen_denoiser_solution(r_hi, r_lo)
  np.testing.assert_allclose([a, var], [(r_lo / r_hi)**2, r_lo**2 * (1 - (r_lo / r_hi)**2)], rtol=1e-3)
  k = C**2 / (C**2 + r_hi**2)                            # D(y, r_hi) = k y
  want = dict(ancestral=(k + a * (1 - k), var))          # y' = (k + a (1 - k)) y + noise of variance var
  t_lo, t_hi = (float(path.t_of_ratio(r)) for r in (r_lo, r_hi))
  ts = jnp.asarray([0.0, t_lo, t_hi], jnp.float32)
  n, y0 = 50_000, 0.7 * r_hi
  y = jnp.full((n, 1), y0, jnp.float32)
  for name in ('ancestral', 'euler_maruyama'):
    states = samplers.make_trajectory(name, path, problem.score_fn)(jax.random.PRNGKey(0), ts, y)
    got = np.asarray(states[1], np.float64)[:, 0]        # the state at r_lo after one step
    gain, noise = got.mean() / y0, got.var()
    if name == 'ancestral':   # 5 standard errors of the mean; the variance to 3% (50,000 draws: 0.6% se)
      np.testing.assert_allclose(gain, want[name][0], rtol=1e-3, atol=5 * np.sqrt(var / n) / y0)
      np.testing.assert_allclose(noise, want[name][1], rtol=0.03)
    elif r_lo / r_hi < 0.5:
      assert gain < 0 and noise > 10 * want['ancestral'][1], (gain, noise)


@pytest.mark.parametrize('target', ['cantor', 'bimodal'])
def test_ays_under_its_own_sampler_does_not_get_worse_as_k_grows(target):
  """The exact score: AYS's K = 5, 10, 20 ladders (coarse to fine, as configs/base.py), sampled with the sampler
  the fit records, 3 seeds of 20,000 samples: W1 and histogram KL do not rise with K beyond the two spreads
  (the old search recorded no sampler, and the docs evaluated its ladders under Euler-Maruyama, where they did)."""
  config, path, data, problem = _setup(target, step_counts=(5, 10, 20), num_samples=128, passes=3)
  result = ays.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0))
  assert result.meta['sampler'] == ays.SAMPLER == 'ancestral'
  sample = jax.jit(samplers.make_sampler(result.meta['sampler'], path, problem.score_fn))
  table = {}
  for k in (5, 10, 20):
    ts = jnp.asarray(result.schedule.steps(k), jnp.float32)
    runs = []
    for seed in range(3):
      key_init, key = jax.random.split(jax.random.PRNGKey(100 + seed))
      x = np.asarray(sample(key, ts, samplers.prior_sample(path, key_init, (20_000, 1))))
      runs.append((toy.wasserstein1(data, x), toy.histogram_kl(data, x)))
    table[k] = (np.mean(runs, axis=0), np.std(runs, axis=0))
  for coarse, fine in [(5, 10), (10, 20)]:
    (mean_c, std_c), (mean_f, std_f) = table[coarse], table[fine]
    assert np.all(mean_f <= mean_c + std_c + std_f), (target, coarse, fine, table)


def test_the_record_says_how_the_search_ended_and_how_long_its_longest_step_is():
  config, path, data, problem = _setup('bimodal', step_counts=(5,), num_samples=64, passes=1)
  result = ays.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0))
  r = np.asarray(path.ratio(result.schedule.steps(5)), np.float64)
  assert result.meta['min_step_ratio'][5] == pytest.approx(np.min(r[:-1] / r[1:]))
  assert result.meta['passes'][5] == 1 and result.meta['converged'][5] in (True, False)
  report = {}
  ratios, _ = ays.local_search(lambda lo, hi: (np.log(hi) - np.log(lo))**2, [1.0, 1.5, 2.0, 1e4], 400, 50, report)
  assert report == {'passes': report['passes'], 'converged': True} and 1 < report['passes'] < 50
