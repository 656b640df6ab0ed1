"""The ``schedule.json`` record written by every mode that produces a schedule, and the project's JSON I/O:
every JSON file is written atomically and read with a message naming a damaged file."""
import json
import os

import numpy as np

from schedule import fit


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


def write_json(record: dict, filename: str):
  """Writes atomically (temporary file, then rename), so a crash never leaves a half-written file. Non-finite
  numbers are written as ``NaN`` / ``Infinity`` (Python's ``json`` reads them back)."""
  write_text(json.dumps(record, indent=1), filename)


def write_text(text: str, filename: str):
  """Writes ``text`` atomically (temporary file, then rename)."""
  tmp = f'{filename}.tmp{os.getpid()}'  # per process: two writers never share a temporary file
  try:
    with open(tmp, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, filename)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_json(filename: str, fix: str = 'delete it, or restore it from a backup'):
  """The JSON in ``filename``; a damaged file (truncated, not JSON) raises ``ValueError`` naming the file and
  ``fix`` (what the user can do about it) instead of an anonymous ``JSONDecodeError``."""
  try:
    with open(filename) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{filename} is damaged ({type(e).__name__}: {e}); {fix}') from None
