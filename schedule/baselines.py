"""Hand-made schedules (method.md section 6), defined on EDM's noise level ``ratio = sigma / alpha``.

Pure functions: every baseline returns the array of ``T+1`` increasing times with ``t_0 = 0``, ``t_T = 1``
(its ``sigma`` and ``alpha`` are ``path.sigma(ts)``, ``path.alpha(ts)``). A baseline as a schedule of any length,
interchangeable by name with the learned one, is :class:`schedule.schedules.Baseline`.
"""
import jax
import jax.numpy as jnp

from ddm.paths import Path
from ddm.registry import BASELINES


def _from_ratios(path: Path, ratios) -> jax.Array:
  """Times whose noise level is ``ratios``, with the endpoints pinned to exactly 0 and 1."""
  t = path.t_of_ratio(ratios)
  return t.at[0].set(0.0).at[-1].set(1.0)


def _u(num_steps: int):
  return jnp.linspace(0.0, 1.0, num_steps + 1)


@BASELINES.register('linear')
def linear(path: Path, num_steps: int) -> jax.Array:
  """Uniform in t: ``t_i = i / T``."""
  del path
  return _u(num_steps)


@BASELINES.register('cosine')
def cosine(path: Path, num_steps: int) -> jax.Array:
  """Nichol & Dhariwal's cosine schedule, ``ratio = tan(f)`` with f uniform, stretched to the path's
  noise-level range (the shifted cosine of Hoogeboom et al. 2023): ``f_i = a + i/T (b - a)``,
  ``a = atan(ratio_min)``, ``b = atan(ratio_max)``."""
  a, b = jnp.arctan(path.ratio_min), jnp.arctan(path.ratio_max)
  return _from_ratios(path, jnp.tan(a + _u(num_steps) * (b - a)))


def edm_rho(path: Path, num_steps: int, rho: float) -> jax.Array:
  """EDM (Karras et al. 2022, eq. 5), ascending: ``ratio_i = (r_min^{1/rho} + i/T (r_max^{1/rho} - r_min^{1/rho}))^rho``."""
  lo, hi = path.ratio_min**(1.0 / rho), path.ratio_max**(1.0 / rho)
  return _from_ratios(path, (lo + _u(num_steps) * (hi - lo))**rho)


@BASELINES.register('edm_rho3')
def edm_rho3(path: Path, num_steps: int) -> jax.Array:
  return edm_rho(path, num_steps, 3.0)


@BASELINES.register('edm_rho7')
def edm_rho7(path: Path, num_steps: int) -> jax.Array:
  """The hand-tuned EDM default."""
  return edm_rho(path, num_steps, 7.0)


@BASELINES.register('log_linear')
def log_linear(path: Path, num_steps: int) -> jax.Array:
  """Uniform in ``log ratio`` (equivalently in log-SNR)."""
  lo, hi = jnp.log(path.ratio_min), jnp.log(path.ratio_max)
  return _from_ratios(path, jnp.exp(lo + _u(num_steps) * (hi - lo)))


def make_baseline(name: str, path: Path, num_steps: int, setting: str = 'config.schedule.init') -> jax.Array:
  """The ``num_steps``-step baseline schedule ``name`` on ``path``: its times ``ts: f32[K+1]``; an unknown name
  is refused with a message naming ``setting`` and the baselines."""
  return jnp.asarray(BASELINES.get(name, setting)(path, num_steps), float)
