"""Orbax checkpoints of the full TrainState (schedule and cost statistics included), and the run's config.

The workdir identifies the run: the same command resumes from the latest checkpoint. A workdir whose
checkpoints come from a different model, data or schedule size is refused before anything is written.
"""
import json
import os

import orbax.checkpoint as ocp

from train import state as state_lib

CONFIG_FILE = 'config.json'
# Sections and fields whose change makes an old checkpoint meaningless or unloadable.
COMPATIBILITY_KEYS = ('data', 'sde', 'model', 'loss', 'schedule.num_steps', 'optim.optimizer')


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                               options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def _lookup(config_dict, dotted):
  value = config_dict
  for part in dotted.split('.'):
    value = value.get(part) if isinstance(value, dict) else None
  return value


def _flatten(value, prefix):
  """``{'a': {'b': 1}}`` -> ``{'prefix.a.b': 1}``."""
  if not isinstance(value, dict):
    return {prefix: value}
  return {k: v for key, sub in value.items() for k, v in _flatten(sub, f'{prefix}.{key}').items()}


def _as_dict(config):
  return json.loads(config.to_json_best_effort())


def check_compatible(workdir: str, config):
  """Raises ``ValueError`` naming every setting that differs from the run stored in ``workdir``."""
  filename = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(filename):
    return
  with open(filename) as f:
    old = json.load(f)
  new = _as_dict(config)
  differ = []
  for key in COMPATIBILITY_KEYS:
    a, b = _flatten(_lookup(old, key), f'config.{key}'), _flatten(_lookup(new, key), f'config.{key}')
    differ += [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
  if differ:
    raise ValueError(f'--workdir={workdir} holds a run with an incompatible config; nothing was changed. '
                     'Use a new workdir, or restore these settings:\n  - ' + '\n  - '.join(differ))


def write_config(workdir: str, config):
  with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
    f.write(config.to_json_best_effort(indent=1))


def save(mngr: ocp.CheckpointManager, step: int, state: state_lib.TrainState):
  mngr.save(step, args=ocp.args.StandardSave(state_lib.to_host_dict(state)), force=True)


def restore_latest(mngr: ocp.CheckpointManager, template: state_lib.TrainState):
  """The latest checkpoint restored into ``template``'s structure, or None if there is none."""
  step = mngr.latest_step()
  if step is None:
    return None
  tree = mngr.restore(step, args=ocp.args.StandardRestore(state_lib.to_host_dict(template)))
  return state_lib.from_host_dict(template, tree)
