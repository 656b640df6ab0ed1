"""One table across evaluations: ``python -m tools.summary --metric=w1 docs/cantor_exact_eval_heun.json ...``.

Prints, in markdown, (1) the metric of every schedule in every column (K, NFE) of every ``eval.json`` given, mean ±
spread over seeds with the same bold rule as ``eval.md`` (:func:`eval.report.best_cells`), the sample-size floor
of each file underneath; and (2) for a lower-is-better metric, for each schedule that is not hand-made (learned
online, the score-optimal fits, the searches) its ratio to the best hand-made schedule of the same column (the
baselines of ``schedule/baselines.py``): below 1 it wins, above 1 it loses. Non-finite cells stay non-finite.
"""
import os

import numpy as np
from absl import app, flags

from ddm.registry import BASELINES
from eval.report import best_cells, cell_text
from schedule import baselines  # noqa: F401  (fills BASELINES)
from ddm.files import read_json

flags.DEFINE_string('metric', 'w1', 'Metric of the eval.json files to tabulate.')


def label(filename: str) -> str:
  """``docs/cantor_exact_eval_heun.json`` -> ``cantor_exact, heun``."""
  stem = os.path.basename(filename).rsplit('.', 1)[0]
  run, _, sampler = stem.partition('_eval_')
  return f'{run}, {sampler}' if sampler else run


def columns(records: dict, metric: str):
  """``[(label, K, NFE, {schedule: cell})]`` over every file and column."""
  out = []
  for name, record in records.items():
    for c in record['columns']:
      cells = {s: row[str(c['num_steps'])] for s, row in record['results'].items() if str(c['num_steps']) in row}
      out.append((name, c['num_steps'], c['nfe'], cells))
  return out


def tables(records: dict, metric: str) -> str:
  cols = columns(records, metric)
  better = next(iter(records.values()))['metrics'][metric]
  names = list(dict.fromkeys(s for _, _, _, cells in cols for s in cells))
  header = [f'{lab} K={k} (NFE {e})' for lab, k, e, _ in cols]
  best = [best_cells({s: (c[metric], c.get(metric + '_std', 0.0)) for s, c in cells.items()}, better)
          for *_, cells in cols]
  out = [f'| schedule | ' + ' | '.join(header) + ' |', '|---|' + '---|' * len(cols)]
  for s in names:
    row = []
    for (_, _, _, cells), b in zip(cols, best):
      text = cell_text(cells[s], metric) if s in cells else '-'
      row.append(f'**{text}**' if b == s else text)
    out.append(f'| {s} | ' + ' | '.join(row) + ' |')
  floors = [f'{lab}: {cell_text(r["floor"], metric)}' for lab, r in records.items() if metric in r.get('floor', {})]
  if floors:
    out += ['', f'Sample-size floor ({metric} of exact p_0 samples, same n): ' + '; '.join(floors) + '.']
  if better != 'min':  # ratios of a log-likelihood mean nothing
    return '\n'.join(out) + '\n'
  hand = set(BASELINES.names())
  searched = [s for s in names if s not in hand]
  out += ['', f'Ratio of {metric} to the best hand-made schedule of the column '
          f'({", ".join(sorted(hand))}; below 1 is a win):', '',
          '| schedule | ' + ' | '.join(header) + ' |', '|---|' + '---|' * len(cols)]
  for s in searched:
    row = []
    for _, _, _, cells in cols:
      ref = [c[metric] for name, c in cells.items() if name in hand and np.isfinite(c[metric])]
      if s not in cells or not ref:
        row.append('-')
        continue
      value = cells[s][metric]
      row.append(f'{value / min(ref):.2f}' if np.isfinite(value) else 'diverged')
    out.append(f'| {s} | ' + ' | '.join(row) + ' |')
  return '\n'.join(out) + '\n'


def main(argv):
  files = argv[1:]
  if not files:
    raise app.UsageError('give one or more eval.json files')
  records = {}
  for f in files:
    records[label(f)] = read_json(f, 'regenerate it with --mode=eval on its workdir')
  print(tables(records, flags.FLAGS.metric))


if __name__ == '__main__':
  app.run(main)
