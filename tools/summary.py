"""One table across evaluations: ``python -m tools.summary --metric=w1 docs/cantor_exact_eval_heun.json ...``.

Prints, in markdown, (1) the metric of every schedule in every column (K, NFE) of every ``eval.json`` given, mean ±
spread over seeds with the same bold rule as ``eval.md`` (:func:`eval.tables.best_cells`), the sample-size floor
of each file underneath; and (2) for a lower-is-better metric, for each schedule that is not hand-made (learned
online, the score-optimal fits, the searches) its ratio to the best hand-made schedule of the same column (the
baselines of ``schedule/baselines.py``): below 1 it wins, above 1 it loses; (3) with ``--best``, one line per
column: the best of this project's score-only schedules (learned online, the score-optimal fits, their
refinements, the trajectory search: not DDSS, which optimises the evaluation metric, nor the field's other
searches) against the best hand-made one, their ratio, and whether the difference exceeds the two spreads.
Non-finite cells stay non-finite.

``a.json+b.json`` reads two evaluations of one checkpoint with the same settings as one (the rows of both).
"""
import json
import os

import numpy as np
from absl import app, flags

from ddm.registry import BASELINES
from eval.tables import best_cells, cell_text
from schedule import baselines  # noqa: F401  (fills BASELINES)
from ddm.files import read_json

flags.DEFINE_string('metric', 'w1', 'Metric of the eval.json files to tabulate.')
flags.DEFINE_bool('best', False, "Also the best score-only schedule against the best hand-made one, per column.")
NOT_SCORE_ONLY = ('ddss', 'dp_elbo', 'ays')  # the field's searches: baselines, not this project's score-only ladders


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


def best_table(records: dict, metric: str) -> str:
  """Per column: the best score-only schedule (not hand-made, not in :data:`NOT_SCORE_ONLY`) and the best
  hand-made one (means; non-finite cells never best), the ratio of the two, and the verdict: 'wins' or 'loses'
  when the means differ by more than the two spreads added, else 'tie (within spreads)'."""
  better = next(iter(records.values()))['metrics'][metric]
  hand = set(BASELINES.names())
  sign = 1.0 if better == 'min' else -1.0
  out = [f'| column | best score-only ({metric}) | best hand-made ({metric}) | ratio | verdict |', '|---|---|---|---|---|']
  for lab, k, e, cells in columns(records, metric):
    def best_of(names):
      finite = [(sign * cells[n][metric], n) for n in names if np.isfinite(cells[n][metric])]
      return min(finite)[1] if finite else None
    own = best_of([n for n in cells if n not in hand and n not in NOT_SCORE_ONLY])
    ref = best_of([n for n in cells if n in hand])
    if own is None or ref is None:
      out.append(f'| {lab} K={k} (NFE {e}) | {own or "-"} | {ref or "-"} | - | - |')
      continue
    a, b = cells[own], cells[ref]
    gap = sign * (b[metric] - a[metric])
    spread = a.get(metric + '_std', 0.0) + b.get(metric + '_std', 0.0)
    verdict = 'wins' if gap > spread else 'loses' if -gap > spread else 'tie (within spreads)'
    out.append(f'| {lab} K={k} (NFE {e}) | {own} {cell_text(a, metric)} | {ref} {cell_text(b, metric)} | '
               f'{a[metric] / b[metric]:.2f} | {verdict} |')
  return '\n'.join(out) + '\n'


def read(spec: str) -> dict:
  """One record from ``a.json``, or from several evaluations of one checkpoint with the same sampler, sample
  count, seeds and columns, ``a.json+b.json`` (the rows of all; a schedule in several keeps the first file's
  cells: the same noises, equal up to float rounding)."""
  files = spec.split('+')
  parts = [read_json(f, 'regenerate it with --mode=eval on its workdir') for f in files]
  merged = dict(parts[0], results=dict(parts[0]['results']))
  for f, part in zip(files[1:], parts[1:]):
    differ = [k for k in SAME_EVALUATION if json.dumps(part.get(k)) != json.dumps(merged.get(k))]
    if differ:
      raise ValueError(f'{f} and {files[0]} differ in {", ".join(differ)}: only evaluations of one checkpoint with '
                       'the same settings can be read as one; give the files apart')
    for name, row in part['results'].items():
      merged['results'].setdefault(name, row)
  return merged


SAME_EVALUATION = ('step', 'sampler', 'num_samples', 'seeds', 'columns')


def main(argv):
  specs = argv[1:]
  if not specs:
    raise app.UsageError('give one or more eval.json files')
  records = {label(spec.split('+')[0]): read(spec) for spec in specs}
  print(tables(records, flags.FLAGS.metric))
  if flags.FLAGS.best:
    print(best_table(records, flags.FLAGS.metric))


if __name__ == '__main__':
  app.run(main)
