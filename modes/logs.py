"""Where a run's log goes: the terminal (absl) and ``<workdir>/log.txt``, with the libraries' chatter held back.

Orbax and TFDS log through absl at INFO (orbax's lines were 90 of 97 lines of a smoke run); below WARNING
they are dropped unless ``--verbosity`` is 1 or more (absl's DEBUG), the same rule for the terminal and the file.
"""
import contextlib
import logging as py_logging
import os
import tempfile

import jax
from absl import logging

from ddm import files

LOG_FILE = 'log.txt'
NOISY = (f'{os.sep}orbax{os.sep}', f'{os.sep}tensorflow_datasets{os.sep}')  # path parts of the libraries held back


class QuietLibraries(py_logging.Filter):
  """Drops records below WARNING that come from a file under one of :data:`NOISY`'s folders."""

  def __init__(self, verbosity: int = 0):
    super().__init__()
    self.verbosity = int(verbosity)

  def filter(self, record) -> bool:
    if self.verbosity >= 1 or record.levelno >= py_logging.WARNING:
      return True
    return not any(part in record.pathname for part in NOISY)


def quiet_libraries(verbosity: int) -> QuietLibraries:
  """Installs (once) the filter on absl's terminal handler; returns it (its verbosity updated)."""
  handler = logging.get_absl_handler()
  for f in handler.filters:
    if isinstance(f, QuietLibraries):
      f.verbosity = int(verbosity)
      return f
  f = QuietLibraries(verbosity)
  handler.addFilter(f)
  return f


def _take_back(log_file, size):
  """``log_file`` as it was before the block: cut back to ``size`` bytes, or removed (None: it was not there)."""
  if size is None:
    log_file.unlink(missing_ok=True)
  else:
    os.truncate(log_file, size)


@contextlib.contextmanager
def to_workdir(workdir, verbosity: int = 0):
  """Appends every log record of the block to ``<workdir>/log.txt`` (process 0 only: the others' lines are
  on their own terminals), in absl's format. Entered only after a run's checks; a refusal from inside the
  block (a ``files.InputError``: a checkpoint of another config, a damaged file) takes back what the block
  appended, so a refused run leaves the workdir untouched."""
  if jax.process_index() != 0:
    yield None
    return
  log_file = files.as_path(workdir) / LOG_FILE
  log_file.parent.mkdir(parents=True, exist_ok=True)
  remote = files.is_remote(log_file)
  size = os.path.getsize(log_file) if not remote and log_file.exists() else None
  if remote:  # object stores do not append: log to a local copy, uploaded when the block ends
    local = tempfile.NamedTemporaryFile('wb', suffix='_' + LOG_FILE, delete=False)
    local.write(log_file.read_bytes() if log_file.exists() else b'')
    local.close()
  handler = py_logging.FileHandler(local.name if remote else log_file, mode='a', encoding='utf-8')
  handler.setFormatter(logging.PythonFormatter())
  handler.addFilter(QuietLibraries(verbosity))
  logger = logging.get_absl_logger()
  logger.addHandler(handler)
  refused = False
  try:
    yield log_file
  except files.InputError:
    refused = True
    raise
  finally:
    logger.removeHandler(handler)
    handler.close()
    if remote:
      if not refused:
        log_file.write_bytes(open(local.name, 'rb').read())
      os.remove(local.name)
    elif refused:
      _take_back(log_file, size)
