"""``--mode=fit_schedule``: the score-optimal schedule of a target with a known score (method.md section 4)."""
import os

import jax
from absl import logging

from configs.base import validate
from ddm.paths import make_path
from ddm.targets import make_target
from eval import plots
from ddm.registry import BASELINES
from schedule import baselines, costs, fit, records


def fit_exact(config, path, target, key):
  """Fits the ``config.schedule.num_steps``-step schedule for the exact score of ``target``.

  Returns ``(ts f32[T+1], LengthFunction)``.
  """
  rate_fn = costs.make_rate_fn(config.schedule.cost)
  sample_pt = lambda k, t: target.sample_pt(k, path, t)
  rate_on_grid = jax.jit(lambda grid, k: costs.rate_on_grid(
      rate_fn, target.score_fn(path), path, sample_pt, grid, k, config.schedule.num_samples))
  keys = iter(jax.random.split(key, config.schedule.fit_iterations))
  init = baselines.make_baseline(config.schedule.init, path, config.schedule.num_steps).t
  return fit.fit(lambda grid: rate_on_grid(grid, next(keys)), init, config.schedule.num_steps,
                 config.schedule.fit_grid, config.schedule.fit_iterations)


def fit_schedule(config, workdir):
  """Writes ``schedule.json``, ``schedule.png`` and ``costs.png`` into ``workdir``."""
  validate(config, workdir, 'fit_schedule')
  path, target = make_path(config.sde), make_target(config.data)
  ts, lam = fit_exact(config, path, target, jax.random.PRNGKey(config.seed))
  os.makedirs(workdir, exist_ok=True)
  record = records.schedule_record(path, ts, lam.step_costs(ts), config.schedule.cost)
  records.write_json(record, os.path.join(workdir, 'schedule.json'))

  num_steps = config.schedule.num_steps
  ladders = {'score-optimal': path.sigma(ts)}
  step_costs = {'score-optimal': lam.step_costs(ts)}
  for name in BASELINES.names():
    base = baselines.make_baseline(name, path, num_steps, 'baseline')
    ladders[name], step_costs[name] = base.sigma, lam.step_costs(base.t)
  plots.plot_ladders(os.path.join(workdir, 'schedule.png'), ladders, 'score-optimal')
  plots.plot_step_costs(os.path.join(workdir, 'costs.png'), step_costs, 'score-optimal')
  logging.info('fitted %d-step schedule: length %.4f, energy %.4f (lower bound length^2 = %.4f)',
               num_steps, record['length'], record['energy'], record['length']**2)
  return record
