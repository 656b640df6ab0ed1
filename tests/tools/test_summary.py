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
