"""The multistep solvers (dpmpp_2m, dpmpp_3m, unipc, ipndm) against closed forms and an independent NumPy
transcription of the published formulas: the order of the error at the last noise level on Gaussian data,
exact identities (the first step is DDIM), steps 1-5 on a non-uniform ladder, NFE = K, bad settings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddm import paths, samplers, targets

C = 0.5                                                   # Gaussian data N(0, C^2 I): D(y, r) = C^2 y / (C^2 + r^2)
VE = paths.ve_path(0.002, 80.0)
VP = paths.vp_path('linear')
MULTISTEP = ('dpmpp_2m', 'dpmpp_3m', 'unipc', 'ipndm')


def _gaussian(d=2):
  return targets.gaussian_mixture(np.zeros((1, d)), [C], [1.0])


def _ts(path, ratios):
  """The times of the noise levels ``ratios`` (any order), with the data end ``t = 0`` first: f64[len + 1]."""
  t = [float(path.t_of_ratio(jnp.float64(r))) for r in sorted(ratios)]
  return jnp.asarray([0.0] + t, jnp.float64)


def _error_at_last_level(name, path, ratios, order=0):
  """Max relative error of the state at ``ts[1]`` (``min(ratios)``), the walk started on the exact flow at
  ``max(ratios)``: ``y(r) = y(R) sqrt(C^2 + r^2) / sqrt(C^2 + R^2)`` (method.md section 10)."""
  ts = _ts(path, ratios)
  x_start = jax.random.normal(jax.random.PRNGKey(0), (8, 2), jnp.float64) * 3.0
  walk = samplers.make_trajectory(name, path, _gaussian().score_fn(path), solver_order=order)
  states = jax.jit(walk)(jax.random.PRNGKey(1), ts, x_start)
  lo, hi = min(ratios), max(ratios)
  y_exact = x_start / float(path.alpha(ts[-1])) * np.sqrt(C**2 + lo**2) / np.sqrt(C**2 + hi**2)
  y = states[1] / float(path.alpha(ts[1]))
  return float(jnp.max(jnp.abs(y - y_exact)) / jnp.max(jnp.abs(y_exact)))


def _slope(name, path, ladder, ks, order=0):
  with jax.enable_x64(True):
    errors = [_error_at_last_level(name, path, ladder(k), order) for k in ks]
  return -np.polyfit(np.log(ks), np.log(errors), 1)[0], errors


LOG_SIGMA = lambda k: np.geomspace(0.1, 80.0, k + 1)     # uniform in log sigma (log-SNR), the exponential solvers' own
UNIFORM = lambda k: np.linspace(0.2, 2.0, k + 1)         # uniform in sigma, where iPNDM's fixed coefficients are exact

# (name, solver_order, ladder, K range, lowest slope accepted). Measured log-log slopes over K = 16, 32, 64 on the
# log-sigma ladder, the same on VE and VP (the walk is in EDM's variables): euler 0.97, heun 2.06, dpmpp_2m 1.70,
# unipc order 2 2.99 and order 3 3.67 (UniC adds one order), dpmpp_3m 2.81 with pairwise slopes falling towards 2
# (test_dpmpp_3m_published_coefficient_is_second_order); ipndm 4.04 on the uniform ladder over K = 8, 16, 32 (2.54
# from 32 to 64, where its Euler warm-up step's O(h^2) error takes over) and 2.07 on log-sigma ladders, whose
# unequal steps its fixed coefficients do not fit. On rho = 7 ladders (VE, K = 16-64): euler 0.97, heun 2.06,
# dpmpp_2m 1.65, dpmpp_3m 2.94, unipc 2.84 / 3.80, ipndm 2.27.
ORDERS = [('euler', 0, LOG_SIGMA, (16, 32, 64), 0.9), ('heun', 0, LOG_SIGMA, (16, 32, 64), 1.9),
          ('dpmpp_2m', 0, LOG_SIGMA, (16, 32, 64), 1.5), ('unipc', 2, LOG_SIGMA, (16, 32, 64), 2.8),
          ('unipc', 3, LOG_SIGMA, (16, 32, 64), 3.4), ('dpmpp_3m', 0, LOG_SIGMA, (16, 32, 64), 2.5),
          ('ipndm', 0, UNIFORM, (8, 16, 32), 3.7)]


# the uniform-sigma ladder on VE only, where sigma is the noise level itself
CASES = [(case, path) for case in ORDERS for path in ((VE, VP) if case[2] is LOG_SIGMA else (VE,))]


@pytest.mark.parametrize('case,path', CASES, ids=[f'{c[0]}{c[1] or ""}-{p.name}' for c, p in CASES])
def test_order_against_the_gaussian_flow(case, path):
  name, order, ladder, ks, lowest = case
  slope, errors = _slope(name, path, ladder, ks, order)
  assert slope > lowest, (slope, errors)
  assert errors[-1] < 0.03, errors


def test_dpmpp_3m_published_coefficient_is_second_order():
  # The published 3M (LuChengTHU/dpm-solver, diffusers, k-diffusion's 3m_sde with eta 0) weights its second
  # difference D2 ~ h^2 D''/2 by phi_3 = (e^-h - 1 + h)/h^2 - 1/2, half the Taylor coefficient of the D''
  # term: the local error stays O(h^3) and the global order is 2, with a smaller constant than 2M's (measured
  # pairwise slopes 2.53, 2.23 over K = 32, 64, 128; with the Taylor weight, twice this one, they are 3.44, 3.25).
  ks = (32, 64, 128)
  slope_3m, errors_3m = _slope('dpmpp_3m', VE, LOG_SIGMA, ks)
  slope_2m, errors_2m = _slope('dpmpp_2m', VE, LOG_SIGMA, ks)
  pairwise = -np.diff(np.log(errors_3m)) / np.log(2)
  assert pairwise[-1] < 2.4 and pairwise[0] > pairwise[-1], pairwise
  assert all(a < b for a, b in zip(errors_3m, errors_2m)), (errors_3m, errors_2m)


# --- An independent transcription of the papers' updates (NumPy, VE: r = sigma, y = x) ----------------------

def _denoiser(y, r):
  return C**2 * y / (C**2 + r**2)


def _reference_dpmpp(ratios, y, order):
  """DPM-Solver++(2M/3M) as in Lu et al. 2022 (Algorithm 2) and diffusers' third-order update, with the official
  code's lower order on the final steps; returns the states after each step."""
  out, ds, hs = [], [], []
  n = len(ratios)
  for i in range(n - 1):
    r, r_next = ratios[i], ratios[i + 1]
    d, h = _denoiser(y, r), np.log(r / r_next)
    p = min(order, len(ds) + 1, n - i)
    if p == 1:
      y = (r_next / r) * y - np.expm1(-h) * d
    elif p == 2:
      q = hs[-1] / h
      y = (r_next / r) * y - np.expm1(-h) * ((1 + 1 / (2 * q)) * d - 1 / (2 * q) * ds[-1])
    else:
      r0, r1 = hs[-1] / h, hs[-2] / h
      d1_0, d1_1 = (d - ds[-1]) / r0, (ds[-1] - ds[-2]) / r1
      big_d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
      big_d2 = (d1_0 - d1_1) / (r0 + r1)
      y = (r_next / r) * y - np.expm1(-h) * d + (np.expm1(-h) / h + 1) * big_d1 \
          - ((np.expm1(-h) + h) / h**2 - 0.5) * big_d2
    ds.append(d)
    hs.append(h)
    out.append(y)
  return out


def _reference_ipndm(ratios, y):
  """iPNDM: y' = y + (r' - r) * AB_p(slopes), p = min(4, slopes so far), the fixed Adams-Bashforth weights."""
  weights = {1: [1], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
  out, slopes = [], []
  for r, r_next in zip(ratios[:-1], ratios[1:]):
    slopes.insert(0, (y - _denoiser(y, r)) / r)
    w = weights[min(4, len(slopes))]
    y = y + (r_next - r) * sum(c * s for c, s in zip(w, slopes))
    out.append(y)
  return out


def _reference_unipc(ratios, y, order):
  """UniPC with B(h) = e^h - 1 (Zhao et al. 2023; diffusers' UniPCMultistepScheduler in data prediction): at each
  point the corrector UniC (of the previous predictor's order) with the new evaluation, then the predictor UniP of
  order min(order, points seen, steps left)."""
  lam = lambda r: -np.log(r)

  def rhos(h, rks, p, predictor):
    hh = -h
    g, fact, b_h, rows, b = np.expm1(hh) / hh - 1, 1.0, np.expm1(hh), [], []
    for i in range(1, p + 1):
      rows.append(np.asarray(rks) ** (i - 1))
      b.append(g * fact / b_h)
      fact *= i + 1
      g = g / hh - 1 / fact
    rows, b = np.stack(rows), np.asarray(b)
    if predictor:
      return [0.5] if p == 2 else np.linalg.solve(rows[:-1, :-1], b[:-1])
    return [0.5] if p == 1 else np.linalg.solve(rows, b)

  def update(y0, r0, r1, models, lams, p, new=None):
    h = lam(r1) - lam(r0)
    rks = [(lams[-(i + 1)] - lams[-1]) / h for i in range(1, p)] + [1.0]
    diffs = [(models[-(i + 1)] - models[-1]) / rks[i - 1] for i in range(1, p)]
    base = (r1 / r0) * y0 - np.expm1(-h) * models[-1]
    if new is None:
      res = sum(c * dd for c, dd in zip(rhos(h, rks, p, True), diffs)) if p > 1 else 0
    else:
      coef = rhos(h, rks, p, False)
      res = sum(c * dd for c, dd in zip(coef[:-1], diffs)) + coef[-1] * (new - models[-1])
    return base - np.expm1(-h) * res

  out, models, lams, n, last, last_p = [], [], [], len(ratios), None, None
  for i in range(n - 1):
    r = ratios[i]
    m = _denoiser(y, r)
    if last is not None:
      y = update(last, ratios[i - 1], r, models, lams, last_p, new=m)
    models.append(m)
    lams.append(lam(r))
    last, last_p = y, min(order, len(models), n - i)
    y = update(y, r, ratios[i + 1], models, lams, last_p)
    out.append(y)
  return out


LADDER = np.array([80.0, 30.0, 9.0, 4.0, 1.5, 0.3])      # non-uniform in sigma and in log sigma


@pytest.mark.parametrize('name,order', [('dpmpp_2m', 0), ('dpmpp_3m', 0), ('ipndm', 0), ('unipc', 1),
                                        ('unipc', 2), ('unipc', 3)])
def test_steps_match_the_published_formulas(name, order):
  y0 = np.array([[40.0, -70.0], [5.0, 100.0]])
  reference = {'dpmpp_2m': lambda: _reference_dpmpp(LADDER, y0, 2), 'dpmpp_3m': lambda: _reference_dpmpp(LADDER, y0, 3),
               'ipndm': lambda: _reference_ipndm(LADDER, y0),
               'unipc': lambda: _reference_unipc(LADDER, y0, order)}[name]()
  with jax.enable_x64(True):
    ts = _ts(VE, LADDER)
    walk = samplers.make_trajectory(name, VE, _gaussian().score_fn(VE), solver_order=order)
    states = np.asarray(walk(jax.random.PRNGKey(0), ts, jnp.asarray(y0)))
  k = len(LADDER)                                      # states[k] is the start, states[k - j] after step j
  for j, expected in enumerate(reference, start=1):
    np.testing.assert_allclose(states[k - j], expected, rtol=1e-12, err_msg=f'step {j}')
  # and the orders differ where they should: step 3 of a third-order solver is not that of a second-order one
  if name == 'unipc' and order == 3:
    assert np.max(np.abs(states[k - 3] - _reference_unipc(LADDER, y0, 2)[2])) > 1e-6


@pytest.mark.parametrize('name', MULTISTEP)
def test_first_step_is_ddim(name):
  path = VP
  x1 = jax.random.normal(jax.random.PRNGKey(3), (16, 2))
  ts = jnp.asarray([0.0, 0.3, 0.6, 1.0])
  score_fn = _gaussian().score_fn(path)
  euler = samplers.make_trajectory('euler', path, score_fn)(jax.random.PRNGKey(0), ts, x1)
  ours = samplers.make_trajectory(name, path, score_fn)(jax.random.PRNGKey(0), ts, x1)
  np.testing.assert_allclose(ours[2], euler[2], rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(ours[1] - euler[1]))) > 1e-4     # the second step uses the history


@pytest.mark.parametrize('name', MULTISTEP)
def test_last_step_is_the_denoiser_and_nfe_is_k(name):
  path, calls = VE, []
  score = _gaussian(1).score_fn(path)

  def counted(x, t):
    jax.debug.callback(lambda: calls.append(1))
    return score(x, t)

  ts = jnp.asarray([0.0, 0.2, 0.5, 0.7, 0.9, 1.0])
  x1 = jax.random.normal(jax.random.PRNGKey(0), (4, 1)) * 80.0
  states = samplers.make_trajectory(name, path, counted)(jax.random.PRNGKey(0), ts, x1)
  jax.block_until_ready(states)
  assert len(calls) == samplers.nfe(name, 5) == 5
  expected = samplers.denoise_at(path, score, states[1], ts[1])
  np.testing.assert_allclose(states[0], expected, rtol=1e-6)


def test_bad_settings_are_named():
  assert samplers.setting_problems('unipc', 3, (4, 5, 6, 8, 10)) == []
  assert samplers.setting_problems('heun', 0, (), (4, 5, 6, 8, 10)) == []          # NFE 5 reachable; the rest say so
  [msg] = samplers.setting_problems('unipc', 4, (5,))
  assert 'config.eval.solver_order=4' in msg and '1, 2, 3' in msg
  [msg] = samplers.setting_problems('dpmpp_2m', 2, (5,))
  assert 'no order to set' in msg and 'ipndm, unipc' in msg
  [msg] = samplers.setting_problems('ipndm', 0, (), (2, 4))
  assert 'NFE 2' in msg and 'warm-up' in msg and 'config.eval.nfe >= 4' in msg
  [msg] = samplers.setting_problems('heun', 0, (), (4, 6))
  assert 'NFE 6 is not reachable' in msg
  [msg] = samplers.setting_problems('unipc', 'x', (5,))
  assert 'config.eval.solver_order' in msg


def test_one_compilation_per_k_and_history_shapes():
  traces = []
  score_fn = _gaussian().score_fn(VE)

  def counted(key, ts, x):
    traces.append(1)
    return samplers.make_sampler('unipc', VE, score_fn)(key, ts, x)

  sample = jax.jit(counted)
  x1 = jnp.ones((3, 2)) * 10.0
  outs = [sample(jax.random.PRNGKey(0), jnp.asarray(ts), x1)
          for ts in ([0.0, 0.3, 0.5, 0.8, 1.0], [0.0, 0.1, 0.4, 0.9, 1.0])]
  assert len(traces) == 1 and outs[0].shape == (3, 2)
  assert samplers.SAMPLERS.get('unipc').multistep and not samplers.SAMPLERS.get('heun').multistep


@pytest.mark.parametrize('name', ['euler', 'heun', 'euler_maruyama', 'pc', 'ancestral'])
def test_one_step_samplers_walk_as_a_loop_of_their_steps(name):
  # The carried state of a one-step sampler is x itself: the scan equals the loop the samplers were defined by
  # (step i from ts[i+1] to ts[i] with key fold_in(key, i), then the last step), bit for bit.
  path, key = VP, jax.random.PRNGKey(5)
  score_fn = _gaussian().score_fn(path)
  sampler = samplers.SAMPLERS.get(name)
  dynamics = samplers.Dynamics(path, score_fn, 0.16, 1)
  ts = jnp.asarray([0.0, 0.2, 0.45, 0.7, 1.0])
  x = x1 = jax.random.normal(jax.random.PRNGKey(6), (32, 2))
  for i in range(3, 0, -1):
    x = jax.jit(sampler.step, static_argnums=0)(dynamics, x, ts[i + 1], ts[i], jax.random.fold_in(key, i))
  x = jax.jit(sampler.last, static_argnums=0)(dynamics, x, ts[1], ts[0], jax.random.fold_in(key, 0))
  walked = jax.jit(samplers.make_sampler(name, path, score_fn))(key, ts, x1)
  np.testing.assert_array_equal(np.asarray(walked), np.asarray(x))
