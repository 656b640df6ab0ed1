"""The bad-input battery: wrong settings and damaged files against trained toy and digits smoke runs.

    python -m tools.bad_input [--toy=DIR] [--digits=DIR] [--repo=.] [--only=substring]

Each case runs ``main.py`` as a user would (a subprocess) on a fresh copy of a trained workdir (or on a new
workdir), hashes every file before and after, and is classified:

- clear:  refused (exit status not 0) with an ``error:`` line, no traceback, the expected setting or file named
          in the message, every file byte-identical (no new workdir); for a case that must run: it ran (exit 0);
- weak:   refused with nothing changed, but with a traceback or without naming the expected setting or file;
- silent: accepted (exit 0) where it should have been refused;
- wrong:  files changed or a new workdir was written by a refused run, or a case that must run did not.

Prints the markdown table and the counts (``docs/bad_input.md``). ``--repo`` runs another checkout's
``main.py`` (e.g. the code before a change) with the same cases.
"""
import collections
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string('toy', '', 'A trained configs/toy1d.py:smoke workdir (default: trained here first).')
flags.DEFINE_string('digits', '', 'A trained configs/digits.py:smoke workdir (default: trained here first).')
flags.DEFINE_string('repo', REPO, 'The checkout whose main.py is run.')
flags.DEFINE_string('only', '', 'Run only the cases whose name contains this.')
flags.DEFINE_integer('timeout', 300, 'Seconds per case.')

TOY, DIGITS = 'configs/toy1d.py:smoke', 'configs/digits.py:smoke'
MORE = '--config.train.num_train_steps=40'  # a resumed train run that is accepted trains on: visible as a change
SHORT_EVAL = ("--config.eval.schedules=('linear',)", '--config.eval.step_counts=(5,)', '--config.eval.seeds=1',
              '--config.eval.likelihood=False', '--config.eval.checkpoints=last')


def _c(name, expect, *args, base='toy', mode='train', setup=None, run=False, new=False, config=None):
  """A case: ``args`` to main.py; ``expect`` must appear in the refusal; ``setup(workdir)`` damages the copy;
  ``run``: the right outcome is a run (exit 0); ``new``: a new (absent) workdir instead of a trained copy."""
  return dict(name=name, expect=expect, args=args, base=base, mode=mode, setup=setup, run=run, new=new,
              config=config)


def _field(field, value, *extra, mode='train', base='toy', expect=None):
  args = (f'--config.{field}={value}',) + extra + ((MORE,) if mode == 'train' and base == 'toy' else ())
  name = f'{field}={value}' if base == 'toy' else f'{base}: {field}={value}'
  return _c(name, expect or field, *args, mode=mode, base=base)


def _truncate(path):
  raw = open(path, 'rb').read()
  open(path, 'wb').write(raw[:len(raw) // 2])


def _remove(path):
  os.remove(path)


def _stored_schedule(workdir):
  os.makedirs(os.path.join(workdir, 'schedules'), exist_ok=True)
  open(os.path.join(workdir, 'schedules', 'mine.json'), 'w').write('{"kind": "ladders", "ladd')


def _a_file(workdir):
  shutil.rmtree(workdir)
  open(workdir, 'w').write('not a folder')


FIELDS = [
    # (field, value, extra args, mode, base)
    ('seed', 'abc'), ('seed', '-1'), ('seed', '1.5'),
    ('compile_cache', '/proc/nonexistent/x'), ('compile_cache', ''),
    ('data.dataset', 'foo'), ('data.target', 'foo'), ('data.dim', '0'), ('data.dim', '1.5'),
    ('data.std', '0.0', '--config.data.target=bimodal'), ('data.std', 'nan', '--config.data.target=bimodal'),
    ('data.offset', 'inf', '--config.data.target=bimodal'), ('data.cantor_depth', '0'),
    ('data.cantor_depth', '-1'), ('data.cantor_tau', '0.0'), ('data.cantor_tau', 'inf'),
    ('data.means', '(1.0,)', '--config.data.target=gmm'), ('data.stds', '(0.1,-0.3)', '--config.data.target=gmm'),
    ('data.weights', '(0.5,0.6)', '--config.data.target=gmm'), ('data.random_flip', 'maybe'),
    ('data.fake_shape', '(8,8)', '--config.data.dataset=fake', '--config.model.name=unet'),
    ('sde.name', 'foo'), ('sde.sigma_min', '0.0'), ('sde.sigma_max', 'inf'), ('sde.sigma_max', 'nan'),
    ('sde.sigma_min', '-inf'), ('sde.parametrisation', 'foo'),
    ('sde.beta_min', '-1.0', '--config.sde.name=vp'), ('sde.eps', '0.6', '--config.sde.name=vp'),
    ('sde.beta_max', 'inf', '--config.sde.name=vp'), ('sde.beta_schedule', 'foo', '--config.sde.name=vp'),
    ('model.name', 'foo'), ('model.precond', 'foo'), ('model.sigma_data', '0.0'), ('model.sigma_data', 'inf'),
    ('model.mlp.width', '0'), ('model.mlp.depth', '-1'), ('model.mlp.embedding_dim', '0'),
    ('model.mlp.embedding_scale', 'nan'), ('model.dtype', 'float16'), ('model.exact_score', 'maybe'),
    ('loss.weighting', 'foo'),
    ('schedule.num_levels', '0'), ('schedule.cost', 'foo'), ('schedule.cost_solver', 'foo'),
    ('schedule.hutchinson_probes', '0'), ('schedule.cost_batch_size', '0'), ('schedule.init', 'foo'),
    ('schedule.gamma', '0.0'), ('schedule.gamma', 'nan'), ('schedule.cost_fraction', '1.5'),
    ('schedule.cost_fraction', 'nan'), ('schedule.measure_every', '0'), ('schedule.rate_pass', 'foo'),
    ('schedule.min_count', '0'), ('schedule.update_every', '0'),
    ('optim.optimizer', 'sgd'), ('optim.learning_rate', '0.0'), ('optim.learning_rate', 'inf'),
    ('optim.learning_rate', 'nan'), ('optim.warmup_steps', '-1'), ('optim.weight_decay', '-1.0'),
    ('optim.grad_clip', '-1.0'), ('optim.grad_clip', 'nan'), ('optim.ema_decay', '1.0'),
    ('train.batch_size', 'abc'), ('train.batch_size', '0'), ('train.num_train_steps', '1e3'),
    ('train.log_every', '0'), ('train.checkpoint_every', '0'), ('train.keep_checkpoints', '0'),
    ('train.sample_every', '0'), ('distributed.coordinator_address', 'localhost'),
    ('distributed.num_processes', '-1'), ('distributed.initialization_timeout', '0'), ('train.on_nonfinite', 'ignore'),
    ('train.allow_changes_on_resume', 'maybe'),
]
FIELDS_FIT = [
    ('fit.ladder_steps', '0'), ('fit.method', 'foo'), ('fit.grid', '2'), ('fit.grid_passes', '0'),
    ('fit.num_samples', '0'), ('fit.samples', 'foo'), ('fit.name', '../x'),
    ('fit.refine_step_counts', '(10,5)', '--config.fit.refine=True'), ('fit.refine_substeps', '0'),
    ('fit.dp_elbo.grid', '1', '--config.fit.method=dp_elbo'), ('fit.ays.step_counts', '()'),
    ('fit.ays.nodes', '1'), ('fit.ddss.learning_rate', 'inf'), ('fit.ddss.step_counts', '(0,)'),
    ('fit.trajectory.grid', '1'), ('fit.polish.start', 'fitted', '--config.fit.method=polish'),
    ('fit.polish.start', 'nosuch', '--config.fit.method=polish', '--config.fit.sampler=ipndm'),
]
FIELDS_EVAL = [
    ('eval.sampler', 'bogus'), ('eval.step_counts', '(0,)'), ('eval.step_counts', '(5.5,)'),
    ('eval.nfe', '(5,)'), ('eval.checkpoints', 'latest'), ('eval.checkpoints', '7'), ('eval.seeds', '0'),
    ('eval.schedules', "('nosuch',)"), ('eval.schedules', '()'), ('eval.num_samples', '0'),
    ('eval.num_samples', '64'), ('eval.batch_size', '0'), ('eval.langevin_snr', 'inf', '--config.eval.sampler=pc'),
    ('eval.langevin_steps', '0'), ('eval.likelihood_samples', '0'), ('eval.likelihood_steps', '0'),
    ('eval.hutchinson_probes', '0'), ('eval.solver_order', 'abc'), ('eval.likelihood', 'maybe'),
]
FIELDS_DIGITS = [
    ('model.unet.channels', '0'), ('model.unet.dropout', '1.5'), ('model.unet.embedding', 'foo'),
    ('model.unet.channel_mult', '()'), ('model.unet.num_res_blocks', '-1'), ('data.random_flip', 'maybe'),
]


def cases() -> list:
  out = [_field(f, v, *extra) for f, v, *extra in FIELDS]
  out += [_field(f, v, *extra, mode='fit_schedule') for f, v, *extra in FIELDS_FIT]
  out += [_field(f, v, *extra, mode='eval', expect=f) for f, v, *extra in FIELDS_EVAL]
  out += [_field(f, v, *extra, base='digits') for f, v, *extra in FIELDS_DIGITS]
  out += [
      _c('--mode=foo', '--mode', '--mode=foo'),
      _c('unknown config option', 'smok', config='configs/toy1d.py:smok'),
      _c('missing config file', 'configs/nosuch.py', config='configs/nosuch.py'),
      _c('unknown field optim.lr', 'optim.lr', '--config.optim.lr=1'),
      _c('moved field schedule.fit_grid', 'fit.grid', '--config.schedule.fit_grid=3'),
      _c('remote workdir without support', '--workdir', new=True, config=TOY, mode='train'),
      _c('workdir is a file', '--workdir', setup=_a_file),
      _c('process_id out of range', 'process_id', '--config.distributed.coordinator_address=localhost:1234',
         '--config.distributed.num_processes=2', '--config.distributed.process_id=5'),
      _c('damaged config.json', 'config.json', MORE, setup=lambda w: _truncate(os.path.join(w, 'config.json'))),
      _c('damaged eval_history.json', 'eval_history.json', MORE,
         setup=lambda w: _truncate(os.path.join(w, 'eval_history.json'))),
      _c('damaged schedules/mine.json', 'mine.json', "--config.eval.schedules=('mine',)",
         '--config.eval.step_counts=(5,)', mode='eval', setup=_stored_schedule),
      _c('resume below the checkpoint', 'train.num_train_steps', '--config.train.num_train_steps=10'),
      _c('resume with grad_clip=0', 'optim.grad_clip', '--config.optim.grad_clip=0.0', MORE),
      _c('eval with grad_clip=0', '', '--config.optim.grad_clip=0.0', *SHORT_EVAL, mode='eval', run=True),
      _c('sample with grad_clip=0', '', '--config.optim.grad_clip=0.0', '--config.eval.num_samples=64',
         '--config.eval.batch_size=64', "--config.eval.schedules=('linear',)", mode='sample', run=True),
      _c('eval, config.json gone, mlp.width=64', 'model.mlp.width', '--config.model.mlp.width=64', *SHORT_EVAL,
         mode='eval', setup=lambda w: _remove(os.path.join(w, 'config.json'))),
      _c('resume, config.json gone, mlp.width=64', 'model.mlp.width', '--config.model.mlp.width=64', MORE,
         setup=lambda w: _remove(os.path.join(w, 'config.json'))),
      _c('resume with mlp.width=64', 'model.mlp.width', '--config.model.mlp.width=64', MORE),
      _c('digits: resume with unet.channels=32', 'model.unet.channels', '--config.model.unet.channels=32',
         base='digits'),
      _c('digits: eval, config.json gone, unet.channels=32', 'model.unet.channels',
         '--config.model.unet.channels=32', *SHORT_EVAL, base='digits', mode='eval',
         setup=lambda w: _remove(os.path.join(w, 'config.json'))),
      _c('eval: unknown schedule name', 'nosuch', "--config.eval.schedules=('linear','nosuch')",
         '--config.eval.step_counts=(5,)', mode='eval'),
      _c('sample: fitted', 'fitted', "--config.eval.schedules=('fitted',)", mode='sample'),
      _c('new workdir, sigma_max=inf', 'sde.sigma_max', '--config.sde.sigma_max=inf', new=True),
  ]
  return out


def _hashes(folder) -> dict:
  if os.path.isfile(folder):
    return {'': hashlib.sha256(open(folder, 'rb').read()).hexdigest()}
  return {os.path.relpath(f, folder): hashlib.sha256(open(f, 'rb').read()).hexdigest()
          for f in glob.glob(os.path.join(folder, '**'), recursive=True) if os.path.isfile(f)}


def _workdir(case, root, trained):
  workdir = os.path.join(root, 'w')
  if case['name'].startswith('remote'):
    return 'gs://score-schedules-no-such-bucket/run'
  if not case['new']:
    shutil.copytree(trained[case['base']], workdir)
    if case['setup']:
      case['setup'](workdir)
  return workdir


def _error_block(stderr) -> str:
  lines = stderr.splitlines()
  first = next((i for i, l in enumerate(lines) if l.startswith('error:') or ' error: ' in l[:40]), None)
  return '\n'.join(lines[first:]) if first is not None else ''


def classify(run, rc, traceback, named, changed) -> str:
  """``run``: the case must run; ``named``: an ``error:`` line and what follows it name the expected setting."""
  if run:
    return 'clear' if rc == 0 else 'wrong'
  if rc == 0:
    return 'silent'
  if changed:
    return 'wrong'
  return 'clear' if named and not traceback else 'weak'


def run_case(case, repo, trained, timeout):
  root = tempfile.mkdtemp(prefix='bad_input_')
  try:
    workdir = _workdir(case, root, trained)
    before = _hashes(workdir) if os.path.exists(workdir) else None
    config = case['config'] or (DIGITS if case['base'] == 'digits' else TOY)
    cmd = [sys.executable, 'main.py', f'--config={config}', f'--workdir={workdir}', f'--mode={case["mode"]}',
           *case['args']]
    if case['name'] == '--mode=foo':
      cmd.remove('--mode=train')
    start = time.time()
    try:
      result = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=timeout)
      rc, stderr = result.returncode, result.stderr
    except subprocess.TimeoutExpired as e:
      rc, stderr = 'timeout', (e.stderr or b'').decode() if isinstance(e.stderr, bytes) else (e.stderr or '')
    seconds = time.time() - start
    after = _hashes(workdir) if os.path.exists(workdir) else None
    changed = before != after and not case['run']
    block = _error_block(stderr)
    named = bool(block) and case['expect'] in block
    first = (block.splitlines() or [''])[0] if block else (stderr.strip().splitlines() or [''])[-1]
    return dict(name=case['name'], mode=case['mode'], base=case['base'], rc=rc, seconds=round(seconds, 1),
                traceback='Traceback' in stderr, changed=changed, named=named, message=first[:300],
                outcome=classify(case['run'], rc, 'Traceback' in stderr, named, changed))
  finally:
    shutil.rmtree(root, ignore_errors=True)


def _train(config, workdir, repo):
  subprocess.run([sys.executable, 'main.py', f'--config={config}', f'--workdir={workdir}'], cwd=repo, check=True,
                 capture_output=True)
  return workdir


def run(root, repo=REPO, toy='', digits='', only='', timeout=300) -> list:
  """Every case (those whose name contains ``only``) as a row; the smoke runs are trained under ``root`` unless
  given (``toy``, ``digits``: trained workdirs, copied for each case and never changed)."""
  trained = {'toy': toy or _train(TOY, os.path.join(root, 'toy'), repo),
             'digits': digits or _train(DIGITS, os.path.join(root, 'digits'), repo)}
  rows = []
  for case in cases():
    if only and only not in case['name']:
      continue
    rows.append(run_case(case, repo, trained, timeout))
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  return rows


def table(rows) -> str:
  lines = ['| case | mode | exit | outcome | first line of the message |', '|---|---|---|---|---|']
  for r in rows:
    message = r['message'].replace('|', '\\|')
    lines.append(f"| `{r['name']}` | {r['mode']} | {r['rc']} | {r['outcome']} | {message} |")
  counts = collections.Counter(r['outcome'] for r in rows)
  lines.append('\n' + ', '.join(f'{k} {counts.get(k, 0)}' for k in ('clear', 'weak', 'silent', 'wrong')) +
               f' (of {len(rows)})')
  return '\n'.join(lines)


def main(argv):
  del argv
  f = flags.FLAGS
  root = tempfile.mkdtemp(prefix='bad_input_trained_')
  try:
    rows = run(root, f.repo, f.toy, f.digits, f.only, f.timeout)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(table(rows))
  if any(r['outcome'] != 'clear' for r in rows):
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
