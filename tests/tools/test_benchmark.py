"""tools/benchmark.py at toy size, in-process: it runs, and its JSON holds every figure (finite, positive)."""
import json
import math
import types

import pytest

from configs import digits, toy1d
from tools import benchmark

ARGS = dict(repeats=1, steps=2, warmup=1, num_devices=0, pipeline_batches=3, sample_batch=8,
            sample_steps=['10', '100'], fd_step=1e-3)

POSITIVE = [  # figures that are measured on every backend: finite and > 0
    'train.loop_learn_on.step_s', 'train.loop_learn_on.examples_per_s', 'train.loop_learn_on.amortised_step_s',
    'train.loop_learn_on.amortised_examples_per_s', 'train.loop_learn_on.update_branch_s',
    'train.loop_learn_on.expected_update_period_steps', 'train.loop_learn_off.examples_per_s',
    'train.loop_no_schedule_machinery.examples_per_s', 'train.bare.examples_per_s',
    'train.loop_jvp_every_example.amortised_examples_per_s', 'train.loop_learn_on_fused.amortised_examples_per_s',
    'train.loop_jvp_every_example_fused.amortised_examples_per_s',
    'train.loop_learn_on_grouped.amortised_examples_per_s', 'train.loop_learn_on_grouped.expected_update_period_steps',
    'input_pipeline.examples_per_s', 'loop_end_to_end.examples_per_s',
    'cost_estimator.jvp.s_per_sample', 'cost_estimator.fd_central.s_per_sample',
    'cost_estimator.fd_forward.s_per_sample', 'cost_estimator.jvp.batch_mean',
    'sampling.10.scan_images_per_s', 'sampling.10.loop_images_per_s', 'sampling.100.scan_images_per_s',
    'sampling.100.loop_images_per_s', 'sampling.100.scan_speedup',
    'compile.loop_step.lower_s', 'compile.loop_step.compile_s', 'compile.bare_step.lower_s',
    'compile.bare_step.compile_s',
]
FINITE = ['train.overhead_schedule_learning', 'train.overhead_learn_flag', 'train.overhead_loop_over_bare',
          'train.overhead_loop_with_learning_over_bare', 'train.overhead_schedule_learning_jvp_every_example',
          'train.overhead_schedule_learning_fused', 'train.overhead_schedule_learning_jvp_every_example_fused',
          'train.overhead_schedule_learning_grouped', 'train.overhead_schedule_learning_of_config',
          'cost_estimator.fd_central.rel_diff_of_means',
          'cost_estimator.fd_forward.rel_diff_of_means', 'sampling.10.max_abs_diff', 'sampling.100.max_abs_diff']
PRESENT = ['machine.backend', 'machine.device_kind', 'machine.device_count', 'machine.cpu_count', 'machine.devices',
           'memory.peak_bytes_in_use', 'memory.loop_step_memory_analysis', 'memory.bare_step_memory_analysis',
           'targets.schedule_learning_overhead_le_3pct', 'targets.loop_overhead_over_bare_le_3pct',
           'targets.schedule_learning_every_example_le_25pct', 'train.rate_pass_of_config',
           'targets.scan_sampler_at_least_loop_speed_at_100_steps', 'targets.input_pipeline_faster_than_step',
           'targets.no_host_sync_inside_step', 'settings.num_params']


def _get(tree, dotted):
  for part in dotted.split('.'):
    assert part in tree, f'{dotted}: {part!r} missing from {sorted(tree)}'
    tree = tree[part]
  return tree


def _tiny_digits():
  config = digits.get_config('smoke')
  config.model.unet.update(channels=8, channel_mult=(1,))  # one resolution: keeps the test's compiles short
  return config


# The U-Net variant compiles five train steps (~80 s on 2 cores): run with `pytest -m slow`.
@pytest.mark.parametrize('make_config', [lambda: toy1d.get_config('smoke'),
                                         pytest.param(_tiny_digits, marks=pytest.mark.slow)], ids=['toy1d', 'digits'])
def test_benchmark_reports_every_figure(make_config, tmp_path):
  config = make_config()
  config.schedule.cost_fraction = 0.25  # rates on a quarter of each batch, and the every-example variant beside
  config.schedule.measure_every = 4     # and the whole batch on every 4th step (the grouped variant)
  result = benchmark.run(config, types.SimpleNamespace(**ARGS))
  out = tmp_path / 'bench.json'
  out.write_text(json.dumps(benchmark._jsonable(result)))
  result = json.loads(out.read_text())
  for key in POSITIVE:
    value = _get(result, key)
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
  for key in FINITE:
    value = _get(result, key)
    assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
  for key in PRESENT:
    _get(result, key)
  assert result['settings']['num_devices'] == 2  # the loop's step ran pmapped over both fake devices
  assert result['train']['rate_pass_of_config'] == 'fused'  # 'auto' on an MLP without dropout
  assert result['cost_estimator']['finite'] and result['sampling']['100']['finite']
  # the jvp rate and a central difference agree; the scan and the Python loop sample the same images
  assert result['cost_estimator']['fd_central']['rel_diff_of_means'] < 1e-2
  assert result['sampling']['100']['max_abs_diff'] < 1e-3
  on = result['train']['loop_learn_on']
  assert on['examples_with_jvp_per_step'] == 2 * math.ceil(0.25 * config.train.batch_size / 2)
  grouped = result['train']['loop_learn_on_grouped']
  assert grouped['measure_every'] == 4 and grouped['examples_with_jvp_per_measuring_step'] == config.train.batch_size
  assert len(grouped['step_s_runs']) == ARGS['repeats']
  assert result['train']['overhead_schedule_learning_of_config'] == result['train']['overhead_schedule_learning_grouped']
  # every overhead comes with its range over the interleaved rounds (one round here: min = median = max)
  spread = result['train']['overhead_spread']
  assert {'overhead_schedule_learning', 'overhead_schedule_learning_fused', 'overhead_learn_flag',
          'overhead_loop_over_bare', 'overhead_schedule_learning_grouped'} <= set(spread)
  for name, v in spread.items():
    assert len(v['per_round']) == ARGS['repeats'] and v['min'] <= v['median'] <= v['max'], name
  assert 'range over the interleaved rounds' in benchmark.table(result)  # the printed table builds from the JSON


def test_the_overhead_spread_pairs_each_round_with_its_base():
  timed = {'loop_learn_on': {'step_s_runs': [1.10, 1.30, 1.02]},
           'loop_no_schedule_machinery': {'step_s_runs': [1.0, 1.0, 1.0]},
           'loop_learn_off': {'step_s_runs': [1.1, 1.2, 1.0]}, 'bare': {'step_s_runs': [0.5, 1.0, 2.0]}}
  spread = benchmark.overhead_spread(timed)
  learning = spread['overhead_schedule_learning']
  assert [round(r, 6) for r in learning['per_round']] == [0.1, 0.3, 0.02]
  assert (round(learning['min'], 6), round(learning['median'], 6), round(learning['max'], 6)) == (0.02, 0.1, 0.3)
  assert [round(r, 6) for r in spread['overhead_loop_over_bare']['per_round']] == [1.0, 0.0, -0.5]
  assert 'overhead_schedule_learning_fused' not in spread   # a variant that did not run has no spread


@pytest.mark.slow
def test_a_network_with_dropout_times_the_fused_rate_without_it():
  config = _tiny_digits()
  config.model.unet.dropout = 0.1          # as CIFAR-10: the config trains on the separate pass
  config.schedule.cost_fraction = 0.25
  result = benchmark.run(config, types.SimpleNamespace(**ARGS))
  train = result['train']
  assert train['rate_pass_of_config'] == 'separate' and train.get('loop_learn_on_fused') is None
  assert train['loop_learn_on_fused_no_dropout']['amortised_examples_per_s'] > 0
  assert math.isfinite(train['overhead_schedule_learning_fused_no_dropout'])
  assert 'overhead_schedule_learning_fused_no_dropout' in train['overhead_spread']
