"""The bad-input battery (tools/bad_input.py): its classification, and (slow) every case clear."""
import collections

import pytest

from tools import bad_input


def test_cases_are_named_once_and_the_classification_is_strict():
  names = [c['name'] for c in bad_input.cases()]
  assert len(names) > 100 and not [n for n, k in collections.Counter(names).items() if k > 1]
  assert bad_input.classify(False, 2, False, True, False) == 'clear'
  assert bad_input.classify(False, 1, True, True, False) == 'weak'     # a traceback
  assert bad_input.classify(False, 2, False, False, False) == 'weak'   # another setting named
  assert bad_input.classify(False, 0, False, False, True) == 'silent'  # accepted
  assert bad_input.classify(False, 2, False, True, True) == 'wrong'    # refused, but a file changed
  assert bad_input.classify(True, 2, False, True, False) == 'wrong'    # a case that must run did not


@pytest.mark.slow
def test_every_bad_input_case_is_refused_clearly(tmp_path):
  """About 12 minutes on 2 CPU cores: trains the toy and digits smoke runs, then 140 main.py runs."""
  rows = bad_input.run(str(tmp_path))
  assert [r['name'] for r in rows if r['outcome'] != 'clear'] == []
