"""Incremental Stein (Fisher) costs of a schedule (method.md section 2).

A score function is any ``score_fn(x: f32[B, *S], t: f32[B]) -> f32[B, *S]`` (exact for toy targets, a
network otherwise). Velocity scaling is ``v(t) = sigma(t)`` throughout.

Rate functions, registered in ``COSTS`` under ``config.schedule.cost``, have the signature
``rate(score_fn, path, x f32[B, *S], t f32[B], key=None) -> f32[B]``: per example, the leading coefficient
``kappa`` of the cost of a short step, ``L(t -> t - eps) = E_x[kappa] eps^(2p) + ...``, which is additive over
examples (sum it, average it per level). Its order ``p`` is :func:`order`; the rate whose square root the length
integrates is ``E[kappa]^(1/p)`` (:func:`to_rate`), taken after the average. ``p = 1`` for 'corrector' (``kappa``
is ``delta``). :func:`make_rate_fn` binds the settings of ``config.schedule``: 'corrector' (``L_c``) or
'predictor' (``L_p`` of ``config.schedule.cost_solver``, :mod:`schedule.predictor`, evaluated in chunks of
``config.schedule.cost_batch_size`` examples). The key drives Hutchinson probes (ignored by the corrector).
"""
import functools
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
from absl import logging

from ddm import chunked
from ddm.paths import Path
from ddm.registry import COSTS
from schedule import predictor as predictor_lib

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def _sum_per_example(x):
  return jnp.sum(x, axis=tuple(range(1, x.ndim)))


@COSTS.register('corrector')
def corrector_rate(score_fn: ScoreFn, path: Path, x, t, key=None):
  """Local rate of ``L_c``, per example: ``delta(t) = sigma(t)^2 ||d/dt s(x, t)||^2`` (method.md section 2).

  One forward-mode ``jax.jvp`` with tangent 0 for x and 1 for t. Averaging over ``x ~ p_t`` gives delta(t).

  Args:
    x: f32[B, *S], samples of ``p_t`` at each example's own time. t: f32[B]. key: unused.
  Returns:
    f32[B], per example.
  """
  del key
  t = jnp.asarray(t, float)
  _, ds_dt = jax.jvp(lambda tt: score_fn(x, tt), (t,), (jnp.ones_like(t),))
  return corrector_rate_from_derivative(path, t, ds_dt)


def corrector_rate_from_derivative(path: Path, t, ds_dt):
  """``delta = sigma(t)^2 ||ds/dt||^2`` per example from ``ds_dt: f32[B, *S]`` at ``t: f32[B]`` (the fused
  estimator of :mod:`train.step` computes ``ds_dt`` inside the loss's pass). f32[B]."""
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


@COSTS.register('predictor')
def predictor_rate(score_fn: ScoreFn, path: Path, x, t, key=None, *, predictor: str = 'euler', probes: int = 1):
  """Leading coefficient ``kappa = v^2 ||c_p||^2`` of ``L_p`` per example (:func:`schedule.predictor.predictor_rate`),
  ``L_p(t -> t - eps) = E[kappa] eps^(2p) + ...`` with ``p`` = 1, 2, 3 for 'identity', 'euler', 'heun'
  ('identity' gives :func:`corrector_rate`). f32[B]."""
  return predictor_lib.predictor_rate(score_fn, path, x, t, key, predictor=predictor, probes=probes)


def in_batches(rate_fn: Callable, batch_size: int) -> Callable:
  """``rate_fn`` evaluated on chunks of at most ``batch_size`` examples, one after another (``lax.map``), so
  the memory of nested autodiff is that of one chunk. Same signature; chunk ``c`` gets ``fold_in(key, c)``."""
  def rate(score_fn, path, x, t, key=None):
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
    key = jax.random.PRNGKey(0) if key is None else key
    return chunked.device_map(lambda xc, tc, kc: rate_fn(score_fn, path, xc, tc, kc), x, t, batch_size, key)
  rate.chunk_fn, rate.batch_size = rate_fn, batch_size  # for host_rate_on_grid
  return rate


def order(schedule_config) -> int:
  """``p`` of the cost of ``config.schedule``: a short step's cost is ``O(eps^(2p))``. 1 for 'corrector';
  :data:`schedule.predictor.ORDERS` of the predictor for 'predictor'."""
  if schedule_config.cost == 'predictor':
    return predictor_lib.ORDERS[schedule_config.cost_solver]
  return 1


def to_rate(mean_kappa, p: int):
  """The rate whose square root the length integrates, ``E[kappa]^(1/p)``, from an average of per-example
  coefficients (negative Monte Carlo means, possible with Hutchinson probes, count as 0). Steps of equal length
  in it are steps of equal cost ``E[kappa] eps^(2p)`` (method.md section 3 with ``sqrt(delta)`` replaced by
  ``E[kappa]^(1/(2p))``). The power comes after the average: ``E[kappa^(1/p)]`` would be a different, smaller
  rate whose ladder does not equalise the cost."""
  mean_kappa = jnp.maximum(mean_kappa, 0.0)
  return mean_kappa if p == 1 else mean_kappa**(1.0 / p)


def make_rate_fn(schedule_config) -> Callable:
  """The per-example coefficient estimator ``rate(score_fn, path, x, t, key=None) -> f32[B]`` of
  ``config.schedule`` (a ``config.schedule`` section; a cost name alone means its default settings).

  'predictor' binds ``config.schedule.cost_solver`` and ``hutchinson_probes`` and runs in chunks of
  ``cost_batch_size`` examples. Whether a network is twice differentiable is checked by the callers that
  hold it (:func:`schedule.predictor.check_model`). Average its output, then apply :func:`to_rate` with
  :func:`order`.
  """
  if isinstance(schedule_config, str):
    return COSTS.get(schedule_config, 'config.schedule.cost')
  cost = schedule_config.cost
  rate_fn = COSTS.get(cost, 'config.schedule.cost')
  if cost == 'predictor':
    rate_fn = functools.partial(rate_fn, predictor=schedule_config.cost_solver,
                                probes=int(schedule_config.hutchinson_probes))
    return in_batches(rate_fn, int(schedule_config.cost_batch_size))
  return rate_fn


def rate_on_grid(rate_fn, score_fn: ScoreFn, path: Path, sample_pt, grid, key, num_samples: int, p: int = 1):
  """Monte Carlo ``delta(t_j) = E_{x ~ p_{t_j}}[kappa(x, t_j)]^(1/p)`` at every grid time (:func:`to_rate`).

  Args:
    rate_fn: per-example coefficients (:func:`make_rate_fn`); p: their order (:func:`order`).
    sample_pt: ``(key, t: f32[n]) -> f32[n, *S]``, draws of ``p_t`` (forward process or a model).
    grid: f32[N] times. num_samples: samples per grid time (independent across times).
  Returns:
    f32[N].
  """
  grid = jnp.asarray(grid, float)

  def one(args):
    key_j, t_j = args
    t = jnp.full((num_samples,), t_j)
    return jnp.mean(rate_fn(score_fn, path, sample_pt(key_j, t), t, jax.random.fold_in(key_j, 1)))

  return to_rate(jax.lax.map(one, (jax.random.split(key, grid.shape[0]), grid)), p)


def host_rate_on_grid(rate_fn, score_fn, path: Path, sample_pt, num_samples: int, p: int = 1, params=None):
  """:func:`rate_on_grid` as ``(grid f32[N], key) -> f32[N]`` with the loops over grid times and chunks on the
  host: the same values (same keys, same chunks as :func:`in_batches`: chunk ``c`` gets ``fold_in(key, c)``), but
  the rate is compiled alone, once
  (at the first call; every later call, e.g. every pass of :func:`schedule.fit.fit`, reuses it), for one chunk,
  with the network's parameters as arguments.

  For nested derivatives of a network (``L_p``) this matters. Inside ``lax.map`` bodies, with the parameters
  closed over as constants, XLA:CPU spent more than 20 minutes and 9 GB compiling the Heun coefficient of the
  digits U-Net, and still more than 17 minutes for one chunk alone (constant folding through the weights); with
  the parameters as arguments one chunk compiles in about 7 minutes (``python -m tools.bench_costs``). The
  compiled chunk's temporaries are checked against the device's free memory first (:func:`check_chunk_memory`).

  Args:
    rate_fn: :func:`make_rate_fn`'s (its chunk size is read off :func:`in_batches`) or any per-example rate
      (one chunk). score_fn: a score function, or, with ``params``, ``score_fn(params) -> score function``.
  """
  chunk_fn = getattr(rate_fn, 'chunk_fn', rate_fn)
  batch = min(getattr(rate_fn, 'batch_size', num_samples), num_samples)
  chunks = chunked.num_chunks(num_samples, batch)
  score_of = score_fn if params is not None else (lambda _: score_fn)
  sample = jax.jit(sample_pt)
  compiled = {}

  def chunk_rate(x, t, key):
    if t.dtype not in compiled:
      start = time.perf_counter()
      compiled[t.dtype] = jax.jit(lambda params, x, t, k: chunk_fn(score_of(params), path, x, t, k)).lower(
          params, x, t, key).compile()
      need = check_chunk_memory(compiled[t.dtype], batch)
      logging.info('cost rate compiled for chunks of %d examples in %.1f s (temporaries %s)', batch,
                   time.perf_counter() - start, 'unknown' if need is None else _size(need))
    return compiled[t.dtype](params, x, t, key)

  def rate_on_grid_(grid, key):
    grid = jnp.asarray(grid, float)
    out = []
    for key_j, t_j in zip(jax.random.split(key, grid.shape[0]), grid):
      t = jnp.full((batch,), t_j)
      x = sample(key_j, jnp.full((num_samples,), t_j))
      x, _ = chunked.pad_rows(x, batch)
      key_rate = jax.random.fold_in(key_j, 1)
      values = [chunk_rate(x[c * batch:(c + 1) * batch], t, jax.random.fold_in(key_rate, c)) for c in range(chunks)]
      out.append(jnp.mean(jnp.concatenate(values)[:num_samples]))
    return to_rate(jnp.stack(out), p)

  return rate_on_grid_


def available_bytes(device=None):
  """Memory a computation on ``device`` may still use: the accelerator's free memory, or the host's available
  RAM for a CPU device; None when the backend does not say."""
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  if stats and 'bytes_limit' in stats:
    return int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
  if device.platform == 'cpu':
    try:
      return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
      return None
  return None


def check_chunk_memory(compiled, batch: int, available=None, setting: str = 'config.schedule.cost_batch_size'):
  """Stops, before any rate is computed, when one compiled chunk's temporaries (``memory_analysis()``) exceed
  the memory left on the device, with the largest ``batch`` that fits. Returns the chunk's bytes (or None)."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # not every backend implements it
    return None
  need = getattr(stats, 'temp_size_in_bytes', None)
  available = available_bytes() if available is None else available
  if need is None or available is None or need <= available:
    return need
  fits = int(batch * available // need)
  raise ValueError(
      f'{setting}={batch}: one chunk of the cost rate needs {_size(need)} of temporaries (nested derivatives of '
      f'the network), but {_size(available)} are available on {jax.local_devices()[0]}; '
      + (f'set {setting} to at most {fits}.' if fits >= 1 else
         f'even one example does not fit (about {_size(need / batch)}); use config.schedule.cost=\'corrector\'.'))


def _size(n):
  return f'{n / 2**30:.2f} GiB' if n >= 2**30 else f'{n / 2**20:.1f} MiB' if n >= 2**20 else f'{n:.0f} bytes'

