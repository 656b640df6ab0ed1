"""The predictor-optimised cost L_p (method.md section 2) against a change of variables on a grid (1-D), an
explicit Jacobian (a few dimensions), L_c (identity predictor), and the check for non-smooth networks."""
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddm import networks, paths, targets
from schedule import costs, predictor
from train.model import Model

PATH = paths.ve_path(0.002, 80.0)
MIXTURE = ([-1.0, 0.5], [0.1, 0.3], [0.3, 0.7])


def _grid_cost(g, name, t_next, t, n=100_001):
  """``L_p(t' -> t)`` by a change of variables on a grid: ``log q(F(x)) = log p_t'(x) - log|F'(x)|``, its
  derivative in y by finite differences, weighted by ``p_t'`` (no autodiff of the push-forward). Also the
  grid and its weights, to evaluate the estimator under the same quadrature. The finite differences are
  O(h^2): at sigma ~ 0.1 a Heun step costs ~1e-8 and 40,001 points leave 0.1% of it."""
  score = g.score_fn(PATH)
  x = jnp.linspace(-6.0, 6.0, n)[:, None]
  F = predictor.predictor_map(name, PATH, score)
  y = np.asarray(jax.vmap(lambda xi: F(xi, t_next, t))(x))[:, 0]
  xs = np.asarray(x)[:, 0]
  log_p = np.asarray(g.log_prob(x, t_next, PATH))
  log_q = log_p - np.log(np.abs(np.gradient(y, xs)))
  grad_log_q = np.gradient(log_q, y)
  s_t = np.asarray(score(jnp.asarray(y)[:, None], jnp.full((n,), t)))[:, 0]
  w = np.exp(log_p)
  w /= w.sum()
  return float(np.sum(w * float(PATH.sigma(t))**2 * (s_t - grad_log_q)**2)), x, w


@pytest.mark.parametrize('name', ['identity', 'euler', 'heun'])
def test_1d_cost_matches_change_of_variables_on_a_grid(name):
  with jax.enable_x64(True):
    g = targets.gaussian_mixture(*MIXTURE)
    for t, dt in [(0.5, 0.05), (0.3, 0.03), (0.8, 0.1)]:
      reference, x, w = _grid_cost(g, name, t, t - dt)
      mine = np.asarray(predictor.predictor_cost(g.score_fn(PATH), PATH, x, t, t - dt, name))
      assert reference > 0
      np.testing.assert_allclose(np.sum(w * mine), reference, rtol=1e-3)


@pytest.mark.parametrize('name', ['identity', 'euler', 'heun'])
def test_1d_rate_is_the_leading_coefficient_of_the_grid_cost(name):
  """``L_p(t -> t - eps) / eps^(2p) -> v^2 E||c_p||^2`` (the rate to the power p), with the ratio approaching
  1 linearly in eps (measured on this geometric VE path, t = 0.5: 10%, 5.3%, 2.7% for Euler and 15%, 7.9%, 3.7% for
  Heun at the three eps); and the dt^2 coefficient ``c_1`` vanishes for the ODE predictors with an exact score."""
  p = predictor.ORDERS[name]
  with jax.enable_x64(True):
    g = targets.gaussian_mixture(*MIXTURE)
    t = 0.5
    _, x, w = _grid_cost(g, name, t, t - 0.01, n=4001)
    tt = jnp.full((x.shape[0],), t)
    kappa = float(np.sum(w * np.asarray(predictor.predictor_rate(g.score_fn(PATH), PATH, x, tt, predictor=name))))
    # The sigma-space steps are accurate enough that eps^(2p+1) still shows at eps = 0.0025 (10-15%): smaller steps,
    # and a finer grid for the finite differences of the tiny Heun costs.
    gaps = [abs(_grid_cost(g, name, t, t - eps, n=400_001)[0] / (kappa * eps**(2 * p)) - 1)
            for eps in (0.0025, 0.00125, 0.000625)]
    assert gaps[2] < 0.07 and gaps[0] > gaps[1] > gaps[2]
    assert gaps[1] / gaps[2] == pytest.approx(2.0, rel=0.15)  # O(eps) correction
    c1 = np.sum(w * np.asarray(predictor.predictor_rate(g.score_fn(PATH), PATH, x, tt, predictor=name, order=1)))
    identity = np.sum(w * np.asarray(costs.corrector_rate(g.score_fn(PATH), PATH, x, tt)))
    if name == 'identity':
      assert c1 == pytest.approx(identity, rel=1e-10)
    else:
      assert c1 < 1e-20 * identity


@pytest.mark.parametrize('name', ['euler', pytest.param('heun', marks=pytest.mark.slow)])  # heun: 2 min
def test_rate_on_grid_averages_before_the_power(name):
  """The fit's rate at t is ``E[kappa]^(1/p)``: to the power p it is the limit of ``L_p(t -> t - eps) / eps^(2p)`` of
  the change of variables on a grid. The Hoelder mean ``E[kappa^(1/p)]^p`` (a per-example power) is not: here it is
  at least 25% too small, so averaging in the wrong order fails this test."""
  p = predictor.ORDERS[name]
  with jax.enable_x64(True):
    g = targets.gaussian_mixture(*MIXTURE)
    score = g.score_fn(PATH)
    for t in (0.35, 0.5):
      eps = 0.000625
      limit = _grid_cost(g, name, t, t - eps, n=400_001)[0] / eps**(2 * p)
      sample_pt = lambda key, tt: g.sample_pt(key, PATH, tt)
      rate_fn = costs.make_rate_fn(ml_collections.ConfigDict(dict(
          cost='predictor', cost_solver=name, hutchinson_probes=1, cost_batch_size=4096)))
      # kappa is heavy-tailed at t = 0.35 (max / mean ~ 2e4 in the tails of p_t): 16,384 draws came out 33% low.
      rate = costs.rate_on_grid(rate_fn, score, PATH, sample_pt, jnp.array([t]), jax.random.PRNGKey(7), 65536, p)
      assert float(rate[0])**p == pytest.approx(limit, rel=0.12)
      _, x, w = _grid_cost(g, name, t, t - eps, n=4001)
      kappa = np.asarray(predictor.predictor_rate(score, PATH, x, jnp.full((x.shape[0],), t), predictor=name))
      assert np.sum(w * kappa**(1 / p))**p < 0.75 * np.sum(w * kappa)


def test_identity_predictor_is_the_corrector_cost():
  g = targets.gaussian_mixture(*MIXTURE)
  score = g.score_fn(PATH)
  t = jnp.linspace(0.05, 0.95, 64)
  x = g.sample_pt(jax.random.PRNGKey(0), PATH, t)
  np.testing.assert_allclose(predictor.predictor_cost(score, PATH, x, t, t - 0.03, 'identity'),
                             costs.corrector_cost(score, PATH, x, t, t - 0.03), rtol=1e-5)
  np.testing.assert_allclose(costs.predictor_rate(score, PATH, x, t, predictor='identity'),
                             costs.corrector_rate(score, PATH, x, t), rtol=1e-5)
  g3 = targets.gaussian_mixture([[-1.0, 0.0, 0.5], [0.5, 0.3, -0.2]], [0.2, 0.4], [0.4, 0.6])
  x3 = g3.sample_pt(jax.random.PRNGKey(1), PATH, t[::8])
  np.testing.assert_allclose(predictor.predictor_cost(g3.score_fn(PATH), PATH, x3, t[::8], t[::8] - 0.03, 'identity'),
                             costs.corrector_cost(g3.score_fn(PATH), PATH, x3, t[::8], t[::8] - 0.03), rtol=1e-5)


def _exact_pieces(F, score, x, t_next, t):
  """``grad_x log|det J|`` and the push-forward score with the Jacobian formed by ``jax.jacfwd``."""
  fz = lambda z: F(z, t_next, t)
  jac = jax.jacfwd(fz)
  grad_logdet = jax.grad(lambda z: jnp.linalg.slogdet(jac(z))[1])(x)
  s_x = score(x[None], jnp.full((1,), t_next))[0]
  return grad_logdet, jnp.linalg.solve(jac(x).T, s_x - grad_logdet)


@pytest.mark.parametrize('name', ['euler', 'heun'])
def test_hutchinson_matches_the_formed_jacobian_in_three_dimensions(name):
  g = targets.gaussian_mixture([[-1.0, 0.0, 0.5], [0.5, 0.3, -0.2]], [0.2, 0.4], [0.4, 0.6])
  score = g.score_fn(PATH)
  F = predictor.predictor_map(name, PATH, score)
  t_next, t = 0.5, 0.3  # a long step: sigma from 0.40 to 0.048 (shorter ones cost too little to see the log-det)
  x = g.sample_pt(jax.random.PRNGKey(2), PATH, jnp.full((4,), t_next))
  exact = jax.jit(jax.vmap(lambda xi: _exact_pieces(F, score, xi, t_next, t)))
  exact_g, exact_q = exact(x)
  estimate = jax.jit(jax.vmap(lambda xi: predictor.push_forward_score(F, score, xi, t_next, t, jax.random.PRNGKey(3),
                                                                      probes=4000)))
  _, q, est_g = estimate(x)
  assert float(jnp.max(jnp.linalg.norm(exact_g, axis=1))) > 0.1  # the log-det term matters at these points
  np.testing.assert_allclose(est_g, exact_g, atol=0.05 * float(jnp.max(jnp.linalg.norm(exact_g, axis=1))))
  np.testing.assert_allclose(q, exact_q, atol=0.05 * float(jnp.max(jnp.linalg.norm(exact_q, axis=1))))
  # the cost itself, per example: Hutchinson (many probes) against the formed Jacobian
  y = jax.vmap(lambda xi: F(xi, t_next, t))(x)
  exact_cost = PATH.sigma(t)**2 * jnp.sum((score(y, jnp.full((4,), t)) - exact_q)**2, axis=1)
  cost = jax.jit(lambda x: predictor.predictor_cost(score, PATH, x, t_next, t, name, jax.random.PRNGKey(4),
                                                    probes=4000))(x)
  np.testing.assert_allclose(cost, np.asarray(exact_cost), rtol=0.05)


def test_hutchinson_rate_matches_the_formed_jacobian_in_three_dimensions():
  """The local rate's coefficient c_p with ``tr log J`` from probes against ``slogdet`` of ``jacfwd``."""
  g = targets.gaussian_mixture([[-1.0, 0.0, 0.5], [0.5, 0.3, -0.2]], [0.2, 0.4], [0.4, 0.6])
  score = g.score_fn(PATH)
  F = predictor.predictor_map('euler', PATH, score)
  s1 = lambda z, tt: score(z[None], jnp.full((1,), tt))[0]
  t = 0.4
  x = g.sample_pt(jax.random.PRNGKey(5), PATH, jnp.full((3,), t))

  def exact(xi):
    def r(eps):
      fz = lambda z: F(z, t, t - eps)
      y, vjp_fn = jax.vjp(fz, xi)
      logdet = lambda z: jnp.linalg.slogdet(jax.jacfwd(fz)(z))[1]
      return vjp_fn(s1(y, t - eps))[0] - s1(xi, t) + jax.grad(logdet)(xi)
    return predictor._taylor_coefficient(r, 2)

  want = jax.jit(jax.vmap(exact))(x)
  got = jax.jit(jax.vmap(lambda xi: predictor.residual_coefficient(score, PATH, xi, t, 'euler', jax.random.PRNGKey(6),
                                                                   probes=4000)))(x)
  for i in range(x.shape[0]):
    np.testing.assert_allclose(got[i], want[i], atol=0.05 * float(jnp.linalg.norm(want[i])))


def test_rate_in_batches_is_the_same_rate():
  # float64: in float32 the Euler coefficient c_2 (a cancellation of O(1) terms) differs by ~2e-4 between two
  # compilations of the same graph, which would hide a chunking error of that size.
  with jax.enable_x64(True):
    g = targets.gaussian_mixture(*MIXTURE)
    t = jnp.linspace(0.1, 0.9, 23)
    x = g.sample_pt(jax.random.PRNGKey(0), PATH, t)
    whole = jax.jit(lambda x, t: costs.predictor_rate(g.score_fn(PATH), PATH, x, t, predictor='euler'))(x, t)
    rate = costs.in_batches(lambda *a: costs.predictor_rate(*a, predictor='euler'), 5)
    chunked = jax.jit(lambda x, t: rate(g.score_fn(PATH), PATH, x, t))(x, t)
    np.testing.assert_allclose(chunked, whole, rtol=1e-10)


@pytest.mark.parametrize('batch', [64, 5])  # one chunk; several, the last one padded
def test_host_rate_on_grid_is_the_in_graph_rate(batch, monkeypatch):
  """The predictor fit's host loop (the rate compiled once, alone, for one chunk) gives the values of the jitted
  ``lax.map`` version: same keys, same chunks."""
  checks, check = [], costs.check_chunk_memory
  monkeypatch.setattr(costs, 'check_chunk_memory', lambda compiled, b, *a: checks.append(b) or check(compiled, b, *a))
  g = targets.gaussian_mixture(*MIXTURE)
  sch = ml_collections.ConfigDict(dict(cost='predictor', cost_solver='euler', hutchinson_probes=1, cost_batch_size=batch))
  rate_fn, score = costs.make_rate_fn(sch), g.score_fn(PATH)
  sample_pt = lambda key, tt: g.sample_pt(key, PATH, tt)
  grid, key = jnp.linspace(0.1, 0.9, 4), jax.random.PRNGKey(3)
  in_graph = jax.jit(lambda grid: costs.rate_on_grid(rate_fn, score, PATH, sample_pt, grid, key, 12, 2))(grid)
  host_fn = costs.host_rate_on_grid(rate_fn, score, PATH, sample_pt, 12, 2)
  host = host_fn(grid, key)
  # float32: the Euler coefficient c_2 cancels O(1) terms, and two compilations of it differ by ~2e-4
  # (test_rate_in_batches_is_the_same_rate checks the chunking itself in float64).
  np.testing.assert_allclose(host, in_graph, rtol=1e-3)
  checks_exact = list(checks)
  net = _model('silu', dim=1)
  net_score = net.score(net.params, PATH)
  in_graph = jax.jit(lambda grid: costs.rate_on_grid(rate_fn, net_score, PATH, sample_pt, grid, key, 12, 2))(grid)
  host = costs.host_rate_on_grid(rate_fn, lambda params: net.score(params, PATH), PATH, sample_pt, 12, 2,
                                 params=net.params)(grid, key)  # the network's parameters as arguments of the chunk
  np.testing.assert_allclose(host, in_graph, rtol=1e-3)  # third derivatives in f32, two compiled graphs
  corrector = costs.host_rate_on_grid(costs.corrector_rate, score, PATH, sample_pt, 12)(grid, key)
  np.testing.assert_allclose(corrector, costs.rate_on_grid(costs.corrector_rate, score, PATH, sample_pt, grid, key, 12),
                             rtol=1e-5)
  # a second call (the next pass of a fit) reuses the compiled chunk: no second compile, no second memory check
  other = jnp.linspace(0.2, 0.7, 3)
  np.testing.assert_allclose(host_fn(other, key), jax.jit(lambda grid: costs.rate_on_grid(
      rate_fn, score, PATH, sample_pt, grid, key, 12, 2))(other), rtol=1e-3)
  assert checks_exact == [min(batch, 12)] and len(checks) == 3  # exact, network, corrector: one compile each


def test_a_chunk_that_does_not_fit_in_memory_stops_the_fit_before_any_rate(monkeypatch):
  """The predictor fit compiles one chunk first and compares its temporaries with the memory left on the device."""
  from configs import toy1d
  from ddm.paths import make_path
  from modes import fit_schedule as run
  from schedule.searches import score_optimal
  config = toy1d.get_config('smoke')
  config.schedule.update(cost='predictor', cost_solver='euler', cost_batch_size=16, num_samples=16)
  problem = run.exact_problem(config, make_path(config.sde))
  calls, check = [], costs.check_chunk_memory
  quarter = lambda compiled: compiled.memory_analysis().temp_size_in_bytes // 4  # a quarter of what the chunk needs
  monkeypatch.setattr(costs, 'check_chunk_memory', lambda compiled, b: check(compiled, b, quarter(compiled)))
  monkeypatch.setattr(costs, 'to_rate', lambda *a: calls.append(a))
  with pytest.raises(ValueError, match=r'config.schedule.cost_batch_size=16: one chunk of the cost rate needs .* of '
                                       r'temporaries .* but .* are available .* set '
                                       r'config.schedule.cost_batch_size to at most [34]\.'):
    score_optimal.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0),
                         sigma_data=config.model.sigma_data)
  assert not calls
  with pytest.raises(ValueError, match=r'even one example does not fit'):
    check(types.SimpleNamespace(memory_analysis=lambda: types.SimpleNamespace(
        temp_size_in_bytes=10 * 2**20)), 4, available=2**20)
  assert check(types.SimpleNamespace(memory_analysis=lambda: types.SimpleNamespace(
      temp_size_in_bytes=2**20)), 4, available=2**30) == 2**20


class _ReluMLP(nn.Module):
  activation: str = 'relu'

  @nn.compact
  def __call__(self, x, c_noise, train=False):
    act = getattr(nn, self.activation)
    h = act(nn.Dense(16)(x) + nn.Dense(16)(c_noise[:, None]))
    return nn.Dense(x.shape[-1])(act(nn.Dense(16)(h)))


def _model(activation, dim=2):
  module = _ReluMLP(activation)
  denoise = networks.make_denoiser(module, PATH, 'edm', 0.5)
  params = networks.init_params(module, jax.random.PRNGKey(0), (dim,))
  return Model(params, denoise, lambda params, path: networks.make_score_fn(denoise, params, path))


def test_a_network_that_is_not_twice_differentiable_is_refused():
  with pytest.raises(ValueError, match=r"config.schedule.cost='predictor' needs a score that is twice differentiable"
                                       r".*relu-like activations.*config.schedule.cost='corrector'"):
    predictor.check_model(_model('relu'), PATH, (2,))
  assert predictor.check_model(_model('silu'), PATH, (2,)) > 0
  assert predictor.check_model(Model({}, None, None), PATH, (2,)) is None  # exact scores pass
