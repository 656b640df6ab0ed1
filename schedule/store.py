"""Fitted schedules kept in a run's workdir, usable by name in ``config.eval.schedules``.

``--mode=fit_schedule`` stores each result as ``<workdir>/schedules/<name>.json`` in one of two forms:
- a length function (score-optimal fits): ``{"kind": "length", "t": f[N], "lam": f[N], ...}``; the K-step
  schedule for any K is read off it, ``t_k = Lambda^{-1}(k Lambda / K)`` (method.md section 3);
- ladders (searches that return one schedule per K: dp_elbo, ddss): ``{"kind": "ladders",
  "ladders": {"K": f[K+1]}, ...}``; only the stored K exist.
Both carry ``"method"``, ``"cost"`` and any extra metadata the search adds (time, network evaluations).
"""
import os
from typing import NamedTuple, Optional

import numpy as np

from schedule import fit, records

FOLDER = 'schedules'


def folder(workdir: str) -> str:
  return os.path.join(workdir, FOLDER)


def filename(workdir: str, name: str) -> str:
  return os.path.join(folder(workdir), name + '.json')


def default_name(method: str, cost: str) -> str:
  """``score_optimal`` fits are named by their cost (``corrector``, ``predictor``); searches by method."""
  return cost if method == 'score_optimal' else method


class Fitted(NamedTuple):
  """A stored schedule: ``schedule(K) -> f[K+1]`` (ascending, 0 to 1) and the stored record."""
  name: str
  record: dict
  lam: Optional[fit.LengthFunction]

  def schedule(self, num_steps: int) -> np.ndarray:
    if self.lam is not None:
      return np.asarray(self.lam.schedule(num_steps))
    ladders = self.record['ladders']
    if str(num_steps) not in ladders:
      raise ValueError(f'fitted schedule {self.name!r} ({self.record.get("method")}) holds K = '
                       f'{", ".join(sorted(ladders, key=int))} only, not K = {num_steps}; fit it with '
                       f'config.schedule.num_steps={num_steps} or evaluate those K')
    return np.asarray(ladders[str(num_steps)], np.float64)

  def has(self, num_steps: int) -> bool:
    return self.lam is not None or str(num_steps) in self.record['ladders']


def save_length(workdir: str, name: str, lam: fit.LengthFunction, method: str, cost: str, **meta) -> str:
  """Stores a length function; returns the file name."""
  record = dict(kind='length', method=method, cost=cost, t=np.asarray(lam.t, np.float64).tolist(),
                lam=np.asarray(lam.lam, np.float64).tolist(), **meta)
  return _write(workdir, name, record)


def save_ladders(workdir: str, name: str, ladders: dict, method: str, cost: str, **meta) -> str:
  """Stores ``{K: f[K+1]}`` schedules; returns the file name."""
  record = dict(kind='ladders', method=method, cost=cost,
                ladders={str(int(k)): np.asarray(v, np.float64).tolist() for k, v in ladders.items()}, **meta)
  return _write(workdir, name, record)


def _write(workdir, name, record):
  os.makedirs(folder(workdir), exist_ok=True)
  out = filename(workdir, name)
  records.write_json(record, out)
  return out


def names(workdir: str) -> list:
  """Names of every stored schedule, sorted."""
  if not os.path.isdir(folder(workdir)):
    return []
  return sorted(f[:-5] for f in os.listdir(folder(workdir)) if f.endswith('.json'))


def load(workdir: str, name: str) -> Fitted:
  """The stored schedule ``name``; a clear error listing what is stored when it is not there."""
  fname = filename(workdir, name)
  if not os.path.exists(fname):
    stored = names(workdir)
    raise ValueError(f'config.eval.schedules names {name!r}, which is neither a baseline nor a schedule stored '
                     f'in {folder(workdir)} (stored: {", ".join(stored) or "none"}); fit one with '
                     f'--mode=fit_schedule and config.schedule.name={name!r}')
  fix = f'delete it and fit it again: --mode=fit_schedule --config.schedule.name={name}'
  record = records.read_json(fname, fix)
  problem = check_record(record)
  if problem:
    raise ValueError(f'{fname} is not a usable schedule: {problem}; {fix}')
  lam = None
  if record['kind'] == 'length':
    lam = fit.LengthFunction(np.asarray(record['t']), np.asarray(record['lam']))
  return Fitted(name, record, lam)


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
  return 
