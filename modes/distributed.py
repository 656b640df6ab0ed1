"""Joining a multi-process job: ``jax.distributed.initialize`` from ``config.distributed`` or the environment.

Called by ``main.py`` before anything else touches JAX (JAX's rule: the distributed runtime must come
first). After it, ``jax.devices()`` are the devices of every process, the pmapped training step runs over
all of them (its psum/pmean are the collectives across hosts) and each process feeds its own rows of the
global batch (:func:`train.data.host_rows`). On CPU the collectives run over gloo.
"""
import os
import socket
import sys
import threading
import time

import jax
from absl import logging

from configs.validate import ConfigError, distributed_problems
from ddm import files

PROBE_INTERVAL = 0.5  # seconds between attempts to reach the coordinator
JAX_GRACE = 30        # JAX's own deadline comes this much later than ours, so ours speaks first
ENV_NUM_PROCESSES, ENV_PROCESS_ID = 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'  # JAX reads only JAX_COORDINATOR_ADDRESS


def requested(dist_cfg) -> bool:
  return bool(dist_cfg.enabled or dist_cfg.coordinator_address)


def wait_for_coordinator(address: str, timeout: float):
  """Returns once a TCP connection to ``address`` ('host:port') succeeds; a ``ValueError`` after ``timeout``
  seconds. JAX's own wait ends in a fatal abort of the process, with a message about another task dying; this
  check says what is wrong instead."""
  host, _, port = address.rpartition(':')
  deadline, error = time.monotonic() + timeout, None
  while time.monotonic() < deadline:
    try:
      with socket.create_connection((host, int(port)), timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
        return
    except OSError as e:
      error = e
      time.sleep(PROBE_INTERVAL)
  raise files.InputError(
      f'config.distributed.coordinator_address={address!r}: no coordinator answered within '
      f'config.distributed.initialization_timeout={timeout:g} s ({type(error).__name__}: {error}). Start process 0 '
      '(it serves the coordinator) with the same address, check the host name and port and that the port is '
      'open between the machines, or raise the timeout')


def from_environment(dist_cfg, batch_size: int, environ=None) -> tuple:
  """``(num_processes, process_id)`` of ``config.distributed``, where unset (0, -1) taken from ``JAX_NUM_PROCESSES``
  and ``JAX_PROCESS_ID`` when those are set (None: left to JAX's cluster detection, e.g. SLURM or a TPU pod).
  A ``ValueError`` naming the variable for a value that is not a usable index."""
  environ = os.environ if environ is None else environ
  n = dist_cfg.num_processes or None
  i = dist_cfg.process_id if dist_cfg.process_id >= 0 else None
  if n is None and environ.get(ENV_NUM_PROCESSES):
    n = _env_int(environ, ENV_NUM_PROCESSES, 1)
  if i is None and environ.get(ENV_PROCESS_ID):
    i = _env_int(environ, ENV_PROCESS_ID, 0)
  if n is not None and i is not None and not i < n:
    raise files.InputError(f'{ENV_PROCESS_ID} / config.distributed.process_id={i} is out of range for {ENV_NUM_PROCESSES} '
                           f'/ config.distributed.num_processes={n}; need 0 <= process_id < {n}')
  if n is not None and batch_size % n:
    raise files.InputError(f'config.train.batch_size={batch_size} is not divisible by {ENV_NUM_PROCESSES}='
                           f'{n}; every process takes an equal share of the global batch')
  return n, i


def _env_int(environ, name, least):
  value = environ[name]
  if not value.strip().isdigit() or int(value) < least:
    raise files.InputError(f'{name}={value!r}; need an integer >= {least} (or unset it and give '
                           'config.distributed.num_processes / process_id)')
  return int(value)


def watchdog(address, num_processes, process_id, timeout: float, exit_fn=os._exit) -> threading.Timer:
  """A timer that, unless cancelled within ``timeout`` seconds, says which setting to check and ends the process
  with status 1. ``jax.distributed.initialize`` waits for every process in C++ and, past its own deadline, aborts
  with a core dump and a message about another task dying; process 0 (which serves the coordinator) cannot
  probe anything beforehand, so this is what turns its wait for missing peers into one clear line."""
  def fire():
    message = (f'error: the multi-process job at {address or "the address from the environment"} did not assemble '
               f'within config.distributed.initialization_timeout={timeout:g} s (this is process '
               f'{"from the environment" if process_id is None else process_id} of '
               f'{"the environment" if num_processes is None else num_processes}). Start every process with the '
               'same coordinator_address and num_processes and a distinct process_id, check that the coordinator '
               "port is open between the machines, or raise the timeout; this process's workdir is untouched")
    print(message, file=sys.stderr, flush=True)
    exit_fn(1)
  timer = threading.Timer(timeout, fire)
  timer.daemon = True
  timer.start()
  return timer


def initialize(config):
  """Joins the job ``config.distributed`` describes (nothing when it asks for one process); a ``ValueError`` naming
  the setting for bad multi-process settings, before JAX starts."""
  distributed = config.distributed
  problems = distributed_problems(config)
  if problems:
    raise ConfigError(problems)
  if not requested(distributed) or jax.distributed.is_initialized():
    return
  # Must precede the CPU backend's creation; GPU/TPU backends keep their own collectives.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  address = distributed.coordinator_address or None
  if address and distributed.process_id > 0:
    wait_for_coordinator(address, distributed.initialization_timeout)
  num_processes, process_id = from_environment(distributed, config.train.batch_size)                # None: JAX's cluster detection
  logging.info('joining the job at %s as process %s of %s (waiting up to %d s for every process: '
               'config.distributed.initialization_timeout)', address or 'the address from the environment',
               'environment' if process_id is None else process_id,
               'environment' if num_processes is None else num_processes, distributed.initialization_timeout)
  timer = watchdog(address, num_processes, process_id, distributed.initialization_timeout)
  try:
    jax.distributed.initialize(address, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=distributed.initialization_timeout + JAX_GRACE)
  finally:
    timer.cancel()
  logging.info('process %d of %d: %d local devices of %d', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
