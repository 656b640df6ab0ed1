"""Honest progress figures for long runs: steps/s over training steps only, and an ETA that reads past a day.

The training step is dispatched asynchronously, so wall time between two logging steps holds the training
computation plus whatever else the loop did: the first call's compilation, sampling, checkpointing. The loop
wraps those in :meth:`Throughput.excluded` (after blocking on the state, so that no training computation is
charged to them); ``steps_per_sec`` is what remains.
"""
import contextlib
import math
import time


def format_duration(seconds: float) -> str:
  """``'1d 20:26:40'`` for 159,999.6 s, ``'0:04:05'`` under a day; ``'?'`` when not finite (no rate yet)."""
  if not math.isfinite(seconds):
    return '?'
  total = int(round(max(seconds, 0.0)))
  days, rest = divmod(total, 86_400)
  hours, rest = divmod(rest, 3600)
  minutes, secs = divmod(rest, 60)
  clock = f'{hours}:{minutes:02d}:{secs:02d}'
  return f'{days}d {clock}' if days else clock


class Throughput:
  """Training steps per second between logging steps, excluding the time spent in :meth:`excluded` blocks.

  ``totals`` holds the seconds of each excluded kind (``compile``, ``sample``, ``checkpoint``) since this
  process started; :meth:`rate` returns the steps/s of the training time since the previous call."""

  def __init__(self, step: int, clock=time.perf_counter):
    self._clock = clock
    self._since, self._step, self._excluded = clock(), int(step), 0.0
    self._first_step = int(step)
    self.totals = {}

  @contextlib.contextmanager
  def excluded(self, kind: str):
    start = self._clock()
    try:
      yield
    finally:
      seconds = self._clock() - start
      self._excluded += seconds
      self.totals[kind] = self.totals.get(kind, 0.0) + seconds

  def rate(self, step: int) -> float:
    """Steps/s over the training time since the last call (``nan`` if no step or no time passed)."""
    now = self._clock()
    seconds, steps = now - self._since - self._excluded, int(step) - self._step
    self._since, self._step, self._excluded = now, int(step), 0.0
    return steps / seconds if steps > 0 and seconds > 0 else float('nan')

  def eta(self, step: int, num_steps: int, steps_per_sec: float) -> float:
    """Seconds to ``num_steps``: the remaining steps at ``steps_per_sec``, plus the sampling and checkpoint
    time per step seen so far in this process (compilation happens once and is not extrapolated)."""
    done = max(int(step) - self._first_step, 1)
    hooks = sum(v for k, v in self.totals.items() if k != 'compile') / done
    return (num_steps - int(step)) * (1.0 / steps_per_sec + hooks)
