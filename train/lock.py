"""One training process per workdir: an exclusive ``flock`` on ``<workdir>/train.lock``.

The operating system releases the lock when its holder exits in any way (crash, ``kill -9``, pre-emption), so
a lock is never left stale; the holder's description stays in the file until a clean exit removes it, and a
process that finds such a file from a holder that died takes the lock over with a log line.
"""
import contextlib
import datetime
import fcntl
import json
import os
import socket

from absl import logging

from ddm import files

LOCK_FILE = 'train.lock'


def _describe() -> dict:
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'since': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}


def _holder(fd) -> str:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 4096).decode(errors='replace').strip()
  try:
    info = json.loads(text)
    return f"pid {info['pid']} on {info['host']}, running since {info['since']}"
  except (ValueError, KeyError, TypeError):
    return repr(text[:200]) if text else ''


@contextlib.contextmanager
def hold(workdir):
  """Holds the workdir's lock for the ``with`` block; ``ValueError`` naming the holder if another process
  has it. The lock file is written only once the lock is ours, so a refused process changes nothing.

  A remote workdir (``gs://...``) has no ``flock``: it is not locked (a warning says so); keeping one
  training job per remote workdir is then the user's part, as in score_sde and big_vision."""
  if files.is_remote(workdir):
    logging.warning('--workdir=%s is remote: it cannot be locked against a second training process', workdir)
    yield
    return
  filename = os.path.join(files.as_path(workdir), LOCK_FILE)
  while True:
    fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = _holder(fd)
      os.close(fd)
      raise files.InputError(f'--workdir={workdir} is in use by another training process ({holder or "unknown"}; lock '
                       f'{filename}); nothing was changed. Wait for it to finish, stop it (SIGTERM saves a '
                       'checkpoint first), or give another --workdir') from None
    try:
      same = os.fstat(fd).st_ino == os.stat(filename).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)  # the previous holder removed the file between our open and our lock: lock the new one
  try:
    previous = _holder(fd)
    if previous:
      logging.warning('%s was left by %s, which ended without releasing it (crashed or killed): taking it over',
                      filename, previous)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(_describe()).encode())
    os.fsync(fd)
    yield
  finally:
    with contextlib.suppress(OSError):
      os.remove(filename)  # still ours: nobody else can lock the file until we close it
    os.close(fd)
