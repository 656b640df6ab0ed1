"""Compares toy runs: ``python -m tools.compare --workdirs=a,b --out=f.png``.

Writes ``f.png``: metrics against training step from each run's ``eval_history.json`` (the paper's bimodal
figure), and ``f_density.png``: each run's last samples (``samples.npz``) over the true density (the
paper's Cantor figure), and prints the final metrics with the mass each run puts near the target's modes.
"""
import os

import ml_collections
import numpy as np
from absl import app, flags

from ddm.targets import make_target
from eval import plots, toy
from ddm import files
from modes import report
from train import checkpoints

flags.DEFINE_list('workdirs', None, 'Run directories to compare.')
flags.DEFINE_string('out', 'compare.png', 'Output PNG.')
flags.DEFINE_list('metrics', ['log_likelihood', 'score_error'], 'Metrics from eval_history.json.')


def main(argv):
  del argv
  histories = {}
  for workdir in flags.FLAGS.workdirs:
    histories[os.path.basename(os.path.normpath(workdir))] = files.read_json(
        os.path.join(workdir, report.HISTORY_FILE), report.HISTORY_FIX)
  plots.plot_histories(flags.FLAGS.out, histories, flags.FLAGS.metrics)
  stored = files.read_json(os.path.join(flags.FLAGS.workdirs[0], checkpoints.CONFIG_FILE), checkpoints.CONFIG_FIX)
  target = make_target(ml_collections.ConfigDict(stored).data)
  samples = {name: np.load(os.path.join(w, 'samples.npz'))['x'][:, 0]
             for name, w in zip(histories, flags.FLAGS.workdirs)}
  plots.plot_densities(flags.FLAGS.out.replace('.png', '_density.png'), samples, toy.density_curve(target))
  for name, history in histories.items():
    masses = toy.mode_masses(target, samples[name][:, None], min(8, len(target.weights)))
    print(name, {m: round(history[-1][m], 5) for m in flags.FLAGS.metrics}, 'at step', history[-1]['step'],
          '| mass near each coarse mode:', np.round(masses, 3))


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdirs'])
  app.run(main)
