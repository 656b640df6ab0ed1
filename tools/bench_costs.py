"""What each cost-rate estimator costs per example: ``L_c``'s jvp against ``L_p`` of every predictor (issue 6).

    python -m tools.bench_costs --config=configs/digits.py --out=bench_costs.json [--costs=corrector,heun] [--batch=8]

For each estimator (``corrector``: one ``jax.jvp`` of the score; ``identity``, ``euler``, ``heun``: the
predictor-optimised coefficient of :mod:`schedule.predictor`, nested derivatives of the network, with
``config.schedule.hutchinson_probes`` probes), on one chunk of ``--batch`` examples (``vmap``, as one chunk of
``config.schedule.cost_batch_size`` in a fit): lowering + XLA compile time, the median run time per example after
compilation, the compiled chunk's ``memory_analysis()`` (temporaries per example: what sets
``cost_batch_size`` for a machine's memory), and what a ``--mode=fit_schedule`` at the config's
``config.fit.grid x num_samples x iterations`` would take at that speed. The network is the config's, at its
initialisation with perturbed parameters (an untrained output layer of zeros would make every derivative zero);
the times do not depend on the values. Examples are drawn from N(0, 1) at times uniform in [0.2, 0.8].
"""
import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from configs.validate import validate
from ddm.paths import make_path
from tools.benchmark import compile_timed, median_time, memory_analysis_of, machine_info, report
from schedule import costs, predictor
from ddm import streams
from train import data, model as model_lib

FLAGS = flags.FLAGS
ESTIMATORS = ('corrector',) + tuple(predictor.ORDERS)


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:options]).',
                                  lock_config=True)
  flags.DEFINE_string('out', 'bench_costs.json', 'Where the JSON is written.')
  flags.DEFINE_list('costs', list(ESTIMATORS), f'Estimators to time, from {", ".join(ESTIMATORS)}.')
  flags.DEFINE_integer('batch', 8, 'Examples per chunk (one vmapped evaluation).')
  flags.DEFINE_integer('repeats', 3, 'Timed runs per figure (the median is reported).')
  flags.DEFINE_integer('warmup', 1, 'Untimed runs after compilation.')


def _rate_fn(config, name, batch):
  """The per-example coefficient of ``name`` with the config's settings, in chunks of ``batch``, and its order."""
  sch = config.schedule.copy_and_resolve_references()
  sch.cost, sch.cost_batch_size = ('corrector' if name == 'corrector' else 'predictor'), batch
  if name != 'corrector':
    sch.cost_solver = name
  return costs.make_rate_fn(sch), costs.order(sch)


def run(config, costs_names, batch: int, repeats: int = 3, warmup: int = 1) -> dict:
  bad = [c for c in costs_names if c not in ESTIMATORS]
  if bad or not costs_names:
    raise ValueError(f'--costs={",".join(costs_names)}; allowed: {", ".join(ESTIMATORS)}')
  if batch < 1:
    raise ValueError(f'--batch={batch}; need >= 1')
  validate(config, None, 'fit_schedule')
  path, shape = make_path(config.sde), tuple(data.data_shape(config.data))
  model = model_lib.make_model(config.model, config.data, path, streams.key(config.seed, 'init'))
  params = predictor.perturbed(model.params, jax.random.PRNGKey(1))
  x = jax.random.normal(jax.random.PRNGKey(2), (batch,) + shape)
  t = jax.random.uniform(jax.random.PRNGKey(3), (batch,), minval=0.2, maxval=0.8)
  key = jax.random.PRNGKey(4)
  evaluations = int(config.fit.grid) * int(config.fit.num_samples) * int(config.fit.grid_passes)
  result = {'machine': machine_info(),
            'settings': {'batch': batch, 'repeats': repeats, 'data_shape': list(shape),
                         'num_params': int(sum(np.size(p) for p in jax.tree.leaves(params))),
                         'hutchinson_probes': int(config.schedule.hutchinson_probes),
                         'fit_rate_evaluations': evaluations},
            'estimators': {}}
  for name in costs_names:
    rate_fn, order = _rate_fn(config, name, batch)
    jitted = jax.jit(lambda params, x, t, key, rate_fn=rate_fn: rate_fn(model.score(params, path), path, x, t, key))
    compiled, lower_s, compile_s = compile_timed(jitted, params, x, t, key)
    median, _ = median_time(lambda: compiled(params, x, t, key), repeats, warmup)
    values = np.asarray(compiled(params, x, t, key))
    memory = memory_analysis_of(compiled)
    temp = (memory or {}).get('temp_size_in_bytes')
    result['estimators'][name] = {
        'order': order, 'lower_s': lower_s, 'compile_s': compile_s, 's_per_example': median / batch,
        'temp_bytes_per_example': None if temp is None else temp / batch, 'memory_analysis': memory,
        'fit_s_estimate': median / batch * evaluations, 'finite': bool(np.all(np.isfinite(values)))}
    logging.info('%s: %s', name, result['estimators'][name])
  base = result['estimators'].get('corrector')
  if base:
    for name, r in result['estimators'].items():
      r['time_vs_corrector'] = r['s_per_example'] / base['s_per_example']
  return result


def table(result) -> str:
  s = result['settings']
  lines = [f"{result['machine']['device_kind']} ({result['machine']['backend']}), data {s['data_shape']}, "
           f"{s['num_params']:,} parameters, chunks of {s['batch']}, {s['hutchinson_probes']} Hutchinson probe(s); "
           f"fit = {s['fit_rate_evaluations']:,} rate evaluations",
           '| estimator | order p | ms / example | x corrector | compile s | temp MiB / example | fit (estimate) |',
           '|---|---|---|---|---|---|---|']
  for name, r in result['estimators'].items():
    temp = r['temp_bytes_per_example']
    lines.append(f"| {name} | {r['order']} | {1e3 * r['s_per_example']:.3g} | {r.get('time_vs_corrector', float('nan')):.3g} "
                 f"| {r['lower_s'] + r['compile_s']:.3g} | {'-' if temp is None else f'{temp / 2**20:.3g}'} "
                 f"| {r['fit_s_estimate'] / 60:.3g} min |")
  return '\n'.join(lines)


def main(argv):
  del argv
  report(run(FLAGS.config, FLAGS.costs, FLAGS.batch, FLAGS.repeats, FLAGS.warmup), table, FLAGS.out)


if __name__ == '__main__':
  define_flags()
  app.run(main)
