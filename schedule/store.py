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
  record = records.read_json(fname)
  lam = None
  if record['kind'] == 'length':
    lam = fit.LengthFunction(np.asarray(record['t']), np.asarray(record['lam']))
  return Fitted(name, record, lam)
