"""``--mode=eval`` on the checkpoints of a run (``config.eval.checkpoints``: by default the last one; 'new'
every one not yet evaluated with these settings; one record per checkpoint and sampler under ``<workdir>/eval/``).

``evaluate`` samples with every schedule of ``config.eval.schedules`` at every K of ``config.eval.step_counts``
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
import functools
import json
import os
import time

import jax
import numpy as np
from absl import logging
from etils import epath

from configs.validate import checkpoint_steps, validate
from ddm import files, streams
from eval import likelihood as likelihood_lib, metrics as metrics_lib, plots, sampling, tables, toy
from modes import logs, progress, workdir as workdir_lib
from schedule import schedules as schedules_lib, store
from train import checkpoints, data
from train.writers import MetricWriter

GRID_PER_SCHEDULE = 16          # images per schedule in eval_samples.png
EVAL_DIR = 'eval'               # <workdir>/eval/<step>_<sampler>.{json,md,png} and the TensorBoard events
RECORD_FIX = 'move it away to evaluate that checkpoint again (the other records are kept)'


def sample_cells(config, schedules, columns, draw, params, cell_metrics, shape):
  """Every (schedule, K) cell, ``config.eval.seeds`` sample sets each: ``(results {name: {K: row}}, figures
  {name: samples of the first column's first seed}, timings {name/K: seconds})``. Seed ``s`` of column K draws
  from ``fold_in(fold_in(key('eval'), K), s)``: the same noises for every schedule."""
  key, seeds, n = streams.key(config.seed, 'eval'), int(config.eval.seeds), int(config.eval.num_samples)
  is_toy = config.data.dataset == 'toy'
  results, figures, timings = {}, {}, {}
  # searched schedules (dp_elbo, ddss) exist for their stored K only
  cells = [(name, k, e) for name, schedule in schedules.items() for k, e in columns if schedule.has(k)]
  for name, schedule in schedules.items():
    missing = [k for k, _ in columns if not schedule.has(k)]
    if missing:  # a '-' in the table: say why, and how to fill it
      logging.warning("schedule '%s' has no ladder at K = %s (a search stores the K it was run for): its cells "
                      "are left empty; rerun its --mode=fit_schedule with those K to fill them", name,
                      ', '.join(map(str, missing)))
  work, done, started = sum(e for _, _, e in cells), 0, time.time()  # a cell's time goes as its NFE
  for i, (name, k, evaluations) in enumerate(cells):
    schedule = schedules[name]
    ts = np.asarray(schedule.steps(k))
    start, per_seed = time.time(), []
    for s in range(seeds):
      x = draw(params, ts, jax.random.fold_in(jax.random.fold_in(key, k), s), n, shape)
      per_seed.append(cell_metrics(x))
      if s == 0 and k == columns[0][0]:
        figures[name] = x[:, 0] if is_toy else x[:GRID_PER_SCHEDULE]
    timings[f'{name}/{k}'] = time.time() - start
    row = dict(tables.summarise(per_seed), nfe=evaluations)
    results.setdefault(name, {})[str(k)] = row
    done += evaluations
    eta = (time.time() - started) / done * (work - done)
    logging.info('%s K=%d NFE=%d: %s (%.1f s)  [cell %d/%d, ETA %s]', name, k, evaluations,
                 {m: v for m, v in row.items() if m not in ('per_seed', 'nfe')}, timings[f'{name}/{k}'],
                 i + 1, len(cells), progress.format_duration(eta))
  return results, figures, timings


def evaluate(config, workdir):
  """Evaluates the checkpoints of ``config.eval.checkpoints`` (:func:`checkpoints_to_evaluate`), oldest first.

  Each one: samples every schedule at every column of :func:`modes.workdir.step_counts`, ``config.eval.seeds``
  times with ``config.eval.num_samples`` samples each, and writes ``eval/<step>_<sampler>.json`` and ``.md``
  (mean and spread per cell; a best cell in bold only when it beats the runner-up by more than their spreads;
  the sample-size floor underneath), its figure ``eval/<step>_<sampler>.png`` (toy densities or image grids),
  and TensorBoard scalars at the training step (``eval/<metric>/<schedule>/<sampler>_K<k>``, or ``_NFE<n>``
  with ``config.eval.nfe``). The last one evaluated is also ``eval.json``, ``eval.md`` and
  ``eval_density.png`` / ``eval_samples.png`` in the workdir. Returns the last record.

  A cell whose samples hold any non-finite value is non-finite (NaN in JSON, "diverged" in markdown)."""
  validate(config, workdir, 'eval')
  steps = checkpoints_to_evaluate(config, workdir)
  # what can refuse the run from the workdir's files alone, before log.txt is opened there
  checkpoints.check_compatible(workdir, config, stored=workdir_lib.stored_config(workdir))
  schedules_lib.check_names(config.eval.schedules, workdir)
  with logs.to_workdir(workdir, logging.get_verbosity()):
    if not steps:  # the stored record becomes the workdir's latest table again (this sampler's, not another's)
      stem = os.fspath(record_file(workdir, workdir_lib.checkpoint_steps(config, workdir)[-1], config))[:-5]
      logging.info('every checkpoint of %s is evaluated with these settings (%s.json); '
                   'config.eval.checkpoints=all evaluates them again', workdir, stem)
      record = files.read_json(stem + '.json', RECORD_FIX)
      if jax.process_index() == 0:
        _to_top(workdir, stem, config.data.dataset == 'toy')
      return record
    record = None
    for i, step in enumerate(steps):
      logging.info('evaluating checkpoint %s (%d of %d)', 'latest' if step is None else step, i + 1, len(steps))
      record = evaluate_checkpoint(config, workdir, step)
    return record


def record_file(workdir, step: int, config) -> epath.Path:
  return files.as_path(workdir) / EVAL_DIR / f'{int(step)}_{config.eval.sampler}.json'


def settings(config, workdir) -> dict:
  """What makes two evaluations of a checkpoint the same one (JSON-comparable)."""
  names = list(config.eval.schedules)
  if schedules_lib.FITTED in names:  # 'fitted' means the schedules stored now: a new fit is a new evaluation
    names += [f'{schedules_lib.FITTED}:{n}' for n in store.names(workdir)]
  return {'sampler': config.eval.sampler, 'schedules': names,
          'num_samples': int(config.eval.num_samples), 'seeds': int(config.eval.seeds),
          'columns': [list(c) for c in workdir_lib.step_counts(config.eval)]}


def checkpoints_to_evaluate(config, workdir) -> list:
  """The training steps ``config.eval.checkpoints`` selects: 'last' (default; ``[None]``: the latest good
  checkpoint, falling back past a damaged one), 'new' (every checkpoint without a record of these
  :func:`settings` in ``<workdir>/eval/``), 'all', or listed steps (each must have a checkpoint). Reads nothing but file
  names and earlier records: a bad selection stops before any compute."""
  available = workdir_lib.checkpoint_steps(config, workdir)
  if not available:
    raise files.InputError(f'--workdir={workdir} holds no checkpoint; train first: '
                     f'python main.py --config=... --workdir={workdir}')
  choice, listed = config.eval.checkpoints, checkpoint_steps(config.eval.checkpoints)
  if listed is not None:
    missing = [s for s in listed if s not in available]
    if missing:
      raise files.InputError(f'config.eval.checkpoints={choice!r} names steps without a checkpoint ({missing}); '
                       f'the checkpoints of {workdir} are at steps {", ".join(map(str, available))}')
    return sorted(set(listed))
  if choice == 'last':
    return [None]
  if choice == 'all':
    return available
  wanted = json_normalised(settings(config, workdir))
  return [s for s in available if not (record_file(workdir, s, config).exists() and json_normalised(
      files.read_json(record_file(workdir, s, config), RECORD_FIX).get('settings')) == wanted)]


def json_normalised(value):
  return json.loads(json.dumps(value))


def evaluate_checkpoint(config, workdir, step=None) -> dict:
  """One checkpoint (``step``; None: the latest good one): the table, its files and TensorBoard points."""
  columns = workdir_lib.step_counts(config.eval)
  path, model, state = workdir_lib.restore(config, workdir, step)
  names = workdir_lib.schedule_names(config, workdir, state)
  # every name resolves (or stops with a clear message) before any sampling
  learned = workdir_lib.learned_length(state)
  schedules = {name: schedules_lib.resolve(name, path, workdir, learned) for name in names}
  other_solver = {name: s.sampler for name, s in schedules.items()
                  if getattr(s, 'sampler', '') and s.sampler != config.eval.sampler}
  for name, made_for in other_solver.items():
    logging.warning('schedule %r was searched for config.fit.sampler=%r and is evaluated with config.eval.sampler=%r',
                    name, made_for, config.eval.sampler)
  examples = functools.partial(data.example_pool, config.data, config.train.batch_size, config.seed)
  metrics, cell_metrics, target, feature_info = metrics_lib.metric_fn(config.eval, config.data, config.seed, workdir,
                                                                      examples)
  results, figures, timings = sample_cells(config, schedules, columns, sampling.make_draw(config.eval, path, model),
                                           state.ema_params, cell_metrics, data.data_shape(config.data))
  seeds, n = int(config.eval.seeds), int(config.eval.num_samples)
  record = {'step': int(state.step), 'sampler': config.eval.sampler, 'num_samples': n, 'seeds': seeds,
            'columns': [{'num_steps': k, 'nfe': e} for k, e in columns], 'by_nfe': bool(len(config.eval.nfe)),
            'unreachable_nfe': {str(n): why for n, why in workdir_lib.unreachable_nfe(config.eval).items()},
            'searched_for_another_solver': other_solver,
            'metrics': metrics, 'settings': settings(config, workdir),
            'spread': 'standard deviation over seeds (ddof=1)', 'results': results, 'sampling_seconds': timings}
  record['floor'] = metrics_lib.floor(config.eval, metrics, cell_metrics, target, examples,
                                      streams.key(config.seed, 'floor'))
  if feature_info:
    record['feature_network'] = feature_info
  if metrics.get('fd_classifier'):
    record['note'] = ("fd_classifier: Frechet distance in the features of the project's own classifier "
                      '(no Inception weights); not comparable with FID')
  if config.eval.likelihood:
    record['likelihood'] = likelihood_lib.data_likelihood(
        config.eval, config.data, path, model.score(state.ema_params, path),
        examples(config.eval.likelihood_samples), streams.key(config.seed, 'likelihood'))
    logging.info('likelihood: %s', record['likelihood'])
  stem = os.fspath(record_file(workdir, record['step'], config))[:-len('.json')]  # + '.json', '.md', '.png'
  if jax.process_index() != 0:  # every process drew its share of the samples; one writes the record
    return record
  epath.Path(stem).parent.mkdir(parents=True, exist_ok=True)
  _keep_earlier(stem)
  files.write_json(record, stem + '.json')
  files.write_text(tables.markdown_report(record), stem + '.md')
  k0 = columns[0][0]
  if target is not None:
    plots.plot_densities(stem + '.png', {f'{n_}, K={k0}': v for n_, v in figures.items()},
                         toy.density_curve(target))
  else:
    plots.save_schedule_grids(stem + '.png', {f'{n_}, K={k0}': v for n_, v in figures.items()})
  _to_top(workdir, stem, target is not None)
  _to_tensorboard(workdir, record, stem + '.png')
  logging.info('wrote %s.json, .md and .png', stem)
  return record


def _to_top(workdir, stem, is_toy):
  """The record ``stem`` also at the top of the workdir (``eval.json``, ``eval.md``, the figure), where tables
  are copied from."""
  top = files.as_path(workdir)
  for ext, name in (('.json', 'eval.json'), ('.md', 'eval.md'),
                    ('.png', 'eval_density.png' if is_toy else 'eval_samples.png')):
    epath.Path(stem + ext).copy(top / name, overwrite=True)


def _keep_earlier(stem):
  """An earlier record of the same checkpoint and sampler (other settings) is renamed ``<stem>.<n>.*``, kept."""
  if not epath.Path(stem + '.json').exists():
    return
  n = 1
  while epath.Path(f'{stem}.{n}.json').exists():
    n += 1
  for ext in ('.json', '.md', '.png'):
    if epath.Path(stem + ext).exists():
      epath.Path(stem + ext).replace(f'{stem}.{n}{ext}')


def _to_tensorboard(workdir, record, png):
  """Scalars at the checkpoint's training step. Each schedule is its own TensorBoard run (``eval/<schedule>``)
  with the tags ``eval/<metric>/<sampler>_K<k>`` (or ``_NFE<n>``), so one card per metric and column holds a
  line per schedule, over training; the spreads over seeds stay in the JSON record."""
  step, sampler = record['step'], record['sampler']
  for name, row in record['results'].items():
    schedule_writer = MetricWriter(files.as_path(workdir) / EVAL_DIR / name)
    for k, values in row.items():
      column = f'NFE{values["nfe"]}' if record['by_nfe'] else f'K{k}'
      schedule_writer.write_scalars(step, {f'eval/{m}/{sampler}_{column}': values[m] for m in record['metrics']})
    schedule_writer.close()
  writer = MetricWriter(files.as_path(workdir) / EVAL_DIR)
  for m, v in record.get('likelihood', {}).items():
    writer.write_scalars(step, {f'eval/{m}': v})
  writer.write_images(step, {f'eval/samples/{sampler}': plots.read_png(png)})
  writer.close()
