"""Which solver, with which hand-made ladder, is best at each NFE: one table per run and metric, from eval records.

    python -m tools.solver_table docs/cantor_solvers_eval_*.json docs/bimodal_solvers_eval_*.json
    python -m tools.solver_table --fewstep docs/*_solvers_eval_*.json   # the searches against them
    python -m tools.solver_table --trajectory RUNS/*_searches/schedules/trajectory_*.json   # search records
    python -m tools.solver_table --polish RUNS/*_searches/schedules/polish_*.json           # polish records

Records are grouped by run (the file name before ``_eval_<sampler>.json``). A cell is the best hand-made ladder
(:data:`HAND_MADE`) of that solver at that NFE, ``mean ± std (ladder)``; the last row names the best solver and
ladder of the column, which is a winner only when its mean beats every other solver's best by more than the two
spreads added (else "tie"). A diverged cell never wins. Searched ladders are left out: they are judged in their
own tables against the ladders made by hand.
"""
import json
import math
import os
import re
import sys
from collections import defaultdict

HAND_MADE = ('linear', 'cosine', 'edm_rho3', 'edm_rho7', 'log_linear')
SOLVERS = ('euler', 'heun', 'dpmpp_2m', 'dpmpp_3m', 'unipc', 'ipndm')


def by_nfe(record: dict, metric: str) -> dict:
  """``{nfe: {ladder: (mean, std)}}`` of the hand-made ladders in one record."""
  out = defaultdict(dict)
  for name, row in record['results'].items():
    if name not in HAND_MADE:
      continue
    for cell in row.values():
      if metric in cell:
        out[int(cell['nfe'])][name] = (float(cell[metric]), float(cell.get(metric + '_std', 0.0)))
  return out


def best(cells: dict, lower: bool):
  """``(name, (mean, std))`` of the best finite cell, or None."""
  finite = {n: v for n, v in cells.items() if math.isfinite(v[0])}
  if not finite:
    return None
  return (min if lower else max)(finite.items(), key=lambda item: item[1][0])


def table(records: dict, metric: str) -> list:
  """Markdown lines: solvers as rows, NFE as columns (``records``: sampler -> record of one run)."""
  lower = next(iter(records.values()))['metrics'][metric] != 'max'
  grids = {s: by_nfe(r, metric) for s, r in records.items()}
  nfes = sorted({n for g in grids.values() for n in g})
  lines = [f'| solver | ' + ' | '.join(f'NFE {n}' for n in nfes) + ' |', '|---|' + '---|' * len(nfes)]
  winners = {}
  for sampler in [s for s in SOLVERS if s in grids] + sorted(set(grids) - set(SOLVERS)):
    cells = []
    for n in nfes:
      b = best(grids[sampler].get(n, {}), lower)
      cells.append('-' if b is None else f'{b[1][0]:.4g} ± {b[1][1]:.2g} ({b[0]})')
      if b is not None:
        winners.setdefault(n, {})[sampler] = b
    lines.append(f'| {sampler} | ' + ' | '.join(cells) + ' |')
  verdicts = []
  for n in nfes:
    per_solver = {s: v[1] for s, v in winners.get(n, {}).items()}
    top = best(per_solver, lower)
    if top is None:
      verdicts.append('-')
      continue
    (solver, (mean, std)) = top
    clear = all(abs(m - mean) > s + std for other, (m, s) in per_solver.items() if other != solver)
    verdicts.append(f'{solver} + {winners[n][solver][0]}' + ('' if clear else ' (tie)'))
  lines.append('| **best** | ' + ' | '.join(verdicts) + ' |')
  return lines


def searched(record: dict, name: str, metric: str) -> dict:
  """``{nfe: (mean, std)}`` of the schedule ``name`` in one record (empty when it was not evaluated)."""
  return {int(cell['nfe']): (float(cell[metric]), float(cell.get(metric + '_std', 0.0)))
          for cell in record['results'].get(name, {}).values() if metric in cell}


def verdict(a, b, lower: bool) -> str:
  """W (``a`` better than ``b`` beyond the two spreads), L (worse beyond them) or t (a tie)."""
  (ma, sa), (mb, sb) = a, b
  if not (math.isfinite(ma) and math.isfinite(mb)) or abs(ma - mb) <= sa + sb:
    return 't' if math.isfinite(ma) else 'L'
  return 'W' if (ma < mb) == lower else 'L'


def search_table(records: dict, metric: str, search: str) -> list:
  """Markdown lines: per solver and NFE, the ladder ``search`` (``fewstep_<solver>`` is read as the one made for
  that solver) against the solver's best hand-made ladder: ``value (ratio x, W/L/t)``. Solvers without the
  ladder are left out; no lines at all when no solver has it."""
  lower = next(iter(records.values()))['metrics'][metric] != 'max'
  nfes = sorted({n for r in records.values() for n in by_nfe(r, metric)})
  lines = ['| solver | ' + ' | '.join(f'NFE {n}' for n in nfes) + ' |', '|---|' + '---|' * len(nfes)]
  for sampler in [s for s in SOLVERS if s in records]:
    own = searched(records[sampler], search.replace('<solver>', sampler), metric)
    hand = by_nfe(records[sampler], metric)
    cells = []
    for n in nfes:
      b = best(hand.get(n, {}), lower)
      if n not in own or b is None:
        cells.append('-')
        continue
      ratio = own[n][0] / b[1][0] if b[1][0] else math.inf
      cells.append(f'{own[n][0]:.3g} ({ratio:.2f}x {b[0]}, {verdict(own[n], b[1], lower)})')
    if any(c != '-' for c in cells):
      lines.append(f'| {sampler} | ' + ' | '.join(cells) + ' |')
  return lines if len(lines) > 2 else []


def best_pairs(records: dict, metric: str) -> list:
  """Markdown lines: per NFE, the best solver with its best hand-made ladder against the best solver with the
  ladder the default search made for it (``fewstep_<solver>``), their ratio and the verdict; no lines when no
  solver has a fewstep ladder. Choosing the best solver per column favours neither side: both sides are
  chosen the same way."""
  lower = next(iter(records.values()))['metrics'][metric] != 'max'
  nfes = sorted({n for r in records.values() for n in by_nfe(r, metric)})
  hand, searched_best = {}, {}
  for n in nfes:
    hand_cells, own_cells = {}, {}
    for sampler in [s for s in SOLVERS if s in records]:
      b = best(by_nfe(records[sampler], metric).get(n, {}), lower)
      if b is not None:
        hand_cells[f'{sampler} + {b[0]}'] = b[1]
      own = searched(records[sampler], f'fewstep_{sampler}', metric)
      if n in own:
        own_cells[f'{sampler} + fewstep'] = own[n]
    hand[n], searched_best[n] = best(hand_cells, lower), best(own_cells, lower)
  if not any(searched_best.values()):
    return []
  cell = lambda b: '-' if b is None else f'{b[1][0]:.3g} ± {b[1][1]:.2g} ({b[0]})'
  lines = ['| | ' + ' | '.join(f'NFE {n}' for n in nfes) + ' |', '|---|' + '---|' * len(nfes),
           '| best hand-made pair | ' + ' | '.join(cell(hand[n]) for n in nfes) + ' |',
           '| best fewstep pair | ' + ' | '.join(cell(searched_best[n]) for n in nfes) + ' |']
  ratios = []
  for n in nfes:
    h, f = hand[n], searched_best[n]
    ratios.append('-' if h is None or f is None or not h[1][0] else
                  f'{f[1][0] / h[1][0]:.2f}x, {verdict(f[1], h[1], lower)}')
  return lines + ['| fewstep / hand-made | ' + ' | '.join(ratios) + ' |']


def target_check(records: dict, metric: str, gain=0.8, few: int = 6, most: int = 20,
                 search: str = 'fewstep_<solver>') -> str:
  """One line: does each solver's ladder ``search`` (default: fewstep's) meet the target (``metric`` at most ``gain`` times the
  solver's best hand-made ladder at NFE <= ``few``, and not worse beyond the spreads at NFE <= ``most``;
  ``gain=None``: only the second)?"""
  lower = next(iter(records.values()))['metrics'][metric] != 'max'
  met, misses = 0, []
  for sampler in [s for s in SOLVERS if s in records]:
    own = searched(records[sampler], search.replace('<solver>', sampler), metric)
    hand = by_nfe(records[sampler], metric)
    for n in sorted(own):
      b = best(hand.get(n, {}), lower)
      if b is None or n > most:
        continue
      ratio = own[n][0] / b[1][0] if b[1][0] else math.inf
      ok = verdict(own[n], b[1], lower) != 'L' and (gain is None or n > few or
                                                     (ratio <= gain if lower else ratio >= 1 / gain))
      met += ok
      if not ok:
        misses.append(f'{sampler} NFE {n} ({ratio:.2f}x)')
  if not met and not misses:
    return ''
  goal = (f'{100 * (1 - gain):.0f}% better at NFE <= {few}, ' if gain else '') + \
      f'not worse beyond the spreads up to NFE {most}'
  return (f'Target ({goal}): met in {met} of {met + len(misses)} cells' + (f'; missed: {", ".join(misses)}.' if misses else '.'))


SEARCH_ROWS = (   # (title, stored name; <solver>: the one made for the row's solver) of docs/fewstep.md
    ('fewstep (the default search)', 'fewstep_<solver>'),
    ("fewstep with the MMD objective (fit.fewstep.objective='mmd': an option, not the default)", 'fewstep_mmd_<solver>'),
    ('polish of rho = 7 (fit.method=polish)', 'polish_edm_rho7_<solver>'),
    ('GITS dynamic programme', 'gits'), ('AYS (made for ancestral sampling)', 'ays'))


def fewstep_report(runs: dict) -> str:
  out = ['# The default few-step search against the hand-made ladders, GITS and AYS', '',
         'Written by `bash docs/reproduce.sh solvers` (`python -m tools.solver_table --fewstep`; the rows of the',
         'trained MLPs, digits and MNIST-5k by `learned_solvers`, `digits_solvers` and `mnist_solvers`). Per run and',
         'metric: first the best solver with its best hand-made ladder against the best solver with the ladder the',
         'default search made for it, per NFE; then each searched ladder walked by the solver of its row (fewstep:',
         'the ladder made for that solver), its mean over seeds, its ratio to the best hand-made ladder of that',
         'solver and NFE, and the verdict: W (better beyond the two spreads added), L (worse beyond them), t',
         '(within). Tables with no such ladder evaluated are left out. The `_objectives` runs (`bash docs/reproduce.sh',
         "objectives`) put fewstep's default objective (the paired distance to the teacher) beside its MMD option for",
         'Euler, DPM-Solver++(2M) and iPNDM, on the same evaluation seeds as the `_solvers` runs.', '']
  for run, records in sorted(runs.items()):
    metrics = next(iter(records.values()))['metrics']
    for metric in metrics:
      if metric == 'log_likelihood':
        continue
      pairs = best_pairs(records, metric)
      if pairs:
        out += [f'## {run}, {metric}: the best pairs', ''] + pairs + ['']
        check = target_check(records, metric, gain=None if metric == 'kl' else 0.8)
        out += [check, ''] if check else []
      for title, search in SEARCH_ROWS:
        lines = search_table(records, metric, search)
        if lines and search != 'fewstep_<solver>' and search.endswith('<solver>'):
          lines += ['', target_check(records, metric, gain=None if metric == 'kl' else 0.8, search=search)]
        out += [f'### {run}, {metric}: {title}', ''] + lines + [''] if lines else []
  return '\n'.join(out)


def _ratio(a, b) -> str:
  return f'{a / b:.2f}x' if b > 0 and math.isfinite(a) else '-'


def search_record(path) -> tuple:
  """``(run, record)`` of a stored search ``<run workdir>/schedules/<name>.json``."""
  with open(path) as f:
    return os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(path)))), json.load(f)


def trajectory_report(paths) -> str:
  """docs/trajectory_solvers.md from the records of trajectory searches made for a solver
  (``<workdir>/schedules/trajectory_<solver>.json``): per run, solver and K, the objective (mean squared
  distance per dimension to the model's own many-step solution, fresh noises) of the dynamic programme's ladder
  and of the refined one, both walked by the solver with its history, and of the solver's best hand-made ladder."""
  out = ['# The trajectory search made for each multistep solver', '',
         'Written by `bash docs/reproduce.sh trajectory_solvers` (`python -m tools.solver_table --trajectory`). The',
         "dynamic programme's pair costs take one Euler (DDIM) step, the step a multistep solver starts with (its",
         "later steps read earlier evaluations): GITS's approximation. Its ladder (dp) and the refined ladder",
         '(coordinate search from dp, then Brent from the best of that and the hand-made ladders on the fit noises:',
         'start; both on the real walk) are both scored by the solver, history included, on fresh',
         "noises against the model's own many-step solution (mean squared distance per dimension, lower is better),",
         "beside the solver's best hand-made ladder on the same noises. refined / dp measures what the approximation",
         'costs before the refinement; refined / hand-made what the search gains (above 1: it loses).', '']
  for path in sorted(paths):
    run, record = search_record(path)
    ks = sorted(record['objective'], key=int)
    out += [f'## {run}: {record["sampler"]} ({record.get("dp_costs", "")})', '',
            '| K | dp | start | refined | best hand-made | refined / dp | refined / hand-made |',
            '|---|---|---|---|---|---|---|']
    for k in ks:
      found, dp = record['objective'][k], record.get('dp', {}).get(k, math.nan)
      name, hand = min(((n, v[k]) for n, v in record['baselines'].items() if math.isfinite(v[k])),
                       key=lambda item: item[1], default=('-', math.nan))
      start = record.get('start', {}).get(k, '-')
      out.append(f'| {k} | {dp:.3g} | {start} | {found:.3g} | {hand:.3g} ({name}) | {_ratio(found, dp)} | '
                 f'{_ratio(found, hand)} |')
    out.append('')
  return '\n'.join(out)


SAME_NOISES = ('num_noises', 'teacher', 'grid', 'solver_order', 'objective_kind')  # fields two searches share
# when their fresh-noise objectives are comparable (the seed is the run's config.seed, one per workdir)


def polish_report(paths) -> str:
  """docs/polish.md from the records of polishes (``<workdir>/schedules/polish_[mmd_]<start>_<solver>.json``): per
  run, solver and start, per K the objective of the start and of the polished ladder on fresh noises, which one was
  kept, and beside them the objective of fewstep's ladder for that solver and objective (``fewstep_[mmd_]<solver>``)
  in the same workdir, where its noises, teacher, grid, order and objective match (:data:`SAME_NOISES`; else '-')."""
  out = ['# Polishing a named ladder for its solver', '',
         'Written by `bash docs/reproduce.sh polish` (`python -m tools.solver_table --polish`). `--config.fit.method=polish`',
         "runs fewstep's gradient refinement from a ladder you name (docs/method.md section 8.6). Each cell: the",
         "search's objective (the mean squared distance per dimension of the solver's K-step output to the model's own",
         'many-step solution; MMD^2 to it for the mmd objective) on fresh noises (lower is better), for the start and',
         'for the stored ladder (the polished one, or the start where polishing did not help on those noises: kept),',
         "beside fewstep's own ladder for the solver on the same noises. stored / fewstep above 1: the default search",
         'is better from its own start.', '']
  for path in sorted(paths):
    run, record = search_record(path)
    kind = record.get('objective_kind', 'paired')
    other = os.path.join(os.path.dirname(os.path.abspath(path)),
                         f'fewstep_{"mmd_" if kind == "mmd" else ""}{record["sampler"]}.json')
    fewstep = {}
    if os.path.exists(other):
      _, found = search_record(other)
      if all(found.get(f, d) == record.get(f, d) for f, d in zip(SAME_NOISES, (None,) * 4 + ('paired',))):
        fewstep = found['objective']
    start = next(iter(record['start'].values()))['from']
    out += [f'## {run}: {record["sampler"]} from {start}' + (' (MMD objective)' if kind == 'mmd' else ''), '',
            '| K | start | stored | kept | stored / start | fewstep | stored / fewstep |', '|---|---|---|---|---|---|---|']
    for k in sorted(record['objective'], key=int):
      found, first, few = record['objective'][k], record['start'][k]['objective'], fewstep.get(k, math.nan)
      out.append(f'| {k} | {first:.3g} | {found:.3g} | {record["kept"][k]} | {_ratio(found, first)} | '
                 + (f'{few:.3g} | {_ratio(found, few)} |' if math.isfinite(few) else '- | - |'))
    out.append('')
  return '\n'.join(out)


def load(paths) -> dict:
  runs = defaultdict(dict)
  for path in paths:
    match = re.fullmatch(r'(.+)_eval_(.+)\.json', os.path.basename(path))
    if not match:
      raise SystemExit(f'error: {path} is not an eval record named <run>_eval_<sampler>.json')
    with open(path) as f:
      runs[match.group(1)][match.group(2)] = json.load(f)
  return runs


def main(paths) -> str:
  runs = load(paths)
  out = ['# Few-step solvers with hand-made ladders (exact-score toys)', '',
         'Written by `bash docs/reproduce.sh solvers` (`python -m tools.solver_table`). Each cell: the best hand-made',
         f'ladder ({", ".join(HAND_MADE)}) of that solver at that NFE, mean ± std over the seeds; the last row: the best',
         'solver of the column with its ladder, "(tie)" when another solver is within the two spreads added.', '']
  for run, records in sorted(runs.items()):
    metrics = next(iter(records.values()))['metrics']
    for metric in metrics:
      if metric == 'log_likelihood':
        continue
      out += [f'## {run}: {metric} ({"lower" if metrics[metric] != "max" else "higher"} is better)', '']
      out += table(records, metric) + ['']
  return '\n'.join(out)


if __name__ == '__main__':
  args = sys.argv[1:]
  if '--trajectory' in args:
    print(trajectory_report([a for a in args if a != '--trajectory']))
  elif '--polish' in args:
    print(polish_report([a for a in args if a != '--polish']))
  else:
    print(fewstep_report(load([a for a in args if a != '--fewstep'])) if '--fewstep' in args else main(args))
