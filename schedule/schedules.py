"""Every kind of schedule, the protocol they share, and the one resolver from a name to a schedule.

A schedule, whatever made it, answers ``steps(K) -> f[K+1]`` (ascending times, ``t_0 = 0`` data end, ``t_K = 1``)
and ``has(K)`` (:class:`Schedule`). The kinds:

- :class:`Baseline`: a hand-made ladder (method.md section 6; the formulas are :mod:`schedule.baselines`), any K;
- :class:`LengthFunction`: the cumulative length ``Lambda`` tabulated on a grid (method.md section 3), any K,
  ``t_k = Lambda^{-1}(k Lambda / K)``: the learned schedule of a training checkpoint (``Lambda_hat`` through its
  points) and every score-optimal fit (the maths is :mod:`schedule.fit`);
- :class:`Ladders`: ladders searched for some K only (trajectory, ays, dp_elbo, ddss, fewstep, polish, refined fits).

:func:`resolve` turns a name of ``config.eval.schedules`` into one of them: 'learned' (the checkpoint's length
function, passed in: this package cannot read a checkpoint), a baseline, or a schedule stored by
``--mode=fit_schedule`` in ``<workdir>/schedules/`` (the records: :mod:`schedule.store`).
"""
from typing import NamedTuple, Optional, Protocol, Union, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from ddm import files
from ddm.paths import Path
from ddm.registry import BASELINES
from schedule import baselines, fit, store

LEARNED = 'learned'   # the name of a training run's own (learned) schedule in config.eval.schedules
FITTED = 'fitted'     # the name of the group of every schedule stored in <workdir>/schedules/

Times = Union[jax.Array, np.ndarray]


@runtime_checkable
class Schedule(Protocol):
  """What every schedule answers: ``steps(K)``, the ``K``-step ladder (f[K+1], ascending from 0 to 1), and
  ``has(K)``, whether it holds one for ``K``."""

  def steps(self, num_steps: int) -> Times:
    ...

  def has(self, num_steps: int) -> bool:
    ...


class Baseline(NamedTuple):
  """A hand-made ladder (method.md section 6) as a schedule of any length: ``steps(K) -> f32[K+1]``."""
  name: str
  path: Path

  def steps(self, num_steps: int) -> jax.Array:
    return baselines.make_baseline(self.name, self.path, num_steps, 'config.eval.schedules')

  def has(self, num_steps: int) -> bool:
    del num_steps
    return True


class LengthFunction(NamedTuple):
  """The cumulative length ``Lambda(t) = int_0^t sqrt(delta)`` tabulated on a fine grid (method.md section 3).

  Attributes: t: f32[N] increasing grid from 0 to 1; lam: f32[N] with ``lam[0] = 0``.
  """
  t: jax.Array
  lam: jax.Array

  @property
  def total(self):
    return self.lam[-1]

  def __call__(self, t):
    """``Lambda(t)``; the grid is fine, so linear interpolation between its points suffices."""
    return jnp.interp(t, self.t, self.lam)

  def steps(self, num_steps: int) -> jax.Array:
    """The score-optimal ``K``-step schedule ``t_k = Lambda^{-1}(k Lambda / K)``: f32[K+1] (any K)."""
    return fit.equal_length_points(self.lam, self.t, num_steps)

  def has(self, num_steps: int) -> bool:
    del num_steps
    return True

  @classmethod
  def from_step_costs(cls, ts, costs) -> 'LengthFunction':
    """``Lambda`` through a schedule's points from its incremental costs: ``[0, cumsum sqrt(L_i)]`` at ``ts``
    (the learned schedule of a checkpoint: its points and step costs, method.md section 5)."""
    return cls(jnp.asarray(ts), fit.cumulative(jnp.sqrt(jnp.asarray(costs))))

  def step_costs(self, ts):
    """Incremental costs ``(Lambda(t_{i+1}) - Lambda(t_i))^2`` of any schedule ``ts``: f32[T]."""
    return jnp.diff(self(ts))**2


class Ladders(NamedTuple):
  """Schedules searched for some K only (trajectory, ays, dp_elbo, ddss, fewstep, polish, refined fits):
  ``steps(K) -> f64[K+1]`` for a stored K, a clear error for another."""
  ladders: dict          # {K: f[K+1]}
  name: str = ''
  method: str = ''
  sampler: str = ''      # the solver the ladders were searched for ('' when the search is not made for one)

  def steps(self, num_steps: int) -> np.ndarray:
    if int(num_steps) not in self.ladders:
      raise files.InputError(f'fitted schedule {self.name!r} ({self.method}) holds K = '
                       f'{", ".join(str(k) for k in sorted(self.ladders))} only, not K = {num_steps}; fit it with '
                       f'config.fit.ladder_steps={num_steps} or evaluate those K')
    return np.asarray(self.ladders[int(num_steps)], np.float64)

  def has(self, num_steps: int) -> bool:
    return int(num_steps) in self.ladders


def stored(workdir, name: str) -> Union[LengthFunction, Ladders]:
  """The schedule stored as ``<workdir>/schedules/<name>.json`` (:func:`schedule.store.read_record`)."""
  record = store.read_record(workdir, name)
  if record['kind'] == 'length':
    return LengthFunction(np.asarray(record['t']), np.asarray(record['lam']))
  return Ladders({int(k): np.asarray(v, np.float64) for k, v in record['ladders'].items()}, name,
                 record.get('method', ''), record.get('sampler', ''))


def save(workdir, name: str, schedule: Union[LengthFunction, Ladders], method: str, cost: str, **meta) -> str:
  """Stores a search's schedule (a length function or :class:`Ladders`) as ``<workdir>/schedules/<name>.json``;
  returns the file name."""
  if isinstance(schedule, LengthFunction):
    return store.save_length(workdir, name, schedule.t, schedule.lam, method, cost, **meta)
  return store.save_ladders(workdir, name, schedule.ladders, method, cost, **meta)


def _unknown(names, workdir) -> files.InputError:
  """The error for names of ``config.eval.schedules`` that are no schedule: what a name can be."""
  held = store.names(workdir) if workdir is not None else []
  where = store.folder(workdir) if workdir is not None else '<workdir>/schedules (no workdir given)'
  return files.InputError(
      f'config.eval.schedules names {", ".join(map(repr, names))}: neither {LEARNED}, {FITTED}, a baseline '
      f'({", ".join(BASELINES.names())}) nor a schedule stored in {where} (stored: '
      f'{", ".join(held) or "none"}); fit one with --mode=fit_schedule --config.fit.name=<name>')


def check_names(names, workdir):
  """Every name of ``names`` (``config.eval.schedules``) is 'learned', 'fitted', a baseline or stored in
  ``workdir``; else one error listing what each can be, before any checkpoint is read or file written."""
  known = (LEARNED, FITTED) + tuple(BASELINES.names()) + tuple(store.names(workdir))
  unknown = [n for n in names if n not in known]
  if unknown:
    raise _unknown(unknown, workdir)


def resolve(name: str, path: Path, workdir=None, learned: Optional[LengthFunction] = None) -> Schedule:
  """The schedule called ``name`` in ``config.eval.schedules``.

  Args:
    name: 'learned', a baseline (:data:`ddm.registry.BASELINES`) or a name stored by ``--mode=fit_schedule``.
    path: the diffusion path (a baseline's noise levels are defined on it).
    workdir: the run whose ``schedules/`` holds the stored names (None: no stored names).
    learned: the learned length function of the training checkpoint (``LengthFunction.from_step_costs(
      state.schedule, state.step_costs)``), or None when the run has none (no schedule update happened).
  Returns:
    a :class:`Baseline`, :class:`LengthFunction` or :class:`Ladders`. Raises ``files.InputError`` naming
    ``config.eval.schedules`` and the allowed names for an unknown name.
  """
  if name == LEARNED:
    if learned is None:
      raise files.InputError('the run has no learned schedule yet (no schedule update happened); '
                             'train longer or evaluate baselines only')
    return learned
  if name in BASELINES.names():
    return Baseline(name, path)
  if name == FITTED:
    raise files.InputError(f"config.eval.schedules names {FITTED!r}, a group (every stored schedule: "
                           f'{", ".join(store.names(workdir) if workdir is not None else []) or "none"}), not one schedule')
  if workdir is None or name not in store.names(workdir):
    raise _unknown([name], workdir)
  return stored(workdir, name)
