"""Evaluation tables (method.md section 9): a cell is the mean and spread over seeds, the best cell of a column
is bold only when it beats the runner-up by more than both spreads, and a non-finite cell is never a number."""
import numpy as np


def summarise(per_seed: list) -> dict:
  """Mean and spread over seeds of each metric: ``{m, m_std (ddof=1; 0 for one seed), per_seed: {m: [...]},
  nonfinite_fraction}``. A seed with a non-finite value makes the mean non-finite."""
  out, names = {'per_seed': {}}, [m for m in per_seed[0] if m != 'nonfinite_fraction']
  for m in names:
    values = np.array([row[m] for row in per_seed], np.float64)
    finite = bool(np.all(np.isfinite(values)))
    out[m] = float(np.mean(values)) if finite else float('nan')
    out[m + '_std'] = (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0) if finite else float('nan')
    out['per_seed'][m] = values.tolist()
  out['nonfinite_fraction'] = float(np.mean([row.get('nonfinite_fraction', 0.0) for row in per_seed]))
  return out


def best_cells(cells: dict, better: str):
  """The key of the best finite cell of ``cells: {key: (mean, std)}`` when it beats the runner-up by more than
  the sum of the two spreads, else None (also when fewer than two cells are finite)."""
  finite = sorted(((m, s, key) for key, (m, s) in cells.items() if np.isfinite(m)),
                  key=lambda c: -c[0] if better == 'max' else c[0])
  if len(finite) < 2:
    return None
  (m0, s0, key), (m1, s1, _) = finite[:2]
  return key if abs(m0 - m1) > s0 + s1 else None


def cell_text(row: dict, metric: str) -> str:
  """``mean ± std`` of ``row[metric]``, or "diverged (x% non-finite)" for a non-finite cell."""
  value = row[metric]
  if not np.isfinite(value):
    bad = row.get('nonfinite_fraction', 0.0)
    return f'diverged ({bad:.0%} non-finite)' if bad else 'non-finite'
  std = row.get(metric + '_std')
  return f'{value:.4g}' if std is None else f'{value:.4g} ± {std:.2g}'


def markdown_report(record: dict) -> str:
  """One table per metric: schedules as rows, (K, NFE) columns, mean ± spread per cell, the best cell of a
  column in bold only when it is better than the runner-up by more than both spreads added."""
  results, out = record['results'], []
  columns = [(c['num_steps'], c['nfe']) for c in record['columns']]
  by_nfe = record.get('by_nfe', False)
  header = [f'NFE={e} (K={k})' if by_nfe else f'K={k} (NFE={e})' for k, e in columns]
  for metric, better in record['metrics'].items():
    out += [f'### {metric} ({"higher" if better == "max" else "lower"} is better)', '',
            '| schedule | ' + ' | '.join(header) + ' |', '|---|' + '---|' * len(columns)]
    best = {k: best_cells({name: (row[str(k)][metric], row[str(k)].get(metric + '_std', 0.0))
                           for name, row in results.items() if str(k) in row}, better) for k, _ in columns}
    for name, row in results.items():
      cells = []
      for k, _ in columns:
        if str(k) not in row:
          cells.append('-')
          continue
        text = cell_text(row[str(k)], metric)
        cells.append(f'**{text}**' if best[k] == name else text)
      out.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    out.append('')
    floor = record.get('floor')
    if floor and metric in floor:
      of = floor.get('of', f'{record["num_samples"]} exact p_0 samples against the truth')
      out += [f'Sample-size floor ({metric} of {of}): {cell_text(floor, metric)}.', '']
  seeds = record.get('seeds', 1)
  out += [f'Each cell: mean ± standard deviation over {seeds} seeds of {record["num_samples"]} samples; bold: '
          'better than the runner-up by more than the two spreads added; "diverged": a seed had non-finite '
          'samples (the share is given).', '']
  for name, made_for in record.get('searched_for_another_solver', {}).items():
    out += [f'{name}: searched for the solver {made_for}, evaluated here with {record["sampler"]}.', '']
  for n, why in record.get('unreachable_nfe', {}).items():
    out += [f'NFE={n}: no column, {record["sampler"]} cannot make exactly {n} evaluations ({why.split("; ")[-1]}).', '']
  if 'note' in record:
    out += [record['note'], '']
  net = record.get('feature_network', {})
  if 'test_accuracy' in net:
    out += [f'The classifier ({net.get("steps", "?")} steps on {net.get("num_train", "?")} {net.get("dataset", "")} '
            f'training images) classifies {100 * net["test_accuracy"]:.1f}% of the {net.get("num_test", "?")} '
            'held-out images correctly.', '']
  if 'likelihood' in record:
    out += ['Likelihood (probability-flow ODE, independent of the sampling schedule): ' +
            ', '.join(f'{k} = {v:.4g}' for k, v in record['likelihood'].items()), '']
  out.append(f'Step {record["step"]}, sampler {record["sampler"]} (NFE counts every network evaluation of a sample).')
  return '\n'.join(out) + '\n'
