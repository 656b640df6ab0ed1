"""Orbax checkpoints of the full TrainState (schedule and cost statistics included), and the run's config.

The workdir identifies the run: the same command resumes from the latest good checkpoint. What is kept safe:
- only a finite state is ever saved (:func:`save` refuses another), so rotation (``keep_checkpoints``) can only
  drop a finite checkpoint in favour of a newer finite one;
- each checkpoint carries the sha256 of its arrays in orbax's step metadata; :func:`restore_latest` verifies
  it and falls back to the newest checkpoint that restores, is finite and matches, naming every damaged one
  (in training they are moved to ``damaged_checkpoints/``, never deleted);
- a workdir whose run has another data set, path, model or training schedule (or seed) is refused before
  anything is written; where files live (``data.tfds_data_dir``, ``eval.inception_path``) never counts;
- a checkpoint whose arrays (orbax's tree metadata) do not have the shapes this config makes is never called
  damaged: :class:`Mismatch` names the settings that differ (:func:`diagnose`: from ``config.json``, else read
  off the stored arrays) and the flags that restore it; evaluation and sampling (``read_only``) need the
  parameters, not the optimizer state, so optimizer settings never block them.
"""
import hashlib
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from ddm import files
from train import state as state_lib

CONFIG_FILE = 'config.json'
CONFIG_FIX = ('restore it from a backup, or move it away: the next training run writes it again (without it '
              'the check that the config matches the checkpoints is skipped)')
CHECKPOINTS, DAMAGED = 'checkpoints', 'damaged_checkpoints'
# Settings whose change makes an old checkpoint meaningless or unloadable: never accepted on a resume.
LOAD_KEYS = ('data', 'sde', 'model', 'loss', 'schedule.num_levels')
# ... and those that only the optimizer state depends on: refused when training resumes, free for eval/sample.
OPTIMIZER_KEYS = ('optim.optimizer',)
OPTIMIZER_STATE = 'opt_state'  # the part of a checkpoint only training reads
# Settings that change what a resumed run computes: refused on resume unless config.train.allow_changes_on_resume.
RESUME_KEYS = ('seed', 'schedule.init', 'schedule.learn', 'schedule.cost', 'schedule.cost_solver',
               'schedule.hutchinson_probes', 'schedule.gamma', 'schedule.cost_fraction', 'schedule.min_count',
               'schedule.update_every', 'schedule.measure_every')
# Fields added after runs were stored: a config.json without one ran with this value.
ADDED_KEYS = {'schedule.measure_every': 1}
# Where things are, not what they are: a moved data set or weights file keeps its run.
LOCATION_KEYS = ('config.data.tfds_data_dir', 'config.eval.inception_path')
DIGEST = 'sha256'


def directory(workdir) -> epath.Path:
  return files.as_path(workdir) / CHECKPOINTS


def saved_steps(workdir) -> list:
  """The steps of the checkpoint folders in ``<workdir>/checkpoints``, ascending, read off their names. No orbax
  manager: in a multi-process job a manager's creation is a collective, which a check that only some processes
  make (the folder appears when the fastest one creates its manager) would leave unmatched."""
  folder = directory(workdir)
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def manager(workdir, keep: int, create: bool = True) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(directory(workdir), options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                                                        create=create))


def check_writable(workdir):
  """Creates ``<workdir>/checkpoints`` and writes a probe file there; a ``ValueError`` naming the folder now
  instead of a failed save after hours of compute."""
  folder = directory(workdir)
  probe = folder / f'.write_test.{os.getpid()}'
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise files.InputError(f'{folder} is not writable ({type(e).__name__}: {e}); free space or fix its permissions, '
                     'or give another --workdir') from None


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


def stored_config(workdir):
  """``<workdir>/config.json`` as a dict, or None when there is none; a damaged file names itself and the fix."""
  filename = files.as_path(workdir) / CONFIG_FILE
  return files.read_json(filename, CONFIG_FIX) if filename.exists() else None


def check_compatible(workdir, config, resume: bool = False, stored=None):
  """Raises ``ValueError`` naming every setting that differs from the run stored in ``workdir``: the
  ``LOAD_KEYS`` always, and with ``resume`` (training) the ``RESUME_KEYS`` unless
  ``config.train.allow_changes_on_resume``. ``stored``: the run's ``config.json`` under today's field names
  (``modes.workdir.stored_config``: a run stored before a rename still matches); None reads it as it is."""
  old = stored_config(workdir) if stored is None else stored
  if old is None:
    return
  new = _as_dict(config)
  keys = LOAD_KEYS + (OPTIMIZER_KEYS if resume else ()) + (
      RESUME_KEYS if resume and not config.train.allow_changes_on_resume else ())
  differ = []
  for key in keys:
    stored = _lookup(old, key)
    a = _flatten(ADDED_KEYS.get(key) if stored is None else stored, f'config.{key}')
    b = _flatten(_lookup(new, key), f'config.{key}')
    differ += [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in sorted(set(a) | set(b))
               if a.get(k) != b.get(k) and k not in LOCATION_KEYS]
  if differ:
    hint = ('; or, to change only seed/schedule settings of this run on purpose, '
            '--config.train.allow_changes_on_resume=True' if resume and not any(
                d.split(':')[0].replace('config.', '', 1).startswith(LOAD_KEYS + OPTIMIZER_KEYS) for d in differ)
            else '')
    raise files.InputError(f'--workdir={workdir} holds a run with an incompatible config; nothing was changed. '
                     f'Use a new workdir, or restore these settings{hint}:\n  - ' + '\n  - '.join(differ))


def write_config(workdir, config):
  files.write_text(config.to_json_best_effort(indent=1), files.as_path(workdir) / CONFIG_FILE)


def _leaves(tree):
  return [(jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in
          jax.tree_util.tree_flatten_with_path(tree)[0]]


def digest(tree) -> str:
  """sha256 of a state dict's arrays (names, dtypes, shapes and bytes, in tree order)."""
  h = hashlib.sha256()
  for name, leaf in _leaves(tree):
    if leaf.dtype.kind in 'iub':
      leaf = leaf.astype(np.int64)  # a Python int and an i32 step are the same step
    h.update(f'{name}:{leaf.dtype.str}:{leaf.shape};'.encode())
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


def nonfinite_leaves(tree) -> list:
  """Names of the floating-point leaves of ``tree`` holding a NaN or infinity."""
  return [name for name, leaf in _leaves(tree) if leaf.dtype.kind == 'f' and not np.all(np.isfinite(leaf))]


def save(mngr: ocp.CheckpointManager, step: int, state: state_lib.TrainState):
  """Saves ``state`` at ``step`` (asynchronously) with its digest; refuses a non-finite state (``ValueError``)."""
  mngr.check_for_errors()  # a failed earlier asynchronous save surfaces here, not at the end of the run
  tree = jax.device_get(state_lib.to_host_dict(state))
  bad = nonfinite_leaves(tree)
  if bad:
    raise files.InputError(f'step {step}: the state holds non-finite values ({len(bad)} arrays, e.g. {bad[0]}); '
                     f'not saved, so the checkpoints in {mngr.directory} stay finite')
  mngr.save(step, args=ocp.args.StandardSave(tree), force=True, custom_metadata={DIGEST: digest(tree)})


def _problem(mngr, step, tree) -> str:
  """What is wrong with the restored ``tree`` of ``step`` ('' when nothing)."""
  bad = nonfinite_leaves(tree)
  if bad:
    return f'non-finite values in {len(bad)} arrays (e.g. {bad[0]})'
  expected = (mngr.metadata(step).custom_metadata or {}).get(DIGEST)
  if expected is None:
    logging.warning('checkpoint %s/%d has no checksum (written before checksums were kept): restored unverified',
                    mngr.directory, step)
  elif digest(tree) != expected:
    return 'its arrays do not match the sha256 written with it (the files were changed or damaged)'
  return ''


def _try_restore(mngr, step, target):
  """``(tree, problem)``: the checkpoint of ``step`` and what is wrong with it ('' when nothing)."""
  try:
    tree = mngr.restore(step, args=ocp.args.StandardRestore(target))
    return tree, _problem(mngr, step, tree)
  except Exception as e:  # orbax/TensorStore raise many types for truncated or missing files
    return None, f'it does not restore ({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""})'


class Mismatch(files.InputError):
  """The checkpoint of ``step`` holds arrays of other names or shapes than this config makes: written by a run
  with other settings, not damaged. ``differences``: ``[(array name, stored shape, this config's shape)]``
  (None where the array is absent); :func:`diagnose` turns it into the settings that differ."""

  def __init__(self, directory, step, differences):
    self.directory, self.step, self.differences = directory, step, differences
    shown = '; '.join(f'{name}: stored {a}, this config {b}' for name, a, b in differences[:3])
    super().__init__(f'checkpoint {directory}/{step} holds arrays of other shapes than this config makes '
                     f'({len(differences)} differ, e.g. {shown}); it was written with other settings and is not '
                     'damaged: rerun with the settings it was trained with, or give another --workdir')


def _shapes(tree) -> dict:
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in
          jax.tree_util.tree_flatten_with_path(tree)[0]}


def stored_tree(directory, step):
  """The checkpoint's tree of ``ArrayMetadata`` (names, shapes, dtypes) as written, read without its arrays;
  None when it cannot be read (the restore then says what is damaged)."""
  try:
    meta = ocp.StandardCheckpointHandler().metadata(epath.Path(directory) / str(step) / 'default')
  except Exception:  # a missing or damaged _METADATA file: left to the restore, which names it damaged
    return None
  return getattr(meta, 'tree', meta)


def _differences(stored: dict, expected: dict) -> list:
  return [(name, stored.get(name), expected.get(name)) for name in sorted(set(stored) | set(expected))
          if stored.get(name) != expected.get(name)]


def _target(mngr, step, target: dict, read_only: bool):
  """``(what to restore step into, whether its optimizer state is the stored one's stand-in)``. Raises
  :class:`Mismatch` when the stored arrays differ from ``target``'s (read-only: outside the optimizer state,
  which is then restored into zeros of the stored shapes, verified, and dropped)."""
  tree = stored_tree(mngr.directory, step)
  if tree is None:
    return target, False
  differ = _differences(_shapes(tree), _shapes(target))
  optimizer = f"['{OPTIMIZER_STATE}']"
  if read_only:
    rest = [d for d in differ if not d[0].startswith(optimizer)]
    if rest:
      raise Mismatch(mngr.directory, step, rest)
    if differ and isinstance(tree, dict) and OPTIMIZER_STATE in tree:
      stand_in = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree[OPTIMIZER_STATE])
      return dict(target, **{OPTIMIZER_STATE: stand_in}), True
  if differ:
    raise Mismatch(mngr.directory, step, differ)
  return target, False


def _state(template, tree, target, swapped):
  if swapped:  # the stored optimizer state was verified with the rest; evaluation never reads it
    tree = dict(tree, **{OPTIMIZER_STATE: target[OPTIMIZER_STATE]})
  return state_lib.from_host_dict(template, tree)


def restore_step(mngr: ocp.CheckpointManager, template: state_lib.TrainState, step: int, read_only: bool = False):
  """The checkpoint of ``step`` restored into ``template``'s structure; a ``ValueError`` naming it when it is
  damaged (verified as :func:`restore_latest` does), :class:`Mismatch` when it was written with other settings."""
  target = state_lib.to_host_dict(template)
  restore_into, swapped = _target(mngr, step, target, read_only)
  tree, problem = _try_restore(mngr, step, restore_into)
  if problem:
    raise files.InputError(f'checkpoint {mngr.directory}/{step} is damaged: {problem}; leave it out with '
                     'config.eval.checkpoints (e.g. the other steps), or restore it from a backup')
  return _state(template, tree, target, swapped)


def restore_latest(mngr: ocp.CheckpointManager, template: state_lib.TrainState, quarantine='',
                   read_only: bool = False):
  """The newest good checkpoint restored into ``template``'s structure, or None if there is none.

  A checkpoint that fails to restore, holds non-finite values or does not match its digest is skipped with a
  warning naming it; with ``quarantine`` (a workdir: training) it is moved to ``<workdir>/damaged_checkpoints/``
  so the resumed run can write that step again. When every checkpoint is damaged nothing is moved and a
  ``ValueError`` names them all and the fix. A checkpoint of other shapes than ``template`` (another config)
  stops with :class:`Mismatch` before anything is moved; ``read_only`` (eval, sample) ignores the optimizer
  state's."""
  target = state_lib.to_host_dict(template)
  damaged = []
  for step in sorted(mngr.all_steps(), reverse=True):
    restore_into, swapped = _target(mngr, step, target, read_only)
    tree, problem = _try_restore(mngr, step, restore_into)
    if not problem:
      if damaged:
        _set_aside(mngr, damaged, quarantine)
      return _state(template, tree, target, swapped)
    logging.warning('checkpoint %s/%d is damaged: %s; falling back to the previous one', mngr.directory, step,
                    problem)
    damaged.append((step, problem))
  if damaged:
    raise files.InputError(f'every checkpoint in {mngr.directory} is damaged:\n  - ' +
                     '\n  - '.join(f'step {s}: {p}' for s, p in damaged) +
                     f'\nMove {mngr.directory} away to start the run afresh, or restore it from a backup.')
  return None


def _dense(params) -> list:
  return sorted((k for k in params if k.startswith('Dense_')), key=lambda k: int(k.split('_')[1]))


def _mlp(tree):
  params = tree.get('params', {})
  return params if 'Dense_0' in params and 'Conv_0' not in params else None


def _clipped(tree) -> bool:
  """Whether the optimizer state is that of clipping then Adam (:func:`train.state.make_optimizer`): a chain
  whose first state (clipping's) holds no arrays; without clipping the first is Adam's moments."""
  opt = tree.get(OPTIMIZER_STATE, {})
  return isinstance(opt, dict) and isinstance(opt.get('0'), dict) and not opt['0'] and '1' in opt


# field -> (its value read off a checkpoint's tree of arrays (None: cannot tell), whether it is the optimizer's)
INFERRED = {
    'schedule.num_levels': (lambda t: t['schedule'].shape[0] - 1 if 'schedule' in t else None, False),
    'model.mlp.width': (lambda t: _mlp(t)['Dense_0']['kernel'].shape[1] if _mlp(t) else None, False),
    'model.mlp.embedding_dim': (lambda t: _mlp(t)['Dense_0']['kernel'].shape[0] if _mlp(t) else None, False),
    'model.mlp.depth': (lambda t: (len(_dense(_mlp(t))) - 2) // 2 if _mlp(t) else None, False),
    'data.dim': (lambda t: _mlp(t)[_dense(_mlp(t))[-1]]['kernel'].shape[1] if _mlp(t) else None, False),
    'model.unet.channels': (lambda t: t['params']['Conv_0']['kernel'].shape[-1]
                            if 'Conv_0' in t.get('params', {}) else None, False),
    'optim.grad_clip': (lambda t: 'on' if _clipped(t) else 'off', True),
}


def _inferred_differences(tree, config, read_only) -> list:
  """``[(field, stored, this config's)]`` of the :data:`INFERRED` fields that differ."""
  differ = []
  for field, (read, optimizer) in INFERRED.items():
    if optimizer and read_only:
      continue
    try:
      stored = read(tree)
    except (KeyError, IndexError, AttributeError, TypeError):
      stored = None
    mine = _lookup(_as_dict(config), field)
    same = stored == ('on' if mine and mine > 0 else 'off') if field == 'optim.grad_clip' else stored == mine
    if stored is not None and not same:
      differ.append((field, stored, mine))
  return differ


def _config_differences(old, config, read_only) -> list:
  """``[(field, stored, this config's)]``: what differs from ``config.json`` among the settings a checkpoint's
  shapes depend on (grad_clip only as on/off, and only for training)."""
  new = _as_dict(config)
  differ = []
  for key in LOAD_KEYS + (() if read_only else OPTIMIZER_KEYS):
    a, b = _flatten(_lookup(old, key), f'{key}'), _flatten(_lookup(new, key), f'{key}')
    differ += [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
               if a.get(k) != b.get(k) and f'config.{k}' not in LOCATION_KEYS]
  clip = _lookup(old, 'optim.grad_clip'), _lookup(new, 'optim.grad_clip')
  if not read_only and None not in clip and (clip[0] > 0) != (clip[1] > 0):
    differ.append(('optim.grad_clip', clip[0], clip[1]))
  return differ


def diagnose(workdir, config, error: Mismatch, read_only: bool = False, stored=None) -> files.InputError:
  """What to tell the user about :class:`Mismatch`: the settings that differ from the run's (``config.json``,
  else read off the checkpoint's arrays) and the flags that would restore the checkpoint. Never "damaged".
  ``stored`` as for :func:`check_compatible`."""
  old = stored_config(workdir) if stored is None else stored
  if old is not None:
    differ, source = _config_differences(old, config, read_only), f'{CONFIG_FILE} of the run'
  else:
    tree = stored_tree(error.directory, error.step)
    differ, source = _inferred_differences(tree or {}, config, read_only), 'the shapes of its arrays'
  if not differ:
    return error
  listed = '; '.join(f'config.{k}: {_shown(k, a)} in the run, {b!r} now' for k, a, b in differ)
  flags = ' '.join(f'--config.{k}={_flag_value(k, a)}' for k, a, _ in differ)
  return files.InputError(
      f'checkpoint {error.directory}/{error.step} was written with other settings ({source}): {listed}. It is '
      f'not damaged; to use it, rerun with {flags}; or give another --workdir for these settings')


def _shown(field, stored):
  if field == 'optim.grad_clip' and stored in ('on', 'off'):  # read off the optimizer state: on or off only
    return '> 0 (clipping)' if stored == 'on' else '0.0 (no clipping)'
  return repr(stored)


def _flag_value(field, stored):
  if field == 'optim.grad_clip' and stored == 'on':
    return '1.0'  # clipping on: any norm > 0 (1.0 is configs/base.py's)
  if field == 'optim.grad_clip' and stored == 'off':
    return '0.0'
  return repr(tuple(stored)) if isinstance(stored, list) else stored


def _set_aside(mngr, damaged, quarantine):
  if not quarantine:
    return
  folder = files.as_path(quarantine) / DAMAGED
  folder.mkdir(parents=True, exist_ok=True)
  for step, problem in damaged:
    source = epath.Path(mngr.directory) / str(step)
    dest, n = folder / str(step), 1
    while dest.exists():
      dest, n = folder / f'{step}.{n}', n + 1
    source.rename(dest)  # same workdir, same file system: a move, not a copy
    logging.warning('moved the damaged checkpoint of step %d to %s (kept, not deleted; %s)', step, dest, problem)
  mngr.reload()
