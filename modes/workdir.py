"""What the evaluation and fit runners read from a run's workdir: its checkpoint, and what of its schedules needs one.

A schedule by name (``config.eval.schedules``) resolves by :func:`schedule.schedules.resolve`: 'learned' (the
length function of the checkpoint, :func:`learned_length`, method.md section 3), a baseline, or one stored by
``--mode=fit_schedule``.
"""
from typing import Optional

import jax
from absl import logging

from configs import validate
from ddm import files, samplers, streams
from ddm.paths import make_path
from schedule import schedules, store
from train import checkpoints, model as model_lib, step as step_lib


def has_checkpoint(workdir) -> bool:
  return (files.as_path(workdir) / checkpoints.CHECKPOINTS).is_dir()


def learned_length(state) -> Optional[schedules.LengthFunction]:
  """``Lambda_hat`` through the learned schedule's points: ``[0, cumsum sqrt(L_i)]`` at ``state.schedule``; None
  when the run has no learned schedule (no schedule update happened). What ``schedules.resolve`` takes as
  ``learned``."""
  if int(state.num_updates) == 0:
    return None
  return schedules.LengthFunction.from_step_costs(state.schedule, state.step_costs)


def checkpoint_steps(config, workdir) -> list:
  """The training steps of the checkpoints in ``workdir``, ascending ([] when there is none)."""
  if not has_checkpoint(workdir):
    return []
  return sorted(checkpoints.manager(workdir, config.train.keep_checkpoints, create=False).all_steps())


def stored_config(workdir):
  """``<workdir>/config.json`` under today's field names (``configs.validate.upgrade``), or None: a run stored
  before a config field was renamed still resumes and evaluates."""
  stored = checkpoints.stored_config(workdir)
  return None if stored is None else validate.upgrade(stored)


def restore(config, workdir, step=None):
  """``(path, model, state)`` from the checkpoint of ``step`` (default: the latest good one) in ``workdir``;
  a clear error when there is none."""
  path = make_path(config.sde)
  model = model_lib.make_model(config.model, config.data, path, streams.key(config.seed, 'init'))
  template = step_lib.initial_state(config.schedule, config.optim, path, model)
  state = None
  if has_checkpoint(workdir):
    stored = stored_config(workdir)
    checkpoints.check_compatible(workdir, config, stored=stored)
    mngr = checkpoints.manager(workdir, config.train.keep_checkpoints, create=False)
    try:  # read-only: the parameters are needed, not the optimizer state (its settings never block this)
      state = (checkpoints.restore_latest(mngr, template, read_only=True) if step is None
               else checkpoints.restore_step(mngr, template, int(step), read_only=True))
    except checkpoints.Mismatch as e:
      raise checkpoints.diagnose(workdir, config, e, read_only=True, stored=stored) from None
  if state is None:
    raise files.InputError(f'--workdir={workdir} holds no checkpoint; train first: '
                     f'python main.py --config=... --workdir={workdir}')
  return path, model, jax.device_get(state)


def schedule_names(config, workdir, state) -> list:
  """``config.eval.schedules`` with 'fitted' expanded to every stored schedule; 'learned' is dropped (with a
  warning) when the run never updated its schedule, unless it is the only one asked for."""
  names = []
  for name in config.eval.schedules:
    if name == schedules.FITTED:
      names += [n for n in store.names(workdir) if n not in names]
    elif name == schedules.LEARNED and int(state.num_updates) == 0 and len(config.eval.schedules) > 1:
      logging.warning('the run has no learned schedule (no schedule update happened): not evaluated')
    elif name not in names:
      names.append(name)
  return names


def step_counts(eval_cfg) -> list:
  """``[(K, NFE)]`` of the table's columns: ``config.eval.step_counts`` with each K's NFE under
  ``config.eval.sampler``, or each NFE of ``config.eval.nfe`` that the sampler reaches with the K that reaches it
  (the others: :func:`unreachable_nfe`)."""
  if len(eval_cfg.nfe):
    counts = samplers.steps_for_each_nfe(eval_cfg.sampler, eval_cfg.nfe, eval_cfg.langevin_steps)
    return [(k, n) for n, k in counts.items() if isinstance(k, int)]
  return [(int(k), samplers.nfe(eval_cfg.sampler, k, eval_cfg.langevin_steps)) for k in eval_cfg.step_counts]


def unreachable_nfe(eval_cfg) -> dict:
  """``{NFE: why}`` for each NFE of ``config.eval.nfe`` that ``config.eval.sampler`` cannot make exactly (Heun's
  2K - 1 is odd): its table column says so instead of holding numbers."""
  counts = samplers.steps_for_each_nfe(eval_cfg.sampler, eval_cfg.nfe, eval_cfg.langevin_steps)
  return {n: why for n, why in counts.items() if isinstance(why, str)}
