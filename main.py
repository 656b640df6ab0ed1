"""Entry point: ``python main.py --config=configs/toy1d.py --workdir=runs/toy1d [--mode=train]``.

Kept short on purpose: each mode is one function of :mod:`modes`, importable and tested.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from configs import base
from configs import validate
from configs.validate import KIND_NAMES, fields, unknown_field
from ddm import files
from modes import compile_cache, distributed, evaluate, fit_schedule, logs, sample, train

# mode -> runner(config, workdir)
MODES = {
    'train': train.train_and_evaluate,
    'eval': evaluate.evaluate,
    'sample': sample.sample,
    'fit_schedule': fit_schedule.fit_schedule,
}
assert tuple(MODES) == validate.MODES  # the names are validate's (checked before any compute); the runners are here

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:options]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, logs, schedules, plots.')
flags.DEFINE_enum('mode', 'train', list(MODES), 'What to do with the config and workdir.')
flags.mark_flags_as_required(['config', 'workdir'])


BAD_INPUT = 2  # exit status of a refused run (absl's own usage errors use 1; shells use 2 for bad usage)


def refuse(lines):
  """Prints each of ``lines`` as one ``error:`` line on stderr and exits with :data:`BAD_INPUT`."""
  for line in lines:
    print(f'error: {line}', file=sys.stderr)
  sys.exit(BAD_INPUT)


def _root_cause(e):
  while e.__cause__ is not None or e.__context__ is not None:
    e = e.__cause__ or e.__context__
  return e


def _config_flag(argv):
  return next((a.split('=', 1)[1] for a in argv[1:] if a.startswith('--config=')), None)


def flag_error(e, argv) -> str:
  """One line for what absl refused while parsing ``argv``: a config file that does not load, a value that is
  not of its field's type, an unknown mode or flag, a missing required flag."""
  cause = _root_cause(e)
  config_file = _config_flag(argv)
  if isinstance(cause, files.InputError):  # raised by the config file itself (e.g. an unknown option)
    return f'--config={config_file}: {cause}'
  if isinstance(cause, (FileNotFoundError, IsADirectoryError)) or (
      config_file and not os.path.isfile(config_file.split(':', 1)[0])):
    return (f'--config={config_file}: no such config file; give one of configs/*.py, e.g. '
            '--config=configs/toy1d.py (options after a colon: configs/toy1d.py:smoke)')
  text = str(e).splitlines()[0] if str(e) else type(e).__name__
  if text.startswith('flag --config.'):
    setting = text[len('flag --config.'):].split(':', 1)[0]
    dotted, _, value = setting.partition('=')
    default = fields(base.get_config()).get(dotted)
    need = (f'a tuple, e.g. --config.{dotted}="{tuple(default)!r}"' if isinstance(default, (tuple, list))
            else KIND_NAMES.get(type(default), 'another value'))
    return f'--config.{dotted}={value!r}; need {need} ({text.split(": ", 1)[-1]})'
  if text.startswith(('flag --workdir=None', 'flag --config=None')):
    name = text.split('=', 1)[0][len('flag '):]
    return f'{name} is required, e.g. --config=configs/toy1d.py --workdir=runs/toy1d'
  if text.startswith('flag --mode='):
    return f'--mode={text.split("=", 1)[1].split(":")[0]!r}; allowed: {", ".join(MODES)} ({text})'
  if type(e).__name__ == 'UnsupportedOperationError':  # a field type the command line cannot set
    return f'{text.split(". Currently")[0]}; set it in a config file'
  return text


def parse_flags(argv):
  """absl's flag parsing, every refusal one ``error:`` line (exit status :data:`BAD_INPUT`): a mistyped or
  moved config field (the section's valid fields and a "did you mean", or the field's new name), a value of
  the wrong type, a config file or option that does not load; never a traceback."""
  try:
    parsed = FLAGS(argv)
    FLAGS.config.keys()  # a config file that failed to load raises on first use, not in FLAGS(argv)
  except (AttributeError, KeyError) as e:
    for arg in argv[1:]:
      if arg.startswith('--config.'):
        message = unknown_field(arg[len('--config.'):].split('=', 1)[0])
        if message:
          refuse([message])
    refuse([flag_error(e, argv)])
  except Exception as e:  # absl's flag errors, and whatever a config file raised while it was loaded
    if '--verbosity=1' in argv or '-v=1' in argv:
      raise
    refuse([flag_error(e, argv)])
  return parsed


def main(argv):
  del argv
  logs.quiet_libraries(logging.get_verbosity())  # orbax and TFDS below WARNING only with --verbosity >= 1
  logging.info('mode=%s workdir=%s', FLAGS.mode, FLAGS.workdir)
  cache = None
  try:
    distributed.initialize(FLAGS.config)  # first: JAX's distributed runtime must start before anything else
    cache = compile_cache.enable(FLAGS.config.compile_cache)  # before the first compilation
    MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir)
  except files.InputError as e:
    if logging.get_verbosity() >= logging.DEBUG:
      raise
    refuse(getattr(e, 'problems', None) or [str(e)])  # names the setting or file and the fix; no traceback
  finally:
    if cache is not None:
      logging.info('compilation cache: %s', cache)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
