"""Entry point: ``python main.py --config=configs/toy1d.py --workdir=runs/toy1d [--mode=train]``.

Kept short on purpose: each mode is one function of :mod:`modes`, importable and tested.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from configs.validate import FIT_STEPS_MESSAGE, unknown_field
from ddm import files
from modes import compile_cache, distributed, evaluate, fit_schedule, logs, sample, train

# mode -> runner(config, workdir)
MODES = {
    'train': train.train_and_evaluate,
    'eval': evaluate.evaluate,
    'sample': sample.sample,
    'fit_schedule': fit_schedule.fit_schedule,
}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:options]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, logs, schedules, plots.')
flags.DEFINE_enum('mode', 'train', list(MODES), 'What to do with the config and workdir.')
flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv):
  """absl's flag parsing, with a mistyped or moved config field reported as such (the section's valid fields
  and a "did you mean", or the field's new name), not as a traceback ending in ``AttributeError: 'lr'``."""
  try:
    parsed = FLAGS(argv)
  except (AttributeError, KeyError) as e:
    for arg in argv[1:]:
      if arg.startswith('--config.'):
        message = unknown_field(arg[len('--config.'):].split('=', 1)[0])
        if message:
          sys.exit(f'error: {message}')
    raise e
  if FLAGS.mode == 'fit_schedule' and any(a.split('=', 1)[0] == '--config.schedule.num_steps' for a in argv[1:]):
    sys.exit(f'error: {FIT_STEPS_MESSAGE}')
  return parsed


def main(argv):
  del argv
  logs.quiet_libraries(logging.get_verbosity())  # orbax and TFDS below WARNING only with --verbosity >= 1
  logging.info('mode=%s workdir=%s', FLAGS.mode, FLAGS.workdir)
  distributed.initialize(FLAGS.config)  # first: JAX's distributed runtime must start before anything else
  cache = compile_cache.enable(FLAGS.config.compile_cache)  # before the first compilation
  try:
    MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir)
  except files.InputError as e:
    if logging.get_verbosity() >= logging.DEBUG:
      raise
    sys.exit(f'error: {e}')  # the message names the setting or file and the fix; the traceback adds nothing
  finally:
    if cache is not None:
      logging.info('compilation cache: %s', cache)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
