"""Multi-process training on localhost (tools/local_cluster.py; gloo collectives on CPU) against one process.

The same global batch on P processes x D devices and on one process x P*D devices must give the same
parameters, schedule and cost statistics (the batch rows, per-example keys and psums are the same), the
checkpoints of either must restore on the other, and a job that loses a process resumes on all of them.
"""
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from configs import toy1d
from configs.validate import distributed_problems
from modes import distributed, workdir as workdir_lib
from tools import local_cluster

ROOT = local_cluster.ROOT
CONFIG = 'configs/toy1d.py:smoke'


def _args(workdir, num_steps, **fields):
  fields = {'train.num_train_steps': num_steps, 'train.checkpoint_every': 10, 'train.keep_checkpoints': 10,
            'train.sample_every': num_steps, 'train.log_every': 5, **fields}
  return [f'--config={CONFIG}', f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in fields.items()]


def _one_process(workdir, num_steps, devices, **fields):
  env = local_cluster.process_env(devices)
  result = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *_args(workdir, num_steps, **fields)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]


def _processes(workdir, num_steps, num_processes, devices, on_start=None, extra=(), **fields):
  lines = []

  class Out:
    write, flush = lines.append, staticmethod(lambda: None)
  codes = local_cluster.launch(_args(workdir, num_steps, **fields) + list(extra), num_processes, devices, grace=10,
                               out=Out(), on_start=on_start)
  return codes, ''.join(lines)


def _state(workdir, step):
  return workdir_lib.restore(toy1d.get_config('smoke'), str(workdir), step=step)[2]


def _assert_same(a, b, rtol=0.0):
  """Bit for bit by default; with ``rtol``, floats within it (integer leaves, counts and steps, exactly)."""
  for (name, x), (_, y) in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]):
    x, y = np.asarray(x), np.asarray(y)
    if rtol and x.dtype.kind == 'f':
      np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.max(np.abs(y)), err_msg=jax.tree_util.keystr(name))
    else:
      np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(name))


def test_two_processes_train_resume_and_restore_like_one(tmp_path):
  one, two = tmp_path / 'one', tmp_path / 'two'
  _one_process(one, 30, devices=2)                              # 1 process x 2 devices, steps 1..30
  codes, out = _processes(two, 20, 2, 1)                        # 2 processes x 1 device, steps 1..20
  assert codes == [0, 0], out[-3000:]
  assert 'on 2 devices (2 processes)' in out
  codes, out = _processes(two, 30, 2, 1)                        # resumed on 2 processes from their checkpoint
  assert codes == [0, 0], out[-3000:]
  assert 'resuming at step 20 of 30' in out
  for step in (10, 20, 30):                                     # checkpoints of 2 processes restore on 1
    a, b = _state(one, step), _state(two, step)
    assert int(b.step) == step and int(b.num_updates) > 0
    _assert_same(a, b)                                          # params, EMA, optimizer, schedule, cost sums
  # Only process 0 writes: one event file per run, one log line per run.
  assert len([f for f in os.listdir(two) if f.startswith('events.out.tfevents')]) == 2
  assert (two / 'schedule.json').exists() and (two / 'config.json').exists()
  log = (two / 'log.txt').read_text()
  assert log.count('starting at step 0 of 20 on 2 devices (2 processes)') == 1
  assert log.count('resuming at step 20 of 30 on 2 devices (2 processes)') == 1
  # The other way round: the 1-process run resumes on 2 processes, the 2-process run on 1; the same step 40.
  codes, out = _processes(one, 40, 2, 1)
  assert codes == [0, 0] and 'resuming at step 30 of 40 on 2 devices (2 processes)' in out, out[-3000:]
  _one_process(two, 40, devices=2)
  _assert_same(_state(one, 40), _state(two, 40))
  # Evaluation on 2 processes: each draws its share of the samples, process 0 alone writes the record.
  codes, out = _processes(two, 40, 2, 1, **{'eval.schedules': "('linear',)", 'eval.step_counts': '(5,)',
                                            'eval.likelihood': False, 'eval.checkpoints': 'last'},
                          extra=['--mode=eval'])
  assert codes == [0, 0], out[-3000:]
  assert sorted(os.listdir(two / 'eval')) == ['40_heun.json', '40_heun.md', '40_heun.png'] + sorted(
      f for f in os.listdir(two / 'eval') if f.startswith('events')) + ['linear'] and (two / 'eval.json').exists()
  assert len([f for f in os.listdir(two / 'eval' / 'linear') if f.startswith('events')]) == 1  # the schedule's run
  assert out.count('wrote ') == 1, out[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize('num_processes, devices', [(4, 1), (2, 2)])
def test_four_devices_over_processes_train_like_one(tmp_path, num_processes, devices):
  _one_process(tmp_path / 'one', 20, devices=4)
  codes, out = _processes(tmp_path / 'many', 20, num_processes, devices)
  assert codes == [0] * num_processes, out[-3000:]
  assert f'on 4 devices ({num_processes} processes)' in out
  # Four summands: gloo's all-reduce adds them in another order than XLA's in-process one (float addition is
  # not associative), so the states agree to rounding (measured: 1 ulp at step 10), not bit for bit as with two.
  for step in (10, 20):
    _assert_same(_state(tmp_path / 'one', step), _state(tmp_path / 'many', step), rtol=1e-5)


@pytest.mark.slow
def test_a_killed_process_and_the_job_resumes_from_the_last_checkpoint(tmp_path):
  killed, one = tmp_path / 'killed', tmp_path / 'one'

  def kill_process_1_after_a_checkpoint(processes):
    def watch():
      while not (killed / 'checkpoints' / '100').exists() and processes[1].poll() is None:
        time.sleep(0.02)
      os.kill(processes[1].pid, signal.SIGKILL)
    threading.Thread(target=watch, daemon=True).start()

  fields = {'train.checkpoint_every': 50, 'train.log_every': 50}
  codes, out = _processes(killed, 400, 2, 1, on_start=kill_process_1_after_a_checkpoint, **fields)
  assert codes[1] == -signal.SIGKILL and codes[0] != 0, out[-3000:]   # process 0 cannot go on alone
  written = sorted(int(s) for s in os.listdir(killed / 'checkpoints') if s.isdigit())
  assert 100 <= written[-1] < 400
  codes, out = _processes(killed, 400, 2, 1, **fields)
  assert codes == [0, 0], out[-3000:]
  assert f'resuming at step {written[-1]} of 400' in out
  _one_process(one, 400, devices=2, **fields)
  _assert_same(_state(one, 400), _state(killed, 400))


def _config(batch_size=None, **distributed):
  config = toy1d.get_config('smoke')
  config.distributed.update(distributed)
  if batch_size is not None:
    config.train.batch_size = batch_size
  return config


def test_bad_multiprocess_settings_are_named_before_jax_starts():
  assert distributed_problems(_config()) == []
  assert distributed_problems(_config(coordinator_address='localhost:1234', num_processes=4, process_id=3)) == []
  problems = ' | '.join(distributed_problems(_config(coordinator_address='localhost:1234', num_processes=3,
                                                     process_id=3, batch_size=64)))
  assert 'config.distributed.process_id=3 is out of range for config.distributed.num_processes=3' in problems
  assert 'config.train.batch_size=64 is not divisible by config.distributed.num_processes=3' in problems
  problems = ' | '.join(distributed_problems(_config(coordinator_address='localhost', num_processes=2, process_id=0)))
  assert "config.distributed.coordinator_address='localhost'; need host:port" in problems
  problems = ' | '.join(distributed_problems(_config(num_processes=2, process_id=1)))
  assert "set config.distributed.coordinator_address='host:port' of process 0" in problems
  problems = ' | '.join(distributed_problems(_config(coordinator_address='localhost:1234')))
  assert 'needs config.distributed.num_processes >= 1 and config.distributed.process_id in [0, num_processes)' in problems
  with pytest.raises(ValueError, match='process_id=5 is out of range'):
    distributed.initialize(_config(coordinator_address='localhost:1234', num_processes=2, process_id=5))


def test_an_unreachable_coordinator_times_out_with_a_message_not_a_hang(tmp_path):
  port = local_cluster.free_port()  # nobody listens there
  start = time.monotonic()
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'main.py'), *_args(tmp_path / 'w', 5),
       f'--config.distributed.coordinator_address=localhost:{port}', '--config.distributed.num_processes=2',
       '--config.distributed.process_id=1', '--config.distributed.initialization_timeout=2'],
      env=local_cluster.process_env(1), cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and time.monotonic() - start < 60
  assert f"config.distributed.coordinator_address='localhost:{port}': no coordinator answered within " \
         'config.distributed.initialization_timeout=2 s' in result.stderr
  assert not (tmp_path / 'w').exists()                          # the workdir is untouched


def test_process_0_without_its_peers_stops_with_a_message_not_an_abort(tmp_path):
  port = local_cluster.free_port()
  start = time.monotonic()
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'main.py'), *_args(tmp_path / 'w', 5),
       f'--config.distributed.coordinator_address=localhost:{port}', '--config.distributed.num_processes=2',
       '--config.distributed.process_id=0', '--config.distributed.initialization_timeout=2'],
      env=local_cluster.process_env(1), cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and time.monotonic() - start < distributed.JAX_GRACE  # ours, before JAX's abort
  assert f'the multi-process job at localhost:{port} did not assemble within ' \
         'config.distributed.initialization_timeout=2 s (this is process 0 of 2)' in result.stderr
  assert 'Check failed' not in result.stderr and not (tmp_path / 'w').exists()


def test_the_process_count_and_index_from_the_environment():
  train = _config(enabled=True)
  assert distributed.from_environment(train.distributed, train.train.batch_size, {}) == (None, None)       # left to JAX's cluster detection
  assert distributed.from_environment(train.distributed, train.train.batch_size, {'JAX_NUM_PROCESSES': '4', 'JAX_PROCESS_ID': '3'}) == (4, 3)
  explicit = _config(coordinator_address='h:1', num_processes=2, process_id=1)
  assert distributed.from_environment(explicit.distributed, explicit.train.batch_size, {'JAX_NUM_PROCESSES': '4', 'JAX_PROCESS_ID': '3'}) == (2, 1)
  with pytest.raises(ValueError, match=r'JAX_PROCESS_ID / config.distributed.process_id=4 is out of range .* < 4'):
    distributed.from_environment(train.distributed, train.train.batch_size, {'JAX_NUM_PROCESSES': '4', 'JAX_PROCESS_ID': '4'})
  with pytest.raises(ValueError, match=r"JAX_NUM_PROCESSES='two'; need an integer >= 1"):
    distributed.from_environment(train.distributed, train.train.batch_size, {'JAX_NUM_PROCESSES': 'two'})
  with pytest.raises(ValueError, match='batch_size=.* is not divisible by JAX_NUM_PROCESSES=7'):
    distributed.from_environment(train.distributed, train.train.batch_size, {'JAX_NUM_PROCESSES': '7'})


def test_the_watchdog_speaks_only_when_the_wait_outlasts_the_timeout(capsys):
  codes = []
  distributed.watchdog('h:1', 2, 0, 0.05, exit_fn=codes.append).join()
  assert codes == [1] and 'did not assemble within config.distributed.initialization_timeout=0.05 s' in capsys.readouterr().err
  timer = distributed.watchdog('h:1', 2, 0, 5, exit_fn=codes.append)
  timer.cancel()
  timer.join()
  assert codes == [1]
