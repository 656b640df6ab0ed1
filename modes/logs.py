"""Where a run's log goes: the terminal (absl) and ``<workdir>/log.txt``, with the libraries' chatter held back.

Orbax and TFDS log through absl at INFO (orbax's lines were 90 of 97 lines of a smoke run); below WARNING
they are dropped unless ``--verbosity`` is 1 or more (absl's DEBUG), the same rule for the terminal and the file.
"""
import contextlib
import logging as py_logging
import os

import jax
from absl import logging

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


@contextlib.contextmanager
def to_workdir(workdir: str, verbosity: int = 0):
  """Appends every log record of the block to ``<workdir>/log.txt`` (process 0 only: the others' lines are
  on their own terminals), in absl's format. Entered only after a run's checks, so a refused run leaves the
  workdir untouched."""
  if jax.process_index() != 0:
    yield None
    return
  os.makedirs(workdir, exist_ok=True)
  handler = py_logging.FileHandler(os.path.join(workdir, LOG_FILE), mode='a', encoding='utf-8')
  handler.setFormatter(logging.PythonFormatter())
  handler.addFilter(QuietLibraries(verbosity))
  logger = logging.get_absl_logger()
  logger.addHandler(handler)
  try:
    yield handler.baseFilename
  finally:
    logger.removeHandler(handler)
    handler.close()
