"""What every schedule search sees (:class:`Problem`) and returns (:class:`Result`) (method.md section 4)."""
from typing import Any, Callable, NamedTuple, Optional

import jax

from ddm.paths import Path
from ddm.targets import GaussianMixture


ODE_SAMPLERS = ('euler', 'heun', 'dpmpp_2m', 'dpmpp_3m', 'unipc', 'ipndm')   # the probability-flow solvers


def solver_name(fit_cfg, eval_cfg) -> str:
  """The solver a search is made for: ``config.fit.sampler``, or ``config.eval.sampler`` when it is ''."""
  return fit_cfg.get('sampler', '') or eval_cfg.sampler


class Problem(NamedTuple):
  """What a schedule search may use.

  Attributes:
    path: the diffusion path. data_shape: per-example shape S.
    score_fn: ``(x f32[B, *S], t f32[B]) -> f32[B, *S]``; denoise_fn: same signature, ``D(x, t)``.
    sample_x0: ``(key, n) -> f32[n, *S]``: data (or, with ``config.fit.samples='model'``, model samples).
    sample_pt: ``(key, t f32[n]) -> f32[n, *S]``: draws of ``p_t``, each at its own time.
    target: the toy target when the score is exact (closed-form ground truth), else None.
    model, params: the trained :class:`train.model.Model` and its EMA parameters (None for exact scores).
  """
  path: Path
  data_shape: tuple
  score_fn: Callable
  denoise_fn: Callable
  sample_x0: Callable
  sample_pt: Callable
  target: Optional[GaussianMixture] = None
  model: Any = None
  params: Any = None


class Result(NamedTuple):
  """A search's answer: a schedule (``steps(K)``, ``has(K)``: a :class:`schedule.schedules.LengthFunction`, any K,
  or :class:`schedule.schedules.Ladders`, the searched K only) and what the search reports about itself."""
  schedule: Any
  meta: dict = {}


def forward_sampler(path: Path, sample_x0: Callable) -> Callable:
  """``sample_pt(key, t) = alpha(t) x0 + sigma(t) eps`` with ``x0 = sample_x0``: f32[n, *S]."""
  def sample_pt(key, t):
    key_x0, key_eps = jax.random.split(key)
    x0 = sample_x0(key_x0, t.shape[0])
    bcast = (-1,) + (1,) * (x0.ndim - 1)
    return path.alpha(t).reshape(bcast) * x0 + path.sigma(t).reshape(bcast) * jax.random.normal(key_eps, x0.shape)
  return sample_pt


def exact(target: GaussianMixture, path: Path) -> Problem:
  """The closed-form score of a toy target (method.md section 7)."""
  return Problem(path, (1,), target.score_fn(path), lambda x, t: target.denoiser(x, t, path), target.sample_p0,
                 lambda k, t: target.sample_pt(k, path, t), target=target)
