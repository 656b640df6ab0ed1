"""tools/compare.py on image runs: length and energy against training step from TensorBoard, final step costs."""
import os

import numpy as np
import pytest
from absl import flags

from configs import digits
from ddm.paths import make_path
from schedule import baselines, store
from ddm import files
from tools import compare
from train import checkpoints
from train.writers import MetricWriter


def _fake_run(workdir, lengths, scale):
  config = digits.get_config('smoke')
  checkpoints.write_config(str(workdir), config)
  writer = MetricWriter(str(workdir))
  for step, length in lengths.items():
    writer.write_scalars(step, {'schedule/length': length, 'schedule/energy': 2 * length, 'train/loss': 1.0})
  writer.close()
  path = make_path(config.sde)
  ts = baselines.make_baseline('cosine', path, 16)
  files.write_json(store.schedule_record(path, ts, scale * np.ones(16), 'corrector'),
                   os.path.join(workdir, 'schedule.json'))


def test_image_runs_are_read_from_tensorboard(tmp_path, capsys):
  a, b = tmp_path / 'learned', tmp_path / 'cosine'
  for w in (a, b):
    w.mkdir()
  _fake_run(a, {100: 3.0, 200: 5.0, 300: 6.0}, 1.0)
  _fake_run(b, {100: 3.0, 200: 4.0}, 0.25)
  assert compare.tensorboard_history(str(a), ['schedule/length', 'schedule/energy']) == [
      {'step': 100, 'schedule/length': 3.0, 'schedule/energy': 6.0},
      {'step': 200, 'schedule/length': 5.0, 'schedule/energy': 10.0},
      {'step': 300, 'schedule/length': 6.0, 'schedule/energy': 12.0}]
  out = tmp_path / 'cmp.png'
  flags.FLAGS(['compare', f'--workdirs={a},{b}', f'--out={out}'])
  try:
    compare.main([])
  finally:
    flags.FLAGS.unparse_flags()
  printed = capsys.readouterr().out.splitlines()
  assert printed == ["learned {'schedule/length': 6.0, 'schedule/energy': 12.0} at step 300",
                     "cosine {'schedule/length': 4.0, 'schedule/energy': 8.0} at step 200"]
  assert out.exists() and (tmp_path / 'cmp_costs.png').exists()


def test_a_missing_tag_names_the_run_and_the_tags_it_has(tmp_path):
  _fake_run(tmp_path, {1: 1.0}, 1.0)
  with pytest.raises(ValueError, match=r"has no TensorBoard scalars \['eval/fd'\]; it has: .*schedule/length"):
    compare.tensorboard_history(str(tmp_path), ['eval/fd'])
