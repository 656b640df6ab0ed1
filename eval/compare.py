"""Compares runs over training (the paper's bimodal figure): ``python -m eval.compare --workdirs=a,b --out=f.png``.

Reads each run's ``eval_history.json`` (written at every ``config.train.sample_every`` on toy targets).
"""
import json
import os

from absl import app, flags

from eval import plots

flags.DEFINE_list('workdirs', None, 'Run directories to compare.')
flags.DEFINE_string('out', 'compare.png', 'Output PNG.')
flags.DEFINE_list('metrics', ['log_likelihood', 'score_error'], 'Metrics from eval_history.json.')


def main(argv):
  del argv
  histories = {}
  for workdir in flags.FLAGS.workdirs:
    with open(os.path.join(workdir, 'eval_history.json')) as f:
      histories[os.path.basename(os.path.normpath(workdir))] = json.load(f)
  plots.plot_histories(flags.FLAGS.out, histories, flags.FLAGS.metrics)
  for name, history in histories.items():
    print(name, {m: round(history[-1][m], 5) for m in flags.FLAGS.metrics}, 'at step', history[-1]['step'])


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdirs'])
  app.run(main)
