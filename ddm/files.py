"""The files a run writes: every JSON and text file is written atomically (a crash never leaves half a file),
and read with a message that names a damaged file and what to do about it.

Paths are ``etils.epath.Path``: a workdir may be local or remote (``gs://``, ``s3://``, ... wherever epath's
backends are installed), through the same code.
"""
import json
import os

from etils import epath


class InputError(ValueError):
  """Bad input (a setting, a workdir, a data set) or a damaged file, with a message naming it and the fix:
  raised before any compute, and printed by ``main.py`` as one ``error:`` line without a traceback."""


def as_path(path) -> epath.Path:
  """``path`` (a string or a path) as an ``epath.Path``; a local one made absolute (orbax needs that)."""
  path = epath.Path(path)
  return path if is_remote(path) else path.resolve()


def is_remote(path) -> bool:
  """Whether ``path`` names a remote file system (``gs://bucket/...``): no local locks, appends or fsync."""
  return '://' in os.fspath(path)


def user_cache(*parts: str) -> str:
  """``$XDG_CACHE_HOME/score_schedules/<parts>`` (default ``~/.cache/...``): caches that live outside workdirs
  (prepared data sets, compiled programs)."""
  cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(cache, 'score_schedules', *parts)


def write_json(record: dict, filename):
  """Writes atomically (temporary file, then rename), so a crash never leaves a half-written file. Non-finite
  numbers are written as ``NaN`` / ``Infinity`` (Python's ``json`` reads them back)."""
  write_text(json.dumps(record, indent=1), filename)


def write_text(text: str, filename):
  """Writes ``text`` atomically (temporary file, then rename; an object store's upload is atomic itself)."""
  filename = epath.Path(filename)
  tmp = filename.with_name(f'{filename.name}.tmp{os.getpid()}')  # per process: writers never share one
  try:
    with tmp.open('w') as f:
      f.write(text)
      if not is_remote(tmp):
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(filename)
  finally:
    if tmp.exists():
      tmp.unlink()


def read_json(filename, fix: str = 'delete it, or restore it from a backup'):
  """The JSON in ``filename``; a damaged file (truncated, not JSON) raises ``InputError`` naming the file and
  ``fix`` (what the user can do about it) instead of an anonymous ``JSONDecodeError``."""
  try:
    return json.loads(epath.Path(filename).read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InputError(f'{filename} is damaged ({type(e).__name__}: {e}); {fix}') from None
