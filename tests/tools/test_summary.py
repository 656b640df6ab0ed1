"""eval.summary: the cross-file table and the ratio to the best hand-made schedule."""
import json

import numpy as np

from tools import summary


def _record(cells):
  results = {name: {'5': {'w1': m, 'w1_std': s, 'nonfinite_fraction': 0.0 if np.isfinite(m) else 1.0, 'nfe': 9}}
             for name, (m, s) in cells.items()}
  return {'results': results, 'metrics': {'w1': 'min'}, 'columns': [{'num_steps': 5, 'nfe': 9}],
          'floor': {'w1': 0.007, 'w1_std': 0.001}}


def test_ratio_to_the_best_hand_made_schedule(tmp_path):
  records = {'bimodal_exact, heun': _record({'corrector': (0.075, 0.001), 'ddss': (float('nan'), float('nan')),
                                             'cosine': (0.056, 0.001), 'edm_rho7': (0.35, 0.01)})}
  text = summary.tables(records, 'w1')
  assert '| cosine | **0.056 ± 0.001** |' in text                 # the best, by more than both spreads
  assert '| corrector | 1.34 |' in text                            # 0.075 / 0.056: a loss to cosine
  assert '| ddss | diverged |' in text and '| cosine | 1.00 |' not in text
  assert 'bimodal_exact, heun: 0.007 ± 0.001' in text
  f = tmp_path / 'bimodal_exact_eval_heun.json'
  f.write_text(json.dumps(records['bimodal_exact, heun']))
  assert summary.label(str(f)) == 'bimodal_exact, heun'


def test_the_best_score_only_schedule_against_the_best_hand_made_one():
  records = {'cantor_exact, heun': _record({'corrector': (0.075, 0.001), 'trajectory': (0.040, 0.001),
                                            'ddss': (0.010, 0.001), 'predictor_refined': (float('nan'), 0.0),
                                            'cosine': (0.056, 0.001), 'linear': (0.30, 0.01)})}
  text = summary.best_table(records, 'w1')
  # DDSS optimises the metric itself and a diverged ladder is never the best: trajectory against cosine
  assert '| cantor_exact, heun K=5 (NFE 9) | trajectory 0.04 ± 0.001 | cosine 0.056 ± 0.001 | 0.71 | wins |' in text
  close = {'x, heun': _record({'trajectory': (0.054, 0.002), 'cosine': (0.056, 0.001)})}
  assert '| 0.96 | tie (within spreads) |' in summary.best_table(close, 'w1')
  worse = {'x, heun': _record({'corrector': (0.2, 0.01), 'cosine': (0.056, 0.001)})}
  assert '| 3.57 | loses |' in summary.best_table(worse, 'w1')


def test_two_evaluations_of_one_checkpoint_read_as_one(tmp_path):
  a, b = _record({'corrector': (0.075, 0.001), 'cosine': (0.056, 0.001)}), _record({'trajectory': (0.04, 0.001),
                                                                                  'cosine': (0.056, 0.001)})
  for r in (a, b):
    r.update(step=3000, sampler='heun', num_samples=20000, seeds=3)
  (tmp_path / 'a.json').write_text(json.dumps(a))
  (tmp_path / 'b.json').write_text(json.dumps(b))
  merged = summary.read(f'{tmp_path}/a.json+{tmp_path}/b.json')
  assert sorted(merged['results']) == ['corrector', 'cosine', 'trajectory']
  b['num_samples'] = 512
  (tmp_path / 'b.json').write_text(json.dumps(b))
  import pytest
  with pytest.raises(ValueError, match='differ in num_samples: only evaluations of one checkpoint'):
    summary.read(f'{tmp_path}/a.json+{tmp_path}/b.json')
