"""--mode=fit_schedule end to end, and its bad inputs (each stops before any compute)."""
import json
import os
import subprocess
import sys

import pytest

from configs import toy1d
from modes import fit_schedule as run
from schedule import schedules
from tests.configs import smoke

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_fit_schedule_writes_record_and_plots(tmp_path):
  config = toy1d.get_config('smoke')
  config.data.target = 'bimodal'
  run.fit_schedule(config, str(tmp_path))
  record = json.load(open(tmp_path / 'fits' / 'corrector.json'))
  assert set(record) == {'t', 'sigma', 'alpha', 'num_steps', 'cost', 'length', 'energy', 'incremental_costs',
                         'method', 'name', 'time_s', 'rate_evaluations'}
  assert record['method'] == 'score_optimal' and record['name'] == 'corrector'
  assert record['time_s'] > 0 and record['rate_evaluations'] == 3 * 128 * 32  # passes x grid x samples (smoke)
  stored = schedules.stored(str(tmp_path), 'corrector')  # usable by name in config.eval.schedules
  assert stored.steps(16) == pytest.approx(record['t'], abs=1e-6) and len(stored.steps(7)) == 8
  t, costs, num_steps = record['t'], record['incremental_costs'], record['num_steps']
  assert num_steps == 16 and len(t) == len(record['sigma']) == 17 and len(costs) == 16
  assert t[0] == 0.0 and t[-1] == 1.0 and all(a < b for a, b in zip(t, t[1:]))
  assert record['sigma'][0] == pytest.approx(0.002, rel=1e-5) and record['sigma'][-1] == pytest.approx(80, rel=1e-5)
  assert record['energy'] == pytest.approx(record['length']**2, rel=1e-3)  # equal costs: E = Lambda^2
  for name in ('corrector_schedule.png', 'corrector_costs.png'):
    assert (tmp_path / 'fits' / name).stat().st_size > 1000


@pytest.mark.parametrize('predictor', ['identity', 'euler'])  # heun: tests/schedule/test_predictor_cost.py
def test_fit_schedule_with_the_predictor_cost(tmp_path, predictor):
  """The exact score's predictor-optimised schedule; 'identity' is the corrector's (method.md section 2)."""
  config = toy1d.get_config('smoke')
  config.data.target = 'bimodal'
  config.schedule.update(cost='predictor', cost_solver=predictor)
  config.fit.update(grid=64, num_samples=16)
  record = run.fit_schedule(config, str(tmp_path / predictor))
  assert record['name'] == 'predictor' and record['cost'] == 'predictor' and len(record['t']) == 17
  assert all(a < b for a, b in zip(record['t'], record['t'][1:]))
  assert record['energy'] == pytest.approx(record['length']**2, rel=1e-3)
  if predictor == 'identity':
    config.schedule.cost = 'corrector'
    corrector = run.fit_schedule(config, str(tmp_path / 'corrector'))
    assert record['t'] == pytest.approx(corrector['t'], abs=1e-5)


_bad = smoke  # tests/configs.py


@pytest.mark.parametrize('overrides, message', [
    (dict(data__target='moon'), "config.data.target='moon' is not a known target; allowed: bimodal, cantor"),
    (dict(sde__name='subvp'), "config.sde.name='subvp' is not a known path; allowed: ve, vp"),
    (dict(schedule__init='karras'), "config.schedule.init='karras' is not a known baseline schedule; allowed: cosine"),
    (dict(data__target='gmm', data__weights=[0.2, 0.2]), 'config.data.weights must be positive and sum to 1'),
    (dict(data__target='gmm', data__means=[0.0, 1.0, 2.0]), 'must be non-empty lists of the same length'),
    (dict(schedule__num_levels=0), 'config.schedule.num_levels=0; need an integer >= 1'),
    (dict(sde__sigma_min=80.0, sde__sigma_max=1.0), 'need 0 < sigma_min < sigma_max'),
    (dict(schedule__cost='bogus'), "config.schedule.cost='bogus' is not a known cost; allowed: corrector"),
    (dict(data__dataset='digits'), "--mode=fit_schedule needs a trained checkpoint in --workdir="),
    (dict(fit__method='watson'), "config.fit.method='watson'; allowed: score_optimal, trajectory, ays, dp_elbo, ddss"),
    (dict(fit__samples='prior'), "config.fit.samples='prior'; allowed: data, model"),
    (dict(schedule__cost='predictor', schedule__cost_solver='rk4'),
     "config.schedule.cost_solver='rk4'; allowed: identity, euler, heun"),
    (dict(schedule__cost='predictor', schedule__hutchinson_probes=0), 'config.schedule.hutchinson_probes=0; need >= 1'),
    (dict(schedule__cost='predictor', schedule__cost_batch_size=0), 'config.schedule.cost_batch_size=0; need >= 1'),
    (dict(fit__method='dp_elbo', fit__ladder_steps=100, fit__dp_elbo__grid=50),
     'config.fit.ladder_steps=100 is larger than the dp_elbo grid config.fit.dp_elbo.grid=50'),
])
def test_bad_input_stops_with_a_clear_message(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
    run.fit_schedule(_bad(**overrides), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()  # nothing was created before the check


def test_workdir_that_is_a_file(tmp_path):
  path = tmp_path / 'afile'
  path.write_text('keep me')
  with pytest.raises(ValueError, match='is a file; give a directory'):
    run.fit_schedule(toy1d.get_config('smoke'), str(path))
  assert path.read_text() == 'keep me'


def test_unknown_mode_and_option_from_the_command_line(tmp_path):
  cmd = [sys.executable, 'main.py', '--config=configs/toy1d.py', f'--workdir={tmp_path}', '--mode=bogus']
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0 and "flag --mode=bogus: value should be one of <train|eval|sample|fit_schedule>" in out.stderr
  cmd[1:3] = ['main.py', '--config=configs/toy1d.py:smok']
  cmd[-1] = '--mode=fit_schedule'
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0 and "unknown config option(s) ['smok']; allowed: smoke" in out.stderr


def test_fields_moved_to_config_fit_answer_with_their_new_names():
  from configs import validate
  assert 'config.schedule.fit_grid moved to config.fit.grid' in validate.unknown_field('schedule.fit_grid')
  assert '--config.fit.ddss.adam_steps' in validate.unknown_field('schedule.ddss.adam_steps')
  assert '--config.fit.dp_elbo.grid' in validate.unknown_field('schedule.dp_grid')
  assert validate.unknown_field('fit.grid') is None and validate.unknown_field('schedule.num_levels') is None


@pytest.mark.parametrize('flag, message', [
    ('--config.schedule.method=dp_elbo', 'config.schedule.method moved to config.fit.method'),
    ('--config.fit.num_steps=10', 'config.fit.num_steps moved to config.fit.ladder_steps; give --config.fit.ladder_steps'),
    ('--config.schedule.num_steps=10', 'config.schedule.num_steps moved to config.schedule.num_levels'),
])
def test_old_fit_fields_stop_from_the_command_line(tmp_path, flag, message):
  cmd = [sys.executable, 'main.py', '--config=configs/toy1d.py:smoke', f'--workdir={tmp_path / "run"}',
         '--mode=fit_schedule', flag]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0 and message in out.stderr and 'Traceback' not in out.stderr
  assert not (tmp_path / 'run').exists()
