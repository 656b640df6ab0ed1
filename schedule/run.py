"""``--mode=fit_schedule``: a K-step schedule for a score, found by ``config.schedule.method``.

The score is the exact one of a toy target (a workdir with no checkpoint), or the trained model of the
workdir's last checkpoint (any config, images included), as the paper does for pre-trained models
(method.md section 4). Every method sees the same :class:`Problem` and its result is stored in
``<workdir>/schedules/<name>.json`` (:mod:`schedule.store`), so ``--mode=eval`` and ``--mode=sample``
can use it by name.
"""
import importlib
import os
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from configs.base import validate
from ddm.paths import Path, make_path
from ddm.registry import BASELINES
from ddm.targets import GaussianMixture, make_target
from eval import plots
from schedule import baselines, costs, fit, predictor, records, store

# config.schedule.method -> 'module:function(config, problem, key) -> Result'
METHODS = {
    'score_optimal': 'schedule.run:score_optimal',
    'dp_elbo': 'schedule.dp_elbo:search',
    'ddss': 'schedule.ddss:search',
}
DATA_POOL = 4096  # Data examples held in memory to draw x0 from (forward-process samples of p_t).


class Problem(NamedTuple):
  """What a schedule search may use.

  Attributes:
    path: the diffusion path. data_shape: per-example shape S.
    score_fn: ``(x f32[B, *S], t f32[B]) -> f32[B, *S]``; denoise_fn: same signature, ``D(x, t)``.
    sample_x0: ``(key, n) -> f32[n, *S]``: data (or, with ``config.schedule.samples='model'``, model samples).
    sample_pt: ``(key, t f32[n]) -> f32[n, *S]``: draws of ``p_t``, each at its own time.
    target: the toy target when the score is exact (closed-form ground truth), else None.
    model, params: the trained :class:`train.model.Model` and its EMA parameters (None for exact scores).
    workdir: the run directory (cached evaluation features live there), or None.
  """
  path: Path
  data_shape: tuple
  score_fn: Callable
  denoise_fn: Callable
  sample_x0: Callable
  sample_pt: Callable
  target: Optional[GaussianMixture] = None
  model: Any = None
  params: Any = None
  workdir: Optional[str] = None


class Result(NamedTuple):
  """A method's answer: a length function (any K can be read off it) or ``{K: f[K+1]}`` ladders."""
  lam: Optional[fit.LengthFunction] = None
  ladders: Optional[dict] = None
  meta: dict = {}


def forward_sampler(path: Path, sample_x0: Callable) -> Callable:
  """``sample_pt(key, t) = alpha(t) x0 + sigma(t) eps`` with ``x0 = sample_x0``: f32[n, *S]."""
  def sample_pt(key, t):
    key_x0, key_eps = jax.random.split(key)
    x0 = sample_x0(key_x0, t.shape[0])
    bcast = (-1,) + (1,) * (x0.ndim - 1)
    return path.alpha(t).reshape(bcast) * x0 + path.sigma(t).reshape(bcast) * jax.random.normal(key_eps, x0.shape)
  return sample_pt


def exact_problem(config, path) -> Problem:
  """The closed-form score of the toy target ``config.data`` (method.md section 7)."""
  target = make_target(config.data)
  return Problem(path, (1,), target.score_fn(path), lambda x, t: target.denoiser(x, t, path), target.sample_p0,
                 lambda k, t: target.sample_pt(k, path, t), target=target)


def data_pool(config, size: int = DATA_POOL) -> np.ndarray:
  """``f32[size, *S]`` training examples, read once through the training pipeline."""
  from train import data
  it, out, have = data.make_train_iterator(config, 0), [], 0
  while have < size:
    x = next(it)['x']
    out.append(x)
    have += x.shape[0]
  return np.concatenate(out)[:size]


def checkpoint_problem(config, workdir) -> Problem:
  """The trained model of ``workdir``'s last checkpoint; ``p_t`` from the data through the forward process
  (``config.schedule.samples='data'``) or from the model's own reverse process (``'model'``, no data read:
  :func:`with_model_samples`)."""
  from eval.run import restore
  path, model, state = restore(_training_config(config, workdir), workdir)
  params = state.ema_params
  score_fn = model.score_fn(params, path)
  denoise_fn = lambda x, t: model.denoise(params, x, t)
  if config.schedule.samples == 'model':
    from train import data
    shape = tuple(data.data_shape(config))
    problem = Problem(path, shape, score_fn, denoise_fn, None, None, model=model, params=params, workdir=workdir)
    return with_model_samples(config, problem, jax.random.fold_in(jax.random.PRNGKey(config.seed), 6))
  pool = jnp.asarray(data_pool(config))
  sample_x0 = lambda key, n: pool[jax.random.randint(key, (n,), 0, pool.shape[0])]
  return Problem(path, tuple(pool.shape[1:]), score_fn, denoise_fn, sample_x0, forward_sampler(path, sample_x0),
                 model=model, params=params, workdir=workdir)


def _training_config(config, workdir):
  """``config`` with the run's own training schedule size ``T`` (from ``<workdir>/config.json``), so the
  checkpoint restores whatever ``K = config.schedule.num_steps`` the fit is asked for."""
  from train import checkpoints
  stored = checkpoints.stored_config(workdir)
  if stored is None:
    return config
  trained = stored.get('schedule', {}).get('num_steps')
  config = config.copy_and_resolve_references()
  if isinstance(trained, int):
    config.schedule.num_steps = trained
  return config


MODEL_POOL_STEPS = 256      # Steps of the fine (log-linear) schedule the model's reverse process is run on.
MODEL_POOL = 32768          # Trajectories kept: every grid time reuses them, so their count sets the Monte
                            # Carlo error of the whole fit (4096 put a 10-step Cantor ladder 9% off, 32768 1%).
MODEL_POOL_BYTES = 2**29    # Memory bound of the stored trajectories (the pool shrinks for large images)...
MODEL_POOL_MIN = 64         # ...but holds at least this many trajectories.


def with_model_samples(config, problem: Problem, key, pool_size: int = MODEL_POOL) -> Problem:
  """``problem`` with ``sample_x0`` and ``sample_pt`` drawn from the model's own reverse process.

  ``pool_size`` trajectories of ``config.eval.sampler`` (its Langevin settings included) are run from the prior
  on a ``MODEL_POOL_STEPS``-step log-linear schedule and every state is kept (:func:`ddm.samplers.make_trajectory`).
  A draw of ``p_t`` takes a random trajectory's state at the first fine point ``t_j >= t``, ``j >= 1``, and moves
  it to ``t`` with one more interior step of the same sampler (the identity when ``t = t_j``; at ``t_0`` a step
  from ``t_1``, so that ``p_{t_0}`` keeps its noise); ``sample_x0`` is the trajectory's end (the sampler's output,
  whose last step is the denoiser). The pool shrinks so the states fit ``MODEL_POOL_BYTES``.
  """
  from ddm import samplers
  from ddm.paths import per_example
  path, score_fn, shape = problem.path, problem.score_fn, tuple(problem.data_shape)
  ev = config.eval
  ts = baselines.make_baseline('log_linear', path, MODEL_POOL_STEPS).t
  per_trajectory = (MODEL_POOL_STEPS + 1) * int(np.prod(shape)) * 4
  n = int(min(pool_size, max(MODEL_POOL_MIN, MODEL_POOL_BYTES // per_trajectory)))
  trajectory = jax.jit(samplers.make_trajectory(ev.sampler, path, score_fn, langevin_snr=ev.langevin_snr,
                                                langevin_steps=ev.langevin_steps))
  key_prior, key_walk = jax.random.split(key)
  batch, chunks = int(ev.batch_size), []
  for start in range(0, n, batch):
    m = min(batch, n - start)
    x1 = samplers.prior_sample(path, jax.random.fold_in(key_prior, start), (m,) + shape)
    chunks.append(trajectory(jax.random.fold_in(key_walk, start), ts, x1))
  states = jnp.concatenate(chunks, axis=1)                                   # [MODEL_POOL_STEPS + 1, n, *S]
  x0 = states[0]                                                             # the samples (denoised last step)
  step_fn = samplers.SAMPLERS.get(ev.sampler, 'config.eval.sampler').step
  dyn = samplers._Dynamics(path, score_fn, float(ev.langevin_snr), int(ev.langevin_steps))

  def sample_x0(key, m):
    return x0[jax.random.randint(key, (m,), 0, n)]

  def sample_pt(key, t):
    t = jnp.asarray(t, states.dtype)
    key_i, key_step = jax.random.split(key)
    j = jnp.clip(jnp.searchsorted(ts, t, side='left'), 1, MODEL_POOL_STEPS)      # states[0] is the sample
    x = states[j, jax.random.randint(key_i, t.shape, 0, n)]
    move = lambda xi, tj, ti, ki: step_fn(dyn, xi[None], tj, ti, ki)[0]
    moved = jax.vmap(move)(x, ts[j], t, jax.random.split(key_step, t.shape[0]))
    return jnp.where(per_example(ts[j] == t, x), x, moved)

  return problem._replace(sample_x0=sample_x0, sample_pt=sample_pt)


def has_checkpoint(workdir) -> bool:
  return os.path.isdir(os.path.join(workdir, 'checkpoints'))


def make_problem(config, workdir) -> Problem:
  path = make_path(config.sde)
  if has_checkpoint(workdir) and not config.model.exact_score:
    return checkpoint_problem(config, workdir)
  if config.data.dataset == 'toy':
    return exact_problem(config, path)._replace(workdir=workdir)
  raise ValueError(f'--mode=fit_schedule needs a trained checkpoint in --workdir={workdir} for '
                   f'config.data.dataset={config.data.dataset!r} (only toy targets have an exact score); train '
                   f'first: python main.py --config=... --workdir={workdir}')


def score_optimal(config, problem: Problem, key) -> Result:
  """Algorithm 1 on a fine grid (method.md section 4) with the rate of ``config.schedule.cost``.

  'corrector': ``delta`` of ``L_c``; 'predictor': ``E[kappa]^(1/p)`` of ``L_p`` for
  ``config.schedule.predictor`` (:mod:`schedule.predictor`; equal-length steps are then steps of equal
  ``L_p``), evaluated in chunks of ``config.schedule.cost_batch_size`` examples. Networks must be twice
  differentiable for the predictor cost (checked first, with a message naming ``config.schedule.cost``).
  """
  sch = config.schedule
  start = time.perf_counter()
  if sch.cost == 'predictor':
    check_predictor_cost(problem, key)
  rate_fn = costs.make_rate_fn(sch)
  if sch.cost == 'predictor':  # nested derivatives: compiled once, alone, for one chunk
    score, params = problem.score_fn, None
    if problem.model is not None and problem.params is not None:  # parameters as arguments, not constants
      score, params = (lambda params: problem.model.score_fn(params, problem.path)), problem.params
    rate_on_grid = costs.host_rate_on_grid(rate_fn, score, problem.path, problem.sample_pt, sch.num_samples,
                                           costs.order(sch), params)
  else:
    rate_on_grid = jax.jit(lambda grid, k: costs.rate_on_grid(
        rate_fn, problem.score_fn, problem.path, problem.sample_pt, grid, k, sch.num_samples, costs.order(sch)))
  keys = iter(jax.random.split(key, sch.fit_iterations))
  init = baselines.make_baseline(sch.init, problem.path, sch.num_steps).t
  _, lam = fit.fit(lambda grid: rate_on_grid(grid, next(keys)), init, sch.num_steps, sch.fit_grid,
                   sch.fit_iterations)
  # One rate (a jvp of the score; L_p: the predictor's nested derivatives) per sample per grid point per pass.
  return Result(lam=lam, meta=dict(time_s=time.perf_counter() - start,
                                   rate_evaluations=int(sch.fit_iterations * sch.fit_grid * sch.num_samples)))


def check_predictor_cost(problem: Problem, key, num_probes: int = 8):
  """The predictor cost needs second derivatives of the score in x: a network (``problem.model``) is probed
  with perturbed parameters (:func:`schedule.predictor.check_model`), any other non-exact score at draws of
  ``p_t``; the closed-form scores of toy targets are smooth and pass."""
  if problem.model is not None:
    predictor.check_model(problem.model, problem.path, problem.data_shape, key)
  elif problem.target is None:
    t = jnp.linspace(0.2, 0.8, num_probes)
    x = problem.sample_pt(key, t)
    predictor.require_twice_differentiable(problem.score_fn, x, t, key, 'the score')


def fit_exact(config, path, target, key):
  """The score-optimal ``config.schedule.num_steps``-step schedule of ``target``'s exact score:
  ``(ts f32[T+1], LengthFunction)``."""
  del target  # config.data names it
  lam = score_optimal(config, exact_problem(config, path), key).lam
  return lam.schedule(config.schedule.num_steps), lam


def search(config, problem: Problem, key) -> Result:
  module, function = METHODS[config.schedule.method].split(':')
  return getattr(importlib.import_module(module), function)(config, problem, key)


def fit_schedule(config, workdir):
  """Fits, stores ``schedules/<name>.json``, and writes ``schedule.json``, ``schedule.png`` and ``costs.png``
  for ``config.schedule.num_steps`` steps into ``workdir``."""
  validate(config, workdir, 'fit_schedule')
  problem = make_problem(config, workdir)
  sch = config.schedule
  num_steps = sch.num_steps
  result = search(config, problem, jax.random.PRNGKey(config.seed))
  name = sch.name or store.default_name(sch.method, sch.cost)
  os.makedirs(workdir, exist_ok=True)
  if result.lam is not None:
    lam = result.lam
    stored = store.save_length(workdir, name, lam, sch.method, sch.cost, **result.meta)
    ts = lam.schedule(num_steps)
  else:
    stored = store.save_ladders(workdir, name, result.ladders, sch.method, sch.cost, **result.meta)
    ts = result.ladders[num_steps] if num_steps in result.ladders else result.ladders[max(result.ladders)]
    lam = _reference_length(config, problem)
  path = problem.path
  record = records.schedule_record(path, ts, lam.step_costs(ts), sch.cost)
  record.update(method=sch.method, name=name, **result.meta)
  records.write_json(record, os.path.join(workdir, 'schedule.json'))

  ladders = {name: path.sigma(ts)}
  step_costs = {name: lam.step_costs(ts)}
  for base_name in BASELINES.names():
    base = baselines.make_baseline(base_name, path, len(ts) - 1, 'baseline')
    ladders[base_name], step_costs[base_name] = base.sigma, lam.step_costs(base.t)
  plots.plot_ladders(os.path.join(workdir, 'schedule.png'), ladders, name)
  plots.plot_step_costs(os.path.join(workdir, 'costs.png'), step_costs, name)
  logging.info('stored %s; %d-step schedule: length %.4f, energy %.4f (lower bound length^2 = %.4f)',
               stored, len(ts) - 1, record['length'], record['energy'], record['length']**2)
  return record


def _reference_length(config, problem):
  """The corrector length function, to report the step costs of a searched (non-length) schedule."""
  ref = config.copy_and_resolve_references()
  ref.schedule.cost = 'corrector'
  return score_optimal(ref, problem, jax.random.PRNGKey(config.seed + 1)).lam
