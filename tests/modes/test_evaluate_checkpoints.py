"""--mode=eval over a run's checkpoints: one record per checkpoint, TensorBoard at the training steps."""
import hashlib
import json
import os

import pytest

from modes import evaluate as eval_run, train as train_mode
from tests.configs import smoke


def _config(**overrides):
  """An evaluation job that follows training: every new checkpoint ('new'; --mode=eval's default is 'last')."""
  return smoke(**dict(dict(train__checkpoint_every=5, train__keep_checkpoints=3, eval__schedules=('linear', 'learned'),
                           eval__step_counts=(5,), eval__likelihood=False, eval__checkpoints='new'), **overrides))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  train_mode.train_and_evaluate(_config(), workdir)  # checkpoints at 10, 15, 20 (3 kept)
  return workdir


def _hashes(workdir):
  out = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      with open(os.path.join(root, name), 'rb') as f:
        out[os.path.relpath(os.path.join(root, name), workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def test_every_new_checkpoint_gets_its_record_and_tensorboard_points(trained):
  from tensorboard.backend.event_processing import event_accumulator
  record = eval_run.evaluate(_config(), trained)
  assert record['step'] == 20
  names = sorted(os.listdir(os.path.join(trained, 'eval')))
  for step in (10, 15, 20):
    assert {f'{step}_heun.json', f'{step}_heun.md', f'{step}_heun.png'} <= set(names), names
  assert json.load(open(os.path.join(trained, 'eval.json')))['step'] == 20
  # each schedule its own run: one card per metric and column with a line per schedule, over training
  runs = {}
  for name in ('linear', 'learned'):
    runs[name] = event_accumulator.EventAccumulator(os.path.join(trained, 'eval', name), size_guidance={'scalars': 0})
    runs[name].Reload()
    points = runs[name].Scalars('eval/w1/heun_K5')
    assert [p.step for p in points] == [10, 15, 20]   # the training step, the column in the tag
  assert abs(runs['linear'].Scalars('eval/w1/heun_K5')[-1].value / record['results']['linear']['5']['w1'] - 1) < 1e-6
  assert not any('_std' in tag for tag in runs['linear'].Tags()['scalars'])
  # the same settings again: nothing new to evaluate, the latest record is returned, nothing rewritten
  before = _hashes(trained)
  again = eval_run.evaluate(_config(), trained)
  assert again['step'] == 20 and again['results'] == record['results']
  assert _hashes(trained) == before
  # another sampler is another evaluation; then the first one's settings again put its table back on top
  eval_run.evaluate(_config(eval__sampler='euler', eval__checkpoints='last'), trained)
  assert os.path.exists(os.path.join(trained, 'eval', '20_euler.json'))
  assert json.load(open(os.path.join(trained, 'eval.json')))['sampler'] == 'euler'
  eval_run.evaluate(_config(), trained)
  assert json.load(open(os.path.join(trained, 'eval.json')))['results'] == record['results']
  # other settings of the same sampler: evaluated again, the earlier record kept beside it
  eval_run.evaluate(_config(eval__checkpoints='20', eval__seeds=3), trained)
  assert os.path.exists(os.path.join(trained, 'eval', '20_heun.1.json'))
  assert os.path.exists(os.path.join(trained, 'eval', '20_heun.json'))


def test_all_evaluates_every_checkpoint_again_and_logs_each_cells_place(trained):
  from absl import logging
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)  # what app.run sets; pytest leaves absl at WARNING
  try:
    eval_run.evaluate(_config(eval__checkpoints='all', eval__seeds=2), trained)
  finally:
    logging.set_verbosity(previous)
  for step in (10, 15, 20):   # each one evaluated again; an earlier record of other settings is kept beside it
    record = json.load(open(os.path.join(trained, 'eval', f'{step}_heun.json')))
    assert record['step'] == step and record['seeds'] == 2
  assert os.path.exists(os.path.join(trained, 'eval', '10_heun.1.json'))
  log = open(os.path.join(trained, 'log.txt')).read()
  assert log.count('evaluating checkpoint') >= 3 and '[cell 1/2, ETA ' in log and '[cell 2/2, ETA 0:00:00]' in log


@pytest.mark.parametrize('checkpoints, message', [
    ('7,20', r"config.eval.checkpoints='7,20' names steps without a checkpoint \(\[7\]\); the checkpoints of .* "
             r"are at steps 10, 15, 20"),
    ('latest', r"config.eval.checkpoints='latest'; need one of new, last, all or training steps"),
])
def test_a_bad_checkpoint_selection_is_refused_before_any_compute(trained, checkpoints, message):
  before = _hashes(trained)
  with pytest.raises(ValueError, match=message):
    eval_run.evaluate(_config(eval__checkpoints=checkpoints), trained)
  assert _hashes(trained) == before
