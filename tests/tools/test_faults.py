"""The fault-injection run: every scenario ends with nothing lost (each is also a default-suite test in
tests/train/test_safety.py; this runs them as a user would, in subprocesses)."""
import pytest

from tools import faults


@pytest.mark.slow
def test_every_fault_scenario_loses_nothing(tmp_path):
  rows = faults.run(str(tmp_path), steps=120)
  assert [r[0] for r in rows[1:]] == list(faults.ORDER)
  for name, outcome, lost, _ in rows[1:]:
    assert lost.startswith('nothing'), (name, outcome, lost)
    assert 'NOT' not in outcome, (name, outcome)
