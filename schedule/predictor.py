"""The predictor-optimised cost ``L_p`` (method.md section 2): the corrector's work after the sampler's own
predictor ``F`` (identity, or one probability-flow Euler/DDIM or Heun step of ``ddm/samplers.py``).

Push-forward score. For ``y = F(x)``, ``x ~ p_t'`` and ``J = dF/dx``, the density of ``F#p_t'`` is
``q(y) = p_t'(x) / |det J(x)|``. Taking ``grad_x`` of ``log q(F(x)) = log p_t'(x) - log |det J(x)|``:

    J(x)^T grad log q(F(x)) = s(x, t') - grad_x log |det J(x)|,

so ``grad log (F#p_t')(y) = J^{-T} [s(x, t') - grad_x log |det J(x)|]`` at ``x = F^{-1}(y)``. With ``y = F(x)``
and ``x ~ p_t'`` the cost of method.md section 2 needs no inverse of ``F`` at sample points:

    L_p(t' -> t) = v(t)^2 E_{x ~ p_t'} || J^{-T} r ||^2,   r = J^T s(F(x), t) - s(x, t') + grad_x log |det J(x)|.

``grad_x log |det J|`` is exact in 1-D (``J`` is a number); in ``d > 1`` its component ``k`` is
``tr(J^{-1} d_k J) = E_v[u^T (d_k J) v]`` with Rademacher probes ``v`` and ``u = J^{-T} v`` (Hutchinson):
one reverse-mode gradient of ``u . (J v)`` (a jvp) per probe, i.e. second derivatives of the network.
``J^{-T}`` is applied by GMRES on the vjp (no Jacobian is formed).

Local rate. With ``t' = t`` and a step ``eps`` to ``t - eps``, ``r(eps) = sum_k c_k eps^k`` with ``r(0) = 0``, and
``L_p(t -> t - eps) = v(t)^2 ||c_p||^2 eps^(2p) + O(eps^(2p+1))`` for the first non-zero ``c_p``. For the
identity ``c_1 = -d/dt s`` and the rate is that of ``L_c``. For a consistent ODE predictor and a score that
transports ``p_t`` exactly (any exact score), ``c_1 = 0``: the residual ``c_1 = -(d_t s + grad div d + J_d^T s
+ J_s d)`` of the drift ``d`` is the score form of the Fokker-Planck equation. So Euler's cost is
``O(eps^4)`` and Heun's ``O(eps^6)`` (``p`` = 1, 2, 3 for identity, euler, heun: :data:`ORDERS`; checked
numerically in tests/schedule/test_predictor_cost.py against a change of variables on a grid). The dt^2
coefficient the corrector rate uses would be identically zero for them.

Steps of equal ``L_p`` are steps of equal ``int kappa_bar^(1/(2p)) dt`` with ``kappa_bar(t) = E_x[v^2 ||c_p||^2]``, so
the rate handed to the length machinery (which integrates ``sqrt(rate)``, :mod:`schedule.fit`,
:mod:`schedule.online`) is ``kappa_bar^(1/p)``. :func:`predictor_rate` returns the per-example ``kappa =
v^2 ||c_p||^2``, which is additive over examples; the power ``1/p`` is taken after averaging
(:func:`schedule.costs.to_rate`), because ``E[kappa^(1/p)] < E[kappa]^(1/p)`` and the gap is not small: on the
exact bimodal and Cantor targets the Heun ladder built from per-example powers is 6-60% per point away from
the one that equalises ``L_p`` (tests/schedule/test_predictor_cost.py checks ``E[kappa]^(1/p)`` against the
limit of the grid cost ``L_p / eps^(2p)``).
For the identity ``kappa`` is exactly ``delta`` of ``L_c``; for euler and heun the length is the ``p``-th root
scale of ``L_p``, ``L_p(step) ~ (Lambda increment)^(2p)``, and the incremental costs written for a predictor
fit are ``L_p^(1/p)``. ``c_p`` is the ``p``-th derivative in ``eps`` by nested forward mode (``jax.jvp``);
``log |det J|`` there is the Hutchinson estimate of ``tr log J = sum_{k<=p} (-1)^(k+1) tr(M^k) / k``,
``M = J - I = O(eps)``, exact to order ``p`` (and exact in 1-D, where ``v^2 = 1``).
"""
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.sparse.linalg import gmres

from ddm import samplers
from ddm.paths import Path
from ddm.registry import SAMPLERS

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
ORDERS = {'identity': 1, 'euler': 2, 'heun': 3}  # leading order p: L_p(step eps) ~ eps^(2p) for exact scores
SETTING = 'config.schedule.cost_solver'
COST_SETTING = "config.schedule.cost='predictor'"


def _one(score_fn: ScoreFn):
  """The score of one example: ``(x f32[*S], t scalar) -> f32[*S]``."""
  return lambda x, t: score_fn(x[None], jnp.reshape(t, (1,)).astype(x.dtype))[0]


def predictor_map(name: str, path: Path, score_fn: ScoreFn):
  """The sampler's predictor ``F(x f32[*S], t_from, t_to) -> f32[*S]`` for one example (scalar times).

  'euler' and 'heun' are the registered probability-flow steps of :mod:`ddm.samplers` themselves (interior
  steps, in EDM's variables ``(sigma / alpha, x / alpha)``).
  """
  if name == 'identity':
    return lambda x, t_from, t_to: x
  if name not in ORDERS:
    raise ValueError(f'{SETTING}={name!r}; allowed: {", ".join(ORDERS)}')
  step = SAMPLERS.get(name, SETTING).step
  dynamics = samplers.Dynamics(path, score_fn, 0.0, 0)  # the deterministic steps read only path and score
  return lambda x, t_from, t_to: step(dynamics, x[None], t_from, t_to, None)[0]


def _rademacher(key, shape, dtype):
  return jax.random.rademacher(key, shape, dtype)


def _sq(x):
  return jnp.sum(x**2)


def push_forward_score(F, score_fn: ScoreFn, x, t_from, t_to, key, probes: int = 1, solve_tol: float = 1e-6):
  """``(y, grad log (F#p_{t_from})(y), grad_x log|det J|)`` at ``y = F(x)`` for one example ``x: f32[*S]``.

  Exact in 1-D; Hutchinson with ``probes`` Rademacher probes and GMRES solves with ``J^T`` otherwise.
  """
  s1 = _one(score_fn)
  fz = lambda z: F(z, t_from, t_to)
  y, vjp_fn = jax.vjp(fz, x)
  s_x = s1(x, t_from)
  if x.size == 1:
    jac = lambda z: jax.jvp(fz, (z,), (jnp.ones_like(z),))[1]
    grad_logdet = jax.grad(lambda z: jnp.sum(jnp.log(jnp.abs(jac(z)))))(x)
    return y, (s_x - grad_logdet) / jac(x), grad_logdet
  solve = lambda b: gmres(lambda w: vjp_fn(w)[0], b, tol=solve_tol, restart=min(20, x.size))[0]

  def probe(k):
    v = _rademacher(k, x.shape, x.dtype)
    u = jax.lax.stop_gradient(solve(v))
    return jax.grad(lambda z: jnp.vdot(u, jax.jvp(fz, (z,), (v,))[1]))(x)

  grad_logdet = jnp.mean(jax.lax.map(probe, jax.random.split(key, probes)), axis=0)
  return y, solve(s_x - grad_logdet), grad_logdet


def predictor_cost(score_fn: ScoreFn, path: Path, x, t_next, t, predictor: str = 'euler', key=None,
                   probes: int = 1):
  """Finite-step ``L_p(t' -> t) = v(t)^2 ||s(F(x), t) - grad log (F#p_t')(F(x))||^2`` per example, ``t' = t_next``.

  Args:
    x: f32[B, *S] drawn from ``p_{t'}``. t_next, t: scalars or f32[B]. predictor: :data:`ORDERS` key.
    key: PRNG key for the Hutchinson probes (unused in 1-D). probes: probes per example.
  Returns:
    f32[B]; its mean over ``x`` is ``L_p(t' -> t)``. ``predictor='identity'`` is ``L_c`` exactly.
  """
  batch = x.shape[:1]
  t_next = jnp.broadcast_to(jnp.asarray(t_next, x.dtype), batch)
  t = jnp.broadcast_to(jnp.asarray(t, x.dtype), batch)
  key = jax.random.PRNGKey(0) if key is None else key
  F = predictor_map(predictor, path, score_fn)
  s1 = _one(score_fn)

  def one(xi, tn, ti, ki):
    if predictor == 'identity':  # J = I: the push-forward is p_t' itself (no solve, no round-off)
      y, q_score = xi, s1(xi, tn)
    else:
      y, q_score, _ = push_forward_score(F, score_fn, xi, tn, ti, ki, probes)
    return path.sigma(ti)**2 * _sq(s1(y, ti) - q_score)

  return jax.vmap(one)(x, t_next, t, jax.random.split(key, batch[0]))


def _taylor_coefficient(f, order: int):
  """``f^(order)(0) / order!`` of ``f: scalar -> array`` by nested forward mode."""
  g = f
  for _ in range(order):
    g = (lambda h: lambda e: jax.jvp(h, (e,), (jnp.ones_like(e),))[1])(g)
  return g(jnp.zeros(())) / math.factorial(order)


def residual_coefficient(score_fn: ScoreFn, path: Path, x, t, predictor: str, key, probes: int = 1, order=None):
  """``c_order`` of ``r(eps) = J^T s(F(x), t - eps) - s(x, t) + grad_x log|det J|`` (the step ``t -> t - eps``)
  for one example ``x: f32[*S]`` at scalar ``t``; ``order`` defaults to the predictor's :data:`ORDERS`."""
  order = ORDERS[predictor] if order is None else order
  F = predictor_map(predictor, path, score_fn)
  s1 = _one(score_fn)
  dtype = x.dtype
  num_probes = 1 if x.size == 1 else probes
  vs = jax.vmap(lambda k: _rademacher(k, x.shape, dtype))(jax.random.split(key, num_probes))
  s_x = s1(x, t)

  def r(eps):
    t_to = t - eps
    fz = lambda z: F(z, t, t_to)
    y, vjp_fn = jax.vjp(fz, x)
    res = vjp_fn(s1(y, t_to))[0] - s_x
    if predictor == 'identity':
      return res

    def trace_log_jac(z):  # Hutchinson tr log(I + M), M = J - I, truncated at the order needed
      def one_probe(v):
        w, total = v, 0.0
        for k in range(1, order + 1):
          w = jax.jvp(fz, (z,), (w,))[1] - w
          total = total + (-1)**(k + 1) / k * jnp.vdot(v, w)
        return total
      return jnp.mean(jax.vmap(one_probe)(vs))

    return res + jax.grad(trace_log_jac)(x)

  return _taylor_coefficient(r, order)


def predictor_rate(score_fn: ScoreFn, path: Path, x, t, key=None, *, predictor: str = 'euler', probes: int = 1,
                   order=None):
  """Leading coefficient of ``L_p`` per example: ``kappa = v(t)^2 ||c_p||^2``, ``L_p(t -> t - eps) = E[kappa] eps^(2p)
  + O(eps^(2p+1))`` (module docstring). The rate of the length is ``E[kappa]^(1/p)`` (:func:`schedule.costs.to_rate`).

  Args:
    x: f32[B, *S] samples of ``p_t`` at each example's own time ``t: f32[B]``. key: Hutchinson probes.
    order: the Taylor order ``p`` (default :data:`ORDERS`); ``order=1`` gives the dt^2 coefficient
      ``v^2 ||c_1||^2`` itself (zero for exact scores with an ODE predictor).
  Returns:
    f32[B]. For ``predictor='identity'`` it equals :func:`schedule.costs.corrector_rate`.
  """
  t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
  key = jax.random.PRNGKey(0) if key is None else key
  p = ORDERS[predictor] if order is None else order

  def one(xi, ti, ki):
    c = residual_coefficient(score_fn, path, xi, ti, predictor, ki, probes, p)
    return path.sigma(ti)**2 * _sq(c)

  return jax.vmap(one)(x, t, jax.random.split(key, x.shape[0]))


# --- Is the model twice differentiable? -------------------------------------------------------------------

def second_derivative_probe(score_fn: ScoreFn, x, t, key):
  """``max |D^2_x s(x, t)[v, v]|`` over a batch ``x: f32[B, *S]``, ``t: f32[B]``, with Rademacher ``v``: exactly 0
  for a score that is piecewise linear in x (a network with relu-like activations), where autodiff's second
  derivative is zero almost everywhere and the push-forward term ``grad log|det J|`` is lost."""
  v = _rademacher(key, x.shape, x.dtype)
  inner = lambda z: jax.jvp(lambda w: score_fn(w, t), (z,), (v,))[1]
  return jnp.max(jnp.abs(jax.jvp(inner, (x,), (v,))[1]))


def require_twice_differentiable(score_fn: ScoreFn, x, t, key=None, what: str = 'the model'):
  """Stops with a message naming ``config.schedule.cost`` when :func:`second_derivative_probe` is exactly 0."""
  key = jax.random.PRNGKey(0) if key is None else key
  value = float(second_derivative_probe(score_fn, x, t, key))
  if value == 0.0:
    raise ValueError(
        f'{COST_SETTING} needs a score that is twice differentiable in x (the push-forward score has '
        f'grad_x log|det dF/dx|, second derivatives of the network; method.md section 2), but the second '
        f'derivative of {what} is identically zero at {x.shape[0]} random probes: it is piecewise linear in x '
        f'(relu-like activations). Use config.schedule.cost=\'corrector\' or a smooth activation (silu).')
  return value


def perturbed(params, key, scale: float = 0.1):
  """``params`` plus ``scale`` N(0, 1) noise on every leaf: a network whose derivatives are all non-zero (an
  untrained, zero-initialised output layer makes them vanish)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  return jax.tree.unflatten(tree, [leaf + scale * jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf))
                                   for leaf, k in zip(leaves, keys)])


def check_model(model, path: Path, data_shape, key=None, num_probes: int = 8):
  """Architecture check for a network ``model`` (:class:`train.model.Model`): the probe with its parameters
  randomly perturbed (an untrained network's zero-initialised output layer would make any architecture look
  linear). Exact scores (no parameters) pass."""
  if model is None or not jax.tree.leaves(model.params):
    return None
  key = jax.random.PRNGKey(0) if key is None else key
  k_params, k_x, k_t, k_v = jax.random.split(key, 4)
  params = perturbed(model.params, k_params)
  x = jax.random.normal(k_x, (num_probes,) + tuple(data_shape))
  t = jax.random.uniform(k_t, (num_probes,), minval=0.2, maxval=0.8)
  return require_twice_differentiable(model.score(params, path), x, t, k_v, 'the network')
