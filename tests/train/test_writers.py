"""Event files: writers opened in the same second keep their own files (tensorboardX names files by the second)."""
from tensorboard.backend.event_processing import event_accumulator

from train.writers import MetricWriter


def test_writers_opened_in_one_second_do_not_overwrite_each_other(tmp_path):
  for step in (10, 15, 20):  # well within one second, as evaluations of three small checkpoints can be
    writer = MetricWriter(tmp_path)
    writer.write_scalars(step, {'eval/w1': float(step)})
    writer.close()
  assert len(list(tmp_path.glob('events.out.tfevents.*'))) == 3
  acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={'scalars': 0})
  acc.Reload()
  assert [(p.step, p.value) for p in acc.Scalars('eval/w1')] == [(10, 10.0), (15, 15.0), (20, 20.0)]
