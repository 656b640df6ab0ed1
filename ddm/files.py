"""The files a run writes: every JSON and text file is written atomically (a crash never leaves half a file),
and read with a message that names a damaged file and what to do about it."""
import json
import os


def write_json(record: dict, filename: str):
  """Writes atomically (temporary file, then rename), so a crash never leaves a half-written file. Non-finite
  numbers are written as ``NaN`` / ``Infinity`` (Python's ``json`` reads them back)."""
  write_text(json.dumps(record, indent=1), filename)


def write_text(text: str, filename: str):
  """Writes ``text`` atomically (temporary file, then rename)."""
  tmp = f'{filename}.tmp{os.getpid()}'  # per process: two writers never share a temporary file
  try:
    with open(tmp, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, filename)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_json(filename: str, fix: str = 'delete it, or restore it from a backup'):
  """The JSON in ``filename``; a damaged file (truncated, not JSON) raises ``ValueError`` naming the file and
  ``fix`` (what the user can do about it) instead of an anonymous ``JSONDecodeError``."""
  try:
    with open(filename) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{filename} is damaged ({type(e).__name__}: {e}); {fix}') from None
