"""--config.fit.method=polish: fewstep's gradient polish of a ladder the user names (a baseline, a stored search or
the checkpoint's learned schedule). On Gaussian data the teacher's output is the closed-form flow, so the
polished ladder's objective is checked against it; the runner stores the ladder for eval by name and refuses a
start it cannot polish before any compute."""
import os

import jax
import numpy as np
import pytest

from configs import toy1d
from configs.validate import problems
from ddm import files, paths, targets
from modes import fit_schedule as run
from schedule import baselines, schedules
from schedule.searches import fewstep, problem as problem_lib, trajectory

PATH = paths.ve_path(0.002, 80.0)
C = 0.5


def _config(sampler='ipndm', **fewstep_settings):
  config = toy1d.get_config('smoke')
  config.eval.step_counts, config.fit.sampler = (4, 6), sampler
  config.fit.fewstep.update(grid=16, teacher_substeps=4, num_noises=128, adam_steps=60)
  config.fit.fewstep.update(**fewstep_settings)
  return config


def _gaussian():
  return problem_lib.exact(targets.gaussian_mixture(np.zeros((1, 1)), [C], [1.0]), PATH)


def test_polish_improves_a_hand_made_ladder_against_the_closed_form_flow():
  config, problem = _config(), _gaussian()
  start = schedules.Baseline('edm_rho7', PATH)
  result = fewstep.polish_search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(5),
                                 'edm_rho7', start)
  # J against the exact flow of N(0, C^2) (x1 C / sqrt(C^2 + R^2), method.md section 10) on other noises
  x1 = jax.random.normal(jax.random.PRNGKey(9), (512, 1)) * float(PATH.ratio(1.0))
  exact = trajectory.make_objective(problem, 'ipndm', 0, x1, x1 * C / np.sqrt(C**2 + float(PATH.ratio(1.0))**2))
  for k in (4, 6):
    ts = result.schedule.steps(k)
    assert ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
    assert result.meta['kept'][k] == 'refined'
    assert result.meta['fit'][k]['polished'] < result.meta['fit'][k]['start']
    assert result.meta['objective'][k] < result.meta['start'][k]['objective']
    polished, hand_made = float(exact(ts)), float(exact(np.asarray(start.steps(k))))
    assert polished < 0.5 * hand_made, (k, polished, hand_made)
  assert result.meta['start'][4]['from'] == 'edm_rho7' and result.meta['sampler'] == 'ipndm'
  assert result.meta['network_evaluations'] > 0


def test_polishing_fewsteps_own_start_repeats_fewstep():
  # the same key draws the same noises and teacher: fewstep is the polish of the best hand-made or dp ladder
  config, problem = _config('dpmpp_2m', adam_steps=20), _gaussian()
  key = jax.random.PRNGKey(2)
  found = fewstep.search(config.fit, config.schedule, config.eval, problem, key)
  grid = fewstep.dp_grid(PATH, config.fit.fewstep.grid)
  for k in (4, 6):
    name = found.meta['start'][k]['from']      # the dp's ladder is rebuilt from the stored record's start
    start = (schedules.Baseline(name, PATH) if name != 'dp' else
             schedules.Ladders({k: _dp_ladder(config, problem, key, k, grid)}))
    config.eval.step_counts = (k,)
    polished = fewstep.polish_search(config.fit, config.schedule, config.eval, problem, key, name, start)
    np.testing.assert_allclose(polished.schedule.steps(k), found.schedule.steps(k), atol=1e-6)
    assert polished.meta['objective'][k] == pytest.approx(found.meta['objective'][k], rel=1e-5)


def _dp_ladder(config, problem, key, k, grid):
  teacher = fewstep.make_teacher(config.fit.fewstep, problem, 'dpmpp_2m', 0, key)
  costs = trajectory.local_costs(trajectory.Solver(problem, trajectory.ode('euler')), grid, teacher.states)
  _, paths_of = fewstep.dynamic_programme(costs, k)
  return grid[np.asarray(paths_of(k))]


def test_fit_schedule_polishes_a_baseline_and_a_stored_search_for_eval_by_name(tmp_path):
  config = _config()
  config.data.target, config.fit.ladder_steps = 'bimodal', 6
  config.fit.update(method='polish')
  config.fit.polish.start = 'cosine'
  record = run.fit_schedule(config, str(tmp_path))
  assert record['name'] == 'polish_cosine_ipndm' and record['method'] == 'polish' and record['sampler'] == 'ipndm'
  assert record['costs_from'] == 'corrector fit' and record['num_steps'] == 6
  stored = schedules.stored(str(tmp_path), 'polish_cosine_ipndm')
  assert stored.sampler == 'ipndm' and stored.has(4) and stored.has(6) and not stored.has(5)
  np.testing.assert_allclose(stored.steps(6), record['t'], atol=1e-6)

  config.fit.method = 'fewstep'                       # a stored search, polished further with more noises
  run.fit_schedule(config, str(tmp_path))
  config.fit.method, config.fit.polish.start = 'polish', 'fewstep_ipndm'
  config.fit.fewstep.num_noises = 256
  record = run.fit_schedule(config, str(tmp_path))
  assert record['name'] == 'polish_fewstep_ipndm_ipndm' and record['start'][4]['from'] == 'fewstep_ipndm'
  stored, fewstep_ladders = schedules.stored(str(tmp_path), 'polish_fewstep_ipndm_ipndm'), schedules.stored(
      str(tmp_path), 'fewstep_ipndm')
  for k in (4, 6):                              # the stored ladder is the one the record says was kept
    same = np.allclose(stored.steps(k), fewstep_ladders.steps(k), atol=1e-9)
    assert same == (record['kept'][k] == 'start'), (k, record['kept'][k])
  config.fit.method, config.fit.fewstep.objective = 'fewstep', 'mmd'    # the other objective: its own name
  record = run.fit_schedule(config, str(tmp_path))
  assert record['name'] == 'fewstep_mmd_ipndm' and record['objective_kind'] == 'mmd'
  assert sorted(os.listdir(tmp_path / 'schedules')) == [        # each kept beside the others
      'fewstep_ipndm.json', 'fewstep_mmd_ipndm.json', 'polish_cosine_ipndm.json', 'polish_fewstep_ipndm_ipndm.json']


@pytest.mark.parametrize('start, message', [
    ('rho9', "config.fit.polish.start='rho9' is no ladder: allowed: learned, a baseline"),
    ('learned', "config.fit.polish.start='learned': --workdir="),
    ('narrow', "config.fit.polish.start='narrow' holds no ladder for K = 6"),
])
def test_a_start_it_cannot_polish_is_refused_before_compute(tmp_path, start, message):
  config = _config()
  config.fit.method, config.fit.polish.start = 'polish', start
  schedules.save(tmp_path, 'narrow', schedules.Ladders({4: np.asarray(baselines.edm_rho7(PATH, 4))}), 'fewstep',
                 'corrector', sampler='ipndm')
  before = sorted(os.listdir(tmp_path)), (tmp_path / 'schedules' / 'narrow.json').read_bytes()
  with pytest.raises(files.InputError, match=message.replace('(', r'\(').replace(')', r'\)')):
    run.fit_schedule(config, str(tmp_path))
  assert (sorted(os.listdir(tmp_path)), (tmp_path / 'schedules' / 'narrow.json').read_bytes()) == before


@pytest.mark.parametrize('start', ['fitted', '../x'])
def test_a_start_that_is_no_plain_name_is_a_config_problem(start):
  config = _config()
  config.fit.method, config.fit.polish.start = 'polish', start
  assert any(f'config.fit.polish.start={start!r}' in p for p in problems(config, 'fit_schedule'))
  config.fit.method = 'fewstep'                       # only a polish reads it
  assert problems(config, 'fit_schedule') == []


def test_the_sampler_a_polish_is_made_for_is_checked_with_its_own_name():
  config = _config('unipc')
  config.fit.method, config.eval.solver_order, config.eval.step_counts = 'polish', 3, (2, 4)
  assert problems(config, 'fit_schedule') == [
      "config.fit.sampler='unipc' of order 3 needs at least 3 steps (its warm-up takes 2 lower-order steps); "
      'K = 2 is below: use config.eval.step_counts >= 3 or a lower config.eval.solver_order']


def test_a_trained_runs_learned_schedule_is_polished_and_reports_its_own_costs(tmp_path):
  # the checkpoint is read once: its score is the problem, its learned schedule the start and the record's costs
  # (no corrector fit after the search: that took over 40 minutes on an MNIST U-Net)
  from modes import train as train_mode
  config = _config(adam_steps=10)
  config.data.target = 'bimodal'
  config.train.update(num_train_steps=300, checkpoint_every=300, sample_every=300, log_every=100)
  config.schedule.update(num_levels=16, update_every=100)
  train_mode.train_and_evaluate(config, str(tmp_path))
  config.fit.method, config.fit.polish.start = 'polish', 'learned'
  record = run.fit_schedule(config, str(tmp_path))
  assert record['name'] == 'polish_learned_ipndm' and record['start'][6]['from'] == 'learned'
  assert record['costs_from'] == "the checkpoint's learned schedule (corrector cost)"
  assert np.all(np.diff(schedules.stored(str(tmp_path), 'polish_learned_ipndm').steps(6)) > 0)


def test_mmd_needs_two_noises_and_an_unreachable_nfe_list_is_named_once():
  config = _config()
  config.fit.method = 'fewstep'
  config.fit.fewstep.update(objective='mmd', num_noises=1)
  assert problems(config, 'fit_schedule') == [
      "config.fit.fewstep.num_noises=1 with config.fit.fewstep.objective='mmd': MMD^2 compares at least two "
      'outputs; need num_noises >= 2']
  config.fit.fewstep.num_noises, config.fit.sampler = 2, ''
  config.eval.update(sampler='heun', step_counts=(), nfe=(4,))
  found = problems(config, 'fit_schedule')
  assert len(found) == 1 and found[0].startswith('config.eval.nfe: NFE 4 is not reachable by config.eval.sampler='), found
