"""tools.solver_table: the best hand-made ladder per solver and NFE, a winner only beyond the spreads."""
import json

from tools import solver_table


def _record(cells):
  """cells: {ladder: {nfe: (mean, std)}} -> an eval record of the fields the table reads."""
  return {'metrics': {'w1': 'min'},
          'results': {name: {str(n): {'w1': m, 'w1_std': s, 'nfe': n} for n, (m, s) in row.items()}
                      for name, row in cells.items()}}


def test_best_ladder_per_solver_and_winner_beyond_the_spreads(tmp_path):
  records = {'heun': _record({'edm_rho7': {5: (0.30, 0.01)}, 'log_linear': {5: (0.20, 0.01)},
                              'trajectory': {5: (0.01, 0.0)}}),      # a search: not a hand-made ladder
             'unipc': _record({'edm_rho7': {4: (0.10, 0.01), 5: (0.05, 0.01)},
                               'cosine': {4: (float('nan'), 0.0), 5: (0.19, 0.05)}}),
             'ipndm': _record({'edm_rho7': {4: (0.105, 0.01), 5: (0.5, 0.01)}})}
  paths = []
  for sampler, record in records.items():
    paths.append(tmp_path / f'toy_eval_{sampler}.json')
    paths[-1].write_text(json.dumps(record))
  text = solver_table.main([str(p) for p in paths])
  rows = {line.split('|')[1].strip(): line for line in text.splitlines() if line.startswith('| ')}
  assert '0.2 ± 0.01 (log_linear)' in rows['heun'] and 'trajectory' not in text
  assert '| - |' in rows['heun']                                            # heun has no NFE 4 column
  assert '0.1 ± 0.01 (edm_rho7)' in rows['unipc']                          # the diverged cosine cell never wins
  best = rows['**best**'].split('|')[2:4]
  assert best[0].strip() == 'unipc + edm_rho7 (tie)'                       # 0.10 vs 0.105: within the spreads
  assert best[1].strip() == 'unipc + edm_rho7'                             # 0.05 beats 0.2 and 0.5 beyond them


def test_fewstep_table_reads_each_solvers_own_ladder(tmp_path):
  records = {'unipc': _record({'edm_rho7': {4: (0.10, 0.01)}, 'fewstep_unipc': {4: (0.05, 0.01)},
                               'fewstep_ipndm': {4: (0.5, 0.01)}}),
             'ipndm': _record({'edm_rho7': {4: (0.10, 0.01)}, 'fewstep_ipndm': {4: (0.11, 0.01)},
                               'fewstep_unipc': {4: (0.01, 0.0)}})}
  paths = []
  for sampler, record in records.items():
    paths.append(str(tmp_path / f'toy_eval_{sampler}.json'))
    (tmp_path / f'toy_eval_{sampler}.json').write_text(json.dumps(record))
  text = solver_table.fewstep_report(solver_table.load(paths))
  section = text.split('fewstep (the default search)')[1].split('##')[0]
  rows = {line.split('|')[1].strip(): line for line in section.splitlines() if line.startswith('| ')}
  assert '0.05 (0.50x edm_rho7, W)' in rows['unipc']                       # its own ladder, not ipndm's
  assert '0.11 (1.10x edm_rho7, t)' in rows['ipndm']                       # within the spreads: a tie
  assert 'GITS dynamic programme' not in text                               # no gits ladder evaluated: no table
  pairs = text.split('the best pairs')[1].split('###')[0]
  rows = {line.split('|')[1].strip(): line for line in pairs.splitlines() if line.startswith('| ')}
  assert '0.1 ± 0.01 (unipc + edm_rho7)' in rows['best hand-made pair']   # 0.10 ties 0.10: the first
  assert '0.05 ± 0.01 (unipc + fewstep)' in rows['best fewstep pair']
  assert '0.50x, W' in rows['fewstep / hand-made']
  assert 'met in 1 of 2 cells; missed: ipndm NFE 4 (1.10x)' in text       # 20% better at NFE <= 6: unipc only


def test_trajectory_report_reads_the_search_records(tmp_path):
  folder = tmp_path / 'cantor_searches' / 'schedules'
  folder.mkdir(parents=True)
  record = {'sampler': 'ipndm', 'dp_costs': 'one Euler (DDIM) step per pair', 'objective': {'4': 0.01, '10': 0.002},
            'dp': {'4': 0.02, '10': 0.002}, 'start': {'4': 'dp', '10': 'edm_rho7'}, 'baselines': {'edm_rho7': {'4': 0.04, '10': 0.001},
                                                          'linear': {'4': float('nan'), '10': 0.5}}}
  (folder / 'trajectory_ipndm.json').write_text(json.dumps(record))
  text = solver_table.trajectory_report([str(folder / 'trajectory_ipndm.json')])
  assert '## cantor_searches: ipndm (one Euler (DDIM) step per pair)' in text
  assert '| 4 | 0.02 | dp | 0.01 | 0.04 (edm_rho7) | 0.50x | 0.25x |' in text   # a diverged ladder is not the best
  assert '| 10 | 0.002 | edm_rho7 | 0.002 | 0.001 (edm_rho7) | 1.00x | 2.00x |' in text  # a loss: said


def test_polish_report_sets_each_polish_beside_fewstep_on_the_same_noises(tmp_path):
  folder = tmp_path / 'cantor_searches' / 'schedules'
  folder.mkdir(parents=True)
  common = dict(sampler='ipndm', num_noises=512, teacher='heun, 512 steps')
  polish = dict(common, objective={'4': 0.01, '6': 0.02}, kept={'4': 'refined', '6': 'start'},
                start={'4': {'from': 'gits', 'objective': 0.1}, '6': {'from': 'gits', 'objective': 0.02}})
  (folder / 'polish_gits_ipndm.json').write_text(json.dumps(polish))
  (folder / 'fewstep_ipndm.json').write_text(json.dumps(dict(common, objective={'4': 0.02, '6': 0.01})))
  text = solver_table.polish_report([str(folder / 'polish_gits_ipndm.json')])
  assert '## cantor_searches: ipndm from gits' in text
  assert '| 4 | 0.1 | 0.01 | refined | 0.10x | 0.02 | 0.50x |' in text
  assert '| 6 | 0.02 | 0.02 | start | 1.00x | 0.01 | 2.00x |' in text
  # fewstep on other noises (another count) is not set beside it
  (folder / 'fewstep_ipndm.json').write_text(json.dumps(dict(common, num_noises=64, objective={'4': 0.02})))
  assert '| 4 | 0.1 | 0.01 | refined | 0.10x | - | - |' in solver_table.polish_report([str(folder / 'polish_gits_ipndm.json')])
