"""Denoising score matching on the schedule's points (method.md section 5, step 1)."""
import jax
import jax.numpy as jnp

from ddm.paths import Path
from ddm.registry import PRECONDS

WEIGHTINGS = ('precond', 'uniform')


def make_loss_fn(denoise, path: Path, precond: str, sigma_data: float, weighting: str, denoise_and_score=None):
  """Returns ``loss_fn(params, x0, ts, keys, key_dropout, train=True, num_measured=0) -> (loss f32[B], level i32[B],
  x_t, t, score_dt)``.

  Discrete-time training: each example's time is one of the schedule's points ``ts: f32[T+1]``, drawn
  uniformly by index, so the network learns where the schedule puts points. Per example,

      loss = lambda(t) mean ||D(x_t, t) - x0||^2,   x_t = alpha(t) x0 + sigma(t) eps,

  with ``lambda = 1 / c_out^2`` ('precond': unit weight on the raw network output, EDM eq. 8; for the
  'vp' preconditioning this is epsilon-prediction's loss) or ``lambda = 1`` ('uniform').
  The per-example loss and level are returned unreduced, so the caller can also feed the level statistics.
  ``keys``: one PRNG key per example (level and noise), so an example's draw does not depend on how the
  batch is split across devices. ``x_t: f32[B, *S]`` and ``t: f32[B]`` are returned for the cost estimate.

  ``num_measured = n > 0`` (needs ``denoise_and_score(params, x, t, train, rng) -> (D, s)``) also returns
  ``score_dt = d/dt s(x_t, t)`` at fixed ``x_t`` for the first n examples, f32[n, *S], from the same network
  pass that gives their loss: one ``jax.jvp`` in t (tangent 1 for t, 0 for x), its primal ``D`` used by the
  loss and its tangent cut from the gradient (``stop_gradient``). So the corrector's rate ``sigma^2
  ||ds/dt||^2`` (method.md section 2) costs one tangent propagation instead of a second network pass; it is
  taken at the parameters the loss is evaluated at (the step's pre-update parameters). ``None`` when n = 0.
  """
  if weighting not in WEIGHTINGS:
    raise ValueError(f'config.loss.weighting={weighting!r}; allowed: {", ".join(WEIGHTINGS)}')
  coefficients = PRECONDS.get(precond, 'config.model.precond')

  def loss_fn(params, x0, ts, keys, key_dropout, train=True, num_measured=0):
    def draw(key):
      key_level, key_eps = jax.random.split(key)
      return jax.random.randint(key_level, (), 0, ts.shape[0]), jax.random.normal(key_eps, x0.shape[1:])

    level, eps = jax.vmap(draw)(keys)
    t = ts[level]
    x_t = path.marginal_sample(x0, t, eps)
    score_dt = None
    n = num_measured
    if n:
      (measured, _), (_, score_dt) = jax.jvp(
          lambda tt: denoise_and_score(params, x_t[:n], tt, train=train, rng=key_dropout),
          (t[:n],), (jnp.ones_like(t[:n]),))
      rest = denoise(params, x_t[n:], t[n:], train=train, rng=key_dropout)
      denoised, score_dt = jnp.concatenate([measured, rest]), jax.lax.stop_gradient(score_dt)
    else:
      denoised = denoise(params, x_t, t, train=train, rng=key_dropout)
    err = jnp.mean((denoised - x0)**2, axis=tuple(range(1, x0.ndim)))
    if weighting == 'precond':
      c_out = coefficients(path.ratio(t), sigma_data).c_out
      err = err / c_out**2
    return err, level, x_t, t, score_dt

  return loss_fn
