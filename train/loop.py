"""Training with the schedule learned online (method.md section 5, Algorithm 2), for every config.

``train_step`` is pure and pmapped once over the local devices (axis ``AXIS``): a denoiser update on the
schedule's points, then, with the network fixed, one jvp rate per example accumulated per level, and an
Algorithm 1 update blended with rate gamma once the statistics are ready. Metrics are fetched from the
device at logging steps only.
"""
import contextlib
import functools
import math
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import jax_utils

from configs.base import validate
from ddm import losses
from ddm.paths import make_path
from schedule import baselines, costs, online, predictor
from train import checkpoints, data, hooks, lock, model as model_lib, state as state_lib
from train.writers import MetricWriter

AXIS = 'batch'


def make_train_step(config, path, model: model_lib.Model):
  """Returns ``train_step(state, batch, base_key) -> (state, metrics)``, to be pmapped over ``AXIS``.

  ``batch['x']``: f32[B_device, *S]. Example j of the global batch draws its level and noise from its own
  key (folded from the step and j), so results do not depend on the device count; dropout keys per device.
  A step whose loss, gradients or new parameters are not finite leaves the state as it was (only ``step``
  advances) and reports ``train/nonfinite_steps = 1``.
  """
  loss_fn = losses.make_loss_fn(model.denoise, path, config.model.precond, config.model.sigma_data,
                                config.loss.weighting)
  rate_fn = costs.make_rate_fn(config.schedule)
  if config.schedule.cost == 'predictor':  # second derivatives of the network in x (method.md section 2)
    predictor.check_model(model, path, data.data_shape(config))
  sch = config.schedule

  def objective(params, x0, ts, keys, key_dropout):
    loss, level, x_t, t = loss_fn(params, x0, ts, keys, key_dropout, train=True)
    return jnp.mean(loss), (level, x_t, t)

  def train_step(state, batch, base_key):
    key_examples, key_dropout = jax.random.split(jax.random.fold_in(base_key, state.step))
    batch_size, device = batch['x'].shape[0], jax.lax.axis_index(AXIS)
    # One key per example from its global index: the same draws on any number of devices.
    keys = jax.vmap(lambda i: jax.random.fold_in(key_examples, i))(device * batch_size + jnp.arange(batch_size))
    key_dropout = jax.random.fold_in(key_dropout, device)
    (loss, (level, x_t, t)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params, batch['x'], state.schedule, keys, key_dropout)
    grads, loss = jax.lax.pmean(grads, AXIS), jax.lax.pmean(loss, AXIS)
    new = state.apply_gradients(grads=grads)
    new = new.replace(ema_params=state_lib.ema_update(new.ema_params, new.params, config.optim.ema_decay))
    # A non-finite step is dropped (the same decision on every device: loss and gradients are averaged), so
    # the state, and every checkpoint written from it, stays finite; the loop stops or counts it.
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads)) & jnp.isfinite(optax.global_norm(new.params))
    state = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state).replace(step=new.step)

    # Algorithm 2, step 2: with the network fixed, one jvp per example at its own level, on the first
    # cost_examples of the device's batch (levels are i.i.d. per example, so any subset is unbiased).
    n = cost_examples(batch_size, sch.cost_fraction)
    rate = rate_fn(model.score_fn(jax.lax.stop_gradient(state.params), path), path, x_t[:n], t[:n],
                   jax.random.fold_in(key_dropout, 1))
    zeros = jnp.zeros_like(state.cost_sum)
    batch_sum, batch_count = jax.lax.psum(online.accumulate(zeros, zeros, rate, level[:n]), AXIS)
    state = state.replace(cost_sum=state.cost_sum + batch_sum, cost_count=state.cost_count + batch_count)

    go = online.ready(state.cost_count, state.step - state.last_update, sch.min_count, sch.update_every)
    state = jax.lax.cond(go, functools.partial(_update_schedule, sch, path), lambda s: s, state)
    metrics = {'train/loss': loss, 'train/nonfinite_steps': (~finite).astype(jnp.int32),
               'train/grad_norm': optax.global_norm(grads),
               'train/param_norm': optax.global_norm(state.params),
               'schedule/nonfinite_rates': jax.lax.psum(jnp.sum(~jnp.isfinite(rate)), AXIS)}
    return state, metrics

  return train_step


def cost_examples(device_batch: int, fraction: float) -> int:
  """Examples of a device's batch whose cost rate is measured each step: ``ceil(fraction * B)``, at least 1."""
  return max(1, min(device_batch, math.ceil(fraction * device_batch - 1e-9)))


def _update_schedule(sch, path, state):
  """Algorithm 2, steps 3-4; statistics restart for the new points. ``learn=False`` measures only."""
  ts, ok, step_costs = online.update(path, state.schedule, state.cost_sum, state.cost_count, sch.gamma,
                                     costs.order(sch))
  zeros = jnp.zeros_like(state.cost_sum)
  return state.replace(
      schedule=ts if sch.learn else state.schedule, cost_sum=zeros, cost_count=zeros,
      step_costs=jnp.where(ok, step_costs, state.step_costs), last_update=state.step,
      num_updates=state.num_updates + ok, num_skipped=state.num_skipped + (~ok))


def unreplicate(tree):
  """Device 0's copy of a pmapped pytree (flax's version mis-shapes arrays pmapped over a subset of devices)."""
  return jax.tree.map(lambda x: x[0], tree)


def initial_state(config, path, model: model_lib.Model) -> state_lib.TrainState:
  ts = baselines.make_baseline(config.schedule.init, path, config.schedule.num_steps).t
  return state_lib.create(model.params, ts, config.optim)


def _maybe_initialize_distributed(config):
  if config.train.distributed and jax.process_count() == 1:
    jax.distributed.initialize()  # auto-detects SLURM, TPU pods, or JAX_COORDINATOR_ADDRESS etc.


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


def _nonfinite_steps(flags) -> list:
  """Training steps whose ``train/nonfinite_steps`` flag is set, from ``[(step, device flag)]``."""
  values = jax.device_get([f for _, f in flags])
  return [step for (step, _), v in zip(flags, values) if int(np.asarray(v).reshape(-1)[0])]


def _stop_nonfinite(steps, step, mngr, config):
  latest = mngr.latest_step()
  where = (f'the last checkpoint, step {latest} in {mngr.directory}, holds a finite state' if latest is not None
           else 'no checkpoint was written yet')
  raise SystemExit(
      f'error: the loss, gradients or parameters were not finite at step {steps[0]} ({len(steps)} such steps by '
      f'step {step}; each was dropped); the run stopped (config.train.on_nonfinite=stop) and {where}. Lower '
      f'config.optim.learning_rate (now {config.optim.learning_rate}), lengthen config.optim.warmup_steps or '
      'set config.optim.grad_clip, then rerun the same command (it resumes from that checkpoint); or set '
      'config.train.on_nonfinite=skip to drop such steps and go on.')


def train_and_evaluate(config, workdir: str) -> state_lib.TrainState:
  """Trains (or resumes) the run in ``workdir``; returns the final state (on the host).

  Everything that can refuse the run (config, workdir compatibility, data, a writable ``checkpoints/``, the
  workdir's lock) is checked before anything is written or computed. SIGTERM/SIGINT save a checkpoint at the
  current step and exit with status 128 + signal; a non-finite step stops the run (``on_nonfinite='stop'``,
  exit status 1) or is dropped and counted (``'skip'``)."""
  validate(config, workdir, 'train')
  _maybe_initialize_distributed(config)
  checkpoints.check_compatible(workdir, config, resume=True)
  hooks.check_files(workdir)
  data.check_available(config)
  writer_process = jax.process_index() == 0
  if writer_process:
    checkpoints.check_writable(workdir)
  with (lock.hold(workdir) if writer_process else contextlib.nullcontext()), _Signals() as signals:
    return _train(config, workdir, signals)


def _train(config, workdir, signals):
  path, shape = make_path(config.sde), data.data_shape(config)
  model = model_lib.make_model(config, path, shape, state_lib.stream_key(config.seed, 'init'))
  mngr = checkpoints.manager(workdir, config.train.keep_checkpoints)
  template = initial_state(config, path, model)
  state = checkpoints.restore_latest(mngr, template, quarantine=workdir) or template
  start = int(state.step)
  batches = data.make_train_iterator(config, start_step=start)
  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)
  logging.info('%s at step %d of %d on %d devices (%d processes)', 'resuming' if start else 'starting',
               start, config.train.num_steps, jax.device_count(), jax.process_count())

  p_step = jax.pmap(make_train_step(config, path, model), axis_name=AXIS, donate_argnums=(0,))
  base_key = jax_utils.replicate(state_lib.stream_key(config.seed, 'train'))
  p_state = jax_utils.replicate(state)
  writer = MetricWriter(workdir)
  report = hooks.Reporter(config, workdir, path, model, shape, writer)
  pending, flags, skipped, timer = [], [], 0, (time.time(), start)
  try:
    for step in range(start + 1, config.train.num_steps + 1):
      p_state, metrics = p_step(p_state, data.shard(next(batches), jax.local_device_count()), base_key)
      pending.append(metrics)
      flags.append((step, metrics['train/nonfinite_steps']))
      last, stop = step == config.train.num_steps, signals.received  # read once: a signal may come at any time
      save = step % config.train.checkpoint_every == 0 or last or mngr.reached_preemption(step) or stop
      if step % config.train.log_every == 0 or last or save:  # dropped steps are looked at before any save
        bad, flags = _nonfinite_steps(flags), []
        skipped += len(bad)
        if bad and config.train.on_nonfinite == 'stop':
          _stop_nonfinite(bad, step, mngr, config)
        if bad:
          logging.warning('steps %s: non-finite loss, gradients or parameters; dropped (%d so far)', bad, skipped)
      if step % config.train.log_every == 0 or last:
        timer = report.scalars(step, pending, unreplicate(p_state), timer)
        pending = []
      if step % config.train.sample_every == 0 or last:
        report.schedule_and_samples(step, unreplicate(p_state))
      if save:
        checkpoints.save(mngr, step, unreplicate(p_state))
      if stop:
        mngr.wait_until_finished()
        logging.warning('stopped by %s at step %d; the checkpoint of this step is saved in %s: rerun the same '
                        'command to resume', signal.Signals(stop).name, step, mngr.directory)
        raise SystemExit(128 + stop)
  finally:
    mngr.wait_until_finished()  # never abandon an in-flight save, whatever stops the loop
    writer.close()
  return jax.device_get(unreplicate(p_state))
