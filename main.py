"""Entry point: ``python main.py --config=configs/toy1d.py --workdir=runs/toy1d [--mode=train]``.

Kept short on purpose: each mode is one function in the package that owns it, importable and tested.
"""
import importlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from configs.base import MODES, unknown_field

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:options]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, logs, schedules, plots.')
flags.DEFINE_enum('mode', 'train', MODES, 'What to do with the config and workdir.')
flags.mark_flags_as_required(['config', 'workdir'])

# mode -> 'module:function(config, workdir)'
RUNNERS = {
    'train': 'train.loop:train_and_evaluate',
    'eval': 'eval.run:evaluate',
    'sample': 'eval.run:sample',
    'fit_schedule': 'schedule.run:fit_schedule',
}


def parse_flags(argv):
  """absl's flag parsing, with a mistyped config field reported as the section's valid fields (and a
  "did you mean"), not as a traceback ending in ``AttributeError: 'lr'``."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as e:
    for arg in argv[1:]:
      if arg.startswith('--config.'):
        message = unknown_field(arg[len('--config.'):].split('=', 1)[0])
        if message:
          sys.exit(f'error: {message}')
    raise e


def main(argv):
  del argv
  module, function = RUNNERS[FLAGS.mode].split(':')
  logging.info('mode=%s workdir=%s', FLAGS.mode, FLAGS.workdir)
  getattr(importlib.import_module(module), function)(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
