"""Runs ``main.py`` as an N-process JAX job on this machine: multi-host training, tried on one host.

    python -m tools.local_cluster --num_processes=2 --devices_per_process=1 -- \\
        --config=configs/toy1d.py --workdir=runs/toy1d_2proc

Each process gets ``--config.distributed.coordinator_address=localhost:<free port>``, its ``num_processes`` and
``process_id``, and ``devices_per_process`` CPU devices (``XLA_FLAGS``); collectives run over gloo. Output
lines are prefixed ``[p<i>]``. When one process fails the others are given ``--grace`` seconds (JAX's own
heartbeat stops them) and are then killed, so a failed job never hangs. Exit status: the first non-zero
status of a process, else 0. This is how the tests launch multi-process runs, and how a user checks that a
config is ready for a cluster before queueing it there.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def process_command(args, num_processes: int, process_id: int, port: int) -> list:
  return [sys.executable, os.path.join(ROOT, 'main.py'), *args,
          f'--config.distributed.coordinator_address=localhost:{port}', f'--config.distributed.num_processes={num_processes}',
          f'--config.distributed.process_id={process_id}']


def process_env(devices_per_process: int, base=None) -> dict:
  env = dict(os.environ if base is None else base)
  flags = [f for f in env.get('XLA_FLAGS', '').split() if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(flags + [f'--xla_force_host_platform_device_count={devices_per_process}'])
  env['JAX_PLATFORMS'] = env.get('JAX_PLATFORMS', 'cpu')
  env['PYTHONUNBUFFERED'] = '1'
  return env


def _forward(stream, prefix, out):
  for line in iter(stream.readline, ''):
    out.write(f'{prefix} {line}')
    out.flush()


def launch(args, num_processes: int, devices_per_process: int = 1, port: int = 0, grace: float = 30.0,
           out=None, on_start=None) -> list:
  """Starts the N processes and waits for all; returns their exit statuses. ``on_start(processes)`` is called
  once they run (tests use it to kill one)."""
  out, port = out or sys.stdout, port or free_port()
  env = process_env(devices_per_process)
  processes, threads = [], []
  for i in range(num_processes):
    p = subprocess.Popen(process_command(args, num_processes, i, port), env=env, cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    t = threading.Thread(target=_forward, args=(p.stdout, f'[p{i}]', out), daemon=True)
    t.start()
    processes.append(p)
    threads.append(t)
  if on_start:
    on_start(processes)
  failed_at = None
  while any(p.poll() is None for p in processes):
    if failed_at is None and any(p.poll() not in (None, 0) for p in processes):
      failed_at = time.monotonic()
    if failed_at is not None and time.monotonic() - failed_at > grace:
      for p in processes:
        if p.poll() is None:
          os.killpg(p.pid, signal.SIGKILL)
    time.sleep(0.2)
  for t in threads:
    t.join(timeout=5)
  return [p.returncode for p in processes]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_processes', type=int, default=2)
  parser.add_argument('--devices_per_process', type=int, default=1)
  parser.add_argument('--port', type=int, default=0, help='coordinator port (0: a free one)')
  parser.add_argument('--grace', type=float, default=30.0, help='seconds the others get after one fails')
  parser.add_argument('main_args', nargs=argparse.REMAINDER, help='-- then the arguments of main.py')
  args = parser.parse_args(argv)
  main_args = args.main_args[1:] if args.main_args[:1] == ['--'] else args.main_args
  if args.num_processes < 1 or args.devices_per_process < 1:
    parser.error('--num_processes and --devices_per_process must be >= 1')
  codes = launch(main_args, args.num_processes, args.devices_per_process, args.port, args.grace)
  bad = [c for c in codes if c]
  print(f'exit statuses: {codes}')
  return bad[0] if bad else 0


if __name__ == '__main__':
  sys.exit(main())
