"""JAX's persistent compilation cache (``config.compile_cache``), on by default.

A compiled XLA program is stored under a key of its HLO, the devices and the compiler's flags; a later
process that compiles the same program (a rerun, a resume, an eval or a fit of the same shapes) loads it
instead. Only programs that took longer than ``jax_persistent_cache_min_compile_time_secs`` (JAX's default,
1 s; its environment variable ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``) to compile are stored, so the
many tiny programs of a run do not fill the folder. Results do not depend on it. In a multi-process job JAX
reads and writes it on process 0 only (measured, 2 processes x 2 CPU devices: process 0 compiled in 6 s, then
1 s from the cache; process 1 in 5 s both times).
"""
import collections
import os

import jax
from absl import logging

from configs.validate import ConfigError, compile_cache_problems
from ddm import files

DEFAULT, OFF = 'default', 'off'
_EVENTS = {'/jax/compilation_cache/cache_hits': 'hits', '/jax/compilation_cache/cache_misses': 'misses'}


def folder(setting: str):
  """The cache folder of ``config.compile_cache`` ('default', 'off' or a folder); None when off."""
  if setting == OFF:
    return None
  if setting == DEFAULT:
    return files.user_cache('jax_compile')
  return os.path.abspath(os.path.expanduser(setting))


_COMPILE = '/jax/core/compile/backend_compile_duration'   # XLA compile, or the cache load that replaced it


class Counts:
  """Cache hits and misses of this process since :func:`enable`, and the seconds spent in XLA's backend
  compile or the cache loads that replaced it (JAX's monitoring events)."""

  def __init__(self):
    self.counts = collections.Counter()
    self.compile_s = 0.0

  def __call__(self, event, **kwargs):
    if event in _EVENTS:
      self.counts[_EVENTS[event]] += 1

  def duration(self, event, seconds, **kwargs):
    if event == _COMPILE:
      self.compile_s += seconds

  def __str__(self):
    return (f"{self.counts['hits']} hits, {self.counts['misses']} misses, {self.compile_s:.1f} s in XLA compiles "
            f"and cache loads")


def enable(setting: str):
  """Points JAX's persistent cache at ``folder(setting)`` (before the first compilation, after
  ``jax.distributed``); returns a :class:`Counts` of its hits and misses, or None when off."""
  found = compile_cache_problems(setting)
  if found:
    raise ConfigError(found)
  path = folder(setting)
  if path is None:
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  counts = Counts()
  jax.monitoring.register_event_listener(counts)
  jax.monitoring.register_event_duration_secs_listener(counts.duration)
  logging.info('compilation cache: %s', path)
  return counts
