"""``--mode=fit_schedule``: a K-step schedule for a score, found by ``config.fit.method``.

The score is the exact one of a toy target (a workdir with no checkpoint, or ``config.model.exact_score``),
or the trained model of the workdir's last checkpoint (any config, images included), as the paper does for
pre-trained models (method.md section 4). Every search (:data:`schedule.searches.SEARCHES`) sees the same
:class:`schedule.searches.Problem`; its result is stored in ``<workdir>/schedules/<name>.json``
(:func:`schedule.schedules.save`), so ``--mode=eval`` and ``--mode=sample`` can use it by name.
"""

import jax
import jax.numpy as jnp
from absl import logging

from configs.validate import validate
from ddm import files, streams
from ddm.paths import make_path
from ddm.registry import BASELINES
from ddm.targets import make_target
from eval import frechet, plots, sampling
from modes import logs, workdir as workdir_lib
from schedule import baselines, schedules, searches, store
from schedule.searches import ddss, fewstep, problem as problem_lib
from schedule.searches.problem import Problem
from train import data

DATA_POOL = 4096  # Data examples held in memory to draw x0 from (forward-process samples of p_t).


def checkpoint_problem(config, workdir, restored=None) -> Problem:
  """The trained model of ``workdir``'s last checkpoint (``restored``: :func:`modes.workdir.restore`'s answer when
  already read); ``p_t`` from the data through the forward process (``config.fit.samples='data'``) or from the
  model's own reverse process (``'model'``, no data read: :func:`eval.sampling.with_model_samples`)."""
  path, model, state = restored or workdir_lib.restore(config, workdir)
  params = state.ema_params
  score_fn = model.score(params, path)
  denoise_fn = lambda x, t: model.denoise(params, x, t)
  if config.fit.samples == 'model':
    shape = tuple(data.data_shape(config.data))
    problem = Problem(path, shape, score_fn, denoise_fn, None, None, model=model, params=params)
    return sampling.with_model_samples(config.eval, problem, streams.key(config.seed, 'model_samples'))
  pool = jnp.asarray(data.example_pool(config.data, config.train.batch_size, config.seed, DATA_POOL))
  sample_x0 = lambda key, n: pool[jax.random.randint(key, (n,), 0, pool.shape[0])]
  return Problem(path, tuple(pool.shape[1:]), score_fn, denoise_fn, sample_x0,
                 problem_lib.forward_sampler(path, sample_x0), model=model, params=params)


def exact_problem(config, path) -> Problem:
  """The closed-form score of the toy target ``config.data`` on ``path`` (method.md section 7)."""
  return problem_lib.exact(make_target(config.data), path)


def make_problem(config, workdir, restored=None) -> Problem:
  path = make_path(config.sde)
  if workdir_lib.has_checkpoint(workdir) and not config.model.exact_score:
    return checkpoint_problem(config, workdir, restored)
  if config.data.dataset == 'toy':
    return exact_problem(config, path)
  raise files.InputError(f'--mode=fit_schedule needs a trained checkpoint in --workdir={workdir} for '
                   f'config.data.dataset={config.data.dataset!r} (only toy targets have an exact score); train '
                   f'first: python main.py --config=... --workdir={workdir}')


def ddss_loss(config, workdir, problem: Problem, key) -> dict:
  """DDSS's loss (:mod:`schedule.searches.ddss`): the exact quantile W2 to the true density on toy targets
  (a trained model's checkpoint too), else KID in the offline classifier's features against
  ``config.fit.ddss.batch_size`` fixed data examples (``key``: the search key's first half, which picks them)."""
  batch = int(config.fit.ddss.batch_size)
  if problem.target is not None or config.data.dataset == 'toy':
    target = problem.target if problem.target is not None else make_target(config.data)
    return dict(loss_name='w2_squared', loss_fn=ddss.quantile_w2_loss(target, batch))
  from eval import classifier  # trains on first use
  features, _ = classifier.get_feature_fn(config.data, config.eval.classifier_steps, config.seed, workdir)
  x = problem.sample_x0(jax.random.split(key)[0], batch)
  return dict(loss_name='kid_classifier', loss_fn=frechet.kid_loss(features, jax.jit(features)(x)))


def polish_start(config, workdir, learned):
  """The ladder ``config.fit.polish.start`` names (:func:`schedule.schedules.resolve`: a baseline, 'learned' or a
  stored name), holding every K the polish stores; else one error naming the setting and what it can be."""
  name, path = config.fit.polish.start, make_path(config.sde)
  held = store.names(workdir)
  if name not in (schedules.LEARNED,) + tuple(BASELINES.names()) + tuple(held):
    raise files.InputError(f'config.fit.polish.start={name!r} is no ladder: allowed: {schedules.LEARNED}, a baseline '
                           f'({", ".join(BASELINES.names())}) or a schedule stored in --workdir={workdir} (stored: '
                           f'{", ".join(held) or "none"})')
  if name == schedules.LEARNED and learned is None:
    raise files.InputError(f'config.fit.polish.start={name!r}: --workdir={workdir} has no learned schedule (no '
                           'checkpoint, or no schedule update happened); name a baseline or a stored schedule')
  start = schedules.resolve(name, path, workdir, learned)
  ks = fewstep.steps_wanted(config.eval, searches.problem.solver_name(config.fit, config.eval))
  missing = [k for k in ks if not start.has(k)]
  if missing:
    raise files.InputError(f'config.fit.polish.start={name!r} holds no ladder for K = '
                           f'{", ".join(map(str, missing))} (of config.eval.step_counts / config.eval.nfe with '
                           f'config.fit.sampler); it holds K = {", ".join(map(str, sorted(start.ladders)))}: '
                           'evaluate those K, or start from a baseline')
  return start


def search(config, workdir, problem: Problem, key, start=None):
  """``config.fit.method``'s search on ``problem``: a :class:`schedule.searches.Result` (``start``: the ladder a
  polish starts from, :func:`polish_start`)."""
  extra = ddss_loss(config, workdir, problem, key) if config.fit.method == 'ddss' else {}
  if config.fit.method == 'score_optimal':
    extra = dict(sigma_data=config.model.sigma_data)
  if config.fit.method == 'polish':
    extra = dict(start_name=config.fit.polish.start, start=start)
  return searches.SEARCHES[config.fit.method](config.fit, config.schedule, config.eval, problem, key, **extra)


def fit_schedule(config, workdir):
  """Fits, stores ``schedules/<name>.json``, and writes the ``config.fit.ladder_steps``-step record and its plots
  as ``fits/<name>.json``, ``fits/<name>_schedule.png`` and ``fits/<name>_costs.png`` into ``workdir``: beside a
  training run's own ``schedule.json`` and plots (never over them), one set per fitted name."""
  validate(config, workdir, 'fit_schedule')
  polishing = config.fit.method == 'polish'
  # the checkpoint is read once: for the model's score and for its learned schedule (a polish start, the record's
  # reference costs); an exact-score fit reads it only to polish the learned schedule
  restored = (workdir_lib.restore(config, workdir) if workdir_lib.has_checkpoint(workdir) and (
      not config.model.exact_score or (polishing and config.fit.polish.start == schedules.LEARNED)) else None)
  learned = workdir_lib.learned_length(restored[2]) if restored else None
  start = polish_start(config, workdir, learned) if polishing else None
  problem = make_problem(config, workdir, restored)  # refuses a workdir without a checkpoint (non-toy) first
  with logs.to_workdir(workdir, logging.get_verbosity()):
    return _fit_schedule(config, workdir, problem, start, learned)


def _fit_schedule(config, workdir, problem, start, learned):
  fit_cfg, cost = config.fit, config.schedule.cost
  num_steps = fit_cfg.ladder_steps
  result = search(config, workdir, problem, streams.key(config.seed, streams.SEARCH), start)
  # fewstep and polish are always made for a solver; trajectory when config.fit.sampler names one
  solver = searches.problem.solver_name(fit_cfg, config.eval)
  mmd = 'mmd_' if fit_cfg.fewstep.objective == 'mmd' else ''   # a fewstep or polish of the other objective
  solver = {'fewstep': mmd + solver, 'polish': f'{mmd}{fit_cfg.polish.start}_{solver}', 'trajectory': fit_cfg.sampler}
  name = fit_cfg.name or store.default_name(fit_cfg.method, cost, fit_cfg.refine, solver.get(fit_cfg.method, ''))
  workdir = files.as_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  stored = schedules.save(workdir, name, result.schedule, fit_cfg.method, cost, **result.meta)
  if isinstance(result.schedule, schedules.LengthFunction):
    lam, reference = result.schedule, {}
    ts = lam.steps(num_steps)
  else:
    ladders = result.schedule.ladders
    ts = ladders[num_steps] if num_steps in ladders else ladders[max(ladders)]
    lam, reference = _reference_length(config, problem, workdir, learned)
    reference = dict(costs_from=reference)
  path = problem.path
  record = store.schedule_record(path, ts, lam.step_costs(ts), cost)
  record.update(method=fit_cfg.method, name=name, **reference, **result.meta)
  out = workdir / 'fits'
  out.mkdir(parents=True, exist_ok=True)
  files.write_json(record, out / f'{name}.json')

  ladders = {name: path.sigma(ts)}
  step_costs = {name: lam.step_costs(ts)}
  for base_name in BASELINES.names():
    base = baselines.make_baseline(base_name, path, len(ts) - 1, 'baseline')
    ladders[base_name], step_costs[base_name] = path.sigma(base), lam.step_costs(base)
  plots.plot_ladders(out / f'{name}_schedule.png', ladders, name)
  plots.plot_step_costs(out / f'{name}_costs.png', step_costs, name)
  logging.info('stored %s; %d-step schedule: length %.4f, energy %.4f (lower bound length^2 = %.4f)',
               stored, len(ts) - 1, record['length'], record['energy'], record['length']**2)
  return record


def _reference_length(config, problem, workdir, learned):
  """``(length function, what it is)``: the step costs reported for a searched (non-length) schedule, which only
  the record and its cost plot use. The corrector fit this workdir already stores (``schedules/corrector.json``,
  perhaps of an earlier checkpoint), else the training run's learned schedule (its online estimate of
  ``config.schedule.cost``, free; only when the run was trained with that cost), else a corrector fit (seconds
  on a toy, long on an image model)."""
  if 'corrector' in store.names(workdir):
    stored = schedules.stored(workdir, 'corrector')
    if isinstance(stored, schedules.LengthFunction):
      return stored, 'schedules/corrector.json'
  trained = (workdir_lib.stored_config(workdir) or {}).get('schedule', {}).get('cost')
  if learned is not None and problem.model is not None and trained == config.schedule.cost:
    return learned, f'the checkpoint\'s learned schedule ({trained} cost)'
  cost_cfg, fit_cfg = config.schedule.copy_and_resolve_references(), config.fit.copy_and_resolve_references()
  cost_cfg.cost, fit_cfg.refine = 'corrector', False
  return searches.score_optimal.search(fit_cfg, cost_cfg, config.eval, problem,
                                       streams.key(config.seed, streams.SEARCH_REFERENCE),
                                       sigma_data=config.model.sigma_data).schedule, 'corrector fit'

