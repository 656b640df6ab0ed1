"""DDSS, Differentiable Diffusion Sampler Search (Watson et al. 2022, method.md section 8), in the form that
fits this project: ``config.fit.method = 'ddss'``.

For each K in ``config.fit.ddss.step_counts`` the K step times are parameters, and optionally
(``ddss.learn_coefficients``) the coefficients of a generalised Gaussian sampler step; a batch of samples is
drawn from fixed noise through the whole K-step chain, a differentiable sample-quality loss of that batch
is back-propagated through every step (each step under ``jax.checkpoint``: only the states between steps
are stored, every step's internals are recomputed in the backward pass), and Adam updates the parameters
for ``ddss.adam_steps`` steps.

Times. Logits ``theta: f[K]`` give positive increments of ``u = log(sigma / alpha)`` that sum to the path's
whole range:

    u_k = u(0) + (u(1) - u(0)) sum_{j<k} w_j,   w = (1 - m) softmax(theta) + m / K,   t_k = t_of_ratio(exp(u_k)),

so every ``theta`` is a strictly increasing schedule with ``t_0 = 0`` and ``t_K = 1`` (pinned exactly); the
floor ``m = MIN_INCREMENT`` keeps every step at least ``m / K`` of the log-ratio range, so that no two
float32 times coincide however far the logits go (near ``t = 1`` of the cosine VP path the ratio moves
by orders of magnitude within float32's spacing of t).
``theta = 0`` is the log-linear schedule (method.md section 6), the starting point.

Sampler. With ``learn_coefficients=False`` the chain is ``config.eval.sampler``'s own step
(:mod:`ddm.samplers`, the Euler or Heun probability-flow step by default; the stochastic samplers run with
their noise fixed too), ending with its step into the data end: exactly what ``--mode=eval`` runs on the
stored schedule. With ``learn_coefficients=True`` the step is a generalised,
non-Markovian DDIM step (GGDM's family restricted to one step of memory):

    x_s = a x_t + b D(x_t, t) + c (D(x_t, t) - D_prev),
    a = (sigma_s / sigma_t) e^{rho_a},  b = (alpha_s - alpha_t sigma_s / sigma_t) e^{rho_b},  c = rho_c,

``D_prev`` the previous step's denoised estimate (``D(x_t, t)`` itself on the first step). ``rho = 0``
is DDIM (the exact probability-flow step for a constant denoiser); ``c`` is a learned second-order,
multistep correction. The learned coefficients are reported in ``meta['coefficients']``; the stored
schedule is the times alone, which ``--mode=eval`` walks with ``config.eval.sampler``.

Noise: drawn once per K and kept (:func:`prior_noise`; on 1-D toy targets stratified at the prior's quantiles,
which makes the toy loss an exact quadrature of the sampler's W2 distance to the target).

Loss (lower is better; a function ``loss_fn(x f32[B, *S]) -> scalar``, an argument of :func:`search`):
- toy targets (``problem.target`` set): :func:`quantile_w2_loss`, the squared 2-Wasserstein distance between
  the batch and the target, computed exactly per coordinate from the sorted samples and the target's
  quantiles. Deterministic given the fixed noise (no second sample, so the loss history is comparable from
  one iteration to the next); with the stratified noise of 1-D targets it is the midpoint rule for the
  exact ``W_2^2`` between the sampler's law and the target, zero for an exact sampler up to quadrature.
- images: :func:`eval.frechet.kid_loss` (passed in by the runner), the squared MMD under the kernel inception distance's cubic kernel between the
  batch's features ``eval.classifier.get_feature_fn(config.data, steps, seed, workdir)`` and those of a fixed data batch from
  ``problem.sample_x0``, as in the paper (which used Inception features) — in its biased, non-negative
  form: KID's unbiased estimate is unbounded below as a function of the samples (see :func:`eval.frechet.kid_loss`).
"""
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ddm import samplers
from ddm.paths import Path
from ddm.registry import SAMPLERS
from schedule.schedules import Ladders
from schedule.searches.problem import Result

GGDM = 'ggdm'   # the learned-coefficient step's name in meta['sampler']
MIN_INCREMENT = 1e-3  # share of the log-ratio range spread evenly over the steps (floors every increment)


def logits_to_schedule(path: Path, logits):
  """``ts: f[K+1]``, strictly increasing from exactly 0 to exactly 1, from ``logits: f[K]`` (module docstring)."""
  u0, u1 = jnp.log(path.ratio(0.0)), jnp.log(path.ratio(1.0))
  k = logits.shape[0]
  weights = (1.0 - MIN_INCREMENT) * jax.nn.softmax(logits) + MIN_INCREMENT / k
  fractions = jnp.concatenate([jnp.zeros(1, logits.dtype), jnp.cumsum(weights)])
  ts = path.t_of_ratio(jnp.exp(u0 + (u1 - u0) * fractions))
  return ts.at[0].set(0.0).at[-1].set(1.0)


def schedule_to_logits(path: Path, ts):
  """The logits (up to a constant) of a strictly increasing ``ts: f[K+1]`` whose log-ratio increments all
  exceed ``MIN_INCREMENT / K`` of the range: the inverse of :func:`logits_to_schedule`."""
  u = jnp.log(path.ratio(jnp.asarray(ts, float)))
  share = jnp.diff(u) / (u[-1] - u[0])
  k = share.shape[0]
  return jnp.log((share - MIN_INCREMENT / k) / (1.0 - MIN_INCREMENT))


def ddim_coefficients(path: Path, t, t_next):
  """``(a, b)`` of the DDIM step ``x_{t_next} = a x_t + b D(x_t, t)``: ``a = sigma'/sigma``,
  ``b = alpha' - alpha sigma'/sigma`` (primes at ``t_next``)."""
  alpha, sigma, alpha_n, sigma_n = path.alpha(t), path.sigma(t), path.alpha(t_next), path.sigma(t_next)
  a = sigma_n / sigma
  return a, alpha_n - alpha * a


def make_chain(path: Path, score_fn: Callable, denoise_fn: Callable, sampler: str, *, langevin_snr: float = 0.16,
               langevin_steps: int = 1):
  """Builds the differentiable sampling chain ``chain(ts, coefficients, x_init, key) -> f32[B, *S]``.

  Args:
    path, score_fn, denoise_fn: as in :class:`schedule.searches.Problem`. sampler: a name in ``ddm.samplers.SAMPLERS``
      (``config.eval.sampler``), or ``'ggdm'`` for the learned-coefficient step of the module docstring.
    langevin_snr, langevin_steps: ``config.eval``'s settings, as in ``ddm.samplers.make_sampler``.
  Returns:
    A pure ``chain(ts f[K+1], coefficients f[K, 3] (ggdm: (rho_a, rho_b, rho_c) of step i from ts[i+1] to
    ts[i]; ignored otherwise), x_init f32[B, *S], key)``, walking ``ts`` from ``ts[K]`` down with step ``i``
    under ``jax.checkpoint`` and key ``fold_in(key, i)``, the step into ``ts[0]`` last (as ``make_sampler``,
    whose output it matches for the registered samplers). GGDM's last step is DDIM into zero noise
    (``a = 0``, ``b = 1``): ``e^{rho_b} D + rho_c (D - D_prev)``.
  """
  if sampler != GGDM:
    chosen = SAMPLERS.get(sampler, 'config.eval.sampler')
  dynamics = samplers.Dynamics(path, score_fn, float(langevin_snr), int(langevin_steps))

  def step(carry, t, t_next, coeff, key, is_last: bool):
    x, d_prev, first = carry
    if sampler != GGDM:
      move = chosen.last if is_last else chosen.step
      return move(dynamics, x, t, t_next, key), d_prev, first
    d = denoise_fn(x, jnp.full(x.shape[:1], t, x.dtype))
    d_prev = jnp.where(first, d, d_prev)
    a, b = (0.0, 1.0) if is_last else ddim_coefficients(path, t, t_next)
    x_next = a * jnp.exp(coeff[0]) * x + b * jnp.exp(coeff[1]) * d + coeff[2] * (d - d_prev)
    return x_next, d, jnp.zeros_like(first)

  step = jax.checkpoint(step, static_argnums=(5,))

  def chain(ts, coefficients, x_init, key):
    ts = jnp.asarray(ts, x_init.dtype)

    def body(carry, i):
      return step(carry, ts[i + 1], ts[i], coefficients[i], jax.random.fold_in(key, i), False), None

    carry = (x_init, jnp.zeros_like(x_init), jnp.ones((), bool))
    carry, _ = jax.lax.scan(body, carry, jnp.arange(1, ts.shape[0] - 1)[::-1])    # K-1, ..., 1
    return step(carry, ts[1], ts[0], coefficients[0], jax.random.fold_in(key, 0), True)[0]

  return chain


def evaluations_per_sample(sampler: str, num_steps: int, langevin_steps: int = 1) -> int:
  """Network evaluations of one K-step chain per sample (forward only): the sampler's NFE; GGDM: K."""
  return int(num_steps) if sampler == GGDM else samplers.nfe(sampler, num_steps, langevin_steps)


# Losses.

def mixture_quantiles(target, levels) -> np.ndarray:
  """Quantiles ``F_j^{-1}(levels)`` of every coordinate's marginal of a Gaussian mixture: f64[L, d].

  Coordinate j's marginal is the 1-D mixture ``sum_k w_k N(m_kj, s_k^2)``; its CDF is inverted by bisection
  to float64 precision.
  """
  from scipy.special import ndtr
  levels = np.asarray(levels, np.float64)
  means, stds, weights = (np.asarray(v, np.float64) for v in (target.means, target.stds, target.weights))
  out = np.empty((len(levels), means.shape[1]))
  for j in range(means.shape[1]):
    lo = np.full(len(levels), np.min(means[:, j] - 40 * stds))
    hi = np.full(len(levels), np.max(means[:, j] + 40 * stds))
    for _ in range(200):
      mid = 0.5 * (lo + hi)
      below = ndtr((mid[:, None] - means[None, :, j]) / stds[None, :]) @ weights < levels
      lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    out[:, j] = 0.5 * (lo + hi)
  return out


def quantile_w2_loss(target, batch_size: int) -> Callable:
  """``loss(x f32[B, d]) = mean_j mean_i (sort(x[:, j])_i - F_j^{-1}((i + 1/2) / B))^2``.

  The squared 2-Wasserstein distance between the batch's empirical law and the target on each coordinate
  (in 1-D exactly ``W_2^2`` to the target's B-point quantile quantisation), averaged over coordinates (for
  d > 1 a sliced distance along the axes). Differentiable (through the sort), deterministic, zero at the
  quantiles themselves.
  """
  q = jnp.asarray(mixture_quantiles(target, (np.arange(batch_size) + 0.5) / batch_size), jnp.float32)

  def loss(x):
    x = x.reshape(x.shape[0], -1)
    return jnp.mean((jnp.sort(x, axis=0) - q.astype(x.dtype))**2)

  return loss


def prior_noise(path: Path, key, shape, stratified: bool = False, jitter: bool = False):
  """The fixed noise ``x_1: f32[B, *S]``: ``ddm.samplers.prior_sample``, or, ``stratified`` (1-D data), the
  prior's quantiles at levels ``(i + 1/2) / B`` (``jitter``: ``(i + U_i) / B``, ``U_i ~ U(0, 1)``, one point in
  each of B equal-probability strata, in random order).

  Why stratify in 1-D: a deterministic sampler is then a monotone map ``T`` of the noise, so the sorted batch
  is ``T`` at the prior's quantiles and :func:`quantile_w2_loss` is the midpoint rule for
  ``W_2^2 = int_0^1 (T(F_1^{-1}(u)) - F_0^{-1}(u))^2 du``, the exact 2-Wasserstein distance between the
  sampler's law and the target. With random noise the loss would carry the batch's own sampling error
  (on the bimodal target mostly its imbalance between the two modes, ~0.05 at B = 256), and the search
  would spend its steps fitting that noise.
  """
  if not stratified:
    return samplers.prior_sample(path, key, shape)
  n = shape[0]
  key_u, key_perm = jax.random.split(key)
  u = jax.random.uniform(key_u, (n,)) if jitter else jnp.full((n,), 0.5)
  levels = (jnp.arange(n) + u) / n
  if jitter:
    levels = jax.random.permutation(key_perm, levels)
  std = samplers.prior_std(path)
  return (std * jax.scipy.special.ndtri(levels)).reshape(shape).astype(jnp.float32)


def optimise(chain: Callable, loss_fn: Callable, path: Path, num_steps: int, x_init, key, *,
             learning_rate: float, num_iterations: int, learn_coefficients: bool = False,
             heldout_init=None):
  """Adam on the step logits (and coefficients) of one K.

  Args:
    chain: from :func:`make_chain`. loss_fn: ``x f32[B, *S] -> scalar``. x_init: f32[B, *S], the fixed noise
      at ``t = 1``; key: the fixed key of any sampler noise. heldout_init: optional second noise batch, whose
      loss is reported at the start and the end (the fit's generalisation beyond its own noise).
  Returns:
    ``(ts f64[K+1], coefficients f64[K, 3], history f64[num_iterations + 1], heldout (start, end) or None)``;
    ``history[i]`` is the loss before update i, the last entry after the final update.
  """
  params = {'logits': jnp.zeros(num_steps, x_init.dtype), 'coefficients': jnp.zeros((num_steps, 3), x_init.dtype)}
  if not learn_coefficients:
    params = {'logits': params['logits']}
  zero_coefficients = jnp.zeros((num_steps, 3), x_init.dtype)

  def objective(p, x1):
    ts = logits_to_schedule(path, p['logits'])
    return loss_fn(chain(ts, p.get('coefficients', zero_coefficients), x1, key))

  optimiser = optax.adam(learning_rate)
  state = optimiser.init(params)

  @jax.jit
  def update(p, s):
    value, grads = jax.value_and_grad(objective)(p, x_init)
    updates, s = optimiser.update(grads, s, p)
    return optax.apply_updates(p, updates), s, value

  evaluate = jax.jit(objective)
  history = []
  heldout = [] if heldout_init is not None else None
  if heldout is not None:
    heldout.append(float(evaluate(params, heldout_init)))
  for _ in range(int(num_iterations)):
    params, state, value = update(params, state)
    history.append(float(value))
  history.append(float(evaluate(params, x_init)))
  if heldout is not None:
    heldout.append(float(evaluate(params, heldout_init)))
  ts = np.asarray(logits_to_schedule(path, params['logits']), np.float64)
  coefficients = np.asarray(params.get('coefficients', zero_coefficients), np.float64)
  return ts, coefficients, np.asarray(history), heldout


def search(fit_cfg, cost_cfg, eval_cfg, problem, key, loss_fn: Optional[Callable] = None, loss_name: str = 'custom'):
  """``config.fit.method = 'ddss'``: one optimised schedule per K in ``config.fit.ddss.step_counts``.

  Args:
    fit_cfg: ``config.fit``; uses ``fit_cfg.ddss`` (``num_steps``, ``learning_rate``, ``num_iterations``,
      ``batch_size`` B, ``learn_coefficients``). cost_cfg: unused. eval_cfg: ``config.eval`` (``sampler``, Langevin
      settings). problem: a :class:`schedule.searches.Problem`. key: PRNG key.
    loss_fn: ``x f32[B, *S] -> scalar`` to minimise, from the runner (``modes/fit_schedule.py``: the
      quantile W2 of :func:`quantile_w2_loss` on toy targets, KID in classifier features on images); None:
      :func:`quantile_w2_loss` of ``problem.target`` (exact scores only). loss_name: its name in meta.
  Returns:
    ``Result(Ladders({K: f64[K+1]}), meta)`` with meta ``loss_history`` ``{K: [num_iterations + 1 values]}``,
    ``heldout_loss`` ``{K: [start, end]}`` (the same loss on a second fixed noise batch; 1-D toy targets:
    stratified noise, :func:`prior_noise`), ``loss``, ``sampler``,
    ``coefficients`` ``{K: [[rho_a, rho_b, rho_c]] * K}`` (learn_coefficients only), ``time_s`` and
    ``network_evaluations``: forward network evaluations (B per sample-chain evaluation times
    :func:`evaluations_per_sample`, over ``num_iterations + 3`` chain evaluations per K); each of the
    ``num_iterations`` gradient steps also recomputes every step's forward once (jax.checkpoint) and runs
    its vector-Jacobian product, so the compute is about three to four times that count.
  """
  del cost_cfg
  start = time.perf_counter()
  cfg = fit_cfg.ddss
  batch = int(cfg.batch_size)
  _, key_noise = jax.random.split(key)  # the first half keys the runner's loss (its fixed data batch)
  if loss_fn is None:
    if problem.target is None:
      raise ValueError('ddss needs a loss: pass loss_fn (the problem has no closed-form target)')
    loss_name, loss_fn = 'w2_squared', quantile_w2_loss(problem.target, batch)
  sampler = GGDM if cfg.learn_coefficients else eval_cfg.sampler
  chain = make_chain(problem.path, problem.score_fn, problem.denoise_fn, sampler, langevin_snr=eval_cfg.langevin_snr,
                     langevin_steps=eval_cfg.langevin_steps)
  shape = (batch,) + tuple(problem.data_shape)
  stratified = problem.target is not None and int(np.prod(problem.data_shape)) == 1
  ladders, history, heldout, coefficients, evaluations = {}, {}, {}, {}, 0
  for k in sorted({int(k) for k in cfg.step_counts}):
    key_k = jax.random.fold_in(key_noise, k)
    key_x, key_heldout, key_sampler = jax.random.split(key_k, 3)
    x_init = prior_noise(problem.path, key_x, shape, stratified)
    heldout_init = prior_noise(problem.path, key_heldout, shape, stratified, jitter=True)
    ts, coeff, hist, held = optimise(chain, loss_fn, problem.path, k, x_init, key_sampler,
                                     learning_rate=float(cfg.learning_rate), num_iterations=int(cfg.adam_steps),
                                     learn_coefficients=bool(cfg.learn_coefficients), heldout_init=heldout_init)
    ladders[k], history[k], heldout[k] = ts, hist.tolist(), held
    if cfg.learn_coefficients:
      coefficients[k] = coeff.tolist()
    evaluations += (int(cfg.adam_steps) + 3) * batch * evaluations_per_sample(
        sampler, k, eval_cfg.langevin_steps)
  meta = dict(loss_history=history, heldout_loss=heldout, loss=loss_name, sampler=sampler,
              time_s=time.perf_counter() - start, network_evaluations=int(evaluations))
  if cfg.learn_coefficients:
    meta['coefficients'] = coefficients
  return Result(Ladders(ladders, 'ddss', 'ddss'), meta=meta)
