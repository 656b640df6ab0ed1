"""tools/cost_fraction.py: the per-example spread of the corrector rate against its closed form on a Gaussian
target (the rate is sigma^2 |d score / dt|^2, proportional to x_t^2: a chi-square with one degree of freedom,
coefficient of variation sqrt(2) at every level); the simulated counts follow the learner's update rule; the
chosen fraction is the smallest within the bound; bad flags are refused before any compute."""
import math

import jax
import numpy as np
import pytest

from configs import toy1d
from schedule import online
from tools import cost_fraction


def _gaussian_exact():
  config = toy1d.get_config('smoke')
  config.data.target, config.model.exact_score = 'gaussian', True
  return config


def test_the_coefficient_of_variation_of_the_gaussian_rate_is_sqrt2_at_every_level():
  index, kappa, source = cost_fraction.measure_spread(_gaussian_exact(), '', levels=6, per_level=4000,
                                                      key=jax.random.PRNGKey(7))
  assert source == 'exact score of the toy target' and kappa.shape == (len(index), 4000)
  cv = cost_fraction.coefficient_of_variation(kappa)
  # sample CV of 4000 chi-square(1) draws: standard error about 0.05
  np.testing.assert_allclose(cv, math.sqrt(2), rtol=0.12)


def test_counts_follow_the_update_rule():
  counts, steps = online.simulate_counts(50, 8, min_count=3, update_every=40, updates=20)
  np.testing.assert_array_equal(counts.sum(axis=1), 8 * steps)
  assert np.all((counts.min(axis=1) >= 3) | (steps == 40))
  # once every level is full the update fires: one step earlier at least one level was short
  assert np.all(steps >= math.ceil(3 * 50 / 8))
  few, few_steps = online.simulate_counts(50, 1, min_count=3, update_every=40, updates=5)
  assert np.all(few_steps == 40) and np.all(few.sum(axis=1) == 40)  # 40 samples cannot fill 50 levels
  rel = cost_fraction.relative_errors(np.full(50, 2.0), few, p=2)
  np.testing.assert_allclose(rel[few > 0], 2.0 / (2 * np.sqrt(few[few > 0])))
  assert np.all(np.isinf(rel[few == 0]))


def test_the_chosen_fraction_is_the_smallest_within_the_bound():
  config = _gaussian_exact()
  config.schedule.update_every, config.schedule.min_count = 50, 40
  result = cost_fraction.run(config, '', ['1/64', '1/8', '1/2', '1'], bound=0.35, levels=4, per_level=400)
  rows = result['fractions']
  assert [r['fraction'] for r in rows] == [1 / 64, 1 / 8, 1 / 2, 1.0]
  assert [r['examples_per_step'] for r in rows] == [1, 8, 32, 64]
  meets = [r['meets_bound'] for r in rows]
  assert meets[0] is False and meets[-1] is True   # 1 rate a step leaves most of the 17 levels with < 4 samples
  assert result['chosen'] == rows[meets.index(True)]['fraction']
  for r in rows:
    assert r['meets_bound'] == (r['p90_rel_se'] <= 0.35)
  assert 'smallest fraction within the bound' in cost_fraction.table(result)


@pytest.mark.parametrize('flag, message', [
    (dict(fractions=['0']), r"--fractions: '0' is not a fraction in \(0, 1\]"),
    (dict(fractions=['3/2']), r"--fractions: '3/2' is not a fraction"),
    (dict(fractions=['a/b']), r"--fractions: 'a/b' is not a fraction"),
    (dict(fractions=[]), r'--fractions is empty'),
    (dict(bound=0.0), r'--bound=0.0; need > 0'),
    (dict(levels=1), r'--levels=1, --per_level=32; need >= 2 each'),
])
def test_bad_flags_are_refused(flag, message):
  args = dict(fractions=['1/4'], bound=0.25, levels=4, per_level=32) | flag
  with pytest.raises(ValueError, match=message):
    cost_fraction.run(_gaussian_exact(), '', **args)


def test_an_assumed_spread_measures_nothing_and_scales_the_errors():
  config = _gaussian_exact()
  one = cost_fraction.run(config, '', ['1/2', '1'], bound=10.0, cv=1.0)
  two = cost_fraction.run(config, '', ['1/2', '1'], bound=10.0, cv=2.0)
  assert one['source'].startswith('assumed per-example coefficient of variation 1')
  for a, b in zip(one['fractions'], two['fractions']):
    assert b['median_rel_se'] == pytest.approx(2 * a['median_rel_se'])  # same simulated counts, twice the spread
  with pytest.raises(ValueError, match=r'--cv=-1.0; need >= 0'):
    cost_fraction.run(config, '', ['1/2'], bound=0.25, cv=-1.0)
