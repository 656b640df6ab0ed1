"""Validation of a config before any compute: one ``ValueError`` lists every problem, each naming the setting
and what is allowed (the guide's rule for bad input).

Simple checks are rows of tables (:data:`RANGES`, :data:`CHOICES`, :data:`REGISTERED`); the few that relate
several fields are small functions (:data:`RELATIONS`). Renamed fields answer with their new name
(:data:`MOVED`) on the command line (:func:`unknown_field`); a stored run's config.json is read under the new
names (:func:`upgrade`).
"""
import difflib
import math
import os
import re
import tempfile

import jax
import ml_collections
from etils import epath

import ddm  # noqa: F401  (fills the registries)
import schedule  # noqa: F401
import train.data  # noqa: F401
import train.model
from configs import base
from ddm import files, registry, samplers, targets
from schedule.searches import fewstep, problem

MODES = ('train', 'eval', 'sample', 'fit_schedule')
FOR_A_SOLVER = ('fewstep', 'polish')   # searches that store the K of config.eval's lists, for config.fit.sampler
METHODS = ('score_optimal', 'trajectory', 'ays', 'dp_elbo', 'ddss', 'fewstep', 'polish')  # config.fit.method
PREDICTORS = ('identity', 'euler', 'heun')              # config.schedule.cost_solver
RESERVED_SCHEDULE_NAMES = ('learned', 'fitted')         # config.eval.schedules entries that are not files
NONFINITE_POLICIES = ('stop', 'skip')                   # config.train.on_nonfinite
EVAL_CHECKPOINTS = ('new', 'last', 'all')               # config.eval.checkpoints, or steps '5000,10000'
PLAIN_NAME = r'[A-Za-z0-9_][A-Za-z0-9_.+-]*'           # schedule names: file names inside the workdir

# Fields that were renamed or moved, old -> new (a section moves with every field under it). The old name is
# refused with the new one (:func:`moved_field`), and an old run's config.json is read under the new names
# (:func:`upgrade`), so that the run still resumes and evaluates.
MOVED = {
    # the post-hoc searches got their own section, config.fit
    'schedule.method': 'fit.method', 'schedule.fit_grid': 'fit.grid', 'schedule.fit_iterations': 'fit.iterations',
    'schedule.num_samples': 'fit.num_samples', 'schedule.samples': 'fit.samples', 'schedule.name': 'fit.name',
    'schedule.dp_grid': 'fit.dp_elbo.grid', 'schedule.ddss': 'fit.ddss',
    # one meaning per name: training iterations, the training schedule's T, one ladder's K, a list of K
    'train.num_steps': 'train.num_train_steps', 'schedule.num_steps': 'schedule.num_levels',
    'fit.num_steps': 'fit.ladder_steps', 'eval.num_steps': 'eval.step_counts',
    'fit.ays.num_steps': 'fit.ays.step_counts', 'fit.ddss.num_steps': 'fit.ddss.step_counts',
    'fit.trajectory.num_steps': 'fit.trajectory.step_counts', 'fit.refine_steps': 'fit.refine_step_counts',
    # passes over a grid, not optimizer steps; Adam's steps named as such
    'fit.iterations': 'fit.grid_passes', 'fit.fewstep.iterations': 'fit.fewstep.adam_steps',
    'fit.ddss.num_iterations': 'fit.ddss.adam_steps',
    # the predictor cost's solver step F, not the cost itself ('predictor' is a value of schedule.cost)
    'schedule.predictor': 'schedule.cost_solver',
    # several processes have their own section, config.distributed
    'train.distributed': 'distributed.enabled', 'train.coordinator_address': 'distributed.coordinator_address',
    'train.num_processes': 'distributed.num_processes', 'train.process_id': 'distributed.process_id',
    'train.initialization_timeout': 'distributed.initialization_timeout',
}


def _int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _plain(name) -> bool:
  return isinstance(name, str) and re.fullmatch(PLAIN_NAME, name) is not None and '..' not in name


def checkpoint_steps(value: str):
  """The steps of ``config.eval.checkpoints`` when it lists them ('5000,10000' -> [5000, 10000]), else None
  (one of :data:`EVAL_CHECKPOINTS`, or not a list of integers >= 0)."""
  parts = [p.strip() for p in str(value).split(',')]
  if value in EVAL_CHECKPOINTS or not all(re.fullmatch(r'[0-9]+', p) for p in parts):
    return None
  return [int(p) for p in parts]


AT_LEAST_1 = (lambda v: v >= 1, '>= 1')
INT_AT_LEAST_1 = (lambda v: _int(v) and v >= 1, 'an integer >= 1')
NON_NEGATIVE = (lambda v: v >= 0, '>= 0')
POSITIVE = (lambda v: v > 0, '> 0')

# Every field's first rule is its type, the type of its default in configs/base.py (:func:`type_problems`):
# a bool is True/False, an int an integer (not a bool), a float a *finite* number (an int is one), a str a
# string, a tuple a tuple whose entries are of the type below (a default may be empty). Ranges, choices and
# relations are checked only once every type is right, so no rule ever sees a value of another type.
ELEMENTS = {
    'data.means': float, 'data.stds': float, 'data.weights': float, 'data.fake_shape': int,
    'model.unet.channel_mult': int, 'model.unet.attn_resolutions': int,
    'fit.refine_step_counts': int, 'fit.ays.step_counts': int, 'fit.ddss.step_counts': int, 'fit.trajectory.step_counts': int,
    'eval.step_counts': int, 'eval.nfe': int, 'eval.schedules': str,
}

# field -> (predicate, what is needed); 'config.<field>=<value>; need <what>'
RANGES = {
    # JAX's PRNGKey keeps the low 32 bits: seeds 0 and 2^32 would draw the same numbers.
    'seed': (lambda v: 0 <= v < 2**32, 'an integer in [0, 2^32)'),
    'data.dim': INT_AT_LEAST_1,
    'data.std': POSITIVE, 'data.cantor_tau': POSITIVE,
    'data.cantor_depth': (lambda v: 1 <= v <= 20, 'an integer in 1..20 (the target has 2^depth components)'),
    'data.fake_shape': (lambda v: len(v) == 3 and min(v) >= 1, '(height, width, channels), each >= 1'),
    'model.sigma_data': POSITIVE,
    'model.mlp.width': INT_AT_LEAST_1, 'model.mlp.depth': INT_AT_LEAST_1,
    # the sinusoidal embedding is dim/2 cosines and dim/2 sines
    'model.mlp.embedding_dim': (lambda v: v >= 2 and v % 2 == 0, 'an even integer >= 2'),
    'model.mlp.embedding_scale': POSITIVE,
    'model.unet.channels': INT_AT_LEAST_1, 'model.unet.num_res_blocks': INT_AT_LEAST_1,
    'model.unet.channel_mult': (lambda v: len(v) > 0 and min(v) >= 1, 'a non-empty tuple of integers >= 1'),
    'model.unet.attn_resolutions': (lambda v: all(r >= 1 for r in v), 'side lengths >= 1, e.g. (16,) or ()'),
    'model.unet.dropout': (lambda v: 0 <= v < 1, '0 <= dropout < 1'),
    'schedule.num_levels': INT_AT_LEAST_1,
    'schedule.gamma': (lambda v: 0 < v <= 1, '0 < gamma <= 1'),
    'schedule.cost_fraction': (lambda v: 0 < v <= 1, '0 < cost_fraction <= 1'),
    'schedule.min_count': AT_LEAST_1, 'schedule.update_every': AT_LEAST_1,
    'schedule.measure_every': INT_AT_LEAST_1,
    'schedule.hutchinson_probes': AT_LEAST_1, 'schedule.cost_batch_size': AT_LEAST_1,
    'fit.ladder_steps': INT_AT_LEAST_1, 'fit.num_samples': AT_LEAST_1, 'fit.grid_passes': AT_LEAST_1,
    'fit.grid': (lambda v: v >= 3, '>= 3'),
    'fit.dp_elbo.grid': (lambda v: v >= 2, '>= 2'),
    'fit.ddss.learning_rate': POSITIVE,
    'fit.ddss.adam_steps': AT_LEAST_1, 'fit.ddss.batch_size': AT_LEAST_1,
    'fit.trajectory.grid': (lambda v: _int(v) and v >= 2, 'an integer >= 2'),
    'fit.trajectory.teacher_substeps': INT_AT_LEAST_1, 'fit.trajectory.num_noises': INT_AT_LEAST_1,
    'fit.trajectory.passes': (lambda v: _int(v) and v >= 0, 'an integer >= 0'),
    'fit.refine_substeps': INT_AT_LEAST_1,
    'fit.ays.num_samples': INT_AT_LEAST_1, 'fit.ays.passes': INT_AT_LEAST_1,
    'fit.ays.nodes': (lambda v: _int(v) and v >= 2, 'an integer >= 2'),
    'fit.ays.candidates': (lambda v: _int(v) and v >= 2, 'an integer >= 2'),
    'fit.fewstep.grid': (lambda v: v >= 2, 'an integer >= 2'), 'fit.fewstep.teacher_substeps': INT_AT_LEAST_1,
    'fit.fewstep.num_noises': INT_AT_LEAST_1, 'fit.fewstep.learning_rate': POSITIVE,
    'fit.fewstep.adam_steps': (lambda v: v >= 0, 'an integer >= 0 (0: the best starting ladder as it is)'),
    'optim.learning_rate': POSITIVE,
    'optim.ema_decay': (lambda v: 0 <= v < 1, '0 <= ema_decay < 1'),
    'optim.warmup_steps': NON_NEGATIVE, 'optim.grad_clip': NON_NEGATIVE, 'optim.weight_decay': NON_NEGATIVE,
    'train.batch_size': AT_LEAST_1, 'train.num_train_steps': AT_LEAST_1, 'train.log_every': AT_LEAST_1,
    'train.checkpoint_every': AT_LEAST_1, 'train.keep_checkpoints': AT_LEAST_1, 'train.sample_every': AT_LEAST_1,
    'distributed.initialization_timeout': INT_AT_LEAST_1,
    'eval.classifier_steps': AT_LEAST_1, 'eval.likelihood_samples': AT_LEAST_1,
    'eval.likelihood_steps': AT_LEAST_1, 'eval.hutchinson_probes': AT_LEAST_1,
    'eval.langevin_snr': POSITIVE, 'eval.langevin_steps': INT_AT_LEAST_1,
    'eval.num_samples': AT_LEAST_1, 'eval.seeds': INT_AT_LEAST_1, 'eval.batch_size': AT_LEAST_1,
    'eval.checkpoints': (lambda v: v in EVAL_CHECKPOINTS or checkpoint_steps(v) is not None,
                         f'one of {", ".join(EVAL_CHECKPOINTS)} or training steps such as 5000,10000'),
}
# field -> allowed values; 'config.<field>=<value>; allowed: ...'
CHOICES = {
    'fit.method': METHODS, 'fit.fewstep.objective': fewstep.OBJECTIVES, 'fit.samples': ('data', 'model'),
    'schedule.cost_solver': PREDICTORS,
    'model.dtype': ('float32', 'bfloat16'), 'loss.weighting': ('precond', 'uniform'),
    'optim.optimizer': ('adam', 'adamw'), 'train.on_nonfinite': NONFINITE_POLICIES,
    'schedule.rate_pass': ('auto', 'fused', 'separate'), 'model.unet.embedding': ('positional', 'fourier'),
}
VE_CHOICES = {'sde.parametrisation': ('geometric', 'linear')}
VP_CHOICES = {'sde.beta_schedule': ('linear', 'cosine')}
# field -> the registry its value must name (the registry's own message lists what is registered)
REGISTERED = {
    'data.dataset': registry.DATASETS, 'data.target': registry.TARGETS, 'sde.name': registry.PATHS,
    'schedule.init': registry.BASELINES, 'schedule.cost': registry.COSTS, 'model.precond': registry.PRECONDS,
    'eval.sampler': registry.SAMPLERS, 'fit.ays.init': registry.BASELINES,
}
# field -> the relation (several fields together) that checks it beyond its type
RELATED = {
    'compile_cache': 'compile_cache_problems',
    'data.means': '_data_problems', 'data.stds': '_data_problems', 'data.weights': '_data_problems',
    'model.name': '_table_problems (registered network unless model.exact_score)',
    'sde.sigma_min': '_path_problems', 'sde.sigma_max': '_path_problems', 'sde.eps': '_path_problems',
    'sde.beta_min': '_path_problems', 'sde.beta_max': '_path_problems',
    'fit.name': '_fit_problems', 'fit.refine_step_counts': '_fit_problems', 'fit.ays.step_counts': '_fit_problems',
    'fit.ddss.step_counts': '_fit_problems', 'fit.trajectory.step_counts': '_fit_problems',
    'fit.polish.start': '_fit_problems (its existence: modes/fit_schedule.polish_start)',
    'eval.step_counts': '_eval_problems', 'eval.nfe': '_eval_problems', 'eval.schedules': '_eval_problems',
    'eval.solver_order': '_solver_problems', 'fit.sampler': '_solver_problems (_fit_sampler_problems)',
    'distributed.coordinator_address': 'distributed_problems', 'distributed.num_processes': 'distributed_problems',
    'distributed.process_id': 'distributed_problems',
}
# field -> why its type is its only rule
FREE = {
    'data.offset': 'bimodal components sit at -offset and +offset: any finite position is a target',
    'data.random_flip': 'on or off',
    'data.tfds_data_dir': "a location ('' = TFDS's default); a data set missing there is refused by "
                          'train.data.check_available before any compute',
    'model.exact_score': 'on or off (with a non-toy data set refused by _data_problems)',
    'schedule.learn': 'on or off',
    'fit.refine': 'on or off (with another fit.method refused by _fit_problems)',
    'fit.ddss.learn_coefficients': 'on or off',
    'distributed.enabled': 'on or off (the cluster is found in the environment; see distributed_problems)',
    'train.allow_changes_on_resume': 'on or off',
    'eval.inception_path': "a location: without weights there the tables use the project's classifier, "
                           'and say so',
    'eval.likelihood': 'on or off',
}
KIND_NAMES = {bool: 'True or False', int: 'an integer', float: 'a finite number', str: 'a string'}
ENTRY_NAMES = {bool: 'True/False', int: 'integers', float: 'finite numbers', str: 'strings'}


def _kind(value, kind) -> bool:
  """Whether ``value`` is of the field type ``kind`` (bool, int, float: finite, or str)."""
  if kind is bool:
    return isinstance(value, bool)
  if kind is int:
    return _int(value)
  if kind is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  return isinstance(value, kind)


def fields(config, prefix='') -> dict:
  """``{'train.batch_size': 512, ...}``: every leaf of ``config`` by its dotted name."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(fields(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def type_problems(config) -> list:
  """Each field whose value is not of its declared type (that of its default in configs/base.py)."""
  problems = []
  for field, default in fields(base.get_config()).items():
    try:
      value = _get(config, field)
    except (KeyError, AttributeError, TypeError):
      continue  # a section replaced by a dict of some fields (tests do): the code's own default applies
    if isinstance(default, (tuple, list)):
      kind = ELEMENTS[field]
      if not (isinstance(value, (tuple, list)) and all(_kind(v, kind) for v in value)):
        problems.append(f'config.{field}={value!r}; need a tuple of {ENTRY_NAMES[kind]}, '
                        f'e.g. {tuple(default) or (1,)!r}')
    elif not _kind(value, type(default)):
      problems.append(f'config.{field}={value!r}; need {KIND_NAMES[type(default)]}')
  return problems


def _get(config, dotted):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def _present(config, table) -> dict:
  """``{field: value}`` of the fields of ``table`` that ``config`` has (a section a test replaced by a dict
  of some of its fields lacks the others: the code's own defaults apply to those)."""
  out = {}
  for field in table:
    try:
      out[field] = _get(config, field)
    except (KeyError, AttributeError):
      pass
  return out


def _table_problems(config) -> list:
  problems = []
  for field, value in _present(config, RANGES).items():  # types are right: type_problems came first
    ok, need = RANGES[field]
    if not ok(value):
      problems.append(f'config.{field}={value!r}; need {need}')
  choices = dict(CHOICES, **(VE_CHOICES if config.sde.name == 've' else VP_CHOICES if config.sde.name == 'vp' else {}))
  for field, value in _present(config, choices).items():
    if value not in choices[field]:
      problems.append(f'config.{field}={value!r}; allowed: {", ".join(choices[field])}')
  registered = dict(REGISTERED)
  if not config.model.exact_score:
    registered['model.name'] = registry.NETWORKS
  for field, value in _present(config, registered).items():
    try:
      registered[field].get(value, f'config.{field}')
    except ValueError as e:
      problems.append(str(e))
  return problems


def _path_problems(config, mode) -> list:
  sde, problems = config.sde, []
  if sde.name == 've' and not 0 < sde.sigma_min < sde.sigma_max:
    problems.append(f'config.sde.sigma_min={sde.sigma_min} and config.sde.sigma_max={sde.sigma_max}: '
                    'need 0 < sigma_min < sigma_max')
  if sde.name == 'vp' and not 0 < sde.eps < 0.5:
    problems.append(f'config.sde.eps={sde.eps}; need 0 < eps < 0.5')
  if sde.name == 'vp' and not 0 < sde.beta_min < sde.beta_max:
    problems.append(f'config.sde.beta_min={sde.beta_min} and config.sde.beta_max={sde.beta_max}: need 0 < beta_min '
                    '< beta_max')
  return problems


def _data_problems(config, mode) -> list:
  problems = []
  # gaussian, bimodal and cantor have each field in RANGES; gmm's three lists are checked together here
  if (config.data.dataset == 'toy' or config.model.exact_score) and config.data.target == 'gmm':
    try:
      targets.make_target(config.data)
    except ValueError as e:
      problems.append(str(e))
  if config.model.exact_score and config.data.dataset != 'toy':
    problems.append("config.model.exact_score=True needs a toy target (config.data.dataset='toy')")
  if mode == 'train' and config.train.batch_size % jax.device_count():
    n = jax.device_count()
    problems.append(f'config.train.batch_size={config.train.batch_size} is not divisible by the '
                    f'{n} devices; use a multiple of {n}')
  return problems


def _fit_problems(config, mode) -> list:
  fit, problems = config.fit, []
  if mode == 'fit_schedule' and fit.method == 'dp_elbo' and fit.ladder_steps > fit.dp_elbo.grid:
    problems.append(f'config.fit.ladder_steps={fit.ladder_steps} is larger than the dp_elbo grid '
                    f'config.fit.dp_elbo.grid={fit.dp_elbo.grid}; need num_steps <= grid')
  if not fit.ddss.step_counts or min(fit.ddss.step_counts) < 1:
    problems.append(f'config.fit.ddss.step_counts={tuple(fit.ddss.step_counts)}; need step counts >= 1')
  ks = tuple(fit.trajectory.step_counts)
  if not ks or any(not _int(k) or k < 1 for k in ks) or any(b <= a for a, b in zip(ks, ks[1:])):
    problems.append(f'config.fit.trajectory.step_counts={ks}; need a non-empty, strictly increasing list of step '
                    'counts >= 1, e.g. (5, 10, 20)')
  elif _int(fit.trajectory.grid) and max(ks) > fit.trajectory.grid:
    problems.append(f'config.fit.trajectory.step_counts={ks} has K = {max(ks)} larger than the grid '
                    f'config.fit.trajectory.grid={fit.trajectory.grid}; need every K <= grid')
  if fit.refine and fit.method != 'score_optimal':
    problems.append(f"config.fit.refine=True refines a score-optimal ladder; config.fit.method={fit.method!r}: "
                    "use --config.fit.method=score_optimal, or --config.fit.refine=False")
  ks = tuple(fit.refine_step_counts)
  if fit.refine and (not ks or any(not _int(k) or k < 1 for k in ks) or any(b <= a for a, b in zip(ks, ks[1:]))):
    problems.append(f'config.fit.refine_step_counts={ks}; need a non-empty, strictly increasing list of step counts '
                    '>= 1, e.g. (5, 10, 20)')
  if (mode == 'fit_schedule' and fit.refine and config.schedule.cost == 'predictor'
      and config.eval.sampler not in ('euler', 'heun')):
    problems.append(f"config.fit.refine=True with the predictor cost measures an ODE step's local error; "
                    f"config.eval.sampler={config.eval.sampler!r}, allowed: euler, heun")
  ks = tuple(fit.ays.step_counts)
  if not ks or any(not _int(k) or k < 1 for k in ks) or any(b <= a for a, b in zip(ks, ks[1:])):
    problems.append(f'config.fit.ays.step_counts={ks}; need a non-empty, strictly increasing list of step counts '
                    '>= 1, e.g. (5, 10, 20)')
  if fit.name and (not _plain(fit.name) or fit.name in RESERVED_SCHEDULE_NAMES):
    problems.append(f'config.fit.name={fit.name!r}; a plain name (letters, digits, _ . + -, no path and '
                    f'no ".."), not one of {", ".join(RESERVED_SCHEDULE_NAMES)}')
  if fit.fewstep.objective == 'mmd' and _int(fit.fewstep.num_noises) and fit.fewstep.num_noises < 2:
    problems.append(f"config.fit.fewstep.num_noises={fit.fewstep.num_noises} with config.fit.fewstep.objective='mmd': "
                    'MMD^2 compares at least two outputs; need num_noises >= 2')
  start = fit.polish.start   # whether it exists is checked when the workdir is read (modes/fit_schedule)
  if fit.method == 'polish' and (not _plain(start) or start == 'fitted'):
    problems.append(f'config.fit.polish.start={start!r}; the name of one ladder: a baseline '
                    f'({", ".join(registry.BASELINES.names())}), learned, or a name stored in <workdir>/schedules/')
  return problems


def _eval_problems(config, mode) -> list:
  eval_cfg, problems = config.eval, []
  if not len(eval_cfg.schedules):
    problems.append("config.eval.schedules=(); name at least one schedule, e.g. ('learned', 'fitted', 'linear')")
  for name in eval_cfg.schedules:  # names of stored schedules are checked when the workdir is read
    if not _plain(name):
      problems.append(f'config.eval.schedules names {name!r}; a schedule is a plain name (letters, digits, _ . + -; '
                      'no path, no ".."): learned, fitted, a baseline or a name stored in <workdir>/schedules/')
  if len(eval_cfg.nfe) and len(eval_cfg.step_counts):
    problems.append(f'config.eval.nfe={tuple(eval_cfg.nfe)} and config.eval.step_counts={tuple(eval_cfg.step_counts)} are both set; '
                    'give one: --config.eval.step_counts=() to compare at equal NFE, or --config.eval.nfe=() for step counts')
  elif len(eval_cfg.nfe) and any(not _int(n) or n < 1 for n in eval_cfg.nfe):
    problems.append(f'config.eval.nfe={tuple(eval_cfg.nfe)}; need network-evaluation counts >= 1')
  elif not len(eval_cfg.nfe) and (not len(eval_cfg.step_counts) or min(eval_cfg.step_counts) < 1):
    problems.append(f'config.eval.step_counts={tuple(eval_cfg.step_counts)}; need step counts >= 1 (or config.eval.nfe)')
  if eval_cfg.batch_size >= 1 and not eval_cfg.batch_size <= eval_cfg.num_samples:
    problems.append(f'config.eval.num_samples={eval_cfg.num_samples} is smaller than config.eval.batch_size='
                    f'{eval_cfg.batch_size}; need num_samples >= batch_size >= 1')
  return problems


def distributed_problems(config) -> list:
  """The multi-process settings (``config.distributed``), checked without touching JAX: they are read before
  ``jax.distributed.initialize``, which must come before anything else JAX does."""
  train, distributed, problems = config.train, config.distributed, []
  address, n, i = distributed.coordinator_address, distributed.num_processes, distributed.process_id
  if not (_int(n) and n >= 0):
    problems.append(f'config.distributed.num_processes={n!r}; need an integer >= 1 (0: from the environment)')
  if not (_int(i) and i >= -1):
    problems.append(f'config.distributed.process_id={i!r}; need an integer in [0, num_processes) (-1: from the environment)')
  if problems:
    return problems
  if address:
    host, _, port = address.rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      problems.append(f'config.distributed.coordinator_address={address!r}; need host:port of process 0, e.g. '
                      "'10.0.0.1:1234' or 'localhost:1234'")
    if n < 1 or i < 0:
      problems.append(f'config.distributed.coordinator_address={address!r} needs config.distributed.num_processes >= 1 and '
                      f'config.distributed.process_id in [0, num_processes); got num_processes={n}, process_id={i}')
  elif (n or i >= 0) and not distributed.enabled:
    problems.append(f'config.distributed.num_processes={n}, process_id={i} are given without a coordinator; set '
                    "config.distributed.coordinator_address='host:port' of process 0 (or config.distributed.enabled=True "
                    'to take all three from the environment)')
  if n >= 1 and i >= n:
    problems.append(f'config.distributed.process_id={i} is out of range for config.distributed.num_processes={n}; '
                    f'need 0 <= process_id < {n}')
  if n >= 1 and train.batch_size % n:
    problems.append(f'config.train.batch_size={train.batch_size} is not divisible by config.distributed.num_processes='
                    f'{n}; every process takes an equal share of the global batch')
  return problems


def _rate_pass_problems(config, mode) -> list:
  if config.schedule.get('rate_pass', 'auto') != 'fused':
    return []
  if config.schedule.cost != 'corrector':
    return [f"config.schedule.rate_pass='fused' needs config.schedule.cost='corrector' (got "
            f"{config.schedule.cost!r}: L_p needs second derivatives in x); use 'auto' or 'separate'"]
  if train.model.has_dropout(config.model):
    return [f"config.schedule.rate_pass='fused' with config.model.unet.dropout={config.model.unet.dropout}: the "
            "loss's pass drops units, the rate is that of the network without dropout; use 'auto' or 'separate'"]
  return []


def _measure_every_problems(config, mode) -> list:
  every, fraction = config.schedule.measure_every, config.schedule.cost_fraction
  if _int(every) and every > 1 and 0 < fraction <= 1 and fraction * every > 1 + 1e-9:
    return [f'config.schedule.measure_every={every} with config.schedule.cost_fraction={fraction:g}: a measuring '
            f'step would need {fraction * every:g} of its batch; need measure_every * cost_fraction <= 1 '
            f'(measure_every <= {math.floor(1 / fraction + 1e-9)})']
  return []


def _solver_problems(config, mode) -> list:
  """``config.eval.sampler`` with ``config.eval.solver_order`` and the step counts it is asked to walk
  (:func:`ddm.samplers.setting_problems`: an order the solver does not have, a K below its warm-up, no
  reachable NFE at all)."""
  eval_cfg = config.eval
  if eval_cfg.sampler not in registry.SAMPLERS:
    return []  # named by the REGISTERED table
  fewstep_fit = mode == 'fit_schedule' and config.fit.method in FOR_A_SOLVER and config.fit.get('sampler', '')
  # a fewstep (or polish) fit reads config.eval's K and NFE lists with its own solver (checked below), not eval's
  problems = [] if fewstep_fit else samplers.setting_problems(
      eval_cfg.sampler, eval_cfg.solver_order, tuple(eval_cfg.step_counts), tuple(eval_cfg.nfe), eval_cfg.langevin_steps)
  if mode == 'fit_schedule' and registry.SAMPLERS.get(eval_cfg.sampler).multistep:
    # these take one step of the sampler on its own, which a multistep solver (it reads history) has not
    uses = [what for what, used in (("config.fit.samples='model' (one more step moves a state to t)",
                                     config.fit.samples == 'model'),
                                    ("config.fit.method='ddss' with config.fit.ddss.learn_coefficients=False",
                                     config.fit.method == 'ddss' and not config.fit.ddss.learn_coefficients))
            if used]
    problems += [f'{what} takes single steps of config.eval.sampler; {eval_cfg.sampler!r} is a multistep solver '
                 '(its step reads earlier evaluations): run this search with --config.eval.sampler=euler or heun'
                 for what in uses]
  return problems + _fit_sampler_problems(config, mode)


def _fit_sampler_problems(config, mode) -> list:
  """``config.fit.sampler``, the solver a 'fewstep', 'polish' or 'trajectory' ladder is made for: a probability-flow
  solver that can walk every K the search stores (fewstep, polish: ``config.eval.step_counts``, or the K of
  ``config.eval.nfe``; trajectory: ``config.fit.trajectory.step_counts``)."""
  name = config.fit.get('sampler', '')
  if not isinstance(name, str) or (name and name not in problem.ODE_SAMPLERS):
    return [f'config.fit.sampler={name!r}; allowed: \'\' (config.eval.sampler), {", ".join(problem.ODE_SAMPLERS)}']
  if mode != 'fit_schedule' or config.fit.method not in FOR_A_SOLVER + ('trajectory',):
    return []
  solver = problem.solver_name(config.fit, config.eval)
  if solver not in problem.ODE_SAMPLERS:
    return [f"config.fit.method={config.fit.method!r} follows the probability-flow ODE; its solver {solver!r} "
            f"(config.fit.sampler or config.eval.sampler) is not one; allowed: {', '.join(problem.ODE_SAMPLERS)}"]
  fit_solver = dict(sampler_setting='config.fit.sampler') if config.fit.get('sampler', '') else {}
  if config.fit.method == 'trajectory':
    return samplers.setting_problems(solver, config.eval.solver_order, tuple(config.fit.trajectory.step_counts),
                                     steps_setting='config.fit.trajectory.step_counts', **fit_solver)
  # with fit.sampler '' the solver and its lists are config.eval's own, checked by _solver_problems
  problems = samplers.setting_problems(solver, config.eval.solver_order, tuple(config.eval.step_counts),
                                       tuple(config.eval.nfe), config.eval.langevin_steps,
                                       **fit_solver) if fit_solver else []
  if fit_solver and not problems and not fewstep.steps_wanted(config.eval, solver):
    problems.append(f'config.eval.nfe={tuple(config.eval.nfe)}: config.fit.sampler={solver!r} makes none of these '
                    f'NFEs exactly, so {config.fit.method} has no K to store')
  return problems


RELATIONS = (_path_problems, _data_problems, _fit_problems, _eval_problems, _solver_problems,
             _rate_pass_problems, _measure_every_problems)


def compile_cache_problems(setting) -> list:
  """``config.compile_cache``: 'default', 'off' or a local folder (not a file) that exists or can be made.
  JAX writes the cache only after a compilation and ignores a failure, so a folder it cannot make would make
  the cache do nothing without a word: the nearest existing folder above it is probed (a temporary folder made
  and removed there; nothing is left)."""
  if not isinstance(setting, str) or not setting:
    return [f"config.compile_cache={setting!r}; need 'default', 'off' or a folder"]
  if '://' in setting:
    return [f"config.compile_cache={setting!r} is remote; give a local folder, 'default' or 'off'"]
  if setting in ('default', 'off'):
    return []
  folder = os.path.abspath(os.path.expanduser(setting))
  if os.path.exists(folder) and not os.path.isdir(folder):
    return [f"config.compile_cache={setting!r} is a file; give a folder, 'default' or 'off'"]
  above = folder
  while not os.path.exists(above):
    above = os.path.dirname(above)
  try:
    os.rmdir(tempfile.mkdtemp(prefix='.compile_cache_probe_', dir=above))
  except OSError as e:
    return [f"config.compile_cache={setting!r} cannot be made or written ({above}: {e.strerror or e}); give a "
            "writable folder, 'default' or 'off'"]
  return []


def workdir_problems(workdir) -> list:
  """``--workdir``: a folder (made if missing), local or on a file system this Python can reach."""
  try:
    path = epath.Path(workdir)
    exists = path.exists()
    is_dir = exists and path.is_dir()
  except ImportError as e:  # gs:// without gcsfs, s3:// without s3fs: etils imports the backend on first use
    scheme = str(workdir).split('://', 1)[0]
    return [f'--workdir={workdir}: this Python cannot reach {scheme}:// ({e}); install its file-system package '
            f'(gs://: pip install gcsfs; s3://: pip install s3fs) or give a local --workdir']
  except OSError as e:
    return [f'--workdir={workdir} cannot be read ({type(e).__name__}: {e}); give another --workdir']
  if exists and not is_dir:
    return [f'--workdir={workdir} is a file; give a directory (it is created if missing)']
  return []


class ConfigError(files.InputError):
  """Every problem of a config (and workdir) at once; ``problems`` holds one line each (``main.py`` prints
  each as an ``error:`` line)."""

  def __init__(self, problems):
    self.problems = list(problems)
    super().__init__('invalid configuration:\n  - ' + '\n  - '.join(self.problems))


def problems(config, mode) -> list:
  """Every problem with ``config`` for ``mode``, as messages naming the setting and what is allowed."""
  found = [] if mode in MODES else [f'--mode={mode!r} is not a known mode; allowed: {", ".join(MODES)}']
  missing = [f'config.{section} is missing; this config predates the config.fit split: start from '
             'configs/base.py' for section in ('fit',) if section not in config]
  if missing:
    return found + missing
  wrong_type = type_problems(config)
  if wrong_type:  # every other rule assumes the declared types
    return found + wrong_type
  found += _table_problems(config)
  for relation in RELATIONS:
    found += relation(config, mode)
  return found + distributed_problems(config) + compile_cache_problems(config.get('compile_cache', 'off'))


def validate(config, workdir=None, mode='train'):
  """Checks ``config`` (and ``workdir``) before any compute; one ``ValueError`` lists every problem."""
  found = problems(config, mode) + (workdir_problems(workdir) if workdir is not None else [])
  if found:
    raise ConfigError(found)


def current_name(dotted: str) -> str:
  """The field's name today: ``dotted`` with every rename of :data:`MOVED` applied, in order
  (``schedule.ddss.num_steps`` -> ``fit.ddss.num_steps`` -> ``fit.ddss.step_counts``)."""
  for _ in range(len(MOVED) + 1):
    old = next((o for o in MOVED if dotted == o or dotted.startswith(o + '.')), None)
    if old is None:
      return dotted
    dotted = MOVED[old] + dotted[len(old):]
  raise AssertionError(f'MOVED has a cycle at {dotted}')


def moved_field(dotted: str):
  """The message for a field that was renamed or moved (``schedule.fit_grid`` -> ``fit.grid``), else None."""
  old = next((o for o in MOVED if dotted == o or dotted.startswith(o + '.')), None)
  if old is None:
    return None
  return f'--config.{dotted}: config.{old} moved to config.{MOVED[old]}; give --config.{current_name(dotted)}'


def upgrade(stored: dict) -> dict:
  """An old run's ``config.json`` (a nested dict) under today's field names (:data:`MOVED`), so that a run
  stored before a rename still resumes and evaluates; fields under no old name are kept as they are."""
  flat = {}
  def walk(node, prefix):
    for key, value in node.items():
      dotted = f'{prefix}{key}'
      if isinstance(value, dict) and value:
        walk(value, dotted + '.')
      else:
        flat[current_name(dotted)] = value
  walk(stored, '')
  out = {}
  for dotted, value in flat.items():
    node, *parents = out, *dotted.split('.')[:-1]
    for part in parents:
      node = node.setdefault(part, {})
    node[dotted.split('.')[-1]] = value
  return out


def unknown_field(dotted: str, config=None):
  """The message for ``--config.<dotted>`` when it names no declared field, else None: a moved field's new
  name, or the valid fields of the section it reaches and the closest names (by spelling, or by initials:
  ``lr`` -> ``learning_rate``)."""
  moved = moved_field(dotted)
  if moved:
    return moved
  node, parts = config if config is not None else base.get_config(), dotted.split('.')
  for i, part in enumerate(parts):
    if isinstance(node, ml_collections.ConfigDict) and part in node:
      node = node[part]
      continue
    if not isinstance(node, ml_collections.ConfigDict):
      return None  # a field of a non-section value (e.g. a tuple entry): left to ml_collections
    section = '.'.join(['config'] + parts[:i])
    fields = sorted(node.keys())
    close = difflib.get_close_matches(part, fields, n=3, cutoff=0.6)
    close += [f for f in fields if f not in close and (f.startswith(part) or
                                                        ''.join(w[0] for w in f.split('_') if w) == part)]
    hint = f'; did you mean {" or ".join(f"{section}.{c}" for c in close)}?' if close else ''
    return (f'--{section}.{".".join(parts[i:])}: {section} has no field {part!r}{hint}\n'
            f'  fields of {section}: {", ".join(fields)}')
  return None
