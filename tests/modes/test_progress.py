"""Progress figures of long runs: an ETA past a day, steps/s that leave out compiling, sampling and saving."""
import math

from modes import progress


def test_format_duration_reads_past_a_day():
  assert progress.format_duration(44 * 3600 + 26 * 60 + 40) == '1d 20:26:40'
  assert progress.format_duration(3 * 86_400 + 5) == '3d 0:00:05'
  assert progress.format_duration(245) == '0:04:05'
  assert progress.format_duration(0.4) == '0:00:00'
  assert progress.format_duration(float('nan')) == '?'
  assert progress.format_duration(float('inf')) == '?'


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_steps_per_sec_excludes_a_slow_hook():
  clock = FakeClock()
  t = progress.Throughput(step=0, clock=clock)
  with t.excluded('compile'):
    clock.now += 30.0              # the first call compiles for 30 s
  clock.now += 10.0                # then 100 steps train in 10 s
  assert t.rate(100) == 10.0
  with t.excluded('sample'):
    clock.now += 50.0              # a sampling step takes 50 s ...
  clock.now += 5.0                 # ... and 50 more steps 5 s
  assert t.rate(150) == 10.0       # wall time would say 50 / 55 s = 0.9 steps/s
  assert t.totals == {'compile': 30.0, 'sample': 50.0}
  # ETA: 850 steps at 10 steps/s plus 50 s of sampling per 150 steps (compilation is not extrapolated)
  assert math.isclose(t.eta(150, 1000, 10.0), 850 * (0.1 + 50 / 150))


def test_a_rate_without_steps_or_time_is_nan():
  clock = FakeClock()
  t = progress.Throughput(step=10, clock=clock)
  assert math.isnan(t.rate(10))
  with t.excluded('checkpoint'):
    clock.now += 1.0
  assert math.isnan(t.rate(11))  # all the time since was excluded
