"""Workdirs as ``etils.epath`` paths: a local ``epath.Path`` through every mode, and a ``gs://`` workdir (an
in-memory file system registered for the ``gs`` scheme, so no network) through every file the run writes
besides orbax's checkpoints (orbax takes ``gs://`` through TensorStore itself)."""
import json

import fsspec
import numpy as np
import pytest
from absl import logging
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

from ddm import files
from eval import plots
from modes import evaluate as eval_run, fit_schedule as fit_run, logs, sample as sample_run, train_report
from modes import train as train_mode
from schedule import schedules, store
from train import checkpoints, lock
from train.writers import MetricWriter
from tests.configs import smoke


def test_a_local_epath_workdir_through_every_mode(tmp_path):
  workdir = epath.Path(tmp_path) / 'run'
  config = smoke(train__checkpoint_every=10, eval__schedules=('linear', 'learned', 'corrector'),
                 eval__step_counts=(5,), eval__likelihood=False)
  state = train_mode.train_and_evaluate(config, workdir)
  assert int(state.step) == config.train.num_train_steps
  fit_run.fit_schedule(config, workdir)
  record = eval_run.evaluate(config, workdir)
  x = sample_run.sample(config, workdir)
  assert set(record['results']) == {'linear', 'learned', 'corrector'}
  assert np.isfinite(np.asarray(x)).all()
  for name in ('log.txt', 'config.json', 'schedule.json', 'eval.json', 'eval.md', 'schedules/corrector.json',
               'fits/corrector.json', 'fits/corrector_schedule.png',
               f'eval/{config.train.num_train_steps}_heun.json', 'checkpoints'):
    assert (workdir / name).exists(), name
  assert any(p.name.startswith('samples_') and p.name.endswith('.npz') for p in workdir.iterdir())


class FakeGCS(MemoryFileSystem):
  """``gs://`` in memory: what epath's fsspec backend calls for ``gs://`` paths (as gcsfs would be)."""
  protocol = ('gs', 'gcs')
  store, pseudo_dirs = {}, ['']

  def __init__(self, *args, finalize_on_close=True, **kwargs):
    del finalize_on_close  # gcsfs's option, passed by epath
    super().__init__(*args, **kwargs)


@pytest.fixture
def bucket():
  for scheme in ('gs', 'gcs'):
    fsspec.register_implementation(scheme, FakeGCS, clobber=True)
  FakeGCS.store.clear()
  yield epath.Path('gs://bucket/run')
  FakeGCS.store.clear()


def test_a_gs_workdir_gets_every_file_of_a_run(bucket, tmp_path):
  workdir = bucket
  assert files.is_remote(workdir) and files.as_path('gs://bucket/run') == workdir
  config = smoke()
  # config.json and the resume check
  checkpoints.write_config(workdir, config)
  assert checkpoints.stored_config(workdir)['seed'] == config.seed
  checkpoints.check_compatible(workdir, config, resume=True)
  changed = smoke(sde__sigma_max=40.0)
  with pytest.raises(ValueError, match='incompatible config'):
    checkpoints.check_compatible(workdir, changed)
  checkpoints.check_writable(workdir)
  # atomic JSON, and a damaged one named
  files.write_json({'a': 1.5}, workdir / 'x.json')
  assert files.read_json(workdir / 'x.json') == {'a': 1.5}
  assert not [p for p in workdir.iterdir() if '.tmp' in p.name]
  (workdir / train_report.HISTORY_FILE).write_text('[{"step": 1')
  with pytest.raises(ValueError, match=r'gs://bucket/run/eval_history.json is damaged'):
    train_report.check_files(workdir)
  # stored schedules by name
  lam = schedules.LengthFunction(np.linspace(0, 1, 9), np.linspace(0, 2, 9) ** 2)
  schedules.save(workdir, 'mine', lam, 'score_optimal', 'corrector')
  assert store.names(workdir) == ['mine']
  assert schedules.stored(workdir, 'mine').steps(4) == pytest.approx(lam.steps(4))
  # plots, written and read back
  plots.plot_ladders(workdir / 'schedule.png', {'a': [80.0, 1.0, 0.01]}, 'a')
  plots.save_image_grid(workdir / 'samples' / '10.png', np.zeros((4, 8, 8, 1)))
  assert plots.read_png(workdir / 'schedule.png').shape[-1] == 3
  assert plots.read_png(workdir / 'samples' / '10.png').shape[-1] == 3
  # log.txt: appended across runs (a local copy uploaded when a block ends)
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)
  try:
    for text in ('first run', 'second run'):
      with logs.to_workdir(workdir) as log_file:
        logging.info(text)
  finally:
    logging.set_verbosity(previous)
  assert log_file == workdir / 'log.txt'
  log_text = log_file.read_text()
  assert log_text.index('first run') < log_text.index('second run')
  # no flock on an object store: the lock is skipped, not faked
  with lock.hold(workdir):
    pass
  # TensorBoard events through epath, readable by TensorBoard
  writer = MetricWriter(workdir / 'eval')
  writer.write_scalars(10, {'eval/w1': 0.25})
  writer.write_scalars(20, {'eval/w1': 0.125})
  writer.close()
  (event_file,) = [p for p in (workdir / 'eval').iterdir() if p.name.startswith('events')]
  local = tmp_path / 'events'
  local.mkdir()
  (local / event_file.name).write_bytes(event_file.read_bytes())
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(local))
  acc.Reload()
  assert [(p.step, p.value) for p in acc.Scalars('eval/w1')] == [(10, 0.25), (20, 0.125)]
  # an evaluation's records: earlier ones kept beside, the latest copied to the top
  stem = str(workdir / 'eval' / '20_heun')
  for round_ in (1, 2):
    eval_run._keep_earlier(stem)
    for ext in ('.json', '.md', '.png'):
      epath.Path(stem + ext).write_text(json.dumps({'round': round_}))
    eval_run._to_top(workdir, stem, True)
  assert json.loads((workdir / 'eval' / '20_heun.1.json').read_text()) == {'round': 1}
  assert json.loads((workdir / 'eval.json').read_text()) == {'round': 2}
  assert (workdir / 'eval_density.png').read_text() == json.dumps({'round': 2})
