"""Compares training runs: ``python -m tools.compare --workdirs=a,b --out=f.png [--metrics=...]``.

Toy runs: ``f.png`` plots metrics against training step from each run's ``eval_history.json`` (the paper's
bimodal figure), ``f_density.png`` each run's last samples (``samples.npz``) over the true density (the paper's
Cantor figure); it prints the final metrics with the mass each run puts near the target's modes.

Image runs: ``f.png`` plots TensorBoard scalars against training step, read from each run's event files
(default ``schedule/length`` and ``schedule/energy``: the paper's MNIST figure), ``f_costs.png`` the incremental
costs of each run's final schedule (``schedule.json``); it prints the final value of every metric.
"""
import os

import ml_collections
import numpy as np
from absl import app, flags

from configs import validate
from ddm.targets import make_target
from eval import plots, toy
from ddm import files
from modes import train_report
from train import checkpoints

flags.DEFINE_list('workdirs', None, 'Run directories to compare.')
flags.DEFINE_string('out', 'compare.png', 'Output PNG.')
flags.DEFINE_list('metrics', None, 'Toy runs: metrics of eval_history.json (default log_likelihood, score_error); '
                  'image runs: TensorBoard scalar tags (default schedule/length, schedule/energy).')
TOY_METRICS = ['log_likelihood', 'score_error']
IMAGE_METRICS = ['schedule/length', 'schedule/energy']


def tensorboard_history(workdir: str, tags) -> list:
  """``[{'step': s, tag: value, ...}]`` over the steps at which every tag was logged, from the event files in
  ``workdir`` (a resumed run's files together; a step logged twice keeps its last value)."""
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(os.fspath(workdir), size_guidance={'scalars': 0, 'images': 1})
  acc.Reload()
  missing = [t for t in tags if t not in acc.Tags()['scalars']]
  if missing:
    raise ValueError(f'{workdir} has no TensorBoard scalars {missing}; it has: {", ".join(acc.Tags()["scalars"])}')
  values = {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags}
  steps = sorted(set.intersection(*(set(v) for v in values.values())))
  return [dict(step=s, **{t: values[t][s] for t in tags}) for s in steps]


def _load_samples(path) -> np.ndarray:
  with path.open('rb') as f, np.load(f) as npz:
    return npz['x'][:, 0]


def compare_toy(workdirs, names, out, metrics):
  histories = {name: files.read_json(files.as_path(w) / train_report.HISTORY_FILE, train_report.HISTORY_FIX)
               for name, w in zip(names, workdirs)}
  plots.plot_histories(out, histories, metrics)
  stored = validate.upgrade(files.read_json(files.as_path(workdirs[0]) / checkpoints.CONFIG_FILE, checkpoints.CONFIG_FIX))
  target = make_target(ml_collections.ConfigDict(stored).data)
  samples = {name: _load_samples(files.as_path(w) / 'samples.npz') for name, w in zip(names, workdirs)}
  plots.plot_densities(out.replace('.png', '_density.png'), samples, toy.density_curve(target))
  for name, history in histories.items():
    masses = toy.mode_masses(target, samples[name][:, None], min(8, len(target.weights)))
    print(name, {m: round(history[-1][m], 5) for m in metrics}, 'at step', history[-1]['step'],
          '| mass near each coarse mode:', np.round(masses, 3))


def compare_images(workdirs, names, out, metrics):
  histories = {name: tensorboard_history(w, metrics) for name, w in zip(names, workdirs)}
  plots.plot_histories(out, histories, metrics)
  records = {name: files.read_json(files.as_path(w) / 'schedule.json', 'rerun training (it rewrites schedule.json)')
             for name, w in zip(names, workdirs)}
  plots.plot_step_costs(out.replace('.png', '_costs.png'),
                        {f"{name} (length {r['length']:.4g}, energy {r['energy']:.4g})": np.asarray(r['incremental_costs'])
                         for name, r in records.items()})
  for name, history in histories.items():
    print(name, {m: round(history[-1][m], 5) for m in metrics}, 'at step', history[-1]['step'])


def main(argv):
  del argv
  workdirs = flags.FLAGS.workdirs
  names = [files.as_path(w).name for w in workdirs]
  stored = files.read_json(files.as_path(workdirs[0]) / checkpoints.CONFIG_FILE, checkpoints.CONFIG_FIX)
  if stored['data']['dataset'] == 'toy':
    compare_toy(workdirs, names, flags.FLAGS.out, flags.FLAGS.metrics or TOY_METRICS)
  else:
    compare_images(workdirs, names, flags.FLAGS.out, flags.FLAGS.metrics or IMAGE_METRICS)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdirs'])
  app.run(main)
