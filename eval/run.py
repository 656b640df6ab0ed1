"""``--mode=eval`` and ``--mode=sample`` on the last checkpoint of a run.

``evaluate`` samples with every schedule of ``config.eval.schedules`` at every K of ``config.eval.num_steps``
(or at every NFE of ``config.eval.nfe``, K derived per sampler), ``config.eval.seeds`` times, and writes the
comparison tables with NFE, mean and spread per cell (the paper's Tables 1 and 2): exact KL, W1 and log-likelihood on 1-D toy
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
from ddm import samplers
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


def step_counts(ev) -> list:
  """``[(K, NFE)]`` of the table's columns: ``config.eval.num_steps`` with each K's NFE under
  ``config.eval.sampler``, or ``config.eval.nfe`` with the K that reaches each (a clear error if none does)."""
  if len(ev.nfe):
    return [(samplers.steps_for_nfe(ev.sampler, n, ev.langevin_steps), int(n)) for n in ev.nfe]
  return [(int(k), samplers.nfe(ev.sampler, k, ev.langevin_steps)) for k in ev.num_steps]


def _summary(per_seed: list) -> dict:
  """Mean and spread over seeds of each metric: ``{m, m_std (ddof=1; 0 for one seed), per_seed: {m: [...]},
  nonfinite_fraction}``. A seed with a non-finite value makes the mean non-finite."""
  out, names = {'per_seed': {}}, [m for m in per_seed[0] if m != 'nonfinite_fraction']
  for m in names:
    values = np.array([row[m] for row in per_seed], np.float64)
    finite = bool(np.all(np.isfinite(values)))
    out[m] = float(np.mean(values)) if finite else float('nan')
    out[m + '_std'] = (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0) if finite else float('nan')
    out['per_seed'][m] = values.tolist()
  out['nonfinite_fraction'] = float(np.mean([row.get('nonfinite_fraction', 0.0) for row in per_seed]))
  return out


def toy_floor(target, n: int, seeds: int, key) -> dict:
  """The sample-size floor: the toy metrics of ``n`` exact ``p_0`` samples against the truth, over ``seeds``
  independent draws (what a perfect sampler scores at this n)."""
  return _summary([toy.metrics(target, np.asarray(target.sample_p0(jax.random.fold_in(key, s), n)))
                   for s in range(seeds)])


def evaluate(config, workdir):
  """Samples every schedule at every column of :func:`step_counts`, ``config.eval.seeds`` times with
  ``config.eval.num_samples`` samples each, and writes ``eval.json``, ``eval.md`` (mean and spread per cell; a
  best cell in bold only when it beats the runner-up by more than their spreads; the sample-size floor of
  toy targets underneath), ``eval_density.png`` (toy) or ``eval_samples.png`` (images), and the same figures to
  TensorBoard (``eval/<metric>/<schedule>`` and ``eval/<metric>_std/<schedule>`` against NFE).

  A cell whose samples hold any non-finite value is non-finite (NaN in JSON, "diverged" in markdown)."""
  validate(config, workdir, 'eval')
  columns = step_counts(config.eval)
  path, model, state = restore(config, workdir)
  names = schedule_names(config, workdir, state)
  k_max = max(k for k, _ in columns)
  for name in names:  # every name resolves (or stops with a clear message) before any sampling
    if name != LEARNED:
      schedule_for(name, k_max, path, state, workdir) if _available(name, k_max, workdir) else store.load(workdir, name)
  is_toy, shape = config.data.dataset == 'toy', data.data_shape(config)
  draw = sampling.make_draw(config, path, model)
  key = state_lib.stream_key(config.seed, 'eval')
  seeds, n = int(config.eval.seeds), int(config.eval.num_samples)
  if is_toy:
    target = make_target(config.data)
    metrics = dict(TOY_METRICS)
  else:
    from eval import frechet
    metric, features = image_features(config, workdir)
    mu_ref, cov_ref = reference_statistics(config, workdir, metric, features)
    metrics = {metric: 'min'}

  def cell_metrics(x):
    if is_toy:
      return toy.metrics(target, x)
    bad = toy.nonfinite_fraction(x)
    if bad:  # never fed to the feature network: a NaN image must not become a finite distance
      return {metric: float('nan'), 'nonfinite_fraction': bad}
    mu, cov = frechet.statistics(batched(features, x, config.eval.batch_size))
    return {metric: float(frechet.frechet_distance(mu, cov, mu_ref, cov_ref)), 'nonfinite_fraction': 0.0}

  results, figures, timings = {}, {}, {}
  for name in names:
    for k, evaluations in columns:
      if not _available(name, k, workdir):
        continue
      ts = schedule_for(name, k, path, state, workdir)
      start, per_seed = time.time(), []
      for s in range(seeds):
        x = draw(state.ema_params, ts, jax.random.fold_in(jax.random.fold_in(key, k), s), n, shape)
        per_seed.append(cell_metrics(x))
        if s == 0 and k == columns[0][0]:
          figures[name] = x[:, 0] if is_toy else x[:GRID_PER_SCHEDULE]
      timings[f'{name}/{k}'] = time.time() - start
      row = dict(_summary(per_seed), nfe=evaluations)
      results.setdefault(name, {})[str(k)] = row
      logging.info('%s K=%d NFE=%d: %s (%.1f s)', name, k, evaluations,
                   {m: row[m] for m in metrics}, timings[f'{name}/{k}'])
  record = {'step': int(state.step), 'sampler': config.eval.sampler, 'num_samples': n, 'seeds': seeds,
            'columns': [{'num_steps': k, 'nfe': e} for k, e in columns], 'by_nfe': bool(len(config.eval.nfe)),
            'metrics': metrics,
            'spread': 'standard deviation over seeds (ddof=1)', 'results': results, 'sampling_seconds': timings}
  if is_toy:
    record['floor'] = toy_floor(target, n, seeds, state_lib.stream_key(config.seed, 'floor'))
  if not is_toy and metrics.get('fd_classifier'):
    record['note'] = ("fd_classifier: Frechet distance in the features of the project's own classifier "
                      '(no Inception weights); not comparable with FID')
  if config.eval.likelihood:
    record['likelihood'] = likelihood(config, path, model, state.ema_params,
                                      state_lib.stream_key(config.seed, 'likelihood'))
    logging.info('likelihood: %s', record['likelihood'])
  records.write_json(record, os.path.join(workdir, 'eval.json'))
  records.write_text(markdown_report(record), os.path.join(workdir, 'eval.md'))
  k0 = columns[0][0]
  if is_toy:
    png = os.path.join(workdir, 'eval_density.png')
    plots.plot_densities(png, {f'{n_}, K={k0}': v for n_, v in figures.items()}, toy.density_curve(target))
  else:
    png = os.path.join(workdir, 'eval_samples.png')
    plots.save_schedule_grids(png, {f'{n_}, K={k0}': v for n_, v in figures.items()})
  _to_tensorboard(workdir, record, png)
  return record


def _to_tensorboard(workdir, record, png):
  writer = MetricWriter(os.path.join(workdir, 'eval'))
  for name, row in record['results'].items():
    for values in row.values():
      writer.write_scalars(int(values['nfe']), {f'eval/{m}{suffix}/{name}': values[m + suffix]
                                                for m in record['metrics'] for suffix in ('', '_std')})
  for m, v in record.get('likelihood', {}).items():
    writer.write_scalars(record['step'], {f'eval/{m}': v})
  writer.write_images(record['step'], {'eval/samples': plots.read_png(png)})
  writer.close()


def best_cells(cells: dict, better: str):
  """The key of the best finite cell of ``cells: {key: (mean, std)}`` when it beats the runner-up by more than
  the sum of the two spreads, else None (also when fewer than two cells are finite)."""
  finite = sorted(((m, s, key) for key, (m, s) in cells.items() if np.isfinite(m)),
                  key=lambda c: -c[0] if better == 'max' else c[0])
  if len(finite) < 2:
    return None
  (m0, s0, key), (m1, s1, _) = finite[:2]
  return key if abs(m0 - m1) > s0 + s1 else None


def cell_text(row: dict, metric: str) -> str:
  """``mean ± std`` of ``row[metric]``, or "diverged (x% non-finite)" for a non-finite cell."""
  value = row[metric]
  if not np.isfinite(value):
    bad = row.get('nonfinite_fraction', 0.0)
    return f'diverged ({bad:.0%} non-finite)' if bad else 'non-finite'
  std = row.get(metric + '_std')
  return f'{value:.4g}' if std is None else f'{value:.4g} ± {std:.2g}'


def markdown_report(record: dict) -> str:
  """One table per metric: schedules as rows, (K, NFE) columns, mean ± spread per cell, the best cell of a
  column in bold only when it is better than the runner-up by more than both spreads added."""
  results, out = record['results'], []
  columns = [(c['num_steps'], c['nfe']) for c in record['columns']]
  by_nfe = record.get('by_nfe', False)
  header = [f'NFE={e} (K={k})' if by_nfe else f'K={k} (NFE={e})' for k, e in columns]
  for metric, better in record['metrics'].items():
    out += [f'### {metric} ({"higher" if better == "max" else "lower"} is better)', '',
            '| schedule | ' + ' | '.join(header) + ' |', '|---|' + '---|' * len(columns)]
    best = {k: best_cells({name: (row[str(k)][metric], row[str(k)].get(metric + '_std', 0.0))
                           for name, row in results.items() if str(k) in row}, better) for k, _ in columns}
    for name, row in results.items():
      cells = []
      for k, _ in columns:
        if str(k) not in row:
          cells.append('-')
          continue
        text = cell_text(row[str(k)], metric)
        cells.append(f'**{text}**' if best[k] == name else text)
      out.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    out.append('')
    floor = record.get('floor')
    if floor and metric in floor:
      out += [f'Sample-size floor ({metric} of {record["num_samples"]} exact p_0 samples against the truth): '
              f'{cell_text(floor, metric)}.', '']
  seeds = record.get('seeds', 1)
  out += [f'Each cell: mean ± standard deviation over {seeds} seeds of {record["num_samples"]} samples; bold: '
          'better than the runner-up by more than the two spreads added; "diverged": a seed had non-finite '
          'samples (the share is given).', '']
  if 'note' in record:
    out += [record['note'], '']
  if 'likelihood' in record:
    out += ['Likelihood (probability-flow ODE, independent of the sampling schedule): ' +
            ', '.join(f'{k} = {v:.4g}' for k, v in record['likelihood'].items()), '']
  out.append(f'Step {record["step"]}, sampler {record["sampler"]} (NFE counts every network evaluation of a sample).')
  return '\n'.join(out) + '\n'


def sample(config, workdir):
  """Writes ``samples_<schedule>_<K>.npz`` and ``.png`` (an image grid, or a histogram over the true density
  on toy targets) for ``config.eval.schedules[0]`` (a baseline, 'learned' or a stored schedule's name) at
  the first column of :func:`step_counts` (``config.eval.num_steps[0]`` steps, or the K that reaches
  ``config.eval.nfe[0]``) with ``config.eval.sampler``; the NFE is stored in the ``.npz``."""
  validate(config, workdir, 'sample')
  k, evaluations = step_counts(config.eval)[0]
  path, model, state = restore(config, workdir)
  name = config.eval.schedules[0]
  if name == FITTED:
    raise ValueError("config.eval.schedules[0]='fitted' names a group; --mode=sample needs one schedule: "
                     f'learned, a baseline or a stored name ({", ".join(store.names(workdir)) or "none stored"})')
  ts = schedule_for(name, k, path, state, workdir)
  draw = sampling.make_draw(config, path, model)
  x = draw(state.ema_params, ts, state_lib.stream_key(config.seed, 'sample'), config.eval.num_samples,
           data.data_shape(config))
  stem = os.path.join(workdir, f'samples_{name}_{k}')
  np.savez(stem + '.npz', x=x, t=np.asarray(ts), sigma=np.asarray(path.sigma(ts)), nfe=evaluations)
  if config.data.dataset == 'toy':
    plots.plot_densities(stem + '.png', {f'{name}, K={k} (NFE {evaluations})': x[:, 0]}, toy.density_curve(make_target(config.data)))
  else:
    plots.save_image_grid(stem + '.png', x[:256], columns=16, scale=max(1, 64 // x.shape[1]))
  logging.info('wrote %s.npz and .png (K=%d, NFE=%d)', stem, k, evaluations)
  return x
