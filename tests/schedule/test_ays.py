"""Align Your Steps (schedule/searches/ays.py): the Monte Carlo KLUB of an interval against its closed form on a
Gaussian target; the search lowers the KLUB below its initial ladder and every hand-made ladder (fresh draws);
on a Gaussian its K = 3 ladder agrees with a brute-force grid search of the closed-form KLUB; coarse-to-fine
subdivision; bad settings refused before compute."""
import jax
import numpy as np
import pytest
from scipy import integrate

from configs import toy1d
from configs.validate import problems
from ddm.paths import make_path
from ddm.registry import BASELINES
from ddm.targets import make_target
from schedule import baselines
from schedule.searches import ays, problem as problem_lib

C = 1.0  # the Gaussian target's std


def _setup(target, **fit):
  config = toy1d.get_config()
  config.data.target, config.data.std = target, (C if target == 'gaussian' else config.data.std)
  config.fit.ays.update(**fit)
  path = make_path(config.sde)
  return config, path, problem_lib.exact(make_target(config.data), path)


def _integrand(r, hi):
  """E (D(y_r, r) - D(y_hi, hi))^2 / r^3 for N(0, C^2) on a VE path: D(y, r) = a_r y, a_r = C^2 / (C^2 + r^2),
  y_r = x0 + r eps, y_hi = y_r + sqrt(hi^2 - r^2) eps'."""
  a_r, a_hi = C**2 / (C**2 + r**2), C**2 / (C**2 + hi**2)
  return ((a_r - a_hi)**2 * (C**2 + r**2) + a_hi**2 * (hi**2 - r**2)) / r**3


def _closed_form(lo, hi):
  return integrate.quad(_integrand, lo, hi, args=(hi,), limit=200)[0]


def test_the_interval_klub_matches_its_closed_form_on_a_gaussian():
  config, path, problem = _setup('gaussian')
  interval = ays.make_interval_klub(problem, ays.Draws(problem, jax.random.PRNGKey(0), 40000, 16))
  for lo, hi in [(0.002, 0.05), (0.05, 0.8), (0.8, 5.0), (5.0, 80.0)]:
    assert interval(lo, hi) == pytest.approx(_closed_form(lo, hi), rel=0.03), (lo, hi)


@pytest.mark.parametrize('target', ['bimodal', 'cantor'])
def test_the_search_lowers_the_klub_below_its_start_and_every_hand_made_ladder(target):
  config, path, problem = _setup(target, step_counts=(5, 10), num_samples=256, passes=2)
  result = ays.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0))
  fresh = ays.make_interval_klub(problem, ays.Draws(problem, jax.random.PRNGKey(9), 1024, 8))
  for k, ts in result.schedule.ladders.items():
    assert len(ts) == k + 1 and ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
    ours = ays.klub_of(fresh, path.ratio(ts))
    assert result.meta['klub'][k] < result.meta['klub_init'][k]
    for name in BASELINES.names():
      theirs = ays.klub_of(fresh, path.ratio(baselines.make_baseline(name, path, k)))
      assert ours < theirs, (target, k, name, ours, theirs)
      assert result.meta['klub'][k] < result.meta['baselines'][name][k]


def test_k3_agrees_with_a_brute_force_grid_search_of_the_closed_form_klub():
  config, path, problem = _setup('gaussian', step_counts=(3,), num_samples=4096, candidates=32, passes=4,
                                 init='log_linear')
  result = ays.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(1))
  found = np.asarray(path.sigma(result.schedule.ladders[3]), np.float64)
  levels = np.exp(np.linspace(np.log(0.002), np.log(80.0), 241))[1:-1]
  # F(lo, hi) for every pair by Gauss-Legendre in log r (64 nodes), vectorised
  nodes, weights = np.polynomial.legendre.leggauss(64)

  def pairs(lo, hi):
    u_lo, u_hi = np.log(lo)[..., None], np.log(hi)[..., None]
    r = np.exp(u_lo + (u_hi - u_lo) / 2 * (nodes + 1))
    return np.sum(weights * (u_hi - u_lo)[..., :] / 2 * _integrand(r, hi[..., None]) * r, axis=-1)

  first = pairs(np.full(levels.shape, 0.002), levels)                       # [r1]
  middle = pairs(levels[:, None] + 0 * levels[None], levels[None] + 0 * levels[:, None])   # [r1, r2]
  last = pairs(levels, np.full(levels.shape, 80.0))                          # [r2]
  total = first[:, None] + middle + last[None]
  total[np.tril_indices(len(levels))] = np.inf
  i, j = np.unravel_index(np.argmin(total), total.shape)
  ours = _closed_form(0.002, found[1]) + _closed_form(found[1], found[2]) + _closed_form(found[2], 80.0)
  assert ours <= 1.03 * total[i, j], (found, levels[i], levels[j], ours, total[i, j])
  np.testing.assert_allclose(np.log(found[1:3]), np.log([levels[i], levels[j]]), atol=0.25)


def test_subdivision_inserts_log_midpoints_and_local_search_keeps_the_ends():
  np.testing.assert_allclose(ays.subdivide([1.0, 100.0, 10000.0]), [1.0, 10.0, 100.0, 1000.0, 10000.0])
  interval = lambda lo, hi: (np.log(hi) - np.log(lo))**2  # least when the log-gaps are equal
  ratios, evaluations = ays.local_search(interval, [1.0, 1.5, 2.0, 1e4], candidates=400, passes=20)
  assert ratios[0] == 1.0 and ratios[-1] == 1e4 and evaluations > 0
  np.testing.assert_allclose(np.log(ratios), np.linspace(0, np.log(1e4), 4), atol=0.1)


@pytest.mark.parametrize('overrides, message', [
    (dict(step_counts=()), 'config.fit.ays.step_counts=(); need a non-empty, strictly increasing list'),
    (dict(step_counts=(10, 10)), 'config.fit.ays.step_counts=(10, 10); need'),
    (dict(nodes=1), 'config.fit.ays.nodes=1; need an integer >= 2'),
    (dict(candidates=1), 'config.fit.ays.candidates=1; need an integer >= 2'),
    (dict(passes=0), 'config.fit.ays.passes=0; need an integer >= 1'),
    (dict(num_samples=0), 'config.fit.ays.num_samples=0; need an integer >= 1'),
    (dict(init='karras'), "config.fit.ays.init='karras' is not a known baseline schedule"),
])
def test_bad_settings_are_named(overrides, message):
  config = toy1d.get_config('smoke')
  config.fit.method = 'ays'
  config.fit.ays.update(**overrides)
  assert any(message in p for p in problems(config, 'fit_schedule')), problems(config, 'fit_schedule')


def test_fit_schedule_stores_the_ays_ladders(tmp_path):
  from modes import fit_schedule as run
  from schedule import schedules
  config = toy1d.get_config('smoke')
  config.data.target, config.fit.method, config.fit.ladder_steps = 'bimodal', 'ays', 4
  config.fit.ays.update(step_counts=(2, 4), num_samples=64, passes=1, candidates=4)
  record = run.fit_schedule(config, str(tmp_path))
  assert record['method'] == 'ays' and record['name'] == 'ays' and record['num_steps'] == 4
  assert record['klub'][4] < record['klub_init'][4]
  assert schedules.stored(str(tmp_path), 'ays').has(2)
