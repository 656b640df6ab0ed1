"""Samplers that walk a schedule ``ts: f32[K+1]`` from ``t_K = 1`` (noise end) down to ``t_0`` (data end).

Conventions of the field (method.md section 9; Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Algorithm 1; NVlabs/edm ``edm_sampler``; k-diffusion ``sample_heun``):

- The data end ``t_0`` plays EDM's ``sigma = 0``: the step from ``t_1`` into ``t_0`` returns the denoiser's
  output ``D(x, t_1)`` (for the ODE samplers this *is* the Euler step into sigma = 0; for the stochastic
  ones it is their noise-free last step taken to zero noise). No sampler adds a denoising evaluation after
  its last step, and none applies a second-order correction into the data end.
- The probability-flow samplers ('euler', 'heun') integrate in EDM's variables, the noise level
  ``r = sigma / alpha`` (``ddm.paths.Path.ratio``) and the scaled state ``y = x / alpha``:

      dy/dr = (y - D(x, t)) / r = -sigma(t) s(x, t),     x = alpha(t) y,

  so a schedule supplies only its noise ladder ``r(t_i)``: the samples of a ladder are the same on every
  parametrisation of the same path (VE geometric or linear), and on VP paths the Euler step is DDIM.
- The stochastic samplers keep their published forms and step in the path's own time ``t``. For the path
  ``x_t = alpha(t) x0 + sigma(t) eps`` the forward SDE ``dx = f x dt + g dw`` has ``f = alpha'/alpha``,
  ``g^2 = 2 sigma sigma' - 2 f sigma^2``, and the reverse-time SDE is ``dx = [f x - g^2 s] dt + g dw``
  (Song et al. 2021, eq. 6).

- The multistep solvers ('dpmpp_2m', 'dpmpp_3m', 'unipc', 'ipndm'; method.md section 10) reuse the denoiser
  outputs of earlier points, so a step carries history (:class:`History`): each is one evaluation per step
  (NFE = K), starts with lower orders (warm-up) and, like every sampler here, returns ``D(x, t_1)`` from its
  last step. They work in EDM's variables too, and in the half log-SNR ``lambda = -log r`` where the papers do.

Each registered :class:`Sampler` is ``init`` (the carried state at the noise end), an interior step
``t -> t_next > t_0`` on that state, the last step ``t_1 -> t_0`` and its network-evaluation count (NFE) for K
steps; :func:`nfe` and :func:`steps_for_nfe` convert between them. For the one-step samplers the carried state
*is* ``x`` (``init`` and ``state`` are the identity), so their ``step`` is a plain ``x -> x'`` map that searches
can call on its own. The grid is an argument, never owned here: a new ``ts`` of the same length reuses the
compiled sampler.
"""
from typing import Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp

from ddm.paths import Path, denoiser_from_score, per_example, posterior
from ddm.registry import SAMPLERS

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]  # (x: f32[B, *S], t: f32[B]) -> f32[B, *S]


class Dynamics(NamedTuple):
  """What a step needs: the path, the score, the pc corrector's settings and a multistep solver's order
  (``config.eval.solver_order``; 0 = the solver's default)."""
  path: Path
  score_fn: ScoreFn
  langevin_snr: float
  langevin_steps: int
  solver_order: int = 0


def _no_history(dynamics, x, num_steps):
  """``init`` of a one-step sampler: the carried state is ``x`` itself."""
  del dynamics, num_steps
  return x


def _identity(carry):
  return carry


class Sampler(NamedTuple):
  """A registered sampler.

  Attributes:
    step: ``(dynamics, carry, t, t_next, key) -> carry at t_next``, scalar times with ``t_0 < t_next < t``.
    last: ``(dynamics, carry, t_1, t_0, key) -> the sample``, the step into the data end.
    nfe: ``(K, langevin_steps) -> int``, network evaluations per sample for K steps.
    init: ``(dynamics, x f32[B, *S], K) -> carry`` at the noise end (one-step samplers: ``x`` itself).
    state: ``carry -> x f32[B, *S]``, the state the carry stands for (one-step samplers: the identity).
    orders: the values ``config.eval.solver_order`` may take (``()``: none; 0 always means the default).
    order: ``solver_order -> p``, the order a walk of this sampler reaches (warm-up: it needs ``K >= p``).
  """
  step: Callable
  last: Callable
  nfe: Callable[[int, int], int]
  init: Callable = _no_history
  state: Callable = _identity
  orders: Tuple[int, ...] = ()
  order: Callable[[int], int] = lambda solver_order: 1

  @property
  def multistep(self) -> bool:
    """Whether a step reads history: such a ``step`` cannot be called on a bare ``x``."""
    return self.init is not _no_history


def _score(dynamics: Dynamics, x, t):
  return dynamics.score_fn(x, jnp.full(x.shape[:1], t, x.dtype))


def denoise_at(path: Path, score_fn: ScoreFn, x, t):
  """Tweedie's ``D(x, t) = (x + sigma^2 s) / alpha`` at the scalar time ``t``: f32[B, *S]."""
  t_b = jnp.full(x.shape[:1], t, x.dtype)
  alpha, sigma = path.alpha(t_b), path.sigma(t_b)
  return denoiser_from_score(x, score_fn(x, t_b), per_example(alpha, x), per_example(sigma, x))


def _denoise_last(dynamics, x, t, t_next, key):
  """The step into the data end: ``D(x, t_1)``, one evaluation."""
  del t_next, key
  return denoise_at(dynamics.path, dynamics.score_fn, x, t)


# --- Probability flow, in EDM's variables --------------------------------------------------------------

def _slope(dynamics: Dynamics, x, t):
  """``dy/dr = (y - D) / r = -sigma(t) s(x, t)`` at scalar ``t`` (module docstring): f32[B, *S]."""
  return -dynamics.path.sigma(t) * _score(dynamics, x, t)


def _euler_step(dynamics, x, t, t_next, key):
  """'euler': the probability-flow ODE by Euler steps in ``(r, y)``: ``y <- y + (r' - r) dy/dr``, ``x = alpha y``
  (DDIM on VP paths; k-diffusion ``sample_euler``); the last step is ``D(x, t_1)``. NFE = K."""
  del key
  path = dynamics.path
  h = path.ratio(t_next) - path.ratio(t)
  return path.alpha(t_next) * (x / path.alpha(t) + h * _slope(dynamics, x, t))


def _heun_step(dynamics, x, t, t_next, key):
  """'heun': Karras et al. (2022) Algorithm 1 (deterministic, ``S_churn = 0``) in ``(r, y)``: an Euler predictor,
  then the trapezoid rule; the last step into the data end is a plain Euler step, ``D(x, t_1)``. NFE = 2K - 1."""
  del key
  path = dynamics.path
  alpha_next, h = path.alpha(t_next), path.ratio(t_next) - path.ratio(t)
  y, d = x / path.alpha(t), _slope(dynamics, x, t)
  x_euler = alpha_next * (y + h * d)
  return alpha_next * (y + 0.5 * h * (d + _slope(dynamics, x_euler, t_next)))


SAMPLERS.register('euler')(Sampler(_euler_step, _denoise_last, lambda k, n: int(k)))

SAMPLERS.register('heun')(Sampler(_heun_step, _denoise_last, lambda k, n: 2 * int(k) - 1))


# --- Reverse SDE, in the path's own time ---------------------------------------------------------------

def _reverse_sde(dynamics: Dynamics, x, t, t_next, key):
  """'euler_maruyama': Euler-Maruyama of the reverse SDE in ``t`` (Song et al. 2021, eq. 6; score_sde's
  ``EulerMaruyamaPredictor``): ``x <- x + (t' - t)(f x - g^2 s) + g sqrt(t - t') z``. The last step returns
  ``D(x, t_1)``, not the noise-free SDE step ``x + 2 sigma (sigma - sigma_0) s`` (which reflects ``x`` through
  ``D``). NFE = K."""
  t_b = jnp.full(x.shape[:1], t, x.dtype)
  alpha, sigma, dalpha, dsigma = dynamics.path.derivatives(t_b)
  f = dalpha / alpha
  g2 = 2.0 * sigma * dsigma - 2.0 * f * sigma**2
  drift = per_example(f, x) * x - per_example(g2, x) * dynamics.score_fn(x, t_b)
  noise_std = jnp.sqrt(jnp.maximum(g2 * (t - t_next), 0.0))
  return x + (t_next - t) * drift + per_example(noise_std, x) * jax.random.normal(key, x.shape, x.dtype)


def _langevin(dynamics: Dynamics, x, t, t_next, key):
  """``langevin_steps`` Langevin steps targeting ``p_t``: ``x <- x + h s + sqrt(2 h) z`` with
  ``h = 2 a (snr sigma(t))^2``, ``a = (alpha(t) / alpha(t_next))^2`` (DDPM's ``1 - beta_i``, 1 on VE).

  score_sde's ``LangevinCorrector`` uses ``h = 2 a (snr ||z|| / ||s||)^2`` with norms averaged over the
  batch (a collective); per example that ratio is heavy-tailed in low dimension (``||s|| -> 0`` at a mode)
  and the chain diverges on 1-D targets. ``sigma^2`` is the expected ``||z||^2 / ||s||^2`` for data much
  narrower than the noise, i.e. the annealed-Langevin step of Song & Ermon (2019), and needs no batch.
  """
  a = (dynamics.path.alpha(t) / dynamics.path.alpha(t_next))**2
  h = 2.0 * a * (dynamics.langevin_snr * dynamics.path.sigma(t))**2
  for j in range(dynamics.langevin_steps):
    z = jax.random.normal(jax.random.fold_in(key, j + 1), x.shape, x.dtype)
    x = x + h * _score(dynamics, x, t) + jnp.sqrt(2.0 * h) * z
  return x


def _pc_step(dynamics, x, t, t_next, key):
  """'pc': predictor-corrector (Song et al. 2021, Algorithm 1 of App. G; score_sde ``pc_sampler``): at each level
  the Langevin corrector at ``t``, then the Euler-Maruyama predictor to ``t'``; the last predictor returns
  ``D(x, t_1)``. NFE = K (1 + langevin_steps)."""
  x = _langevin(dynamics, x, t, t_next, key)
  return _reverse_sde(dynamics, x, t, t_next, jax.random.fold_in(key, 0))


def _pc_last(dynamics, x, t, t_next, key):
  """The corrector at ``t_1``, then the predictor into the data end: ``D``."""
  return _denoise_last(dynamics, _langevin(dynamics, x, t, t_next, key), t, t_next, key)


def _ancestral_step(dynamics, x, t, t_next, key):
  """'ancestral': DDPM's ancestral sampling on the ladder (Ho et al. 2020, Algorithm 2; Watson et al. 2021's
  ELBO-optimal schedules are optimal for it): ``x' ~ q(x' | x, x0 = D(x, t))``, the forward posterior with the
  denoised estimate in place of ``x0``. The last step is DDPM's noise-free posterior mean into zero noise,
  which is ``D(x, t_1)``. NFE = K."""
  x0_hat = denoise_at(dynamics.path, dynamics.score_fn, x, t)
  mean, var = posterior(dynamics.path, t_next, t, x, x0_hat)
  return mean + jnp.sqrt(jnp.maximum(var, 0.0)) * jax.random.normal(key, x.shape, x.dtype)


SAMPLERS.register('euler_maruyama')(Sampler(_reverse_sde, _denoise_last, lambda k, n: int(k)))

SAMPLERS.register('pc')(Sampler(_pc_step, _pc_last, lambda k, n: int(k) * (1 + int(n))))

SAMPLERS.register('ancestral')(Sampler(_ancestral_step, _denoise_last, lambda k, n: int(k)))


# --- Multistep solvers (method.md section 10) -------------------------------------------------------------

class History(NamedTuple):
  """The carried state of a multistep solver at the current point ``t`` of the walk.

  Attributes:
    x: f32[B, *S], the state at ``t``.
    outputs: f32[m, B, *S], the solver's last ``m`` model outputs (the denoiser ``D``, or iPNDM's slope
      ``(y - D) / r``), newest first; ``count`` of them are filled.
    ratios: f32[m], the noise levels ``r`` they were taken at, newest first.
    count: int32, model outputs stored so far (at most ``m``).
    remaining: int32, steps left including this one and the last (the final steps' lower order).
    y_last: f32[B, *S], UniPC: the scaled state at the previous point, where its predictor started.
    last_order: int32, UniPC: that predictor's order (its corrector has the same).
  """
  x: Array
  outputs: Array
  ratios: Array
  count: Array
  remaining: Array
  y_last: Array
  last_order: Array


def _history_init(size: int):
  """``init`` of a solver that keeps ``size(solver_order)`` model outputs."""
  def init(dynamics, x, num_steps):
    m = size(dynamics.solver_order)
    return History(x, jnp.zeros((m,) + x.shape, x.dtype), jnp.ones((m,), x.dtype), jnp.int32(0),
                   jnp.int32(num_steps), x / dynamics.path.alpha(1.0), jnp.int32(1))
  return init


def _push(history: History, output, r) -> History:
  """``output`` (at noise level ``r``) becomes the newest model output; the oldest falls off."""
  outputs = jnp.concatenate([output[None], history.outputs[:-1]])
  ratios = jnp.concatenate([jnp.reshape(r, (1,)).astype(history.ratios.dtype), history.ratios[:-1]])
  return history._replace(outputs=outputs, ratios=ratios,
                          count=jnp.minimum(history.count + 1, history.outputs.shape[0]))


def _switch(order, branches, *args):
  """``branches[order - 1](*args)``, the order chosen at run time (``order`` is traced inside the scan)."""
  return jax.lax.switch(jnp.clip(order, 1, len(branches)) - 1, branches, *args)


def _history_last(dynamics, history, t, t_next, key):
  """The step into the data end: ``D(x, t_1)``, first order into zero noise (k-diffusion's
  ``sigmas[i + 1] == 0`` branch; diffusers' ``final_sigmas_type="zero"``)."""
  return _denoise_last(dynamics, history.x, t, t_next, key)


def _dpmpp_update(y, r, r_next, outputs, ratios, order):
  """DPM-Solver++ multistep in data prediction (Lu et al. 2022, arXiv 2211.01095, Algorithm 2 and its third-order
  extension; k-diffusion ``sample_dpmpp_2m`` / ``sample_dpmpp_3m_sde`` with eta 0; diffusers
  ``DPMSolverMultistepScheduler``) from ``r`` to ``r_next``, ``h = log(r / r_next)``:

      order 1: y' = (r'/r) y + (1 - e^-h) D_0                                     (DDIM)
      order 2: y' = (r'/r) y + (1 - e^-h) ((1 + 1/(2 q)) D_0 - D_1 / (2 q)),       q = h_1 / h
      order 3: y' = (r'/r) y + (1 - e^-h) D_0 + phi_2 d_1 - phi_3 d_2,             phi_2 = (e^-h - 1)/h + 1,
               phi_3 = phi_2 / h - 1/2, d_1 = d_10 + (d_10 - d_11) q0 / (q0 + q1), d_2 = (d_10 - d_11) / (q0 + q1),
               d_10 = (D_0 - D_1) / q0, d_11 = (D_1 - D_2) / q1, q0 = h_1 / h, q1 = h_2 / h,

  where ``D_j`` is the denoiser ``j`` points back (at ``ratios[j]``) and ``h_j`` the log-ratio of the step that
  ended there. Returns ``y'``.
  """
  h = jnp.log(r / r_next)
  decay, gain = r_next / r, -jnp.expm1(-h)
  h1 = jnp.log(ratios[1] / ratios[0])
  h2 = jnp.log(ratios[2] / ratios[1]) if ratios.shape[0] > 2 else h1

  def first(_):
    return decay * y + gain * outputs[0]

  def second(_):
    q = h1 / h
    return decay * y + gain * ((1 + 0.5 / q) * outputs[0] - (0.5 / q) * outputs[1])

  def third(_):
    q0, q1 = h1 / h, h2 / h
    d10, d11 = (outputs[0] - outputs[1]) / q0, (outputs[1] - outputs[2]) / q1
    d1 = d10 + (d10 - d11) * q0 / (q0 + q1)
    d2 = (d10 - d11) / (q0 + q1)
    phi2 = jnp.expm1(-h) / h + 1.0
    phi3 = phi2 / h - 0.5
    return decay * y + gain * outputs[0] + phi2 * d1 - phi3 * d2

  return _switch(order, (first, second, third)[:outputs.shape[0]], None)


def _dpmpp(max_order: int):
  """``step`` of DPM-Solver++(``max_order``M): one evaluation, order ``min(max_order, points seen, steps left)``
  (warm-up, and the official code's ``lower_order_final``: the step into ``t_1`` is at most second order)."""
  def step(dynamics, history, t, t_next, key):
    del key
    path = dynamics.path
    r, r_next = path.ratio(t), path.ratio(t_next)
    history = _push(history, denoise_at(path, dynamics.score_fn, history.x, t), r)
    order = jnp.minimum(history.count, history.remaining)
    y = _dpmpp_update(history.x / path.alpha(t), r, r_next, history.outputs, history.ratios, order)
    return history._replace(x=path.alpha(t_next) * y, remaining=history.remaining - 1)
  return step


IPNDM_COEFFICIENTS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def _ipndm_step(dynamics, history, t, t_next, key):
  """'ipndm': improved PNDM (Zhang & Chen 2023, the DEIS paper; zju-pi/diff-sampler's ``ipndm``): Adams-Bashforth
  on the slope ``d = (y - D) / r`` in ``(r, y)``,

      y' = y + (r' - r) sum_j c_j d_{-j},

  with the fixed coefficients of :data:`IPNDM_COEFFICIENTS` of order ``min(solver_order, points seen)``
  (default 4), whatever the step sizes: exact order 4 on steps uniform in ``r`` only. The last step returns
  ``D(x, t_1)``. NFE = K."""
  del key
  path = dynamics.path
  r, r_next = path.ratio(t), path.ratio(t_next)
  y = history.x / path.alpha(t)
  slope = (y - denoise_at(path, dynamics.score_fn, history.x, t)) / r
  history = _push(history, slope, r)

  def adams_bashforth(coefficients):
    return lambda outputs: sum(c * outputs[j] for j, c in enumerate(coefficients))

  slopes = _switch(history.count, [adams_bashforth(c) for c in IPNDM_COEFFICIENTS[:history.outputs.shape[0]]],
                   history.outputs)
  return history._replace(x=path.alpha(t_next) * (y + (r_next - r) * slopes), remaining=history.remaining - 1)


def _unipc_coefficients(h, rks, order: int, predictor: bool):
  """UniPC's ``rho`` for B(h) = e^h - 1 ('bh2'; Zhao et al. 2023, Algorithm 2 and App. C; diffusers
  ``UniPCMultistepScheduler``), in data prediction (``hh = -h``): with ``phi_1 = e^hh - 1``,
  ``g_1 = phi_1 / hh - 1``, ``g_{k+1} = g_k / hh - 1 / (k+1)!`` and ``b_k = g_k k! / B(h)``, the predictor solves
  ``R[:-1, :-1] rho = b[:-1]`` (0.5 when ``order == 2``), the corrector ``R rho = b`` (0.5 when ``order == 1``),
  ``R_ik = rks_k^(i-1)`` with ``rks = (r_1, ..., r_{order-1}, 1)``."""
  hh = -h
  b_h = jnp.expm1(hh)
  g, fact, b = jnp.expm1(hh) / hh - 1.0, 1.0, []
  for i in range(1, order + 1):
    b.append(g * fact / b_h)
    fact *= i + 1
    g = g / hh - 1.0 / fact
  b = jnp.stack(b)
  rks = jnp.concatenate([rks, jnp.ones((1,), rks.dtype)])
  rmat = jnp.stack([rks**i for i in range(order)])
  if predictor:
    return jnp.full((1,), 0.5, h.dtype) if order == 2 else jnp.linalg.solve(rmat[:-1, :-1], b[:-1])
  return jnp.full((1,), 0.5, h.dtype) if order == 1 else jnp.linalg.solve(rmat, b)


def _unipc_update(y, r, r_next, outputs, ratios, order: int, new_output=None):
  """One UniP (``new_output`` None) or UniC update of order ``order`` from ``(r, y)`` to ``r_next``:

      y' = (r'/r) y - phi_1 D_0 - B(h) (sum_k rho_k (D_k - D_0) / rk_k  [+ rho_last (D_new - D_0)]),

  ``rk_k = (lambda_k - lambda_0) / h``, ``lambda = -log r``, ``h = lambda' - lambda_0``; ``D_0 = outputs[0]`` at
  ``r``, ``D_k = outputs[k]`` at ``ratios[k]``. Returns ``y'`` (UniC: the corrected state at ``r_next``)."""
  h = jnp.log(r / r_next)
  base = (r_next / r) * y - jnp.expm1(-h) * outputs[0]
  rks = jnp.stack([jnp.log(r / ratios[k]) / h for k in range(1, order)]) if order > 1 else jnp.zeros((0,), y.dtype)
  rhos = _unipc_coefficients(h, rks, order, predictor=new_output is None)
  diffs = [(outputs[k] - outputs[0]) / rks[k - 1] for k in range(1, order)]
  if new_output is None:
    res = sum(rhos[k] * diffs[k] for k in range(order - 1)) if order > 1 else 0.0
  else:
    res = sum(rhos[k] * diffs[k] for k in range(order - 1)) + rhos[-1] * (new_output - outputs[0])
  return base - jnp.expm1(-h) * res


def _unipc_step(dynamics, history, t, t_next, key):
  """'unipc': UniPC (Zhao et al. 2023, arXiv 2302.04867; B(h) = e^h - 1, data prediction) of order
  ``solver_order`` (default 3). At each point the denoiser is evaluated once; that evaluation first corrects the
  state that the previous predictor delivered (UniC, of the predictor's order; it costs no evaluation), then the
  predictor UniP of order ``min(p, points seen, steps left)`` (warm-up and the official ``lower_order_final``)
  steps on from the corrected state. The last step returns ``D(x, t_1)`` and corrects nothing. NFE = K."""
  del key
  path = dynamics.path
  r, r_next = path.ratio(t), path.ratio(t_next)
  denoised = denoise_at(path, dynamics.score_fn, history.x, t)
  y = history.x / path.alpha(t)
  m = history.outputs.shape[0]

  def corrector(order):
    return lambda args: _unipc_update(args[0], args[1], r, history.outputs, history.ratios, order, denoised)

  y = jax.lax.cond(history.count > 0,
                   lambda: _switch(history.last_order, [corrector(k) for k in range(1, m + 1)],
                                   (history.y_last, history.ratios[0])),
                   lambda: y)
  history = _push(history, denoised, r)
  order = jnp.minimum(history.count, history.remaining)

  def predictor(k):
    return lambda y: _unipc_update(y, r, r_next, history.outputs, history.ratios, k)

  y_next = _switch(order, [predictor(k) for k in range(1, m + 1)], y)
  return history._replace(x=path.alpha(t_next) * y_next, remaining=history.remaining - 1, y_last=y,
                          last_order=jnp.clip(order, 1, m).astype(jnp.int32))


def _multistep(step, default_order: int, orders=()):
  """A registered multistep solver: ``default_order`` model outputs kept (or ``solver_order``'s), NFE = K."""
  order = lambda solver_order: int(solver_order) or default_order
  return Sampler(step, _history_last, lambda k, n: int(k), init=_history_init(order), state=lambda h: h.x,
                 orders=tuple(orders), order=order)


SAMPLERS.register('dpmpp_2m')(_multistep(_dpmpp(2), 2))

SAMPLERS.register('dpmpp_3m')(_multistep(_dpmpp(3), 3))

SAMPLERS.register('unipc')(_multistep(_unipc_step, 3, orders=(1, 2, 3)))

SAMPLERS.register('ipndm')(_multistep(_ipndm_step, 4, orders=(1, 2, 3, 4)))


# --- NFE -------------------------------------------------------------------------------------------------

def nfe(name: str, num_steps: int, langevin_steps: int = 1) -> int:
  """Network evaluations per sample of ``name`` for ``num_steps`` steps (the registered sampler's count)."""
  return SAMPLERS.get(name, 'config.eval.sampler').nfe(int(num_steps), int(langevin_steps))


def steps_for_nfe(name: str, evaluations: int, langevin_steps: int = 1, setting: str = 'config.eval.nfe',
                  sampler_setting: str = 'config.eval.sampler') -> int:
  """The step count K at which ``name`` makes exactly ``evaluations`` network evaluations per sample.

  Raises:
    ValueError naming ``setting``, ``sampler_setting`` and the nearest reachable NFEs when none does (Heun
    reaches odd counts only).
  """
  sampler = SAMPLERS.get(name, 'config.eval.sampler')
  counts = {sampler.nfe(k, int(langevin_steps)): k for k in range(1, max(int(evaluations), 1) + 2)}
  if int(evaluations) in counts:
    return counts[int(evaluations)]
  below = max([c for c in counts if c < evaluations], default=None)
  above = min(c for c in counts if c > evaluations)
  near = ', '.join(str(c) for c in (below, above) if c is not None)
  raise ValueError(f'{setting}: NFE {evaluations} is not reachable by {sampler_setting}={name!r} '
                   f'(langevin_steps={langevin_steps}); nearest reachable NFE: {near}')


def steps_for_each_nfe(name: str, evaluations, langevin_steps: int = 1, setting: str = 'config.eval.nfe',
                       sampler_setting: str = 'config.eval.sampler') -> dict:
  """``{NFE: K, or the reason it is unreachable (str)}`` for each of ``evaluations`` under ``name``: the one place
  that reads an NFE list (eval's columns, the searches' K)."""
  out = {}
  for n in evaluations:
    try:
      out[int(n)] = steps_for_nfe(name, n, langevin_steps, setting, sampler_setting)
    except ValueError as e:
      out[int(n)] = str(e)
  return out


def setting_problems(name: str, solver_order, num_steps=(), evaluations=(), langevin_steps: int = 1,
                     setting: str = 'config.eval', sampler_setting: str = '', steps_setting: str = '') -> list:
  """What is wrong with walking ``name`` at ``solver_order`` for the step counts ``num_steps`` or the NFEs
  ``evaluations`` (``<setting>.sampler``, ``.solver_order``, ``.step_counts``, ``.nfe``): messages naming the setting
  and what is allowed, ``[]`` when nothing is. An NFE the sampler cannot reach is not a problem by itself (its
  table cell says so), but a list of which it reaches none is. ``sampler_setting`` and ``steps_setting`` name the
  sampler and the step counts where they live elsewhere (a search made for ``config.fit.sampler`` that walks
  ``config.fit.trajectory.step_counts``).
  """
  sampler_setting, steps_setting = sampler_setting or f'{setting}.sampler', steps_setting or f'{setting}.step_counts'
  sampler, problems = SAMPLERS.get(name, sampler_setting), []
  if not isinstance(solver_order, int) or isinstance(solver_order, bool):
    return [f'{setting}.solver_order={solver_order!r}; need an integer (0: the solver\'s default)']
  if solver_order and solver_order not in sampler.orders:
    allowed = (f'{name!r} has orders {", ".join(map(str, sampler.orders))} (0: its default, {sampler.order(0)})'
               if sampler.orders else f'{name!r} has no order to set: leave it 0 (orders are set for '
               f'{", ".join(n for n in SAMPLERS.names() if SAMPLERS.get(n).orders)})')
    return [f'{setting}.solver_order={solver_order}; {allowed}']
  order = sampler.order(solver_order)
  ks = [int(k) for k in num_steps]
  if len(evaluations):
    counts = steps_for_each_nfe(name, evaluations, langevin_steps, f'{setting}.nfe', sampler_setting)
    ks = [k for k in counts.values() if isinstance(k, int)]
    if not ks:
      return [list(counts.values())[-1]]
  low = [k for k in ks if k < order]
  if low:
    what = f'NFE {", ".join(str(sampler.nfe(k, langevin_steps)) for k in low)}' if len(evaluations) else \
        f'K = {", ".join(map(str, low))}'
    problems.append(f'{sampler_setting}={name!r} of order {order} needs at least {order} steps (its warm-up '
                    f'takes {order - 1} lower-order steps); {what} is below: use '
                    f'{setting + ".nfe" if len(evaluations) else steps_setting} >= {sampler.nfe(order, langevin_steps)}'
                    + (f' or a lower {setting}.solver_order' if sampler.orders else ''))
  return problems


# --- Walking a schedule ----------------------------------------------------------------------------------

def prior_std(path: Path) -> Array:
  """The prior's standard deviation ``sqrt(alpha(1)^2 + sigma(1)^2)`` (unit-variance data, method.md section 1)."""
  return jnp.sqrt(path.alpha(1.0)**2 + path.sigma(1.0)**2)


def prior_sample(path: Path, key, shape) -> Array:
  """``x_1 ~ N(0, (alpha(1)^2 + sigma(1)^2) I)``: the law of ``x_1`` for unit-variance data (method.md section 1).

  Args:
    path: the diffusion path. key: PRNG key. shape: ``(B, *S)``.
  Returns:
    f32[B, *S], a sample at the noise end ``t = 1``.
  """
  std = prior_std(path)
  return std * jax.random.normal(key, shape)


def _walk(sampler: Sampler, dynamics, key, ts, x_init, keep_states: bool):
  """``sampler.init`` at ``ts[K]``, interior steps ``ts[i+1] -> ts[i]`` for ``i = K-1, ..., 1`` by ``lax.scan`` on
  the carried state, then ``sampler.last`` from ``ts[1]``; step ``i`` uses ``fold_in(key, i)``. Returns
  ``(sample, states f32[K-1, B, *S] at ts[K-1], ..., ts[1], or None)``."""
  def body(carry, i):
    carry = sampler.step(dynamics, carry, ts[i + 1], ts[i], jax.random.fold_in(key, i))
    return carry, sampler.state(carry) if keep_states else None
  carry = sampler.init(dynamics, x_init, ts.shape[0] - 1)
  carry, states = jax.lax.scan(body, carry, jnp.arange(1, ts.shape[0] - 1)[::-1])
  return sampler.last(dynamics, carry, ts[1], ts[0], jax.random.fold_in(key, 0)), states


def make_sampler(name: str, path: Path, score_fn: ScoreFn, *, langevin_snr: float = 0.16,
                 langevin_steps: int = 1, solver_order: int = 0):
  """Builds ``sample(key, ts, x_init)``, which walks the reverse dynamics from ``ts[K]`` into the data end.

  Args:
    name: a sampler in ``SAMPLERS`` ('euler', 'heun', 'euler_maruyama', 'pc', 'ancestral', 'dpmpp_2m',
      'dpmpp_3m', 'unipc', 'ipndm'); ``config.eval.sampler``.
    path: the diffusion path. score_fn: ``(x: f32[B, *S], t: f32[B]) -> f32[B, *S]``, the score at ``(x, t)``.
    langevin_snr, langevin_steps: the pc corrector's signal-to-noise ratio and steps per level.
    solver_order: a multistep solver's order (``config.eval.solver_order``; 0: its default).
  Returns:
    A pure ``sample(key, ts: f32[K+1], x_init: f32[B, *S]) -> f32[B, *S]`` (data space), jit-able with no
    static arguments; ``ts`` ascends (``ts[0]`` data end, ``ts[K] = 1`` noise end) and is walked from the end
    down. Step ``i`` (from ``ts[i+1]`` to ``ts[i]``) uses the key ``fold_in(key, i)``; the step into ``ts[0]``
    returns the denoiser's output (module docstring). It makes ``nfe(name, K, langevin_steps)`` evaluations.
  """
  sampler = SAMPLERS.get(name, 'config.eval.sampler')
  dynamics = Dynamics(path, score_fn, float(langevin_snr), int(langevin_steps), int(solver_order))

  def sample(key, ts, x_init):
    return _walk(sampler, dynamics, key, jnp.asarray(ts, x_init.dtype), x_init, keep_states=False)[0]

  return sample


def make_trajectory(name: str, path: Path, score_fn: ScoreFn, *, langevin_snr: float = 0.16,
                    langevin_steps: int = 1, solver_order: int = 0):
  """Builds ``trajectory(key, ts, x_init)``: the states of :func:`make_sampler`'s walk at every point of ``ts``.

  Same steps and keys as ``make_sampler(name, ...)``. Used to draw ``p_t`` from a model's own reverse process.
  Returns:
    A pure ``trajectory(key, ts: f32[K+1], x_init: f32[B, *S]) -> f32[K+1, B, *S]`` whose entry ``i`` is the
    state at ``ts[i]`` for ``i >= 1`` (entry ``K`` is ``x_init``) and entry 0 the sample (``make_sampler``'s
    output, the denoiser's at ``ts[1]``).
  """
  sampler = SAMPLERS.get(name, 'config.eval.sampler')
  dynamics = Dynamics(path, score_fn, float(langevin_snr), int(langevin_steps), int(solver_order))

  def trajectory(key, ts, x_init):
    ts = jnp.asarray(ts, x_init.dtype)
    x0, states = _walk(sampler, dynamics, key, ts, x_init, keep_states=True)           # at ts[K-1], ..., ts[1]
    return jnp.concatenate([x0[None], states[::-1], x_init[None]])

  return trajectory
