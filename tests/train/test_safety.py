"""Runs never lose a good checkpoint: divergence, a second writer, signals, damaged files, unsafe inputs."""
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import validate
from ddm import files
from ddm.paths import make_path
from schedule import schedules, store
from modes import train as train_mode
from tests.configs import smoke
from train import checkpoints, lock, model as model_lib, state as state_lib, step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_smoke = smoke  # tests/configs.py


def _hashes(folder) -> dict:
  return {f: hashlib.sha256(open(f, 'rb').read()).hexdigest()
          for f in glob.glob(os.path.join(str(folder), '**'), recursive=True) if os.path.isfile(f)}


def _leaves(state):
  return jax.tree.leaves(state_lib.to_host_dict(state))


def _assert_same(a, b):
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)


def _restore(workdir, config=None):
  config = config or _smoke()
  path = make_path(config.sde)
  model = model_lib.make_model(config.model, config.data, path, jax.random.PRNGKey(5))
  return checkpoints.restore_latest(checkpoints.manager(str(workdir), 3),
                                   step_lib.initial_state(config.schedule, config.optim, path, model))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 20-step smoke run (checkpoints at 10 and 20) and its final state; copy it before changing it."""
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  final = train_mode.train_and_evaluate(_smoke(), str(workdir))
  return workdir, final


def _copy(trained, tmp_path):
  dest = tmp_path / 'run'
  shutil.copytree(trained[0], dest)
  return dest


def test_a_diverging_run_stops_and_keeps_its_finite_checkpoints(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  # 1e38 is finite, but the parameters it makes overflow the network: the loss is not finite by step 22.
  with pytest.raises(SystemExit, match=r'not finite at step 2\d .*step 20 in .*holds a finite state') as e:
    train_mode.train_and_evaluate(_smoke(optim__learning_rate=1e38, train__num_train_steps=40), str(workdir))
  assert 'config.train.on_nonfinite=skip' in str(e.value)
  mngr = checkpoints.manager(str(workdir), 3)
  assert mngr.all_steps() == [10, 20]  # nothing rotated out, nothing new
  _assert_same(_restore(workdir), trained[1])


def test_skip_drops_nonfinite_steps_and_finishes_with_a_finite_state(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  final = train_mode.train_and_evaluate(_smoke(optim__learning_rate=1e38, train__num_train_steps=30,
                                         train__on_nonfinite='skip'), str(workdir))
  assert int(final.step) == 30
  assert not checkpoints.nonfinite_leaves(state_lib.to_host_dict(final))
  assert 30 in checkpoints.manager(str(workdir), 3).all_steps()


def test_save_refuses_a_nonfinite_state(tmp_path):
  state = _restore_fresh()
  bad = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
  mngr = checkpoints.manager(str(tmp_path), 3)
  with pytest.raises(ValueError, match='non-finite values'):
    checkpoints.save(mngr, 1, bad)
  assert mngr.all_steps() == []


def _restore_fresh():
  config = _smoke()
  path = make_path(config.sde)
  model = model_lib.make_model(config.model, config.data, path, jax.random.PRNGKey(0))
  return step_lib.initial_state(config.schedule, config.optim, path, model)


def test_a_second_training_process_is_refused_and_changes_nothing(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; from train import lock\n'
                             'with lock.hold(sys.argv[1]):\n  print("held", flush=True); time.sleep(120)',
                             str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    before = _hashes(workdir)
    with pytest.raises(ValueError, match=rf'in use by another training process \(pid {holder.pid} on '):
      train_mode.train_and_evaluate(_smoke(train__num_train_steps=30), str(workdir))
    assert _hashes(workdir) == before
  finally:
    holder.kill()
    holder.wait()
  # The holder died without cleaning up: its file is left, the lock is free, and a new run takes it over.
  assert os.path.exists(workdir / lock.LOCK_FILE)
  assert int(train_mode.train_and_evaluate(_smoke(train__num_train_steps=25), str(workdir)).step) == 25
  assert not os.path.exists(workdir / lock.LOCK_FILE)  # released on exit


def test_sigterm_saves_the_current_step_and_resumes_bit_for_bit(tmp_path):
  overrides = dict(train__num_train_steps=300, train__checkpoint_every=100_000, train__sample_every=100_000,
                   train__log_every=10)
  flags = [f'--config.train.{k.split("__")[1]}={v}' for k, v in overrides.items()]
  workdir = tmp_path / 'interrupted'
  proc = subprocess.Popen([sys.executable, 'main.py', '--config=configs/toy1d.py:smoke', f'--workdir={workdir}',
                           *flags], cwd=REPO, stderr=subprocess.PIPE, text=True)
  seen = []
  for line in proc.stderr:
    seen.append(line)
    if 'step 60/300' in line:
      proc.send_signal(signal.SIGTERM)
      break
  rest = proc.stderr.read()
  assert proc.wait(timeout=300) == 128 + signal.SIGTERM, ''.join(seen[-5:]) + rest[-2000:]
  assert 'stopped by SIGTERM' in rest
  steps = checkpoints.manager(str(workdir), 3).all_steps()
  assert len(steps) == 1 and 60 <= steps[0] < 300  # the step it was at, not a checkpoint_every multiple
  resumed = train_mode.train_and_evaluate(_smoke(**overrides), str(workdir))
  full = train_mode.train_and_evaluate(_smoke(**overrides), str(tmp_path / 'full'))
  _assert_same(resumed, full)


def _largest_data_file(workdir, step):
  files = [f for f in glob.glob(str(workdir / 'checkpoints' / str(step) / '**'), recursive=True)
           if os.path.isfile(f) and '/d/' in f]
  return max(files, key=os.path.getsize)


# Reading damaged files leaves TensorStore state behind that has crashed later XLA compilations of the same
# process (a segfault, seen only in the full suite): the damaged workdirs are read in fresh processes.
_DAMAGED_RUN = """
import sys, jax
sys.path.insert(0, {repo!r})
from tests.train import test_safety as t
from modes import train as train_mode
from train import checkpoints, state as state_lib
workdir = sys.argv[1]
try:
  print('restored', int(t._restore(workdir).step), checkpoints.manager(workdir, 3).all_steps(), flush=True)
  final = train_mode.train_and_evaluate(t._smoke(), workdir)
  print('final', checkpoints.digest(jax.device_get(state_lib.to_host_dict(final))), flush=True)
except ValueError as e:
  print('error', str(e).replace(chr(10), ' '), flush=True)
"""


def _in_fresh_process(workdir):
  result = subprocess.run([sys.executable, '-c', _DAMAGED_RUN.format(repo=REPO), str(workdir)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.strip().splitlines()


@pytest.mark.parametrize('damage', ['truncate', 'flip'])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(trained, tmp_path, damage):
  workdir = _copy(trained, tmp_path)
  victim = _largest_data_file(workdir, 20)
  raw = bytearray(open(victim, 'rb').read())
  if damage == 'truncate':
    raw = raw[:len(raw) // 2]
  else:
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
  open(victim, 'wb').write(bytes(raw))
  restored, final = _in_fresh_process(workdir)
  # A read-only restore (eval, sample) falls back and moves nothing; training sets the damaged one aside and
  # redoes steps 11-20, ending on the original run's state.
  assert restored == 'restored 10 [10, 20]'
  assert os.path.isdir(workdir / checkpoints.DAMAGED / '20')
  assert final == 'final ' + checkpoints.digest(jax.device_get(state_lib.to_host_dict(trained[1])))


def test_every_checkpoint_damaged_is_an_error_naming_them(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  for step in (10, 20):
    open(_largest_data_file(workdir, step), 'wb').close()
  before = _hashes(workdir)
  (line,) = _in_fresh_process(workdir)
  assert re.match(r'error every checkpoint in .* is damaged: .*step 20.*step 10.*Move', line), line
  assert _hashes(workdir) == before


@pytest.mark.parametrize('name', [checkpoints.CONFIG_FILE, 'eval_history.json'])
def test_a_truncated_json_file_is_named_with_the_fix(trained, tmp_path, name):
  workdir = _copy(trained, tmp_path)
  text = open(workdir / name).read()
  open(workdir / name, 'w').write(text[:len(text) // 2])
  before = _hashes(workdir)
  with pytest.raises(files.InputError, match=rf'{name} is damaged \(JSONDecodeError.*\); (restore|move)'):
    train_mode.train_and_evaluate(_smoke(train__num_train_steps=30), str(workdir))
  assert _hashes(workdir) == before


def test_stored_schedules_are_validated_before_use(tmp_path):
  good = [0.0, 0.3, 0.6, 1.0]
  cases = {'truncated': None, 'nan': [0.0, float('nan'), 0.6, 1.0], 'decreasing': [0.0, 0.6, 0.3, 1.0],
           'ends': [0.1, 0.3, 0.6, 1.0]}
  for name, ladder in cases.items():
    if ladder is None:
      store.save_ladders(str(tmp_path), name, {3: good}, 'dp_elbo', 'corrector')
      text = open(store.filename(str(tmp_path), name)).read()
      open(store.filename(str(tmp_path), name), 'w').write(text[:20])
    else:
      store.save_ladders(str(tmp_path), name, {3: ladder}, 'dp_elbo', 'corrector')
  expected = {'truncated': 'is damaged', 'nan': 'non-finite', 'decreasing': 'not strictly increasing',
              'ends': 'not from 0 to 1'}
  for name, message in expected.items():
    with pytest.raises(files.InputError, match=rf'{name}\.json .*{message}.*--config.fit.name={name}'):
      schedules.stored(str(tmp_path), name)
  store.save_ladders(str(tmp_path), 'good', {3: good}, 'dp_elbo', 'corrector')
  np.testing.assert_array_equal(schedules.stored(str(tmp_path), 'good').steps(3), good)


def test_resume_refuses_a_changed_seed_or_cost_unless_asked_and_ignores_locations(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _hashes(workdir)
  for overrides, field in ((dict(seed=1), 'config.seed: 0 -> 1'),
                           (dict(schedule__cost='predictor'), "config.schedule.cost: 'corrector' -> 'predictor'")):
    config = _smoke(**{k: v for k, v in overrides.items() if '__' in k})
    if 'seed' in overrides:
      config.seed = overrides['seed']
    with pytest.raises(ValueError, match=rf'(?s)incompatible config.*allow_changes_on_resume.*{field}'):
      checkpoints.check_compatible(str(workdir), config, resume=True)
    checkpoints.check_compatible(str(workdir), config, resume=False)  # eval/sample may use another seed
    config.train.allow_changes_on_resume = True
    checkpoints.check_compatible(str(workdir), config, resume=True)
  moved = _smoke(data__tfds_data_dir='/somewhere/else')
  moved.eval.inception_path = '/weights/elsewhere.npz'
  checkpoints.check_compatible(str(workdir), moved, resume=True)
  assert _hashes(workdir) == before


def test_missing_tfds_data_leaves_a_new_workdir_unwritten(tmp_path):
  config = _smoke(data__dataset='mnist', data__tfds_data_dir=str(tmp_path / 'nothing'), model__name='unet')
  with pytest.raises(ValueError, match='not prepared in array_record format'):
    train_mode.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_an_unwritable_checkpoints_folder_is_refused_before_compute(tmp_path):
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'checkpoints').write_text('a file where the folder should be')
  with pytest.raises(ValueError, match=r'checkpoints is not writable'):
    train_mode.train_and_evaluate(_smoke(), str(tmp_path / 'run'))
  assert sorted(os.listdir(tmp_path / 'run')) == ['checkpoints']


@pytest.mark.parametrize('overrides, message', [
    (dict(eval__schedules=()), r'config.eval.schedules=\(\); name at least one'),
    (dict(eval__schedules=('../../etc/passwd',)), r"config.eval.schedules names '../../etc/passwd'; a schedule is a plain"),
    (dict(eval__schedules=('..',)), r"config.eval.schedules names '..'"),
    (dict(fit__name='../x'), r"config.fit.name='../x'; a plain name"),
    (dict(data__dim=0), 'config.data.dim=0; need an integer >= 1'),
    (dict(eval__num_samples=0), 'config.eval.num_samples=0; need >= 1'),
    (dict(eval__batch_size=0), 'config.eval.batch_size=0; need >= 1'),
    (dict(optim__warmup_steps=-1), 'config.optim.warmup_steps=-1; need >= 0'),
    (dict(optim__grad_clip=-1.0), r'config.optim.grad_clip=-1.0; need >= 0'),
    (dict(eval__langevin_snr=-0.1), r'config.eval.langevin_snr=-0.1; need > 0'),
    (dict(eval__langevin_steps=0), 'config.eval.langevin_steps=0; need an integer >= 1'),
    (dict(train__on_nonfinite='ignore'), "config.train.on_nonfinite='ignore'; allowed: stop, skip"),
    (dict(sde__sigma_max=float('inf')), 'config.sde.sigma_max=inf; need a finite number'),
    (dict(data__target='bimodal', data__std=0.0), r'config.data.std=0.0; need > 0'),
    (dict(optim__learning_rate=float('nan')), 'config.optim.learning_rate=nan; need a finite number'),
])
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_bad_fields_are_refused_with_the_workdir_unchanged(trained, tmp_path, overrides, message, mode):
  from modes import evaluate as eval_run
  workdir = _copy(trained, tmp_path)
  before = _hashes(workdir)
  runner = train_mode.train_and_evaluate if mode == 'train' else eval_run.evaluate
  with pytest.raises(ValueError, match=message):
    runner(_smoke(**overrides), str(workdir))
  assert _hashes(workdir) == before


def test_a_mistyped_field_lists_the_section_and_a_suggestion():
  message = validate.unknown_field('optim.lr')
  assert 'config.optim has no field' in message and 'did you mean config.optim.learning_rate?' in message
  assert 'fields of config.optim: ema_decay, grad_clip, learning_rate' in message
  assert 'did you mean config.train.batch_size' in validate.unknown_field('train.batchsize')
  assert validate.unknown_field('nosuch.x').startswith('--config.nosuch.x: config has no field')
  assert validate.unknown_field('optim.learning_rate') is None
  result = subprocess.run([sys.executable, 'main.py', '--config=configs/toy1d.py:smoke', '--workdir=/nonexistent',
                           '--config.optim.lr=1'], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'did you mean config.optim.learning_rate?' in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.parametrize('flag, message', [
    ('--config.eval.sampler=bogus', "config.eval.sampler='bogus' is not a known sampler; allowed: ancestral"),
    ('--config.optim.optimizer=sgd', "config.optim.optimizer='sgd'; allowed: adam, adamw"),
])
def test_a_refused_run_prints_one_error_and_no_traceback(tmp_path, flag, message):
  """main.py prints a files.InputError's message alone (the traceback with --verbosity=1) and exits with 2."""
  cmd = [sys.executable, 'main.py', '--config=configs/toy1d.py:smoke', f'--workdir={tmp_path / "run"}', flag]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and f'error: {message}' in result.stderr, result.stderr  # 2: bad input
  assert 'Traceback' not in result.stderr, result.stderr
  assert not (tmp_path / 'run').exists()
  verbose = subprocess.run(cmd + ['--verbosity=1'], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert verbose.returncode == 1 and 'Traceback' in verbose.stderr and message in verbose.stderr


def test_the_inception_download_is_checked_against_its_published_hash(tmp_path, monkeypatch):
  from tools import inception_weights
  f = tmp_path / 'weights.pth'
  f.write_bytes(b'not the weights')
  digest = hashlib.sha256(b'not the weights').hexdigest()
  inception_weights.check_sha256_prefix(str(f), digest[:8])
  with pytest.raises(SystemExit, match='does not start with 6726825d'):
    inception_weights.check_sha256_prefix(str(f), inception_weights.FID_WEIGHTS_SHA256_PREFIX)
  # A stand-in for torch records how the state dict is loaded: tensors only, never pickled code.
  import importlib.machinery
  import types
  calls = []
  fake = types.ModuleType('torch')
  fake.__spec__ = importlib.machinery.ModuleSpec('torch', None)
  fake.load = lambda *args, **kwargs: calls.append(kwargs) or {}
  monkeypatch.setitem(sys.modules, 'torch', fake)
  assert inception_weights._load_torch_state_dict(str(f)) == {}
  assert calls == [{'map_location': 'cpu', 'weights_only': True}]


# --- Issue 40: a checkpoint of another config is diagnosed, never "damaged"; refusals change nothing ---------

def _short_eval(**overrides):
  return _smoke(**dict(dict(eval__schedules=('linear',), eval__step_counts=(5,), eval__seeds=1,
                            eval__likelihood=False), **overrides))


def test_wrong_types_and_nonfinite_values_leave_a_trained_workdir_untouched(trained, tmp_path):
  import ml_collections
  from modes import evaluate as eval_run
  workdir = _copy(trained, tmp_path)
  before = _hashes(workdir)
  config = ml_collections.ConfigDict(_smoke().to_dict(), type_safe=False)  # as a config file could set them
  config.train.batch_size, config.sde.sigma_max, config.optim.ema_decay = 'abc', float('nan'), 1.5
  for runner in (train_mode.train_and_evaluate, eval_run.evaluate):
    with pytest.raises(files.InputError) as e:
      runner(config, str(workdir))
    assert {"config.train.batch_size='abc'; need an integer", 'config.sde.sigma_max=nan; need a finite number'} <= \
        set(e.value.problems)
  config.train.batch_size, config.sde.sigma_max = 64, 80.0
  with pytest.raises(files.InputError, match=r'config.optim.ema_decay=1.5; need 0 <= ema_decay < 1'):
    train_mode.train_and_evaluate(config, str(workdir))
  assert _hashes(workdir) == before


def test_resuming_with_another_grad_clip_names_it_and_never_says_damaged(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _hashes(workdir)
  with pytest.raises(files.InputError, match=r'config.optim.grad_clip: 1.0 in the run, 0.0 now\. It is not damaged; '
                     r'to use it, rerun with --config.optim.grad_clip=1.0') as e:
    train_mode.train_and_evaluate(_smoke(optim__grad_clip=0.0, train__num_train_steps=30), str(workdir))
  assert 'is damaged' not in str(e.value) and 'Move' not in str(e.value)
  assert _hashes(workdir) == before  # log.txt included: what the refused run logged is taken back


def test_eval_and_sample_ignore_optimizer_settings_and_eval_takes_the_last_checkpoint(trained, tmp_path):
  from modes import evaluate as eval_run, sample as sample_mode
  workdir = _copy(trained, tmp_path)
  record = eval_run.evaluate(_short_eval(optim__grad_clip=0.0, optim__optimizer='adamw'), str(workdir))
  assert record['step'] == 20
  assert sorted(os.listdir(workdir / 'eval'))[:3] == ['20_heun.json', '20_heun.md', '20_heun.png']  # not step 10
  x = sample_mode.sample(_short_eval(optim__grad_clip=0.0, eval__num_samples=64, eval__batch_size=64), str(workdir))
  assert x.shape == (64, 1) and np.all(np.isfinite(x))


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_without_config_json_the_differing_setting_is_read_off_the_checkpoint(trained, tmp_path, mode):
  from modes import evaluate as eval_run
  workdir = _copy(trained, tmp_path)
  os.remove(workdir / checkpoints.CONFIG_FILE)
  before = _hashes(workdir)
  runner = train_mode.train_and_evaluate if mode == 'train' else eval_run.evaluate
  with pytest.raises(files.InputError, match=r'written with other settings \(the shapes of its arrays\): '
                     r'config.model.mlp.width: 32 in the run, 64 now\. It is not damaged; to use it, rerun with '
                     r'--config.model.mlp.width=32;') as e:
    runner(_short_eval(model__mlp__width=64, train__num_train_steps=30), str(workdir))
  assert 'grad_clip' not in str(e.value)
  assert _hashes(workdir) == before


def test_resuming_at_or_below_the_checkpoints_step_changes_nothing(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _hashes(workdir)
  with pytest.raises(files.InputError, match=r'config.train.num_train_steps=10 is below the step of the newest checkpoint '
                     r'in .* \(20\); nothing was changed'):
    train_mode.train_and_evaluate(_smoke(train__num_train_steps=10), str(workdir))
  assert int(train_mode.train_and_evaluate(_smoke(), str(workdir)).step) == 20  # complete: nothing to do
  assert _hashes(workdir) == before


def test_an_unknown_schedule_is_refused_before_the_checkpoint_is_read(trained, tmp_path, monkeypatch):
  from modes import evaluate as eval_run, workdir as workdir_lib
  workdir = _copy(trained, tmp_path)
  before = _hashes(workdir)
  monkeypatch.setattr(workdir_lib, 'restore', lambda *a, **k: pytest.fail('restored before the names were checked'))
  with pytest.raises(files.InputError, match=r"config.eval.schedules names 'nosuch': neither learned, fitted, a "
                     r'baseline \(cosine, edm_rho3, edm_rho7, linear, log_linear\) nor a schedule stored'):
    eval_run.evaluate(_short_eval(eval__schedules=('linear', 'nosuch')), str(workdir))
  assert _hashes(workdir) == before
