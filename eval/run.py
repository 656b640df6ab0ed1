"""``--mode=eval`` and ``--mode=sample`` on the last checkpoint of a run.

``evaluate`` samples with every schedule of ``config.eval.schedules`` at every K of ``config.eval.num_steps``
and writes the comparison tables (the paper's Tables 1 and 2): exact KL, W1 and log-likelihood on 1-D toy
targets; on images the FID (Inception-v3 pool3 features, when ``config.eval.inception_path`` holds the
weights) or else the Frechet distance in the features of a classifier the project trains itself
(``fd_classifier``, never called FID). It also reports the model's negative log-likelihood through the
probability-flow ODE, which does not depend on the sampling schedule.

The learned schedule at K steps is read off the learned length function (method.md section 3),
``t_k = Lambda^{-1}(k Lambda / K)``, never by sub-sampling the training grid; schedules stored by
``--mode=fit_schedule`` are read off theirs (or their stored K-step ladders).
"""
import os
import time

import jax
import numpy as np
from absl import logging

from configs.base import validate
from ddm.paths import make_path
from ddm.targets import make_target
from eval import plots, sampling, toy
from schedule import baselines, fit, records, store
from train import checkpoints, data, loop, model as model_lib, state as state_lib
from train.writers import MetricWriter

LEARNED, FITTED = 'learned', 'fitted'
TOY_METRICS = {'log_likelihood': 'max', 'kl': 'min', 'w1': 'min'}  # which way is better
STATS_FOLDER = 'eval_stats'     # cached reference statistics of the data, per feature space
REFERENCE_EXAMPLES = 50_000     # data examples behind the reference statistics (all of them if fewer)
GRID_PER_SCHEDULE = 16          # images per schedule in eval_samples.png


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


def schedule_names(config, workdir, state) -> list:
  """``config.eval.schedules`` with 'fitted' expanded to every stored schedule; 'learned' is dropped (with a
  warning) when the run never updated its schedule, unless it is the only one asked for."""
  names = []
  for name in config.eval.schedules:
    if name == FITTED:
      names += [n for n in store.names(workdir) if n not in names]
    elif name == LEARNED and int(state.num_updates) == 0 and len(config.eval.schedules) > 1:
      logging.warning('the run has no learned schedule (no schedule update happened): not evaluated')
    elif name not in names:
      names.append(name)
  return names


def schedule_for(name, num_steps, path, state, workdir=None):
  """The ``num_steps``-step schedule ``name``: 'learned', a baseline, or one stored in ``workdir``: f[K+1]."""
  if name == LEARNED:
    if int(state.num_updates) == 0:
      raise ValueError('the run has no learned schedule yet (no schedule update happened); '
                       'train longer or evaluate baselines only')
    return np.asarray(learned_length(state).schedule(num_steps))
  from ddm.registry import BASELINES
  if name in BASELINES.names() or workdir is None:
    return np.asarray(baselines.make_baseline(name, path, num_steps, 'config.eval.schedules').t)
  return store.load(workdir, name).schedule(num_steps)


def _available(name, k, workdir):
  """Searched schedules (dp_elbo, ddss) exist for their stored K only."""
  if name == LEARNED or workdir is None or name not in store.names(workdir):
    return True
  return store.load(workdir, name).has(k)


def image_features(config, workdir):
  """``(metric name, features(x) -> f32[B, F])``: Inception pool3 (FID) when its weights are present, else
  the offline classifier's features (``fd_classifier``), labelled as such in every output."""
  weights = config.eval.inception_path
  if weights and os.path.exists(weights):
    from eval import inception
    return 'fid', inception.feature_fn(inception.load_params(weights))
  logging.warning('no Inception weights at config.eval.inception_path=%r: reporting the Frechet distance in '
                  "the features of the project's own classifier (fd_classifier), not FID", weights)
  from eval import classifier
  features, info = classifier.get_feature_fn(config, workdir)
  logging.info('offline feature classifier: %s', info)
  return 'fd_classifier', features


def batched(fn, x, batch: int, key=None):
  """``fn`` over ``x`` in batches of one shape (bounded memory, one compilation; the last batch is padded
  with its own first example and the padding dropped): the outputs concatenated as NumPy. With ``key``,
  ``fn(xb, fold_in(key, i))`` for the batch starting at example ``i``."""
  batch, out = min(batch, len(x)), []
  for i in range(0, len(x), batch):
    xb = x[i:i + batch]
    pad = batch - len(xb)
    if pad:
      xb = np.concatenate([xb, np.repeat(xb[:1], pad, axis=0)])
    args = (xb,) if key is None else (xb, jax.random.fold_in(key, i))
    out.append(np.asarray(fn(*args))[:batch - pad])
  return np.concatenate(out)


def reference_statistics(config, workdir, metric, features):
  """``(mu, cov)`` of the data's features, computed once and cached in ``<workdir>/eval_stats/``."""
  from eval import frechet
  cache = os.path.join(workdir, STATS_FOLDER, f'{metric}_{config.data.dataset}.npz')
  if os.path.exists(cache):
    with np.load(cache) as f:
      return f['mu'], f['cov']
  x = data.example_pool(config, REFERENCE_EXAMPLES)
  mu, cov = frechet.statistics(batched(features, x, config.eval.batch_size))
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  np.savez(cache + '.tmp.npz', mu=mu, cov=cov, num_examples=len(x))
  os.replace(cache + '.tmp.npz', cache)
  return mu, cov


def likelihood(config, path, model, params, key):
  """Mean negative log-likelihood of ``config.eval.likelihood_samples`` data examples through the
  probability-flow ODE: ``{'nll_nats'}`` on toy targets (with the exact ``E[-log p0]`` beside it),
  ``{'bits_per_dim'}`` on 8-bit images (uniformly dequantised)."""
  from eval import likelihood as lik
  x = data.example_pool(config, config.eval.likelihood_samples)
  dim = int(np.prod(x.shape[1:]))
  key_deq, key_ode = jax.random.split(key)
  levels = DEQUANTIZE_LEVELS.get(config.data.dataset, 256)
  if config.data.dataset != 'toy':  # uniform dequantisation over one intensity bin of width 2 / (levels - 1)
    x = x + jax.random.uniform(key_deq, x.shape) * (2.0 / (levels - 1))
  score_fn = model.score_fn(params, path)
  fn = jax.jit(lambda xb, k: lik.log_likelihood(score_fn, path, xb, k, config.eval.likelihood_steps,
                                                probes=config.eval.hutchinson_probes))
  ll = batched(fn, np.asarray(x), config.eval.batch_size, key_ode)
  if config.data.dataset == 'toy':
    target = make_target(config.data)
    return {'nll_nats': float(-ll.mean()), 'exact_nll_nats': float(-np.mean(target.log_prob_data(x)))}
  # P(bin) = p(x) (2 / (levels - 1))^d, so -log2 P / d = -log p / (d ln 2) + log2((levels - 1) / 2).
  offset = np.log2((levels - 1) / 2.0)
  return {'bits_per_dim': float(np.mean(-ll / (dim * np.log(2.0)) + offset))}


DEQUANTIZE_LEVELS = {'digits': 17}  # intensity levels of the data in [-1, 1] (8-bit images: 256)


def evaluate(config, workdir):
  """Samples every schedule at every K; writes ``eval.json``, ``eval.md`` (best per column in bold),
  ``eval_density.png`` (toy) or ``eval_samples.png`` (images), and the same figures to TensorBoard
  (``eval/<metric>/<schedule>`` against K)."""
  validate(config, workdir, 'eval')
  path, model, state = restore(config, workdir)
  names = schedule_names(config, workdir, state)
  for name in names:  # every name resolves (or stops with a clear message) before any sampling
    if name != LEARNED:
      schedule_for(name, max(config.eval.num_steps), path, state, workdir) if _available(
          name, max(config.eval.num_steps), workdir) else store.load(workdir, name)
  is_toy, shape = config.data.dataset == 'toy', data.data_shape(config)
  draw = sampling.make_draw(config, path, model)
  key = state_lib.stream_key(config.seed, 'eval')
  if is_toy:
    target = make_target(config.data)
    metrics = dict(TOY_METRICS)
  else:
    from eval import frechet
    metric, features = image_features(config, workdir)
    mu_ref, cov_ref = reference_statistics(config, workdir, metric, features)
    metrics = {metric: 'min'}
  results, figures, timings = {}, {}, {}
  for name in names:
    for k in config.eval.num_steps:
      if not _available(name, k, workdir):
        continue
      ts = schedule_for(name, k, path, state, workdir)
      start = time.time()
      x = draw(state.ema_params, ts, jax.random.fold_in(key, k), config.eval.num_samples, shape)
      timings[f'{name}/{k}'] = time.time() - start
      if is_toy:
        row = toy.metrics(target, x)
      else:
        mu, cov = frechet.statistics(batched(features, x, config.eval.batch_size))
        row = {metric: float(frechet.frechet_distance(mu, cov, mu_ref, cov_ref))}
      results.setdefault(name, {})[str(k)] = row
      if k == min(config.eval.num_steps):
        figures[name] = x[:, 0] if is_toy else x[:GRID_PER_SCHEDULE]
      logging.info('%s K=%d: %s (%.1f s)', name, k, row, timings[f'{name}/{k}'])
  record = {'step': int(state.step), 'sampler': config.eval.sampler, 'num_samples': config.eval.num_samples,
            'metrics': metrics, 'results': results, 'sampling_seconds': timings}
  if not is_toy and metrics.get('fd_classifier'):
    record['note'] = ("fd_classifier: Frechet distance in the features of the project's own classifier "
                      '(no Inception weights); not comparable with FID')
  if config.eval.likelihood:
    record['likelihood'] = likelihood(config, path, model, state.ema_params,
                                      state_lib.stream_key(config.seed, 'likelihood'))
    logging.info('likelihood: %s', record['likelihood'])
  records.write_json(record, os.path.join(workdir, 'eval.json'))
  with open(os.path.join(workdir, 'eval.md'), 'w') as f:
    f.write(markdown_report(record, config.eval.num_steps))
  k0 = min(config.eval.num_steps)
  if is_toy:
    png = os.path.join(workdir, 'eval_density.png')
    plots.plot_densities(png, {f'{n}, K={k0}': v for n, v in figures.items()}, toy.density_curve(target))
  else:
    png = os.path.join(workdir, 'eval_samples.png')
    plots.save_schedule_grids(png, {f'{n}, K={k0}': v for n, v in figures.items()})
  _to_tensorboard(workdir, record, png)
  return record


def _to_tensorboard(workdir, record, png):
  writer = MetricWriter(os.path.join(workdir, 'eval'))
  for name, row in record['results'].items():
    for k, values in row.items():
      writer.write_scalars(int(k), {f'eval/{m}/{name}': v for m, v in values.items()})
  for m, v in record.get('likelihood', {}).items():
    writer.write_scalars(record['step'], {f'eval/{m}': v})
  writer.write_images(record['step'], {'eval/samples': plots.read_png(png)})
  writer.close()


def markdown_report(record: dict, num_steps) -> str:
  """One table per metric: schedules as rows, K as columns, the best of each column in bold."""
  results, out = record['results'], []
  for metric, better in record['metrics'].items():
    out += [f'### {metric} ({"higher" if better == "max" else "lower"} is better)', '',
            '| schedule | ' + ' | '.join(f'K={k}' for k in num_steps) + ' |',
            '|---|' + '---|' * len(num_steps)]
    pick = max if better == 'max' else min
    best = {k: pick([r[str(k)][metric] for r in results.values() if str(k) in r] or [None]) for k in num_steps}
    for name, row in results.items():
      cells = []
      for k in num_steps:
        value = row.get(str(k), {}).get(metric)
        cells.append('-' if value is None else f'**{value:.4g}**' if value == best[k] else f'{value:.4g}')
      out.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    out.append('')
  if 'note' in record:
    out += [record['note'], '']
  if 'likelihood' in record:
    out += ['Likelihood (probability-flow ODE, independent of the sampling schedule): ' +
            ', '.join(f'{k} = {v:.4g}' for k, v in record['likelihood'].items()), '']
  out.append(f'Step {record["step"]}, sampler {record["sampler"]}, {record["num_samples"]} samples per cell.')
  return '\n'.join(out) + '\n'


def markdown_tables(results: dict, num_steps) -> str:
  """The toy tables of ``results`` alone (no likelihood line)."""
  return markdown_report({'results': results, 'metrics': TOY_METRICS, 'step': 0, 'sampler': '',
                          'num_samples': 0}, num_steps).rsplit('Step 0', 1)[0]


def sample(config, workdir):
  """Writes ``samples_<schedule>_<K>.npz`` and ``.png`` (an image grid, or a histogram over the true density
  on toy targets) for ``config.eval.schedules[0]`` (a baseline, 'learned' or a stored schedule's name) at
  ``config.eval.num_steps[0]`` steps with ``config.eval.sampler``."""
  validate(config, workdir, 'sample')
  path, model, state = restore(config, workdir)
  name, k = config.eval.schedules[0], config.eval.num_steps[0]
  if name == FITTED:
    raise ValueError("config.eval.schedules[0]='fitted' names a group; --mode=sample needs one schedule: "
                     f'learned, a baseline or a stored name ({", ".join(store.names(workdir)) or "none stored"})')
  ts = schedule_for(name, k, path, state, workdir)
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
