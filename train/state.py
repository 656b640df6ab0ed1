"""The train state: one pytree with everything jit, pmap and checkpoints must see, so that a step is a pure
function of it and a checkpoint of it resumes a run exactly."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from ddm import files

OPTIMIZERS = ('adam', 'adamw')


class TrainState(train_state.TrainState):
  """Flax's TrainState (step, params, opt_state; apply_fn and tx static) plus:

  Attributes:
    ema_params: EMA of ``params``, used for sampling and evaluation.
    schedule: f32[T+1], the current schedule ``ts`` (ascending, ``ts[0] = 0`` data end, ``ts[T] = 1``).
    cost_sum, cost_count: f32[T+1], running per-level sums and counts of the per-example cost coefficient
      ``kappa`` (the jvp rate ``delta`` for L_c; :mod:`schedule.costs`)
      since the last schedule update (method.md section 5).
    step_costs: f32[T], incremental costs ``L_i`` at the last update (for length, energy, schedule.json).
    last_update, num_updates, num_skipped: i32[], step of the last update; updates done; updates refused
      because the cost estimates were unusable (non-finite or zero).
  """
  ema_params: Any
  schedule: jax.Array
  cost_sum: jax.Array
  cost_count: jax.Array
  step_costs: jax.Array
  last_update: jax.Array
  num_updates: jax.Array
  num_skipped: jax.Array


def make_optimizer(optim) -> optax.GradientTransformation:
  """Global-norm clipping, then Adam/AdamW with linear warm-up to ``optim.learning_rate``."""
  if optim.optimizer not in OPTIMIZERS:
    raise files.InputError(f'config.optim.optimizer={optim.optimizer!r}; allowed: {", ".join(OPTIMIZERS)}')
  lr = optax.linear_schedule(0.0, optim.learning_rate, max(optim.warmup_steps, 1))
  opt = (optax.adam(lr) if optim.optimizer == 'adam'
         else optax.adamw(lr, weight_decay=optim.weight_decay))
  return optax.chain(optax.clip_by_global_norm(optim.grad_clip), opt) if optim.grad_clip > 0 else opt


def create(params, schedule, optim, apply_fn=None) -> TrainState:
  """A fresh state at step 0 with the initial ``schedule: f32[T+1]`` and empty cost statistics."""
  n = schedule.shape[0]
  zero = jnp.zeros((), jnp.int32)
  return TrainState.create(
      apply_fn=apply_fn, params=params, tx=make_optimizer(optim),
      ema_params=jax.tree.map(jnp.array, params), schedule=jnp.asarray(schedule, jnp.float32),
      cost_sum=jnp.zeros(n), cost_count=jnp.zeros(n), step_costs=jnp.zeros(n - 1),
      last_update=zero, num_updates=zero, num_skipped=zero)


def ema_update(ema, params, decay):
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def to_host_dict(state: TrainState) -> dict:
  """The state's arrays as a nested dict (what a checkpoint holds)."""
  return flax.serialization.to_state_dict(state)


def from_host_dict(template: TrainState, tree: dict) -> TrainState:
  return flax.serialization.from_state_dict(template, tree)
