"""How small ``config.schedule.cost_fraction`` can be: the per-level standard error of the online cost estimate.

    python -m tools.cost_fraction --config=configs/digits.py --workdir=runs/digits [--bound=0.25] [--out=...]

The online learner (method.md section 5; :mod:`schedule.online`) averages one coefficient per measured example
at its own level and re-fits the schedule once every level holds ``schedule.min_count`` samples, or after
``schedule.update_every`` steps. At an update, level ``l`` holds ``n_l`` samples, so the relative standard
error of its mean is ``cv_l / sqrt(n_l)``, ``cv_l`` the per-example coefficient of variation of the
coefficient at that level; the rate is ``mean^(1/p)`` (:func:`schedule.costs.to_rate`), whose relative error is
``1/p`` of that (delta method). ``cv_l`` is measured here, with the training step's own estimator
(:func:`schedule.costs.make_rate_fn`) and parameters (``state.params``, not the EMA) at the run's current
schedule, on ``--per_level`` data examples at ``--levels`` levels spread over the T + 1 points (linearly
interpolated between them); the counts ``n_l`` at an update are simulated from the training step's draws
(:func:`schedule.online.simulate_counts`)
(levels uniform over the points, ``ceil(fraction * B)`` measured examples a step, one device). Levels that
hold no sample at an update are interpolated by the learner; they are reported, and count as an infinite
error.

The chosen fraction is the smallest of ``--fractions`` whose 90th-percentile per-level relative error (over
levels and simulated updates) is at most ``--bound``. What the choice costs in throughput is measured by
``python -m tools.benchmark`` at that fraction. With no checkpoint in ``--workdir`` the network is the
initial one (stated in the output): the coefficient's spread there is not a trained model's; ``--cv`` gives
an assumed spread instead (e.g. one measured on a smaller image model) and measures nothing.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from configs.validate import validate
from ddm import streams
from ddm.paths import make_path
from modes import workdir as workdir_lib
from schedule import baselines, costs, online
from tools.benchmark import machine_info, report
from train import data, model as model_lib, step as step_lib

FLAGS = flags.FLAGS
FRACTIONS = ('1/128', '1/64', '1/32', '1/16', '1/8', '1/4', '1/2', '1')
QUANTILE = 0.9


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:options]).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', '', 'A training run whose latest checkpoint is measured ("" or no checkpoint: '
                      'the initial network).')
  flags.DEFINE_string('out', 'cost_fraction.json', 'Where the JSON is written.')
  flags.DEFINE_list('fractions', list(FRACTIONS), 'Candidate cost fractions (a/b or decimals).')
  flags.DEFINE_float('bound', 0.25, 'Largest acceptable 90th-percentile relative standard error of a level\'s '
                     'rate at an update.')
  flags.DEFINE_integer('levels', 24, 'Levels whose coefficient spread is measured.')
  flags.DEFINE_integer('per_level', 32, 'Data examples per measured level.')
  flags.DEFINE_integer('updates', 16, 'Simulated updates per fraction.')
  flags.DEFINE_float('cv', 0.0, 'Use this per-example coefficient of variation at every level instead of measuring '
                     'one (a config whose trained model is not at hand, e.g. CIFAR-10 on a CPU; 0: measure).')


def parse_fraction(text: str) -> float:
  """``'1/16'`` or ``'0.0625'`` -> 0.0625; anything outside (0, 1] is an error naming the flag."""
  try:
    num, _, den = str(text).partition('/')
    value = float(num) / float(den) if den else float(num)
  except (ValueError, ZeroDivisionError):
    value = float('nan')
  if not 0 < value <= 1:
    raise ValueError(f'--fractions: {text!r} is not a fraction in (0, 1] (e.g. 1/16 or 0.0625)')
  return value


def measure_spread(config, workdir, levels: int, per_level: int, key):
  """Per-example coefficients at ``levels`` levels of the run's schedule.

  Returns ``(level_index i32[levels], kappa f64[levels, per_level], source str)``.
  """
  if workdir and workdir_lib.has_checkpoint(workdir):
    path, model, state = workdir_lib.restore(config, workdir)
    params, ts = state.params, np.asarray(state.schedule)
    source = f'checkpoint at step {int(state.step)} of {workdir}'
  else:
    path = make_path(config.sde)
    model = model_lib.make_model(config.model, config.data, path, streams.key(config.seed, 'init'))
    params = model.params
    ts = np.asarray(baselines.make_baseline(config.schedule.init, path, config.schedule.num_levels))
    source = ('exact score of the toy target' if config.model.exact_score
              else 'initial network (no checkpoint)')
  index = np.unique(np.linspace(0, len(ts) - 1, levels).round().astype(int))
  pool = jnp.asarray(data.example_pool(config.data, config.train.batch_size, config.seed, per_level * len(index)))
  rate_fn = costs.make_rate_fn(config.schedule)
  score_fn = model.score(params, path)

  @jax.jit
  def kappa(x0, t, key):
    key_eps, key_rate = jax.random.split(key)
    x = path.marginal_sample(x0, t, jax.random.normal(key_eps, x0.shape))
    return rate_fn(score_fn, path, x, t, key_rate)

  rows = []
  for i, level in enumerate(index):
    x0 = pool[jax.random.randint(jax.random.fold_in(key, 2 * i), (per_level,), 0, pool.shape[0])]
    t = jnp.full((per_level,), ts[level], jnp.float32)
    rows.append(np.asarray(kappa(x0, t, jax.random.fold_in(key, 2 * i + 1)), np.float64))
  return index, np.stack(rows), source


def coefficient_of_variation(kappa):
  """``std / mean`` per row of ``kappa: [L, n]`` (sample std, ddof 1); a row with a non-positive mean is inf."""
  mean, std = kappa.mean(axis=1), kappa.std(axis=1, ddof=1)
  return np.where(mean > 0, std / np.where(mean > 0, mean, 1.0), np.inf)


def relative_errors(cv_all, counts, p: int):
  """Relative standard error of each level's rate at each update, ``cv / (p sqrt(n))`` (inf where n = 0)."""
  with np.errstate(divide='ignore'):
    return np.where(counts > 0, cv_all[None] / (p * np.sqrt(np.maximum(counts, 1))), np.inf)


def run(config, workdir, fractions, bound: float, levels: int = 24, per_level: int = 32, updates: int = 16,
        cv: float = 0.0) -> dict:
  values = [parse_fraction(f) for f in fractions]
  if not values:
    raise ValueError('--fractions is empty; give e.g. 1/64,1/16,1/4')
  if not 0 < bound:
    raise ValueError(f'--bound={bound}; need > 0')
  if levels < 2 or per_level < 2:
    raise ValueError(f'--levels={levels}, --per_level={per_level}; need >= 2 each')
  validate(config, None, 'train')
  sch = config.schedule
  p = costs.order(sch)
  if not cv >= 0:
    raise ValueError(f'--cv={cv}; need >= 0 (0: measure it)')
  num_levels = sch.num_levels + 1
  if cv:
    index, kappa = np.array([0, num_levels - 1]), np.full((2, 2), np.nan)
    cv, source = np.full(2, float(cv)), f'assumed per-example coefficient of variation {cv:g} (--cv)'
  else:
    index, kappa, source = measure_spread(config, workdir, levels, per_level,
                                          streams.key(config.seed, 'cost_fraction'))
    cv = coefficient_of_variation(kappa)
  cv_all = np.interp(np.arange(num_levels), index, cv)
  batch = int(config.train.batch_size)
  rows = []
  for f in sorted(set(values)):
    per_step = step_lib.cost_examples(batch, f)
    counts, steps = online.simulate_counts(num_levels, per_step, sch.min_count, sch.update_every, updates)
    rel = relative_errors(cv_all, counts, p)
    rows.append({'fraction': f, 'examples_per_step': per_step, 'steps_per_update': float(np.mean(steps)),
                 'median_count': float(np.median(counts)), 'empty_level_share': float(np.mean(counts == 0)),
                 'median_rel_se': float(np.median(rel)), f'p{int(100 * QUANTILE)}_rel_se': float(np.quantile(rel, QUANTILE, method='inverted_cdf')),
                 'meets_bound': bool(np.quantile(rel, QUANTILE, method='inverted_cdf') <= bound)})
  chosen = next((r['fraction'] for r in rows if r['meets_bound']), None)
  return {'machine': machine_info(), 'source': source,
          'settings': {'cost': sch.cost, 'order': p, 'num_levels': num_levels, 'batch_size': batch,
                       'min_count': sch.min_count, 'update_every': sch.update_every, 'bound': bound,
                       'quantile': QUANTILE, 'measured_levels': index.tolist(), 'per_level': per_level,
                       'config_cost_fraction': sch.cost_fraction},
          'cv_per_level': [float(c) for c in cv], 'mean_per_level': kappa.mean(axis=1).tolist(),
          'fractions': rows, 'chosen': chosen}


def table(result) -> str:
  s, q = result['settings'], f'p{int(100 * QUANTILE)}_rel_se'
  cv = np.asarray(result['cv_per_level'], float)
  lines = [f"{result['source']}; cost {s['cost']} (p = {s['order']}), T + 1 = {s['num_levels']}, batch "
           f"{s['batch_size']}, min_count {s['min_count']}, update_every {s['update_every']}",
           f"per-example coefficient of variation over {len(cv)} levels: median {np.median(cv):.3g}, "
           f"range {cv.min():.3g}..{cv.max():.3g}",
           '| cost_fraction | rates / step | steps / update | median n per level | empty levels | median rel. SE '
           f'| {int(100 * QUANTILE)}th pct rel. SE | <= {s["bound"]:g} |',
           '|---|---|---|---|---|---|---|---|']
  for r in result['fractions']:
    lines.append(f"| {r['fraction']:.4g} | {r['examples_per_step']} | {r['steps_per_update']:.1f} | "
                 f"{r['median_count']:.0f} | {100 * r['empty_level_share']:.1f}% | {r['median_rel_se']:.3g} | "
                 f"{r[q]:.3g} | {'yes' if r['meets_bound'] else 'no'} |")
  chosen = result['chosen']
  lines.append(f"smallest fraction within the bound: {'none' if chosen is None else f'{chosen:.4g}'} "
               f"(config: {s['config_cost_fraction']:.4g})")
  return '\n'.join(lines)


def main(argv):
  del argv
  report(run(FLAGS.config, FLAGS.workdir, FLAGS.fractions, FLAGS.bound, FLAGS.levels, FLAGS.per_level,
             FLAGS.updates, FLAGS.cv), table, FLAGS.out)


if __name__ == '__main__':
  define_flags()
  app.run(main)
