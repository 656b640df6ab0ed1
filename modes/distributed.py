"""Joining a multi-process job: ``jax.distributed.initialize`` from ``config.train`` or the environment.

Called by ``main.py`` before anything else touches JAX (JAX's rule: the distributed runtime must come
first). After it, ``jax.devices()`` are the devices of every process, the pmapped training step runs over
all of them (its psum/pmean are the collectives across hosts) and each process feeds its own rows of the
global batch (:func:`train.data.host_rows`). On CPU the collectives run over gloo.
"""
import socket
import time

import jax
from absl import logging

from configs.validate import distributed_problems
from ddm import files

PROBE_INTERVAL = 0.5  # seconds between attempts to reach the coordinator


def requested(train_cfg) -> bool:
  return bool(train_cfg.distributed or train_cfg.coordinator_address)


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
      f'config.train.coordinator_address={address!r}: no coordinator answered within '
      f'config.train.initialization_timeout={timeout:g} s ({type(error).__name__}: {error}). Start process 0 '
      '(it serves the coordinator) with the same address, check the host name and port and that the port is '
      'open between the machines, or raise the timeout')


def initialize(config):
  """Joins the job ``config.train`` describes (nothing when it asks for one process); a ``ValueError`` naming
  the setting for bad multi-process settings, before JAX starts."""
  train = config.train
  problems = distributed_problems(config)
  if problems:
    raise files.InputError('invalid configuration:\n  - ' + '\n  - '.join(problems))
  if not requested(train) or jax.distributed.is_initialized():
    return
  # Must precede the CPU backend's creation; GPU/TPU backends keep their own collectives.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  address = train.coordinator_address or None
  if address and train.process_id > 0:
    wait_for_coordinator(address, train.initialization_timeout)
  num_processes = train.num_processes or None                        # None: from the environment
  process_id = train.process_id if train.process_id >= 0 else None
  logging.info('joining the job at %s as process %s of %s (waiting up to %d s for every process: '
               'config.train.initialization_timeout)', address or 'the address from the environment',
               'environment' if process_id is None else process_id,
               'environment' if num_processes is None else num_processes, train.initialization_timeout)
  jax.distributed.initialize(address, num_processes=num_processes, process_id=process_id,
                             initialization_timeout=train.initialization_timeout)
  logging.info('process %d of %d: %d local devices of %d', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
