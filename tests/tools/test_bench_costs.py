"""eval/bench_costs.py at toy size: every estimator is timed, its figures are finite and positive, and L_p of the
identity predictor costs about what L_c costs (the same jvp); bad flags stop before any compile."""
import pytest

from configs import toy1d
from tools import bench_costs


def test_every_estimator_is_timed_with_memory_and_a_fit_estimate():
  config = toy1d.get_config('smoke')
  result = bench_costs.run(config, list(bench_costs.ESTIMATORS), batch=4, repeats=1, warmup=1)
  estimators = result['estimators']
  assert list(estimators) == ['corrector', 'identity', 'euler', 'heun']
  assert [estimators[n]['order'] for n in estimators] == [1, 1, 2, 3]
  for name, r in estimators.items():
    assert r['finite'], name
    for field in ('compile_s', 's_per_example', 'temp_bytes_per_example', 'fit_s_estimate', 'time_vs_corrector'):
      assert r[field] > 0, (name, field)
  assert estimators['heun']['compile_s'] > estimators['corrector']['compile_s']  # nested derivatives: more graph
  assert '| heun | 3 |' in bench_costs.table(result)


def test_bad_flags_are_refused():
  config = toy1d.get_config('smoke')
  with pytest.raises(ValueError, match=r'--costs=rk4; allowed: corrector, identity, euler, heun'):
    bench_costs.run(config, ['rk4'], batch=4)
  with pytest.raises(ValueError, match=r'--batch=0; need >= 1'):
    bench_costs.run(config, ['corrector'], batch=0)
