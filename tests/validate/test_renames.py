"""Renamed config fields: the old name on the command line answers with the new one, and a run whose
config.json was written under the old names still resumes, evaluates and is still checked for mismatches."""
import json
import os
import subprocess
import sys

import pytest

from configs import base, validate
from train import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The field names of the runs stored before the one-meaning-per-name renames (new -> old).
OLD_NAMES = {
    'train.num_train_steps': 'train.num_steps', 'schedule.num_levels': 'schedule.num_steps',
    'fit.ladder_steps': 'fit.num_steps', 'eval.step_counts': 'eval.num_steps',
    'fit.ays.step_counts': 'fit.ays.num_steps', 'fit.ddss.step_counts': 'fit.ddss.num_steps',
    'fit.trajectory.step_counts': 'fit.trajectory.num_steps', 'fit.refine_step_counts': 'fit.refine_steps',
    'fit.grid_passes': 'fit.iterations', 'fit.fewstep.adam_steps': 'fit.fewstep.iterations',
    'fit.ddss.adam_steps': 'fit.ddss.num_iterations', 'schedule.cost_solver': 'schedule.predictor',
    'distributed.enabled': 'train.distributed', 'distributed.coordinator_address': 'train.coordinator_address',
    'distributed.num_processes': 'train.num_processes', 'distributed.process_id': 'train.process_id',
    'distributed.initialization_timeout': 'train.initialization_timeout',
}


def _pop(tree, dotted):
  *parents, leaf = dotted.split('.')
  for p in parents:
    tree = tree[p]
  return tree.pop(leaf)


def _put(tree, dotted, value):
  *parents, leaf = dotted.split('.')
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def old_format(stored: dict) -> dict:
  """``stored`` (a config.json of today) written under the old field names."""
  old = json.loads(json.dumps(stored))
  for new, before in OLD_NAMES.items():
    _put(old, before, _pop(old, new))
  old.pop('distributed')  # emptied: the section did not exist
  return old


def test_every_rename_leads_to_a_declared_field_and_no_old_name_is_declared():
  declared = validate.fields(base.get_config())
  for old, new in validate.MOVED.items():
    now = validate.current_name(old)
    assert now in declared or any(f.startswith(now + '.') for f in declared), (old, now)
    assert old not in declared and not any(f.startswith(old + '.') for f in declared), old
  assert {validate.current_name(old) for old in OLD_NAMES.values()} == set(OLD_NAMES)


def test_an_old_config_json_reads_as_todays():
  today = json.loads(base.get_config().to_json_best_effort())
  assert validate.upgrade(old_format(today)) == today
  assert validate.upgrade(today) == today


@pytest.mark.parametrize('old, new', [('train.num_steps', 'train.num_train_steps'),
                                      ('eval.num_steps', 'eval.step_counts'),
                                      ('train.process_id', 'distributed.process_id'),
                                      ('schedule.ddss.num_iterations', 'fit.ddss.adam_steps')])
def test_an_old_name_on_the_command_line_names_the_new_one(old, new):
  assert validate.moved_field(old).endswith(f'give --config.{new}')
  assert f'give --config.{new}' in validate.unknown_field(old)


def _main(workdir, *flags):
  return subprocess.run([sys.executable, 'main.py', '--config=configs/toy1d.py:smoke', f'--workdir={workdir}',
                         *flags], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_a_run_stored_under_the_old_names_resumes_evaluates_and_is_still_checked(tmp_path):
  workdir = tmp_path / 'run'
  out = _main(workdir, '--config.train.num_train_steps=10')
  assert out.returncode == 0, out.stderr[-2000:]
  config_json = workdir / checkpoints.CONFIG_FILE
  config_json.write_text(json.dumps(old_format(json.loads(config_json.read_text())), indent=1))
  assert 'num_steps' in json.loads(config_json.read_text())['schedule']

  out = _main(workdir, '--config.train.num_train_steps=20')           # resumes from step 10
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'resuming at step 10 of 20' in out.stderr
  out = _main(workdir, '--mode=eval', "--config.eval.schedules=('learned','linear')",
              '--config.eval.step_counts=(5,)', '--config.eval.seeds=1', '--config.eval.likelihood=False')
  assert out.returncode == 0, out.stderr[-2000:]
  assert (workdir / 'eval.json').exists()
  # a setting that differs from the stored run is still named, under its new name
  config_json.write_text(json.dumps(old_format(json.loads(config_json.read_text()))
                                    if 'num_levels' in config_json.read_text() else
                                    json.loads(config_json.read_text()), indent=1))
  out = _main(workdir, '--mode=eval', '--config.schedule.num_levels=8', '--config.eval.step_counts=(5,)')
  assert out.returncode == 2 and 'config.schedule.num_levels: 16 -> 8' in out.stderr, out.stderr[-2000:]
