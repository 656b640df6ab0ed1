"""tools/accelerator.py at toy size: one JSON with the versions, the environment, every training, sampling and
cost-estimator figure; a spent budget skips parts instead of running them; the default is CIFAR-10 on fake data."""
import json
import math

import pytest

from configs import digits, toy1d
from tools import accelerator, benchmark

TINY = dict(repeats=1, steps=2, warmup=1, pipeline_batches=2, sample_batch=8, sample_repeats=1)


def test_the_preset_writes_every_figure_in_one_json(tmp_path):
  config = toy1d.get_config('smoke')
  config.schedule.cost_fraction = 0.25
  result = accelerator.run(config, budget_s=3600, train_args=TINY)
  out = tmp_path / 'accelerator.json'
  out.write_text(json.dumps(benchmark._jsonable(result)))
  result = json.loads(out.read_text())
  assert result['skipped'] == [] and result['wall_s'] > 0 and result['over_budget'] is False
  assert result['versions']['jax'] and result['versions']['flax'] and result['versions']['orbax-checkpoint']
  assert 'jax' in result['environment'] and 'jaxlib' in result['environment']
  train = result['benchmark']['train']
  for variant in ('loop_learn_on', 'loop_learn_off', 'loop_no_schedule_machinery', 'loop_jvp_every_example', 'bare'):
    assert train[variant]['examples_per_s'] > 0, variant
    assert len(train[variant]['step_s_runs']) == TINY['repeats'], variant
  for key in ('overhead_schedule_learning', 'overhead_schedule_learning_jvp_every_example', 'overhead_loop_over_bare'):
    assert math.isfinite(train[key]), key
  sampling = result['benchmark']['sampling']
  assert sampling['10']['scan_images_per_s'] > 0 and sampling['100']['loop_images_per_s'] > 0
  assert result['benchmark']['compile']['loop_step']['compile_s'] > 0
  assert 'peak_bytes_in_use' in result['benchmark']['memory']
  estimators = result['bench_costs']['estimators']
  assert list(estimators) == list(accelerator.ESTIMATORS)
  assert all(r['s_per_example'] > 0 and r['compile_s'] > 0 for r in estimators.values())
  assert estimators['corrector']['time_vs_corrector'] == 1.0
  assert set(result['part_s']) == {'benchmark'} | {f'bench_costs.{n}' for n in accelerator.ESTIMATORS}
  accelerator.table(result)


def test_a_spent_budget_skips_parts_and_says_so():
  result = accelerator.run(toy1d.get_config('smoke'), budget_s=1e-9, train_args=TINY)
  assert result['benchmark'] is None and result['bench_costs']['estimators'] == {} and not result['over_budget']
  assert len(result['skipped']) == 1 + len(accelerator.ESTIMATORS)
  assert result['skipped'][0].startswith('benchmark (budget of 0 s spent')
  assert 'skipped: benchmark' in accelerator.table(result)
  with pytest.raises(ValueError, match=r'--budget_s=0; need > 0 seconds'):
    accelerator.run(toy1d.get_config('smoke'), budget_s=0)


def test_the_default_is_cifar10_at_full_batch_on_fake_data_of_its_shape():
  config = accelerator.default_config()
  assert config.data.dataset == 'fake' and tuple(config.data.fake_shape) == (32, 32, 3)
  assert config.train.batch_size == 128 and config.model.unet.channels == 128 and config.schedule.num_levels == 1000
  image = accelerator.on_fake_data(digits.get_config())
  assert image.data.dataset == 'fake' and tuple(image.data.fake_shape) == (8, 8, 1)
  assert accelerator.on_fake_data(toy1d.get_config()).data.dataset == 'toy'
