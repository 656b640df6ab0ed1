"""Exact toy metrics against closed forms, and --mode=eval / --mode=sample end to end."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import toy1d
from ddm import paths, targets
from eval import tables, toy
from modes import evaluate as eval_run, sample as sample_mode, workdir as workdir_lib
from modes import fit_schedule as fit_run
from modes import train as train_mode
from tests.configs import override

BIMODAL = targets.gaussian_mixture([-1.0, 1.0], [0.1, 0.1], [0.5, 0.5])


def _true_samples(n, seed=0):
  return np.asarray(BIMODAL.sample_p0(jax.random.PRNGKey(seed), n))


def test_w1_of_a_shift_is_the_shift():
  x = _true_samples(100_000)
  assert toy.wasserstein1(BIMODAL, x) < 0.005
  assert toy.wasserstein1(BIMODAL, x + 0.2) == pytest.approx(0.2, abs=0.006)


def test_histogram_kl_and_log_likelihood():
  x = _true_samples(200_000)
  assert toy.histogram_kl(BIMODAL, x) < 0.01
  # All mass on one mode: KL(p || p_hat) -> log 2 plus the smoothing floor's cost; clearly larger.
  assert toy.histogram_kl(BIMODAL, np.abs(x)) > 0.5
  # E[log p_0] of a two-mode mixture with separated modes: log(1/2) - log(sqrt(2 pi) s) - 1/2.
  expected = np.log(0.5) - np.log(np.sqrt(2 * np.pi) * 0.1) - 0.5
  assert toy.log_likelihood(BIMODAL, x) == pytest.approx(expected, abs=0.01)


def test_score_error_closed_form():
  c, path = 0.5, paths.ve_path(0.002, 80.0)
  g = targets.gaussian_mixture(np.zeros((1, 2)), [c], [1.0])
  ts = jnp.array([0.3, 0.6])
  eps = 0.1
  wrong = lambda x, t: (1 + eps) * g.score(x, t, path)
  err = toy.score_error(wrong, g, path, ts, jax.random.PRNGKey(0), 20_000)
  sigma = np.asarray(path.sigma(ts))
  np.testing.assert_allclose(err, eps**2 * sigma**2 * 2 / (c**2 + sigma**2), rtol=0.05)
  assert np.all(toy.score_error(g.score_fn(path), g, path, ts, jax.random.PRNGKey(0)) < 1e-8)


def test_eval_and_sample_modes_with_the_exact_score(tmp_path):
  config = toy1d.get_config('smoke')
  config.model.exact_score = True
  config.data.target = 'bimodal'
  config.eval.num_samples = 2000
  config.eval.batch_size = 1000
  config.eval.likelihood_steps = 100  # smoke's 20 Heun steps leave ~0.04 nats of ODE error
  train_mode.train_and_evaluate(config, str(tmp_path))
  fit_run.fit_schedule(config, str(tmp_path))  # stored as 'corrector': a row of the table ('fitted')
  search = config.copy_and_resolve_references()   # a search's ladders at the K it ran for (here K = 5 only)
  search.fit.method = 'trajectory'
  search.fit.trajectory.update(step_counts=(5,), grid=16, teacher_substeps=4, num_noises=64, passes=1)
  fit_run.fit_schedule(search, str(tmp_path))
  record = eval_run.evaluate(config, str(tmp_path))
  results = record['results']
  assert set(results['trajectory']) == {'5'} and np.isfinite(results['trajectory']['5']['w1'])
  assert '| trajectory | ' in (tmp_path / 'eval.md').read_text()
  by_name = override(config.copy_and_resolve_references(), eval__schedules=('trajectory',))
  assert sample_mode.sample(by_name, str(tmp_path)).shape == (2000, 1)
  assert (tmp_path / 'samples_trajectory_5.npz').exists()
  assert set(results) == set(config.eval.schedules) - {'fitted'} | {'corrector', 'trajectory'}
  assert record['columns'] == [{'num_steps': 5, 'nfe': 9}, {'num_steps': 10, 'nfe': 19}]   # heun: 2K - 1
  assert record['seeds'] == config.eval.seeds == 2
  for name, row in results.items():
    assert set(row) == ({'5'} if name == 'trajectory' else {'5', '10'})
    for cell in row.values():
      assert {'log_likelihood', 'kl', 'w1', 'w1_std', 'nfe', 'nonfinite_fraction'} <= set(cell)
      assert all(np.isfinite([cell[m] for m in ('log_likelihood', 'kl', 'w1', 'w1_std')]))
      assert len(cell['per_seed']['w1']) == 2 and cell['w1'] == pytest.approx(np.mean(cell['per_seed']['w1']))
      assert cell['w1_std'] == pytest.approx(np.std(cell['per_seed']['w1'], ddof=1))
  # The learned schedule at K = 10 beats the linear one on W1 with the exact score (method.md section 7).
  assert results['learned']['10']['w1'] < results['linear']['10']['w1']
  # The floor: exact p_0 samples at the same n score below every schedule.
  assert 0 < record['floor']['w1'] < min(row['10']['w1'] for row in results.values() if '10' in row)
  table = (tmp_path / 'eval.md').read_text()
  assert '| learned |' in table and 'K=5 (NFE=9)' in table and ' ± ' in table and 'Sample-size floor' in table
  assert json.load(open(tmp_path / 'eval.json'))['results'] == results
  # Exact score: the ODE likelihood of data equals the closed-form E[-log p0] of the same points.
  lik = record['likelihood']
  assert lik['nll_nats'] == pytest.approx(lik['exact_nll_nats'], abs=0.02)
  assert (tmp_path / 'eval_density.png').exists() and list((tmp_path / 'eval').glob('events.out.tfevents*'))
  x = sample_mode.sample(config, str(tmp_path))
  assert x.shape == (2000, 1) and (tmp_path / 'samples_learned_5.npz').exists()


def test_eval_without_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match='holds no checkpoint; train first'):
    eval_run.evaluate(toy1d.get_config('smoke'), str(tmp_path))


def test_mode_masses():
  cantor = targets.gaussian_mixture(targets.cantor_means(4), [0.005] * 16, [1 / 16] * 16)
  x = np.asarray(cantor.sample_p0(jax.random.PRNGKey(0), 50_000))
  np.testing.assert_allclose(toy.mode_masses(cantor, x, 8), 1 / 8, atol=0.01)
  uniform = np.random.default_rng(0).uniform(0, 1, (50_000, 1))
  assert toy.mode_masses(cantor, uniform, 8).sum() < 0.5


def _record(cells: dict, metric='w1'):
  """An eval record with one column (K = 5) and ``cells: {name: (mean, std, nonfinite_fraction)}``."""
  results = {name: {'5': {metric: m, metric + '_std': sd, 'nonfinite_fraction': bad, 'nfe': 9}}
             for name, (m, sd, bad) in cells.items()}
  return {'results': results, 'metrics': {metric: 'min'}, 'step': 0, 'sampler': 'heun', 'num_samples': 100,
          'seeds': 3, 'columns': [{'num_steps': 5, 'nfe': 9}]}


@pytest.mark.parametrize('bad_share', [1.0, 0.5])
def test_non_finite_samples_make_non_finite_metrics_never_the_best(bad_share):
  x = np.array(_true_samples(4000))
  x[:int(bad_share * len(x))] = np.nan
  m = toy.metrics(BIMODAL, x)
  assert all(np.isnan(m[k]) for k in ('log_likelihood', 'kl', 'w1')) and m['nonfinite_fraction'] == bad_share
  row = tables.summarise([toy.metrics(BIMODAL, _true_samples(4000, 1)), m])     # one bad seed of two
  assert np.isnan(row['w1']) and row['nonfinite_fraction'] == bad_share / 2
  table = tables.markdown_report(_record({'nan': (float('nan'), float('nan'), bad_share),
                                            'good': (0.3, 0.01, 0.0), 'worse': (0.5, 0.01, 0.0)}))
  assert f'| nan | diverged ({bad_share:.0%} non-finite) |' in table
  assert '| good | **0.3 ± 0.01** |' in table                                # the finite best, not the NaN row


def test_bold_only_when_better_than_the_runner_up_by_more_than_the_spread():
  close = tables.markdown_report(_record({'a': (0.30, 0.02, 0.0), 'b': (0.33, 0.02, 0.0)}))
  assert '**' not in close                                                    # 0.03 apart, spreads add to 0.04
  clear = tables.markdown_report(_record({'a': (0.30, 0.01, 0.0), 'b': (0.33, 0.01, 0.0)}))
  assert '| a | **0.3 ± 0.01** |' in clear and '| b | 0.33 ± 0.01 |' in clear
  assert tables.best_cells({'a': (0.3, 0.0)}, 'min') is None                # nothing to beat


@pytest.mark.parametrize('change, message', [
    (dict(nfe=(9,)), r'config\.eval\.nfe=\(9,\) and config\.eval\.step_counts=\(5, 10\) are both set'),
    (dict(nfe=(10,), step_counts=()), r"NFE 10 is not reachable by config\.eval\.sampler='heun'.*9, 11"),
    (dict(seeds=0), r'config\.eval\.seeds=0; need an integer >= 1'),
    (dict(num_samples=0), r'config\.eval\.num_samples=0 is smaller than config\.eval\.batch_size=128'),
    (dict(num_samples=100), r'config\.eval\.num_samples=100 is smaller than config\.eval\.batch_size=128'),
])
def test_bad_evaluation_settings_are_refused_before_any_compute(tmp_path, change, message):
  config = toy1d.get_config('smoke')
  config.eval.update(change)
  earlier = {'eval.json': '{"results": {"kept": 1}}', 'eval.md': '# an earlier table'}
  for name, text in earlier.items():
    (tmp_path / name).write_text(text)
  with pytest.raises(ValueError, match=message):
    eval_run.evaluate(config, str(tmp_path))
  assert {name: (tmp_path / name).read_text() for name in earlier} == earlier
  assert sorted(p.name for p in tmp_path.iterdir()) == ['eval.json', 'eval.md']


def test_equal_nfe_columns_derive_k_per_sampler():
  config = toy1d.get_config('smoke')
  config.eval.update(step_counts=(), nfe=(9, 19))
  assert workdir_lib.step_counts(config.eval) == [(5, 9), (10, 19)]
  config.eval.update(sampler='euler')
  assert workdir_lib.step_counts(config.eval) == [(9, 9), (19, 19)]
  config.eval.update(sampler='pc', langevin_steps=2, nfe=(9, 18))
  assert workdir_lib.step_counts(config.eval) == [(3, 9), (6, 18)]
