"""Every field of configs/base.py has a rule, and every rule refuses in one line naming its field (issue 40).

The validation function is called in-process on the base config (a config that is not type-safe, so that a
value of any type can be set, as a config file or a command line could); tests/train/test_safety.py checks
that such refusals leave a trained workdir byte-identical, tests/test_main.py what main.py prints.
"""
import math

import ml_collections
import pytest

from configs import base, validate

FIELDS = validate.fields(base.get_config())
RULE_TABLES = (validate.RANGES, validate.CHOICES, validate.VE_CHOICES, validate.VP_CHOICES, validate.REGISTERED,
               validate.RELATED)

# A value each rule refuses (out of range, not a choice, not registered, or against its relation), with the
# settings the relation needs to see it.
OUT_OF_RANGE = {
    'seed': -1, 'data.dim': 0, 'data.std': 0.0, 'data.cantor_tau': 0.0, 'data.cantor_depth': 0,
    'data.fake_shape': (8, 8), 'model.sigma_data': 0.0, 'model.mlp.width': 0, 'model.mlp.depth': 0,
    'model.mlp.embedding_dim': 3, 'model.mlp.embedding_scale': -1.0, 'model.unet.channels': 0,
    'model.unet.num_res_blocks': 0, 'model.unet.channel_mult': (), 'model.unet.attn_resolutions': (0,),
    'model.unet.dropout': 1.0, 'schedule.num_levels': 0, 'schedule.gamma': 1.5, 'schedule.cost_fraction': 0.0,
    'schedule.min_count': 0, 'schedule.update_every': 0, 'schedule.measure_every': 0,
    'schedule.hutchinson_probes': 0, 'schedule.cost_batch_size': 0, 'fit.ladder_steps': 0, 'fit.num_samples': 0,
    'fit.grid_passes': 0, 'fit.grid': 2, 'fit.dp_elbo.grid': 1, 'fit.ddss.learning_rate': 0.0,
    'fit.ddss.adam_steps': 0, 'fit.ddss.batch_size': 0, 'fit.trajectory.grid': 1,
    'fit.trajectory.teacher_substeps': 0, 'fit.trajectory.num_noises': 0, 'fit.trajectory.passes': -1,
    'fit.refine_substeps': 0, 'fit.ays.num_samples': 0, 'fit.ays.passes': 0, 'fit.ays.nodes': 1,
    'fit.ays.candidates': 1, 'fit.fewstep.grid': 1, 'fit.fewstep.teacher_substeps': 0,
    'fit.fewstep.num_noises': 0, 'fit.fewstep.learning_rate': 0.0, 'fit.fewstep.adam_steps': -1,
    'optim.learning_rate': 0.0, 'optim.ema_decay': 1.0, 'optim.warmup_steps': -1,
    'optim.grad_clip': -1.0, 'optim.weight_decay': -1.0, 'train.batch_size': 0, 'train.num_train_steps': 0,
    'train.log_every': 0, 'train.checkpoint_every': 0, 'train.keep_checkpoints': 0, 'train.sample_every': 0,
    'distributed.initialization_timeout': 0, 'eval.classifier_steps': 0, 'eval.likelihood_samples': 0,
    'eval.likelihood_steps': 0, 'eval.hutchinson_probes': 0, 'eval.langevin_snr': 0.0, 'eval.langevin_steps': 0,
    'eval.num_samples': 0, 'eval.seeds': 0, 'eval.batch_size': 0, 'eval.checkpoints': 'latest',
    # relations
    'compile_cache': '', 'data.means': (), 'data.stds': (0.1, -0.3), 'data.weights': (0.5, 0.6),
    'sde.sigma_min': 0.0, 'sde.sigma_max': 0.001, 'sde.eps': 0.6, 'sde.beta_min': -1.0, 'sde.beta_max': 0.05,
    'fit.name': '../x', 'fit.refine_step_counts': (10, 5), 'fit.ays.step_counts': (), 'fit.ddss.step_counts': (0,),
    'fit.trajectory.step_counts': (20, 10), 'eval.step_counts': (0,), 'eval.nfe': (0,), 'eval.schedules': (),
    'eval.solver_order': 7, 'fit.sampler': 'nope', 'fit.polish.start': '../x', 'distributed.coordinator_address': 'localhost', 'distributed.num_processes': -1,
    'distributed.process_id': -2,
}
CONTEXT = {
    'data.means': {'data.target': 'gmm'}, 'data.stds': {'data.target': 'gmm'},
    'data.weights': {'data.target': 'gmm'}, 'sde.eps': {'sde.name': 'vp'}, 'sde.beta_min': {'sde.name': 'vp'},
    'sde.beta_max': {'sde.name': 'vp'}, 'sde.beta_schedule': {'sde.name': 'vp'},
    'fit.refine_step_counts': {'fit.refine': True}, 'eval.nfe': {'eval.step_counts': ()},
    'fit.polish.start': {'fit.method': 'polish'},
}


def _config(**settings):
  """The base config, not type-safe, with ``settings`` ({dotted field: value}) set."""
  config = ml_collections.ConfigDict(base.get_config().to_dict(), type_safe=False)
  for field, value in settings.items():
    *sections, name = field.split('.')
    node = config
    for section in sections:
      node = node[section]
    node[name] = value
  return config


def _refusals(field, **settings) -> list:
  """The problems that name ``field``; each must be one line."""
  found = validate.problems(_config(**settings), 'train')
  assert all('\n' not in p for p in found), found
  return [p for p in found if f'config.{field}' in p]


def _wrong_types(default) -> list:
  if isinstance(default, bool):
    return ['yes', 1]
  if isinstance(default, int):
    return [1.5, True, 'abc', None]
  if isinstance(default, float):  # (ml_collections itself turns an int, or a bool, into a float here)
    return ['abc', None, (1.0,)]
  if isinstance(default, str):
    return [5, None, ('a',)]
  return ['abc', (None,), 5]


def test_the_base_config_and_the_experiments_pass():
  from configs import cifar10, digits, mnist, toy1d
  for config in (base.get_config(), toy1d.get_config('smoke'), digits.get_config(), mnist.get_config(),
                 cifar10.get_config()):
    for mode in validate.MODES:
      assert validate.problems(config, mode) == []


def test_every_field_has_a_rule_or_a_reason():
  ruled = {f for table in RULE_TABLES for f in table}
  for field in FIELDS:
    assert (field in ruled) != (field in validate.FREE), f'config.{field}: a rule, or a reason in FREE (not both)'
  assert all(validate.FREE.values()) and set(validate.FREE) <= set(FIELDS)
  tuples = {f for f, v in FIELDS.items() if isinstance(v, (tuple, list))}
  assert tuples == set(validate.ELEMENTS), 'every tuple field declares the type of its entries'
  assert set(OUT_OF_RANGE) | {f for t in (validate.CHOICES, validate.VE_CHOICES, validate.VP_CHOICES,
                                           validate.REGISTERED) for f in t} >= ruled - {'model.name'}


def test_a_value_of_the_wrong_type_is_refused_naming_its_field():
  missed = []
  for field, default in FIELDS.items():
    for value in _wrong_types(default):
      if not _refusals(field, **{field: value}):
        missed.append((field, value))
  assert not missed


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
def test_a_nonfinite_number_is_refused_wherever_a_finite_one_is_meant(value):
  floats = [f for f, v in FIELDS.items() if isinstance(v, float) or validate.ELEMENTS.get(f) is float]
  assert len(floats) > 20
  missed = [f for f in floats
            if not _refusals(f, **{f: (value,) if isinstance(FIELDS[f], tuple) else value})]
  assert not missed


def test_a_value_out_of_range_or_against_its_relation_is_refused_naming_its_field():
  missed = []
  for field, value in OUT_OF_RANGE.items():
    if not _refusals(field, **{field: value}, **CONTEXT.get(field, {})):
      missed.append((field, value))
  for table in (validate.CHOICES, validate.VE_CHOICES, validate.VP_CHOICES, validate.REGISTERED):
    for field in table:
      if not _refusals(field, **{field: 'nope'}, **CONTEXT.get(field, {})):
        missed.append((field, 'nope'))
  assert not _refusals('model.name', **{'model.name': 'nope'}) == []
  assert not missed


@pytest.mark.parametrize('settings, message', [
    # the issue's cases: the field the user set is named, not config.data.stds
    ({'data.target': 'bimodal', 'data.std': 0.0}, 'config.data.std=0.0; need > 0'),
    ({'data.cantor_tau': 0.0}, 'config.data.cantor_tau=0.0; need > 0'),
    ({'sde.sigma_max': math.inf}, 'config.sde.sigma_max=inf; need a finite number'),
    ({'compile_cache': '/proc/nonexistent/x'}, "config.compile_cache='/proc/nonexistent/x' cannot be made"),
])
def test_the_issues_settings_name_the_field_set(settings, message):
  found = validate.problems(_config(**settings), 'train')
  assert len(found) == 1 and found[0].startswith(message), found


def test_a_remote_workdir_without_its_package_names_the_flag(monkeypatch):
  from etils import epath

  def missing(self):
    raise ImportError('Please install gcsfs to access Google Storage')
  monkeypatch.setattr(epath.Path, 'exists', missing)
  (message,) = validate.workdir_problems('gs://bucket/run')
  assert message.startswith('--workdir=gs://bucket/run: this Python cannot reach gs://') and 'gcsfs' in message
