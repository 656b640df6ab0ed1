"""Fault injection: kills, signals, divergence, a second writer, damaged files and bad input on a toy run.

    python -m tools.faults [--workdir=/tmp/faults] [--steps=400]

Every scenario runs ``main.py`` on the toy smoke config as a user would (subprocesses), then checks what is
left: a resumed run must end on the same final state as an uninterrupted one (the sha256 of the final
checkpoint's arrays), and a refused run must leave every file of the workdir byte-identical. Prints one
markdown table: scenario, outcome, data lost (must be "nothing" in every row); exits 1 otherwise.
"""
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string('workdir', '', 'Where the scenario runs go (default: a temporary folder, removed after).')
flags.DEFINE_integer('steps', 400, 'Training steps of every run (checkpoints every steps / 4).')


def _main_py(workdir, steps, *extra, signal_at=None, sig=signal.SIGTERM, timeout=900):
  """Runs ``main.py`` on the toy smoke config; with ``signal_at``, sends ``sig`` once that step is logged
  (``'kill'``: SIGKILL). Returns ``(exit status, stderr)``."""
  cmd = [sys.executable, 'main.py', '--config=configs/toy1d.py:smoke', f'--workdir={workdir}',
         f'--config.train.num_train_steps={steps}', f'--config.train.checkpoint_every={steps // 4}',
         '--config.train.log_every=10', f'--config.train.sample_every={steps}', *extra]
  proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if signal_at is not None and f'step {signal_at}/' in line:
      proc.send_signal(signal.SIGKILL if sig == 'kill' else sig)
      signal_at = None
  return proc.wait(timeout=timeout), ''.join(lines)


def _hashes(folder) -> dict:
  return {os.path.relpath(f, folder): hashlib.sha256(open(f, 'rb').read()).hexdigest()
          for f in glob.glob(os.path.join(folder, '**'), recursive=True) if os.path.isfile(f)}


def _final(workdir):
  """``(latest step, sha256 of its arrays)`` of ``workdir``'s checkpoints (None if there is none)."""
  from train import checkpoints
  mngr = checkpoints.manager(workdir, 100, create=False)
  step = mngr.latest_step()
  return None if step is None else (step, (mngr.metadata(step).custom_metadata or {}).get(checkpoints.DIGEST))


def _message(log, expect) -> str:
  """The line of ``log`` that says ``expect`` (not a line of the traceback's source code), or ''."""
  lines = [l.strip() for l in log.splitlines() if expect in l and 'raise ' not in l and "f'" not in l]
  return lines[-1] if lines else ''


def _data_file(workdir, step):
  files = [f for f in glob.glob(os.path.join(workdir, 'checkpoints', str(step), '**'), recursive=True)
           if os.path.isfile(f) and f'{os.sep}d{os.sep}' in f]
  return max(files, key=os.path.getsize)


def _truncate(filename):
  with open(filename, 'rb') as f:
    raw = f.read()
  with open(filename, 'wb') as f:
    f.write(raw[:len(raw) // 2])


def _flip(filename):
  with open(filename, 'rb') as f:
    raw = bytearray(f.read())
  mid = len(raw) // 2
  raw[mid:mid + 64] = bytes(b ^ 0xFF for b in raw[mid:mid + 64])
  with open(filename, 'wb') as f:
    f.write(bytes(raw))


class Scenarios:
  """Each method returns ``(outcome, data lost)``; ``self.reference`` is the uninterrupted run's final state."""

  def __init__(self, root, steps):
    self.root, self.steps = root, steps
    rc, log = _main_py(self._dir('reference'), steps)
    if rc:
      raise SystemExit(f'the reference run failed (exit {rc}):\n{log[-3000:]}')
    self.reference = _final(self._dir('reference'))

  def _dir(self, name):
    return os.path.join(self.root, name)

  def _fresh_copy(self, name):
    dest = self._dir(name)
    shutil.copytree(self._dir('reference'), dest)
    return dest

  def _resumed(self, workdir, outcome):
    rc, log = _main_py(workdir, self.steps)
    final = _final(workdir)
    same = rc == 0 and final == self.reference
    return (f'{outcome}; resumed (exit {rc}) to step {final[0] if final else None}',
            'nothing (final state = uninterrupted run, sha256 equal)' if same else f'DIFFERENT final state {final}')

  def _interrupted(self, name, sig):
    workdir = self._dir(name)
    rc, log = _main_py(workdir, self.steps, signal_at=self.steps // 2 + 10, sig=sig)
    saved = _final(workdir)
    return self._resumed(workdir, f'exit {rc}, newest checkpoint step {saved[0] if saved else None}')

  def kill_9(self):
    return self._interrupted('kill_9', 'kill')

  def sigterm(self):
    return self._interrupted('sigterm', signal.SIGTERM)

  def sigint(self):
    return self._interrupted('sigint', signal.SIGINT)

  def _refused(self, workdir, *extra, expect='', mode='train'):
    before = _hashes(workdir)
    rc, log = _main_py(workdir, self.steps, f'--mode={mode}', *extra)
    message = _message(log, expect)
    unchanged = _hashes(workdir) == before
    outcome = f'refused (exit {rc}): "{message[:110]}"' if rc and message else f'NOT REFUSED as expected (exit {rc})'
    return outcome, 'nothing (every file byte-identical)' if unchanged else 'FILES CHANGED'

  def diverge(self):
    workdir = self._fresh_copy('diverge')
    before = _final(workdir)
    rc, log = _main_py(workdir, self.steps, f'--config.train.num_train_steps={2 * self.steps}',
                       '--config.optim.learning_rate=1e38')
    stopped = _message(log, 'not finite at step')
    after = _final(workdir)
    return (f'stopped (exit {rc}): "{stopped[:120]}"' if rc and stopped else f'NOT STOPPED (exit {rc})',
            'nothing (newest checkpoint still the finite one)' if after == before else f'CHECKPOINT CHANGED {after}')

  def second_writer(self):
    workdir = self._dir('second_writer')
    steps = self.steps
    first = subprocess.Popen([sys.executable, 'main.py', '--config=configs/toy1d.py:smoke', f'--workdir={workdir}',
                              f'--config.train.num_train_steps={steps}', f'--config.train.checkpoint_every={steps // 4}',
                              '--config.train.log_every=10', f'--config.train.sample_every={steps}'],
                             cwd=REPO, stderr=subprocess.PIPE, text=True)
    for line in first.stderr:
      if 'step 10/' in line:
        break
    rc2, log2 = _main_py(workdir, steps)  # the same command twice (another seed is refused anyway)
    first.stderr.read()
    rc1 = first.wait()
    refused = rc2 and _message(log2, 'in use by another training process')
    final = _final(workdir)
    return (f'second refused (exit {rc2}): "{refused[:90]}"; first finished (exit {rc1})' if refused else f'SECOND NOT REFUSED (exit {rc2})',
            'nothing (first run = uninterrupted run)' if rc1 == 0 and final == self.reference else f'DIFFERENT {final}')

  def truncated_checkpoint(self):
    workdir = self._fresh_copy('truncated_checkpoint')
    _truncate(_data_file(workdir, self.reference[0]))
    return self._resumed(workdir, 'newest checkpoint truncated')

  def flipped_checkpoint(self):
    workdir = self._fresh_copy('flipped_checkpoint')
    _flip(_data_file(workdir, self.reference[0]))
    return self._resumed(workdir, '64 bytes of the newest checkpoint flipped')

  def truncated_config(self):
    workdir = self._fresh_copy('truncated_config')
    _truncate(os.path.join(workdir, 'config.json'))
    return self._refused(workdir, expect='config.json is damaged')

  def truncated_history(self):
    workdir = self._fresh_copy('truncated_history')
    _truncate(os.path.join(workdir, 'eval_history.json'))
    return self._refused(workdir, expect='eval_history.json is damaged')

  def bad_stored_schedule(self):
    workdir = self._fresh_copy('bad_stored_schedule')
    os.makedirs(os.path.join(workdir, 'schedules'))
    with open(os.path.join(workdir, 'schedules', 'mine.json'), 'w') as f:
      json.dump({'kind': 'ladders', 'method': 'dp_elbo', 'cost': 'corrector',
                 'ladders': {'5': [0.0, 0.2, float('nan'), 0.6, 0.8, 1.0]}}, f)
    return self._refused(workdir, "--config.eval.schedules=('mine',)", '--config.eval.step_counts=(5,)',
                         expect='not a usable schedule', mode='eval')

  def empty_eval_schedules(self):
    workdir = self._fresh_copy('empty_eval_schedules')
    return self._refused(workdir, '--config.eval.schedules=()', expect='name at least one', mode='eval')

  def path_in_schedule_name(self):
    workdir = self._fresh_copy('path_in_schedule_name')
    return self._refused(workdir, "--config.eval.schedules=('../reference/x',)", expect='plain name', mode='eval')

  def changed_seed(self):
    workdir = self._fresh_copy('changed_seed')
    return self._refused(workdir, f'--config.train.num_train_steps={2 * self.steps}', '--config.seed=1',
                         expect='config.seed: 0 -> 1')

  def unwritable_checkpoints(self):
    workdir = self._dir('unwritable_checkpoints')
    os.makedirs(workdir)
    with open(os.path.join(workdir, 'checkpoints'), 'w') as f:
      f.write('a file where the folder should be')
    return self._refused(workdir, expect='is not writable')


ORDER = ('kill_9', 'sigterm', 'sigint', 'diverge', 'second_writer', 'truncated_checkpoint', 'flipped_checkpoint',
         'truncated_config', 'truncated_history', 'bad_stored_schedule', 'empty_eval_schedules',
         'path_in_schedule_name', 'changed_seed', 'unwritable_checkpoints')


def run(root, steps: int = 400) -> list:
  """``[(scenario, outcome, data lost, seconds)]`` for every scenario of ``ORDER``."""
  start = time.time()
  scenarios = Scenarios(root, steps)
  rows = [('reference (uninterrupted)', f'step {scenarios.reference[0]}', '-', time.time() - start)]
  for name in ORDER:
    start = time.time()
    outcome, lost = getattr(scenarios, name)()
    rows.append((name, outcome, lost, time.time() - start))
    print(f'{name}: {outcome} | {lost}', file=sys.stderr, flush=True)
  return rows


def main(argv):
  del argv
  root = flags.FLAGS.workdir or tempfile.mkdtemp(prefix='faults')
  try:
    rows = run(root, flags.FLAGS.steps)
  finally:
    if not flags.FLAGS.workdir:
      shutil.rmtree(root, ignore_errors=True)
  print('| scenario | outcome | data lost | s |\n|---|---|---|---|')
  for name, outcome, lost, seconds in rows:
    print(f'| {name} | {outcome} | {lost} | {seconds:.0f} |')
  if any(not lost.startswith(('nothing', '-')) for _, _, lost, _ in rows):
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
