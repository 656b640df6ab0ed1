"""The paper's toy claims with a trained network (method.md section 7). Long: run with ``pytest -m slow``."""
import json

import numpy as np
import pytest

from configs import toy1d
from ddm.targets import make_target
from eval import toy
from modes import train as train_mode


def _run(tmp_path, target, learn):
  config = toy1d.get_config()
  config.data.target = target
  config.schedule.learn = learn
  workdir = tmp_path / f'{target}_{learn}'
  train_mode.train_and_evaluate(config, str(workdir))
  return config, json.load(open(workdir / 'eval_history.json'))[-1], np.load(workdir / 'samples.npz')['x']


@pytest.mark.slow
def test_cantor_learned_schedule_resolves_the_8_coarse_modes_and_linear_does_not(tmp_path):
  config, _, learned = _run(tmp_path, 'cantor', True)
  _, _, linear = _run(tmp_path, 'cantor', False)
  target = make_target(config.data)
  assert np.all(toy.mode_masses(target, learned, 8) > 1 / 16)
  assert np.sum(toy.mode_masses(target, linear, 8)) < 0.5


@pytest.mark.slow
def test_bimodal_learned_schedule_beats_linear_on_likelihood_and_score_error(tmp_path):
  _, learned, _ = _run(tmp_path, 'bimodal', True)
  _, linear, _ = _run(tmp_path, 'bimodal', False)
  assert learned['log_likelihood'] > linear['log_likelihood']
  assert learned['score_error'] < linear['score_error']
