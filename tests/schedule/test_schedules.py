"""Every kind of schedule satisfies the protocol (steps(K), has(K)), and the one resolver from a name
(schedule/schedules.py): 'learned', a baseline (equal to its formula, method.md section 6), a stored search; an
unknown name is refused naming config.eval.schedules and what a name can be."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from ddm import files, paths
from ddm.registry import BASELINES
from schedule import baselines, schedules, store

PATH = paths.ve_path(0.002, 80.0)
LADDER = [0.0, 0.2, 0.7, 1.0]


def _length():
  return schedules.LengthFunction(jnp.linspace(0.0, 1.0, 9), jnp.linspace(0.0, 2.0, 9)**2)


def test_every_kind_satisfies_the_protocol():
  kinds = [schedules.Baseline('edm_rho7', PATH), _length(), schedules.Ladders({3: np.asarray(LADDER)}, 'x', 'ays')]
  for kind in kinds:
    assert isinstance(kind, schedules.Schedule), type(kind).__name__
    assert kind.has(3)
    ts = np.asarray(kind.steps(3))
    assert ts.shape == (4,) and ts[0] == 0.0 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
  assert not isinstance(np.asarray(LADDER), schedules.Schedule)   # an array of times is not a schedule
  assert not kinds[2].has(4)
  with pytest.raises(files.InputError, match=r"fitted schedule 'x' \(ays\) holds K = 3 only, not K = 4"):
    kinds[2].steps(4)


@pytest.mark.parametrize('name', BASELINES.names())
def test_a_baseline_from_the_resolver_equals_its_formula(name):
  schedule = schedules.resolve(name, PATH)
  assert isinstance(schedule, schedules.Baseline)
  for k in (1, 5, 18):
    np.testing.assert_array_equal(schedule.steps(k), getattr(baselines, name)(PATH, k))
    np.testing.assert_array_equal(schedule.steps(k), baselines.make_baseline(name, PATH, k))


def test_learned_resolves_to_the_length_function_passed_in():
  learned = schedules.LengthFunction.from_step_costs(jnp.linspace(0.0, 1.0, 5), jnp.array([1.0, 4.0, 1.0, 0.25]))
  assert schedules.resolve(schedules.LEARNED, PATH, learned=learned) is learned
  # [0, cumsum sqrt(L_i)] = [0, 1, 3, 4, 4.5]: the 9-step ladder of equal length puts 2 steps in the first quarter
  assert float(learned.total) == pytest.approx(4.5)
  with pytest.raises(files.InputError, match='the run has no learned schedule yet'):
    schedules.resolve(schedules.LEARNED, PATH, learned=None)


def test_stored_names_resolve_to_their_kind_and_keep_the_record_format(tmp_path):
  workdir = str(tmp_path)
  lam = _length()
  schedules.save(workdir, 'fit', lam, 'score_optimal', 'corrector', time_s=1.0)
  schedules.save(workdir, 'searched', schedules.Ladders({3: np.asarray(LADDER)}), 'dp_elbo', 'corrector')
  record = json.load(open(store.filename(workdir, 'fit')))
  assert list(record) == ['kind', 'method', 'cost', 't', 'lam', 'time_s'] and record['kind'] == 'length'
  assert json.load(open(store.filename(workdir, 'searched')))['ladders'] == {'3': LADDER}
  assert store.check_record(record) == ''
  fitted = schedules.resolve('fit', PATH, workdir)
  assert isinstance(fitted, schedules.LengthFunction)
  np.testing.assert_allclose(fitted.steps(6), lam.steps(6), atol=1e-6)
  searched = schedules.resolve('searched', PATH, workdir)
  assert isinstance(searched, schedules.Ladders) and searched.name == 'searched' and searched.method == 'dp_elbo'
  np.testing.assert_array_equal(searched.steps(3), LADDER)
  assert isinstance(schedules.resolve('linear', PATH, workdir), schedules.Baseline)   # a baseline name wins


def test_an_unknown_name_is_refused_with_what_a_name_can_be(tmp_path):
  workdir = str(tmp_path)
  schedules.save(workdir, 'mine', schedules.Ladders({3: np.asarray(LADDER)}), 'ays', 'corrector')
  allowed = (r"config.eval.schedules names 'nosuch': neither learned, fitted, a baseline "
             r"\(cosine, edm_rho3, edm_rho7, linear, log_linear\) nor a schedule stored in .*schedules "
             r"\(stored: mine\); fit one with --mode=fit_schedule --config.fit.name=<name>")
  with pytest.raises(files.InputError, match=allowed):
    schedules.resolve('nosuch', PATH, workdir)
  with pytest.raises(files.InputError, match=allowed):
    schedules.check_names(('linear', 'learned', 'fitted', 'mine', 'nosuch'), workdir)
  schedules.check_names(('linear', 'learned', 'fitted', 'mine'), workdir)   # every kind of name: no error
  with pytest.raises(files.InputError, match=r"config.eval.schedules names 'nosuch': .*\(no workdir given\) "
                                             r"\(stored: none\)"):
    schedules.resolve('nosuch', PATH)
  with pytest.raises(files.InputError, match=r"config.eval.schedules names 'fitted', a group \(every stored "
                                             r"schedule: mine\), not one schedule"):
    schedules.resolve(schedules.FITTED, PATH, workdir)
