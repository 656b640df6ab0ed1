"""The denoiser a run trains: a network from ``config.model``, or the exact one of a toy target."""
from typing import Any, Callable, NamedTuple, Optional

from ddm import networks
from ddm.paths import Path
from ddm.targets import make_target


class Model(NamedTuple):
  """``params`` (a pytree; empty for the exact score), ``denoise(params, x, t, train=False, rng=None)``,
  ``score(params, path) -> score_fn(x: f32[B, *S], t: f32[B]) -> f32[B, *S]`` for samplers and costs, and
  ``denoise_and_score(params, x, t, train=False, rng=None) -> (D, s)`` (both from one pass; None: not available)."""
  params: Any
  denoise: Callable
  score: Callable
  denoise_and_score: Optional[Callable] = None

  def score_fn(self, params, path: Path):
    return self.score(params, path)


def has_dropout(model_config) -> bool:
  """Whether the training network drops units (the U-Net with ``model.unet.dropout > 0``)."""
  return not model_config.exact_score and model_config.name == 'unet' and model_config.unet.dropout > 0


def make_model(config, path: Path, data_shape, key) -> Model:
  if config.model.exact_score:
    target = make_target(config.data)
    return Model({}, lambda params, x, t, train=False, rng=None: target.denoiser(x, t, path),
                 lambda params, path_: target.score_fn(path_),
                 lambda params, x, t, train=False, rng=None: (target.denoiser(x, t, path), target.score(x, t, path)))
  module = networks.make_network(config.model, data_shape)
  denoise = networks.make_denoiser(module, path, config.model.precond, config.model.sigma_data)
  return Model(networks.init_params(module, key, data_shape), denoise,
               lambda params, path_: networks.make_score_fn(denoise, params, path_),
               networks.make_denoise_and_score(module, path, config.model.precond, config.model.sigma_data))
