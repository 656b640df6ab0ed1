"""The denoiser a run trains: a network from ``config.model``, or the exact one of a toy target."""
from typing import Any, Callable, NamedTuple, Optional

from ddm import networks
from ddm.paths import Path
from ddm.targets import make_target
from train import data


class Model(NamedTuple):
  """``params`` (a pytree; empty for the exact score), ``denoise(params, x, t, train=False, rng=None)``,
  ``score(params, path) -> score_fn(x: f32[B, *S], t: f32[B]) -> f32[B, *S]`` for samplers and costs, and
  ``denoise_and_score(params, x, t, train=False, rng=None) -> (D, s)`` (both from one pass; None: not available)."""
  params: Any
  denoise: Callable
  score: Callable
  denoise_and_score: Optional[Callable] = None


def has_dropout(model_config) -> bool:
  """Whether the training network drops units (the U-Net with ``model.unet.dropout > 0``)."""
  return not model_config.exact_score and model_config.name == 'unet' and model_config.unet.dropout > 0


def make_model(model_cfg, data_cfg, path: Path, key) -> Model:
  """The model of ``model_cfg`` (``config.model``) for the data of ``data_cfg`` (``config.data``: its
  per-example shape, :func:`train.data.data_shape`, or the toy target whose exact denoiser it is when
  ``model_cfg.exact_score``), parameters initialised from ``key``."""
  if model_cfg.exact_score:
    target = make_target(data_cfg)
    return Model({}, lambda params, x, t, train=False, rng=None: target.denoiser(x, t, path),
                 lambda params, path_: target.score_fn(path_),
                 lambda params, x, t, train=False, rng=None: (target.denoiser(x, t, path), target.score(x, t, path)))
  shape = data.data_shape(data_cfg)
  module = networks.make_network(model_cfg, shape)
  denoise = networks.make_denoiser(module, path, model_cfg.precond, model_cfg.sigma_data)
  return Model(networks.init_params(module, key, shape), denoise,
               lambda params, path_: networks.make_score_fn(denoise, params, path_),
               networks.make_denoise_and_score(module, path, model_cfg.precond, model_cfg.sigma_data))
