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
