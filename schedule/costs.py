"""Incremental Stein (Fisher) costs of a schedule (method.md section 2).

A score function is any ``score_fn(x: f32[B, *S], t: f32[B]) -> f32[B, *S]`` (exact for toy targets, a
network otherwise). Velocity scaling is ``v(t) = sigma(t)`` throughout.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from ddm.paths import Path
from ddm.registry import COSTS

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def _sum_per_example(x):
  return jnp.sum(x, axis=tuple(range(1, x.ndim)))


@COSTS.register('corrector')
def corrector_rate(score_fn: ScoreFn, path: Path, x, t):
  """Local rate of ``L_c``, per example: ``delta(t) = sigma(t)^2 ||d/dt s(x, t)||^2`` (method.md section 2).

  One forward-mode ``jax.jvp`` with tangent 0 for x and 1 for t. Averaging over ``x ~ p_t`` gives delta(t).

  Args:
    x: f32[B, *S], samples of ``p_t`` at each example's own time. t: f32[B].
  Returns:
    f32[B], per example.
  """
  t = jnp.asarray(t, float)
  _, ds_dt = jax.jvp(lambda tt: score_fn(x, tt), (t,), (jnp.ones_like(t),))
  return path.sigma(t)**2 * _sum_per_example(ds_dt**2)


def corrector_cost(score_fn: ScoreFn, path: Path, x, t_next, t):
  """Two-evaluation incremental cost ``L_c(t' -> t) = v(t)^2 ||s(x, t) - s(x, t')||^2`` per example,
  with ``x ~ p_{t'}`` and ``t' = t_next > t`` (method.md section 2).

  Args:
    x: f32[B, *S] drawn from ``p_{t'}``. t_next, t: f32[B] (or scalars).
  Returns:
    f32[B]; its mean over ``x`` is ``L_c(t' -> t)``.
  """
  batch = x.shape[:1]
  t_next = jnp.broadcast_to(jnp.asarray(t_next, float), batch)
  t = jnp.broadcast_to(jnp.asarray(t, float), batch)
  diff = score_fn(x, t) - score_fn(x, t_next)
  return path.sigma(t)**2 * _sum_per_example(diff**2)


def make_rate_fn(cost: str) -> Callable:
  """The per-example local-rate estimator registered under ``config.schedule.cost``."""
  return COSTS.get(cost, 'config.schedule.cost')


def rate_on_grid(rate_fn, score_fn: ScoreFn, path: Path, sample_pt, grid, key, num_samples: int):
  """Monte Carlo ``delta(t_j) = E_{x ~ p_{t_j}}[rate(x, t_j)]`` at every grid time.

  Args:
    sample_pt: ``(key, t: f32[n]) -> f32[n, *S]``, draws of ``p_t`` (forward process or a model).
    grid: f32[N] times. num_samples: samples per grid time (independent across times).
  Returns:
    f32[N].
  """
  grid = jnp.asarray(grid, float)

  def one(args):
    key_j, t_j = args
    t = jnp.full((num_samples,), t_j)
    return jnp.mean(rate_fn(score_fn, path, sample_pt(key_j, t), t))

  return jax.lax.map(one, (jax.random.split(key, grid.shape[0]), grid))
