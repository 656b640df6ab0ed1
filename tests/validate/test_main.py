"""What main.py prints for bad input, whatever raised it (absl's flags, a config file, an option, the
multi-process settings, the workdir, the compilation cache): ``error:`` lines naming the setting, exit status
2, no traceback, nothing written. One subprocess runs every case through ``main.parse_flags`` and ``main.main``
(a fresh ``main.py`` per case would cost seconds each)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_DRIVER = r'''
import contextlib, io, json, sys
ARGVS, sys.argv = sys.argv[1], ['main.py']
import main
from absl import logging
logging.set_verbosity(logging.WARNING)
for argv in json.loads(ARGVS):
  err, code = io.StringIO(), None
  main.FLAGS.unparse_flags()
  for name in [n for n in main.FLAGS if n.startswith('config.')]:  # each case defines its own overrides
    delattr(main.FLAGS, name)
  with contextlib.redirect_stderr(err):
    try:
      sys.argv = ['main.py'] + argv  # config_flags reads its overrides from sys.argv
      main.parse_flags(sys.argv)
      main.main([])
    except SystemExit as e:
      code = e.code
    except BaseException as e:  # a traceback: reported as such
      code, _ = 'raised', err.write('Traceback ' + repr(e))
  print(json.dumps({'argv': argv, 'code': code, 'stderr': err.getvalue()}), flush=True)
'''

TOY = '--config=configs/toy1d.py:smoke'
CASES = [
    ([TOY, '--config.train.batch_size=abc'], "--config.train.batch_size='abc'; need an integer"),
    ([TOY, '--config.train.num_train_steps=1e3'], "--config.train.num_train_steps='1e3'; need an integer"),
    ([TOY, '--config.data.random_flip=maybe'], "--config.data.random_flip='maybe'; need True or False"),
    ([TOY, '--mode=foo'], "--mode='foo'; allowed: train, eval, sample, fit_schedule"),
    (['--config=configs/toy1d.py:smok'], "--config=configs/toy1d.py:smok: unknown config option(s) ['smok']"),
    (['--config=configs/nosuch.py'], '--config=configs/nosuch.py: no such config file'),
    ([TOY, '--config.optim.lr=1'], 'did you mean config.optim.learning_rate?'),
    ([TOY, '--config.distributed.coordinator_address=localhost'], "config.distributed.coordinator_address='localhost'; need host:port"),
    ([TOY, '--config.distributed.coordinator_address=localhost:1234', '--config.distributed.num_processes=2',
      '--config.distributed.process_id=5'], 'config.distributed.process_id=5 is out of range'),
    ([TOY, '--config.compile_cache=/proc/nonexistent/x'], "config.compile_cache='/proc/nonexistent/x' cannot be made"),
    ([TOY, '--config.sde.sigma_max=inf'], 'config.sde.sigma_max=inf; need a finite number'),
    ([TOY, '--config.data.target=gmm', '--config.data.means=(-2.0,2.0)', '--config.data.stds=(0.2,0.2)',
      '--config.data.weights=(0.5,0.6)'], 'config.data.weights must be positive and sum to 1'),
]


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('main') / 'run')
  argvs = [argv + [f'--workdir={workdir}'] for argv, _ in CASES]
  result = subprocess.run([sys.executable, '-c', _DRIVER, json.dumps(argvs)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert len(rows) == len(CASES), result.stderr[-3000:]
  return workdir, rows


def test_every_refusal_is_error_lines_with_status_2_and_nothing_written(outcomes):
  workdir, rows = outcomes
  for (argv, message), row in zip(CASES, rows):
    lines = [l for l in row['stderr'].splitlines() if l and not l[:1] in 'IW']  # absl's own log lines aside
    assert row['code'] == 2, (argv, row)
    assert 'Traceback' not in row['stderr'] and lines[0].startswith('error: '), (argv, row['stderr'])
    assert all(l.startswith(('error: ', '  ')) for l in lines), (argv, lines)
    assert message in row['stderr'], (argv, row['stderr'])
  assert not os.path.exists(workdir)
