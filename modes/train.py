"""``--mode=train``: trains (or resumes) a run while its schedule is learned online (method.md section 5).

The step itself is :func:`train.step.make_train_step`, pmapped once over the local devices
(:func:`train.step.make_train_steps` with :func:`train.step.pmapped`); this runner owns
the workdir: what can refuse a run is checked before anything is written, the checkpoint is restored, and
the loop logs, samples, checkpoints and stops on a signal or a non-finite step. Metrics are fetched from the
device at logging steps only.
"""
import contextlib
import signal
import threading

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from configs.validate import validate
from ddm import files, streams
from ddm.paths import make_path
from modes import logs, progress, train_report as report_lib, workdir as workdir_lib
from train import checkpoints, data, lock, model as model_lib, step as step_lib
from train.writers import MetricWriter

class _Signals:
  """SIGTERM (what SLURM and Kubernetes send before a kill) and SIGINT set ``received``; the loop saves a
  checkpoint at the current step and exits. A second signal stops at once (the checkpoint manager still
  finishes an in-flight save). Installed only in the main thread (Python's rule); restored on exit."""

  def __init__(self):
    self.received, self._previous = None, {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.received is not None:
      raise KeyboardInterrupt(f'second {signal.Signals(signum).name}: stopping without a checkpoint')
    self.received = signum
    logging.warning('received %s: saving a checkpoint at the current step, then exiting',
                    signal.Signals(signum).name)

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _stop_signal(signals, step, config):
  """The signal to stop on at this step (None: go on), the same on every process: with several processes
  (each may receive its SIGTERM at another step, or only one) the decision is agreed at logging steps, so
  every process saves the same step and exits together."""
  received = signals.received  # read once: a signal may come at any time
  if jax.process_count() == 1:
    return received
  if step % config.train.log_every and step != config.train.num_train_steps:
    return None
  agreed = multihost_utils.process_allgather(np.int32(received or 0))
  return int(np.max(agreed)) or None


def _nonfinite_steps(flags) -> list:
  """Training steps whose ``train/nonfinite_steps`` flag is set, from ``[(step, device flag)]``."""
  values = jax.device_get([f for _, f in flags])
  return [step for (step, _), v in zip(flags, values) if int(np.asarray(v).reshape(-1)[0])]


def _stop_nonfinite(steps, step, mngr, config):
  latest = mngr.latest_step()
  where = (f'the last checkpoint, step {latest} in {mngr.directory}, holds a finite state' if latest is not None
           else 'no checkpoint was written yet')
  rerun = 'it resumes from that checkpoint' if latest is not None else 'it starts again from step 0'
  raise SystemExit(
      f'error: the loss, gradients or parameters were not finite at step {steps[0]} ({len(steps)} such steps by '
      f'step {step}; each was dropped); the run stopped (config.train.on_nonfinite=stop) and {where}. Lower '
      f'config.optim.learning_rate (now {config.optim.learning_rate}), lengthen config.optim.warmup_steps or '
      f'set config.optim.grad_clip, then rerun the same command ({rerun}); or set '
      'config.train.on_nonfinite=skip to drop such steps and go on.')


def _check_steps(config, workdir):
  """Refuses ``config.train.num_train_steps`` below the newest checkpoint's step (read off the folder names):
  resuming could only go back, and nothing would run. The same step is a finished run (:func:`_finished`)."""
  folder = checkpoints.directory(workdir)
  steps = checkpoints.saved_steps(workdir)
  if steps and config.train.num_train_steps < max(steps):
    raise files.InputError(
        f'config.train.num_train_steps={config.train.num_train_steps} is below the step of the newest checkpoint in '
        f'{folder} ({max(steps)}); nothing was changed. To train on, give --config.train.num_train_steps above '
        f'{max(steps)}; to use the run as it is, --mode=eval or --mode=sample')


def _finished(config, workdir):
  """The run's state when its newest good checkpoint is at ``config.train.num_train_steps`` (restored read-only:
  nothing is written, not even log.txt), else None."""
  if config.train.num_train_steps not in checkpoints.saved_steps(workdir):
    return None  # every process of a fresh or unfinished run decides the same, without a collective
  mngr = checkpoints.manager(workdir, config.train.keep_checkpoints, create=False)
  path = make_path(config.sde)
  model = model_lib.make_model(config.model, config.data, path, streams.key(config.seed, 'init'))
  template = step_lib.initial_state(config.schedule, config.optim, path, model)
  try:
    state = checkpoints.restore_latest(mngr, template, read_only=False)
  except checkpoints.Mismatch as e:
    raise checkpoints.diagnose(workdir, config, e, stored=workdir_lib.stored_config(workdir)) from None
  if state is None or int(state.step) != config.train.num_train_steps:
    return None  # the newest checkpoint is damaged: training redoes its steps
  logging.info('the run in %s is already complete at step %d (config.train.num_train_steps); nothing to do and nothing '
               'was changed: give a larger --config.train.num_train_steps to train on', workdir, int(state.step))
  return jax.device_get(state)


def train_and_evaluate(config, workdir: str):
  """Trains (or resumes) the run in ``workdir``; returns the final state (on the host).

  Everything that can refuse the run (config, workdir compatibility, data, a writable ``checkpoints/``, the
  workdir's lock) is checked before anything is written or computed. SIGTERM/SIGINT save a checkpoint at the
  current step and exit with status 128 + signal; a non-finite step stops the run (``on_nonfinite='stop'``,
  exit status 1) or is dropped and counted (``'skip'``)."""
  validate(config, workdir, 'train')  # after modes.distributed.initialize (main.py): devices of every process
  checkpoints.check_compatible(workdir, config, resume=True, stored=workdir_lib.stored_config(workdir))
  report_lib.check_files(workdir)
  _check_steps(config, workdir)
  finished = _finished(config, workdir)
  if finished is not None:
    return finished
  data.check_available(config.data)
  writer_process = jax.process_index() == 0
  if writer_process:
    checkpoints.check_writable(workdir)
  with (lock.hold(workdir) if writer_process else contextlib.nullcontext()), _Signals() as signals, \
       logs.to_workdir(workdir, logging.get_verbosity()):
    return _train(config, workdir, signals)


def _train(config, workdir, signals):
  path, shape = make_path(config.sde), data.data_shape(config.data)
  model = model_lib.make_model(config.model, config.data, path, streams.key(config.seed, 'init'))
  mngr = checkpoints.manager(workdir, config.train.keep_checkpoints)
  template = step_lib.initial_state(config.schedule, config.optim, path, model)
  quarantine = workdir if jax.process_index() == 0 else ''  # one process moves damaged checkpoints aside
  try:
    state = checkpoints.restore_latest(mngr, template, quarantine=quarantine) or template
  except checkpoints.Mismatch as e:  # another config's checkpoint: say which settings, never "damaged"
    raise checkpoints.diagnose(workdir, config, e, stored=workdir_lib.stored_config(workdir)) from None
  start = int(state.step)
  batches = data.make_train_iterator(config.data, config.train.batch_size, config.seed, start_step=start)
  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)
  logging.info('%s at step %d of %d on %d devices (%d processes)', 'resuming' if start else 'starting',
               start, config.train.num_train_steps, jax.device_count(), jax.process_count())

  p_steps = step_lib.make_train_steps(config.model, config.loss, config.schedule, config.optim, path, model, shape,
                                      wrap=step_lib.pmapped())
  base_key = step_lib.replicate(streams.key(config.seed, 'train'))
  p_state = step_lib.replicate(state)
  writer = MetricWriter(workdir)
  writer.write_config(config, config.to_json_best_effort(indent=1))
  report = report_lib.Reporter(config, workdir, path, model, shape, writer)
  pending, flags, skipped = [], [], 0
  throughput, compiled = progress.Throughput(start), set()
  try:
    for step in range(start + 1, config.train.num_train_steps + 1):
      batch = data.shard(next(batches), jax.local_device_count())
      # pmap compiles synchronously inside its first call; every later call only dispatches
      measure = step_lib.measures(step - 1, config.schedule)
      first, compiled = measure not in compiled, compiled | {measure}
      with throughput.excluded('compile') if first else contextlib.nullcontext():
        p_state, metrics = p_steps[measure](p_state, batch, base_key)
      pending.append(metrics)
      flags.append((step, metrics['train/nonfinite_steps']))
      last, stop = step == config.train.num_train_steps, _stop_signal(signals, step, config)
      save = step % config.train.checkpoint_every == 0 or last or mngr.reached_preemption(step) or stop
      if step % config.train.log_every == 0 or last or save:  # dropped steps are looked at before any save
        bad, flags = _nonfinite_steps(flags), []
        skipped += len(bad)
        if bad and config.train.on_nonfinite == 'stop':
          _stop_nonfinite(bad, step, mngr, config)
        if bad:
          logging.warning('steps %s: non-finite loss, gradients or parameters; dropped (%d so far)', bad, skipped)
      sample = step % config.train.sample_every == 0 or last
      if step % config.train.log_every == 0 or last:
        report.scalars(step, pending, step_lib.unreplicate(p_state), throughput)
        pending = []
      if sample or save:
        jax.block_until_ready(p_state)  # the steps' own computation is not charged to sampling or saving
      if sample:
        with throughput.excluded('sample'):
          report.schedule_and_samples(step, step_lib.unreplicate(p_state))
      if save:
        with throughput.excluded('checkpoint'):
          checkpoints.save(mngr, step, step_lib.unreplicate(p_state))
      if stop:
        mngr.wait_until_finished()
        logging.warning('stopped by %s at step %d; the checkpoint of this step is saved in %s: rerun the same '
                        'command to resume', signal.Signals(stop).name, step, mngr.directory)
        raise SystemExit(128 + stop)
  finally:
    mngr.wait_until_finished()  # never abandon an in-flight save, whatever stops the loop
    writer.close()
  logging.info('trained to step %d; to look at the run: tensorboard --logdir %s', config.train.num_train_steps,
               workdir)
  return jax.device_get(step_lib.unreplicate(p_state))
