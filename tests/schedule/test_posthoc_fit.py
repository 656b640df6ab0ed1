"""Post-hoc schedules of trained models (--mode=fit_schedule on a checkpoint), with p_t drawn from the data
or from the model's own reverse process, for the corrector and the predictor cost."""
import json
import os

import jax
import numpy as np
import pytest

from configs import toy1d
from ddm.paths import make_path
from eval import sampling
from modes import fit_schedule as run
from schedule.searches import score_optimal
from schedule import schedules
from tests.schedule.test_predictor_cost import _model
from train import step as step_lib
from modes import train as train_mode
from tests.configs import override

K = 10


def _config(target='bimodal', **overrides):
  config = toy1d.get_config('smoke')
  config.data.target = target
  config.fit.ladder_steps = K  # the fit's K; the training T stays the smoke config's 16
  config.fit.grid = 512
  config.fit.num_samples = 1024
  config.eval.batch_size = config.eval.num_samples = 4096  # model-sample trajectories in few batches
  return override(config, **overrides)


def _sigmas(config, problem, seed=0):
  lam = score_optimal.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(seed),
                             sigma_data=config.model.sigma_data).schedule
  return np.asarray(problem.path.sigma(lam.steps(config.fit.ladder_steps)))


def _relative(a, b):
  """Per interior point ``|sigma_a / sigma_b - 1|`` (the end points are pinned)."""
  return np.abs(a[1:-1] / b[1:-1] - 1)


@pytest.mark.parametrize('target', ['bimodal', 'cantor'])
def test_model_samples_of_the_exact_score_reproduce_the_exact_ladder(target):
  config = _config(target)
  path = make_path(config.sde)
  exact = run.exact_problem(config, path)
  reference = _sigmas(config, exact)
  from_model = _sigmas(config, sampling.with_model_samples(config.eval, exact, jax.random.PRNGKey(3)))
  assert _relative(from_model, reference).max() < 0.02


@pytest.mark.parametrize('cost', ['corrector', pytest.param('predictor', marks=pytest.mark.slow)])
def test_checkpoint_of_an_exact_score_reproduces_the_exact_ladder(tmp_path, cost):
  """A checkpoint trained with ``config.model.exact_score=True``, read back through ``checkpoint_problem``
  (the post-hoc route), for a K other than the run's T, with samples from the data and from the model; for the
  predictor cost (Euler's L_p, the host-looped chunk with the model's parameters as arguments) too. Measured:
  corrector within 2% with both; predictor 0.95% (max) with data samples, 2.5% (median 2.3%, systematic) with
  model samples: the pool is a 256-step sampler's trajectories, not p_t exactly, and the heavy-tailed L_p
  coefficient weighs the tails where they differ, so that case is held to 3%."""
  workdir = str(tmp_path / 'exact')
  train = _config(model__exact_score=True, train__num_train_steps=2, train__checkpoint_every=2, train__sample_every=2)
  train.schedule.num_levels = 16
  train_mode.train_and_evaluate(train, workdir)
  config = _config(model__exact_score=True, schedule__cost=cost)
  reference = _sigmas(config, run.exact_problem(config, make_path(config.sde)))
  for samples in ('data', 'model'):
    config.fit.samples = samples
    problem = run.checkpoint_problem(config, workdir)
    assert problem.model is not None and problem.target is None  # the model's route, not the closed form
    rel = _relative(_sigmas(config, problem), reference)
    print(f'{cost} {samples}: max {rel.max():.4f} median {np.median(rel):.4f}')
    assert rel.max() < (0.03 if (cost, samples) == ('predictor', 'model') else 0.02), samples


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A smoke-sized toy run (bimodal target), trained long enough for its score to take shape (~20 s)."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  config = _config(train__num_train_steps=6000, train__checkpoint_every=6000, train__sample_every=6000,
                   train__log_every=500)
  config.schedule.num_levels = 16
  train_mode.train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.parametrize('cost', ['corrector', pytest.param('predictor', marks=pytest.mark.slow)])
def test_trained_toy_model_lands_close_to_the_exact_ladder(trained, cost):
  """Measured (smoke network, 6000 steps; 10-step ladders, |sigma / sigma_exact - 1| per interior point):
  corrector: median 0.14 (data samples) and 0.17 (model samples), max 0.61 and 0.70 (the first point, where
  the rate of the small network is dominated by its error near sigma_min; the whole ladder sits low). The
  predictor (Euler) fit is far off (median 0.68 with data and with model samples, max 0.95): its rate is the
  eps^4 coefficient, made of second derivatives of the network in t and x, which the small network gets wrong.
  With the full toy1d network (width 256, depth 4, 15,000 steps; docs/reproduce.sh) on the bimodal target the
  corrector fit lands within 5% (median 1.2%), the Heun predictor fit within 76% (median 27%)."""
  config = _config(schedule__cost=cost)
  reference = _sigmas(config, run.exact_problem(config, make_path(config.sde)))
  for samples in ('data', 'model'):
    config.fit.samples = samples
    fitted = _sigmas(config, run.checkpoint_problem(config, trained))
    rel = _relative(fitted, reference)
    print(f'{cost} {samples}: median {np.median(rel):.3f} max {rel.max():.3f}; {np.round(fitted, 4).tolist()}')
    assert np.all(np.diff(fitted) > 0)
    if cost == 'corrector':
      assert np.median(rel) < 0.25 and rel.max() < 1.0
    else:
      assert np.median(rel) < 0.9


def test_fit_schedule_mode_on_a_checkpoint_with_model_samples(trained):
  config = _config(schedule__cost='predictor', fit__samples='model', fit__ladder_steps=7,
                   fit__grid=128, fit__num_samples=64)
  learned = open(f'{trained}/schedule.json', 'rb').read()   # the training run's own record and plots
  plots = {name: open(os.path.join(trained, name), 'rb').read() for name in ('schedule.png', 'costs.png')}
  run.fit_schedule(config, trained)
  assert open(f'{trained}/schedule.json', 'rb').read() == learned   # a fit never overwrites the run's files
  assert all(open(os.path.join(trained, n), 'rb').read() == b for n, b in plots.items())
  record = json.load(open(f'{trained}/fits/predictor.json'))
  assert record['name'] == 'predictor' and record['cost'] == 'predictor' and record['num_steps'] == 7
  assert len(record['t']) == 8 and all(a < b for a, b in zip(record['t'], record['t'][1:]))
  assert len(schedules.stored(trained, 'predictor').steps(20)) == 21
  for name in ('predictor_schedule.png', 'predictor_costs.png'):
    assert os.path.getsize(os.path.join(trained, 'fits', name)) > 1000


def test_predictor_cost_refuses_a_network_that_is_not_twice_differentiable(tmp_path):
  config = _config(schedule__cost='predictor')
  path = make_path(config.sde)
  relu = _model('relu', dim=1)
  exact = run.exact_problem(config, path)
  problem = exact._replace(score_fn=relu.score(relu.params, path), target=None, model=relu)
  message = r"config.schedule.cost='predictor' needs a score that is twice differentiable"
  with pytest.raises(ValueError, match=message):
    score_optimal.search(config.fit, config.schedule, config.eval, problem, jax.random.PRNGKey(0), sigma_data=0.5)
  with pytest.raises(ValueError, match=message):  # a custom score without a model is probed directly
    score_optimal.search(config.fit, config.schedule, config.eval, problem._replace(model=None), jax.random.PRNGKey(0),
                         sigma_data=0.5)
  sections = (config.model, config.loss, config.schedule, config.optim, path, relu, (1,))
  with pytest.raises(ValueError, match=message):  # online: the train step is refused before tracing
    step_lib.make_train_step(*sections)
  config.schedule.cost = 'corrector'
  step_lib.make_train_step(*sections)  # the corrector cost needs first derivatives only
