"""``--mode=eval`` and ``--mode=sample`` on the last checkpoint of a run (1-D toy targets: exact metrics).

The learned schedule at K steps is read off the learned length function (method.md section 3),
``t_k = Lambda^{-1}(k Lambda / K)``, never by sub-sampling the training grid.
"""
import os

import jax
import numpy as np
from absl import logging

from configs.base import validate
from ddm.paths import make_path
from ddm.targets import make_target
from eval import plots, sampling, toy
from schedule import baselines, fit, records
from train import checkpoints, data, loop, model as model_lib, state as state_lib

LEARNED = 'learned'
METRICS = {'log_likelihood': 'max', 'kl': 'min', 'w1': 'min'}  # which way is better


def learned_length(state) -> fit.LengthFunction:
  """``Lambda_hat`` through the learned schedule's points: ``[0, cumsum sqrt(L_i)]`` at ``state.schedule``."""
  return fit.LengthFunction.from_step_costs(state.schedule, state.step_costs)


def restore(config, workdir):
  """``(path, model, state)`` from the latest checkpoint in ``workdir``; a clear error when there is none."""
  path, shape = make_path(config.sde), data.data_shape(config)
  model = model_lib.make_model(config, path, shape, state_lib.stream_key(config.seed, 'init'))
  template = loop.initial_state(config, path, model)
  state = None
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    checkpoints.check_compatible(workdir, config)
    state = checkpoints.restore_latest(checkpoints.manager(workdir, config.train.keep_checkpoints), template)
  if state is None:
    raise ValueError(f'--workdir={workdir} holds no checkpoint; train first: '
                     f'python main.py --config=... --workdir={workdir}')
  return path, model, jax.device_get(state)


def schedule_for(name, num_steps, path, state):
  """The ``num_steps``-step schedule ``name`` ('learned' or a baseline): f32[K+1]."""
  if name == LEARNED:
    if int(state.num_updates) == 0:
      raise ValueError('the run has no learned schedule yet (no schedule update happened); '
                       'train longer or evaluate baselines only')
    return learned_length(state).schedule(num_steps)
  return baselines.make_baseline(name, path, num_steps, 'config.eval.schedules').t


def _check_toy(config, mode):
  if config.data.dataset != 'toy':
    raise ValueError(f'--mode={mode} is available for config.data.dataset=\'toy\' only so far '
                     f'(got {config.data.dataset!r})')


def evaluate(config, workdir):
  """Samples every schedule in ``config.eval.schedules`` at every K in ``config.eval.num_steps``; writes
  ``eval.json``, ``eval.md`` (best per column in bold) and ``eval_density.png``."""
  validate(config, workdir, 'eval')
  _check_toy(config, 'eval')
  path, model, state = restore(config, workdir)
  target, shape = make_target(config.data), data.data_shape(config)
  draw = sampling.make_draw(config, path, model)
  key = state_lib.stream_key(config.seed, 'eval')
  results, densities = {}, {}
  for name in config.eval.schedules:
    for k in config.eval.num_steps:
      ts = schedule_for(name, k, path, state)
      x = draw(state.ema_params, ts, jax.random.fold_in(key, k), config.eval.num_samples, shape)
      results.setdefault(name, {})[str(k)] = toy.metrics(target, x)
      if k == min(config.eval.num_steps):
        densities[f'{name}, K={k}'] = x[:, 0]
      logging.info('%s K=%d: %s', name, k, results[name][str(k)])
  record = {'step': int(state.step), 'sampler': config.eval.sampler, 'num_samples': config.eval.num_samples,
            'results': results}
  records.write_json(record, os.path.join(workdir, 'eval.json'))
  with open(os.path.join(workdir, 'eval.md'), 'w') as f:
    f.write(markdown_tables(results, config.eval.num_steps))
  plots.plot_densities(os.path.join(workdir, 'eval_density.png'), densities, toy.density_curve(target))
  return record


def markdown_tables(results: dict, num_steps) -> str:
  """One table per metric: schedules as rows, K as columns, the best of each column in bold."""
  out = []
  for metric, better in METRICS.items():
    out += [f'### {metric} ({"higher" if better == "max" else "lower"} is better)', '',
            '| schedule | ' + ' | '.join(f'K={k}' for k in num_steps) + ' |',
            '|---|' + '---|' * len(num_steps)]
    best = {k: (max if better == 'max' else min)(r[str(k)][metric] for r in results.values()) for k in num_steps}
    for name, row in results.items():
      cells = [f'**{row[str(k)][metric]:.4g}**' if row[str(k)][metric] == best[k] else f'{row[str(k)][metric]:.4g}'
               for k in num_steps]
      out.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    out.append('')
  return '\n'.join(out)


def sample(config, workdir):
  """Writes ``samples_<schedule>_<K>.npz`` and ``.png`` (an image grid, or a histogram over the true density
  on toy targets) for ``config.eval.schedules[0]`` at ``config.eval.num_steps[0]`` steps with
  ``config.eval.sampler``."""
  validate(config, workdir, 'sample')
  path, model, state = restore(config, workdir)
  name, k = config.eval.schedules[0], config.eval.num_steps[0]
  ts = schedule_for(name, k, path, state)
  draw = sampling.make_draw(config, path, model)
  x = draw(state.ema_params, ts, state_lib.stream_key(config.seed, 'sample'), config.eval.num_samples,
           data.data_shape(config))
  stem = os.path.join(workdir, f'samples_{name}_{k}')
  np.savez(stem + '.npz', x=x, t=np.asarray(ts), sigma=np.asarray(path.sigma(ts)))
  if config.data.dataset == 'toy':
    plots.plot_densities(stem + '.png', {f'{name}, K={k}': x[:, 0]}, toy.density_curve(make_target(config.data)))
  else:
    plots.save_image_grid(stem + '.png', x[:256], columns=16, scale=max(1, 64 // x.shape[1]))
  logging.info('wrote %s.npz and .png', stem)
  return x
