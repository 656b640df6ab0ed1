"""Training with the schedule learned online (method.md section 5, Algorithm 2), for every config.

``train_step`` is pure and pmapped once over the local devices (axis ``AXIS``): a denoiser update on the
schedule's points, then, with the network fixed, one jvp rate per example accumulated per level, and an
Algorithm 1 update blended with rate gamma once the statistics are ready. Metrics are fetched from the
device at logging steps only.
"""
import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import optax
from absl import logging
from flax import jax_utils

from configs.base import validate
from ddm import losses
from ddm.paths import make_path
from schedule import baselines, costs, online, predictor
from train import checkpoints, data, hooks, model as model_lib, state as state_lib
from train.writers import MetricWriter

AXIS = 'batch'


def make_train_step(config, path, model: model_lib.Model):
  """Returns ``train_step(state, batch, base_key) -> (state, metrics)``, to be pmapped over ``AXIS``.

  ``batch['x']``: f32[B_device, *S]. Example j of the global batch draws its level and noise from its own
  key (folded from the step and j), so results do not depend on the device count; dropout keys per device.
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
    grads = jax.lax.pmean(grads, AXIS)
    state = state.apply_gradients(grads=grads)
    state = state.replace(ema_params=state_lib.ema_update(state.ema_params, state.params, config.optim.ema_decay))

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
    metrics = {'train/loss': jax.lax.pmean(loss, AXIS),
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


def train_and_evaluate(config, workdir: str) -> state_lib.TrainState:
  """Trains (or resumes) the run in ``workdir``; returns the final state (on the host)."""
  validate(config, workdir, 'train')
  _maybe_initialize_distributed(config)
  checkpoints.check_compatible(workdir, config)
  os.makedirs(workdir, exist_ok=True)
  path, shape = make_path(config.sde), data.data_shape(config)
  model = model_lib.make_model(config, path, shape, state_lib.stream_key(config.seed, 'init'))
  mngr = checkpoints.manager(workdir, config.train.keep_checkpoints)
  state = checkpoints.restore_latest(mngr, initial_state(config, path, model)) or initial_state(config, path, model)
  start = int(state.step)
  checkpoints.write_config(workdir, config)
  logging.info('%s at step %d of %d on %d devices (%d processes)', 'resuming' if start else 'starting',
               start, config.train.num_steps, jax.device_count(), jax.process_count())

  p_step = jax.pmap(make_train_step(config, path, model), axis_name=AXIS, donate_argnums=(0,))
  base_key = jax_utils.replicate(state_lib.stream_key(config.seed, 'train'))
  p_state = jax_utils.replicate(state)
  batches = data.make_train_iterator(config, start_step=start)
  writer = MetricWriter(workdir)
  report = hooks.Reporter(config, workdir, path, model, shape, writer)
  pending, timer = [], (time.time(), start)
  for step in range(start + 1, config.train.num_steps + 1):
    p_state, metrics = p_step(p_state, data.shard(next(batches), jax.local_device_count()), base_key)
    pending.append(metrics)
    if step % config.train.log_every == 0 or step == config.train.num_steps:
      timer = report.scalars(step, pending, unreplicate(p_state), timer)
      pending = []
    if step % config.train.sample_every == 0 or step == config.train.num_steps:
      report.schedule_and_samples(step, unreplicate(p_state))
    if step % config.train.checkpoint_every == 0 or step == config.train.num_steps or mngr.reached_preemption(step):
      checkpoints.save(mngr, step, unreplicate(p_state))
  mngr.wait_until_finished()
  writer.close()
  return jax.device_get(unreplicate(p_state))
