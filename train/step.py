"""One training step with the schedule learned online (method.md section 5, Algorithm 2).

``make_train_step`` returns a pure function, pmapped once over the local devices (axis ``AXIS``) by the
runner (``modes/train.py``): a denoiser update on the schedule's points, one jvp rate per measured example
accumulated per level, and an Algorithm 1 update blended with rate gamma once the statistics are ready. The
rates come either from the loss's own network pass (fused: a jvp in t at fixed ``x_t`` with the parameters
*before* the step's update, tangent kept out of the gradient) or from a separate jvp pass with the updated
parameters (``config.schedule.rate_pass``); both are the same estimator of method.md section 5's rate.

Every builder here takes the config sections it reads (``config.model``, ``config.loss``, ``config.schedule``,
``config.optim``) and plain values, never the whole config.
"""
import functools
import math

import jax
import jax.numpy as jnp
import optax
from flax import jax_utils

from ddm import losses
from schedule import baselines, costs, online, predictor
from train import model as model_lib, state as state_lib

AXIS = 'batch'


def make_train_step(model_cfg, loss_cfg, schedule_cfg, optim_cfg, path, model: model_lib.Model, data_shape,
                    rate_fn=None, schedule_updates: bool = True, measure: bool = True):
  """Returns ``train_step(state, batch, base_key) -> (state, metrics)``, to be pmapped over ``AXIS``.

  ``model_cfg``, ``loss_cfg``, ``schedule_cfg``, ``optim_cfg``: ``config.model``, ``config.loss``,
  ``config.schedule``, ``config.optim``; ``data_shape``: the per-example shape ``S`` (for the predictor cost's
  check of the network). ``rate_fn`` replaces the cost rate of ``schedule_cfg`` (benchmarks pass one that
  returns zeros); ``schedule_updates=False`` never updates the
  schedule (the statistics still accumulate). ``measure=False`` gives the step of the steps between
  measurements (``schedule.measure_every`` > 1, :func:`make_train_steps`): the denoiser update alone, no rate, no
  statistics, no update check; the same metrics (``schedule/nonfinite_rates`` 0).

  Where :func:`fused_rate` holds, the rates are the tangents of the loss's own pass and so are taken with the
  parameters before this step's update; the separate pass (the default where the loss drops units, or with
  ``L_p``) takes them with the updated parameters. One optimizer step apart, the two agree to the
  step's change of the network (tests/train/test_fused_rate.py).

  ``batch['x']``: f32[B_device, *S]. Example j of the global batch draws its level and noise from its own
  key (folded from the step and j), so results do not depend on the device count; dropout keys per device.
  A step whose loss, gradients or new parameters are not finite leaves the state as it was (only ``step``
  advances) and reports ``train/nonfinite_steps = 1``.
  """
  fused = rate_fn is None and fused_rate(model_cfg, schedule_cfg, model)
  loss_fn = losses.make_loss_fn(model.denoise, path, model_cfg.precond, model_cfg.sigma_data,
                                loss_cfg.weighting, model.denoise_and_score)
  if rate_fn is None:
    rate_fn = costs.make_rate_fn(schedule_cfg)
    if schedule_cfg.cost == 'predictor':  # second derivatives of the network in x (method.md section 2)
      predictor.check_model(model, path, data_shape)

  def objective(params, x0, ts, keys, key_dropout, num_measured):
    loss, level, x_t, t, score_dt = loss_fn(params, x0, ts, keys, key_dropout, train=True, num_measured=num_measured)
    return jnp.mean(loss), (level, x_t, t, score_dt)

  def train_step(state, batch, base_key):
    key_examples, key_dropout = jax.random.split(jax.random.fold_in(base_key, state.step))
    batch_size, device = batch['x'].shape[0], jax.lax.axis_index(AXIS)
    # One key per example from its global index: the same draws on any number of devices.
    keys = jax.vmap(lambda i: jax.random.fold_in(key_examples, i))(device * batch_size + jnp.arange(batch_size))
    key_dropout = jax.random.fold_in(key_dropout, device)
    n = measured_examples(batch_size, schedule_cfg) if measure else 0
    (loss, (level, x_t, t, score_dt)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params, batch['x'], state.schedule, keys, key_dropout, n if fused else 0)
    grads, loss = jax.lax.pmean(grads, AXIS), jax.lax.pmean(loss, AXIS)
    new = state.apply_gradients(grads=grads)
    new = new.replace(ema_params=state_lib.ema_update(new.ema_params, new.params, optim_cfg.ema_decay))
    # A non-finite step is dropped (the same decision on every device: loss and gradients are averaged), so
    # the state, and every checkpoint written from it, stays finite; the loop stops or counts it.
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads)) & jnp.isfinite(optax.global_norm(new.params))
    state = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state).replace(step=new.step)
    metrics = {'train/loss': loss, 'train/nonfinite_steps': (~finite).astype(jnp.int32),
               'train/grad_norm': optax.global_norm(grads),
               'train/param_norm': optax.global_norm(state.params)}
    if not measure:
      return state, {**metrics, 'schedule/nonfinite_rates': jnp.zeros((), jnp.int32)}

    # Algorithm 2, step 2: one rate per example at its own level, on the first cost_examples of the device's
    # batch (levels are i.i.d. per example, so any subset is unbiased): fused, from the loss's pass (pre-update
    # parameters), or with the network fixed after the update, one jvp per example.
    if fused:
      rate = costs.corrector_rate_from_derivative(path, t[:n], score_dt)
    else:
      rate = rate_fn(model.score(jax.lax.stop_gradient(state.params), path), path, x_t[:n], t[:n],
                     jax.random.fold_in(key_dropout, 1))
    zeros = jnp.zeros_like(state.cost_sum)
    batch_sum, batch_count = jax.lax.psum(online.accumulate(zeros, zeros, rate, level[:n]), AXIS)
    state = state.replace(cost_sum=state.cost_sum + batch_sum, cost_count=state.cost_count + batch_count)

    if schedule_updates:
      ready = online.ready(state.cost_count, state.step - state.last_update, schedule_cfg.min_count, schedule_cfg.update_every)
      state = jax.lax.cond(ready, functools.partial(online_update, schedule_cfg, path), lambda s: s, state)
    metrics['schedule/nonfinite_rates'] = jax.lax.psum(jnp.sum(~jnp.isfinite(rate)), AXIS)
    return state, metrics

  return train_step


def fused_rate(model_cfg, schedule_cfg, model: model_lib.Model) -> bool:
  """Whether the corrector rates come from the loss's own pass (``schedule_cfg.rate_pass``): 'fused', or
  'auto' where that is the same estimator as the separate jvp (cost 'corrector', no dropout in training:
  ``model_cfg``)."""
  choice = schedule_cfg.get('rate_pass', 'auto')
  possible = (schedule_cfg.cost == 'corrector' and model.denoise_and_score is not None
              and not model_lib.has_dropout(model_cfg))
  return choice == 'fused' or (choice == 'auto' and possible)


def cost_examples(device_batch: int, fraction: float) -> int:
  """Examples of a device's batch whose cost rate is measured each step: ``ceil(fraction * B)``, at least 1."""
  return max(1, min(device_batch, math.ceil(fraction * device_batch - 1e-9)))


def measured_examples(device_batch: int, schedule_cfg) -> int:
  """Examples of a device's batch whose rate a measuring step takes: ``cost_fraction`` of it, times
  ``measure_every`` when only every ``measure_every``-th step measures (the same share of all examples)."""
  every = schedule_cfg.measure_every
  return cost_examples(device_batch, min(1.0, schedule_cfg.cost_fraction * every))


def measures(step: int, schedule_cfg) -> bool:
  """Whether the step from state step ``step`` (0-based: the first step of a run is 0) measures rates.

  A function of the global step only, so every process and a resumed run choose alike."""
  return step % schedule_cfg.measure_every == 0


def make_train_steps(model_cfg, loss_cfg, schedule_cfg, optim_cfg, path, model: model_lib.Model, data_shape,
                     wrap=lambda f: f, **options):
  """``{True: measuring step, False: plain step}`` of :func:`make_train_step` (its arguments; ``options``: its
  ``rate_fn``, ``schedule_updates``), each passed through ``wrap`` (the runner's ``jax.pmap``);
  only the measuring one when ``schedule_cfg.measure_every`` is 1. The host picks with :func:`measures`: two
  compiled programs instead of a ``lax.cond`` in one, which on XLA:CPU ran the fused step 28 times slower
  (docs/performance.md)."""
  sections = (model_cfg, loss_cfg, schedule_cfg, optim_cfg, path, model, data_shape)
  steps = {True: wrap(make_train_step(*sections, **options))}
  if schedule_cfg.measure_every > 1:
    steps[False] = wrap(make_train_step(*sections, **options, measure=False))
  return steps


def pmapped(devices=None):
  """The loop's ``wrap`` for :func:`make_train_steps`: ``jax.pmap`` over ``AXIS`` on ``devices`` (None: every
  local device) with the state (argument 0) donated; its state goes in through :func:`replicate`."""
  return functools.partial(jax.pmap, axis_name=AXIS, donate_argnums=(0,), devices=devices)


def online_update(schedule_cfg, path, state):
  """Algorithm 2, steps 3-4; statistics restart for the new points. ``learn=False`` measures only."""
  ts, ok, step_costs = online.update(path, state.schedule, state.cost_sum, state.cost_count, schedule_cfg.gamma,
                                     costs.order(schedule_cfg))
  zeros = jnp.zeros_like(state.cost_sum)
  return state.replace(
      schedule=ts if schedule_cfg.learn else state.schedule, cost_sum=zeros, cost_count=zeros,
      step_costs=jnp.where(ok, step_costs, state.step_costs), last_update=state.step,
      num_updates=state.num_updates + ok, num_skipped=state.num_skipped + (~ok))


def replicate(tree, devices=None):
  """One copy of ``tree`` per local device, laid out as the pmapped step's outputs are (a mesh over ``AXIS``).

  flax's ``jax_utils.replicate`` alone lays the copies on a mesh of another axis name; pmap keys its compiled
  program on the input layout, so the second step would compile the whole step again (measured: 8.3 s of the
  toy step's 9.4 s compile, repeated at step 2)."""
  return jax.pmap(lambda t: t, axis_name=AXIS, devices=devices)(jax_utils.replicate(tree, devices))


def unreplicate(tree):
  """This process's first device's copy of a pmapped pytree (every device holds the same values).

  Read from the local shard, never as ``x[0]`` of the global array: with several processes that is a computation
  over every process's devices, and processes that index their leaves in another order deadlock (measured: 2
  processes x 2 devices hung at the first sampling step). flax's version mis-shapes arrays pmapped over a subset
  of devices."""
  return jax.tree.map(lambda x: x.addressable_data(0)[0] if isinstance(x, jax.Array) else x[0], tree)


def initial_state(schedule_cfg, optim_cfg, path, model: model_lib.Model) -> state_lib.TrainState:
  """The state at step 0: ``model``'s parameters, the ``schedule_cfg.num_levels``-step ``schedule_cfg.init``
  baseline on ``path``, ``optim_cfg``'s optimizer."""
  ts = baselines.make_baseline(schedule_cfg.init, path, schedule_cfg.num_levels)
  return state_lib.create(model.params, ts, optim_cfg)
