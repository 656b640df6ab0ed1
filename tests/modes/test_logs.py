"""The run's log: libraries' INFO held back unless --verbosity asks for it, and <workdir>/log.txt."""
import logging as py_logging

from absl import logging

from modes import logs


def _record(pathname, level=py_logging.INFO):
  return py_logging.LogRecord('absl', level, pathname, 1, 'a message', None, None)


def test_library_info_is_dropped_below_verbosity_one():
  quiet = logs.QuietLibraries(verbosity=0)
  assert not quiet.filter(_record('/site-packages/orbax/checkpoint/checkpoint_manager.py'))
  assert not quiet.filter(_record('/site-packages/tensorflow_datasets/core/dataset_info.py'))
  assert quiet.filter(_record('/site-packages/orbax/checkpoint/x.py', py_logging.WARNING))
  assert quiet.filter(_record('/work/main/modes/train_report.py'))
  assert logs.QuietLibraries(verbosity=1).filter(_record('/site-packages/orbax/checkpoint/x.py'))


def test_log_file_gets_the_blocks_records(tmp_path):
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)
  try:
    with logs.to_workdir(str(tmp_path)) as name:
      logging.info('inside the block')
      logging.warning('a warning')
    logging.info('after the block')
  finally:
    logging.set_verbosity(previous)
  text = (tmp_path / logs.LOG_FILE).read_text()
  assert name == tmp_path / logs.LOG_FILE
  assert 'inside the block' in text and 'a warning' in text and 'after the block' not in text
  assert text.startswith('I') and 'test_logs.py' in text  # absl's format: level, time, file:line
