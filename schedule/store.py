"""Fitted schedules kept in a run's workdir, usable by name in ``config.eval.schedules``.

``--mode=fit_schedule`` stores each result as ``<workdir>/schedules/<name>.json`` in one of two forms:
- a length function (score-optimal fits): ``{"kind": "length", "t": f[N], "lam": f[N], ...}``; the K-step
  schedule for any K is read off it, ``t_k = Lambda^{-1}(k Lambda / K)`` (method.md section 3);
- ladders (searches that return one schedule per K: dp_elbo, ddss): ``{"kind": "ladders",
  "ladders": {"K": f[K+1]}, ...}``; only the stored K exist.
Both carry ``"method"``, ``"cost"`` and any extra metadata the search adds (time, network evaluations).
This module reads and writes the records only; a record as a schedule (``steps(K)``, ``has(K)``) is
:func:`schedule.schedules.stored` (and :func:`schedule.schedules.save` writes one).

Also the ``schedule.json`` record (:func:`schedule_record`) that every mode producing a schedule writes.
"""
import numpy as np

from ddm import files
from schedule import fit

FOLDER = 'schedules'


def folder(workdir):
  """``<workdir>/schedules`` (an ``epath.Path``: local or remote)."""
  return files.as_path(workdir) / FOLDER


def filename(workdir, name: str):
  return folder(workdir) / (name + '.json')


def default_name(method: str, cost: str, refine: bool = False, solver: str = '') -> str:
  """``score_optimal`` fits are named by their cost (``corrector``, ``predictor``; refined: ``corrector_refined``);
  searches by method, and those made for a ``solver`` by both (``fewstep_ipndm``, ``trajectory_unipc``)."""
  if method != 'score_optimal':
    return f'{method}_{solver}' if solver else method
  return f'{cost}_refined' if refine else cost


def schedule_record(path, ts, incremental_costs, cost: str) -> dict:
  """``{"t", "sigma", "alpha", "num_steps", "cost", "length", "energy", "incremental_costs"}``.

  ``t`` ascends from 0 to 1 (data end first); ``incremental_costs[i]`` is the cost of the step between
  points i+1 and i; ``length = sum_i sqrt(L_i)``, ``energy = T sum_i L_i`` (method.md sections 3, 5).
  """
  ts = np.asarray(ts, np.float64)
  costs = np.asarray(incremental_costs, np.float64)
  return {
      't': ts.tolist(),
      'sigma': np.asarray(path.sigma(ts), np.float64).tolist(),
      'alpha': np.asarray(path.alpha(ts), np.float64).tolist(),
      'num_steps': int(ts.shape[0] - 1),
      'cost': cost,
      'length': float(fit.length(costs)),
      'energy': float(fit.energy(costs)),
      'incremental_costs': costs.tolist(),
  }


def save_length(workdir, name: str, t, lam, method: str, cost: str, **meta) -> str:
  """Stores a length function's table (``t``, ``lam``: f[N]); returns the file name."""
  record = dict(kind='length', method=method, cost=cost, t=np.asarray(t, np.float64).tolist(),
                lam=np.asarray(lam, np.float64).tolist(), **meta)
  return _write(workdir, name, record)


def save_ladders(workdir, name: str, ladders: dict, method: str, cost: str, **meta) -> str:
  """Stores ``{K: f[K+1]}`` schedules; returns the file name."""
  record = dict(kind='ladders', method=method, cost=cost,
                ladders={str(int(k)): np.asarray(v, np.float64).tolist() for k, v in ladders.items()}, **meta)
  return _write(workdir, name, record)


def _write(workdir, name, record):
  folder(workdir).mkdir(parents=True, exist_ok=True)
  out = filename(workdir, name)
  files.write_json(record, out)
  return out


def names(workdir) -> list:
  """Names of every stored schedule, sorted."""
  if not folder(workdir).is_dir():
    return []
  return sorted(f.name[:-5] for f in folder(workdir).iterdir() if f.name.endswith('.json'))


def read_record(workdir, name: str) -> dict:
  """The stored record ``name``, checked (:func:`check_record`); a clear error listing what is stored when it is
  not there, or saying how to replace it when it is not usable."""
  fname = filename(workdir, name)
  if not fname.exists():
    stored = names(workdir)
    raise files.InputError(f'no schedule {name!r} is stored in {folder(workdir)} (stored: {", ".join(stored) or "none"}); '
                           f'fit one with --mode=fit_schedule and config.fit.name={name!r}')
  fix = f'delete it and fit it again: --mode=fit_schedule --config.fit.name={name}'
  record = files.read_json(fname, fix)
  problem = check_record(record)
  if problem:
    raise files.InputError(f'{fname} is not a usable schedule: {problem}; {fix}')
  return record


def check_ladder(ts) -> str:
  """What is wrong with a schedule ``ts`` (f[K+1]) as a sampler reads it: '' when it is finite, strictly
  increasing and runs from 0 to 1 (the fixed ends of every schedule, method.md section 3)."""
  ts = np.asarray(ts, np.float64)
  if ts.ndim != 1 or ts.shape[0] < 2:
    return f'needs at least 2 points, has shape {ts.shape}'
  if not np.all(np.isfinite(ts)):
    return 'holds non-finite values'
  if not np.all(np.diff(ts) > 0):
    return 'is not strictly increasing'
  if ts[0] != 0 or ts[-1] != 1:
    return f'runs from {ts[0]} to {ts[-1]}, not from 0 to 1'
  return ''


def check_record(record) -> str:
  """What is wrong with a stored record ('' when nothing): its kind, and every ladder or length function."""
  if not isinstance(record, dict) or record.get('kind') not in ('length', 'ladders'):
    return 'its "kind" is neither "length" nor "ladders"'
  if record['kind'] == 'length':
    t, lam = np.asarray(record.get('t', []), np.float64), np.asarray(record.get('lam', []), np.float64)
    if t.shape != lam.shape:
      return f'"t" and "lam" differ in shape ({t.shape} vs {lam.shape})'
    problem = check_ladder(t)
    if problem:
      return f'its grid "t" {problem}'
    if not (np.all(np.isfinite(lam)) and np.all(np.diff(lam) >= 0) and lam[-1] > lam[0]):
      return 'its length function "lam" is not finite and increasing'
    return ''
  ladders = record.get('ladders')
  if not isinstance(ladders, dict) or not ladders:
    return 'it holds no ladders'
  for k, ts in ladders.items():
    if not (str(k).isdigit() and len(ts) == int(k) + 1):
      return f'its ladder "{k}" does not have {k} + 1 points'
    problem = check_ladder(ts)
    if problem:
      return f'its {k}-step ladder {problem}'
  return ''
