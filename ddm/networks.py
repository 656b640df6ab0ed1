"""Networks and the one preconditioning wrapper (EDM, Karras et al. 2022, section 5 and Table 1).

``D(x, t) = c_skip x~ + c_out F(c_in x~, c_noise)`` with ``x~ = x / alpha(t)`` and EDM's noise level
``r = sigma(t) / alpha(t)``: on any Gaussian path ``x_t = alpha (x0 + r eps)``, so one wrapper serves VE and
VP. Everything is smooth in t, so ``jax.jvp`` in t goes through ``alpha``, ``sigma`` and ``c_noise``.
"""
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddm.paths import Path, per_example
from ddm.registry import NETWORKS, PRECONDS


class Coefficients(NamedTuple):
  """Preconditioning coefficients, each f32[B]. ``skip_gap = 1 - c_skip``, written out in closed form:
  the score needs ``D - x~ = c_out F - (1 - c_skip) x~``, which cancels catastrophically in float32 at
  small noise if formed as a difference (4x error in the cost rate at sigma_min = 0.002, measured)."""
  c_skip: jax.Array
  c_out: jax.Array
  c_in: jax.Array
  c_noise: jax.Array
  skip_gap: jax.Array


# Preconditioning coefficient sets: (ratio r f32[B], sigma_data) -> Coefficients.

@PRECONDS.register('edm')
def edm_coefficients(r, sigma_data):
  """EDM: unit-variance input and training target for data of std ``sigma_data``."""
  s2 = r**2 + sigma_data**2
  return Coefficients(sigma_data**2 / s2, r * sigma_data / jnp.sqrt(s2), 1.0 / jnp.sqrt(s2), jnp.log(r) / 4,
                      r**2 / s2)


@PRECONDS.register('vp')
def eps_coefficients(r, sigma_data):
  """Epsilon prediction (DDPM): ``D = x~ - r F``, so F estimates the noise."""
  del sigma_data
  return Coefficients(jnp.ones_like(r), -r, 1.0 / jnp.sqrt(r**2 + 1.0), jnp.log(r) / 4, jnp.zeros_like(r))


@PRECONDS.register('ve')
def ve_coefficients(r, sigma_data):
  """NCSN / VE: ``D = x~ + r F``, raw input, ``c_noise = log(r / 2)``."""
  del sigma_data
  return Coefficients(jnp.ones_like(r), r, jnp.ones_like(r), jnp.log(0.5 * r), jnp.zeros_like(r))


# Noise-level embeddings.

def positional_embedding(c_noise, dim: int, max_period: float = 10_000.0):
  """Sinusoidal embedding (Vaswani et al. 2017; DDPM) of ``c_noise: f32[B]`` -> f32[B, dim].

  Applied to ``c_noise`` as is (EDM's DDPM++ does the same with ``c_noise = log(r) / 4``): the highest
  frequency is 1, so the embedding, and the cost estimator's jvp in t through it, stay smooth.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half) / half)
  args = c_noise[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class FourierEmbedding(nn.Module):
  """Random Fourier features (Tancik et al. 2020; NCSN++): fixed Gaussian frequencies, f32[B] -> f32[B, dim]."""
  dim: int
  scale: float = 16.0

  @nn.compact
  def __call__(self, c_noise):
    freqs = self.param('freqs', nn.initializers.normal(self.scale), (self.dim // 2,))
    args = 2 * jnp.pi * c_noise[:, None] * jax.lax.stop_gradient(freqs)[None, :]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def embed(kind: str, c_noise, dim: int, name: str = 'fourier'):
  """``'positional'`` or ``'fourier'`` embedding of ``c_noise`` (call inside an ``nn.compact`` method)."""
  if kind == 'positional':
    return positional_embedding(c_noise, dim)
  if kind == 'fourier':
    return FourierEmbedding(dim, name=name)(c_noise)
  raise ValueError(f'config.model.unet.embedding={kind!r}; allowed: positional, fourier')


class MLP(nn.Module):
  """Denoiser backbone for vectors: ``F(x: f32[B, D], c_noise: f32[B]) -> f32[B, D]``.

  ``depth`` SiLU layers of ``width``; the noise embedding enters every layer (FiLM-free additive injection).
  """
  width: int = 128
  depth: int = 3
  embedding_dim: int = 64
  embedding_scale: float = 16.0

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False):
    del train
    emb = positional_embedding(self.embedding_scale * c_noise, self.embedding_dim)
    emb = nn.silu(nn.Dense(self.width)(emb))
    h = x
    for _ in range(self.depth):
      h = nn.silu(nn.Dense(self.width)(h) + nn.Dense(self.width)(emb))
    return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(h)


@NETWORKS.register('mlp')
def _mlp(model_config, data_shape):
  if len(data_shape) != 1:
    raise ValueError(f"config.model.name='mlp' needs vector data (D,); got shape {tuple(data_shape)}; use 'unet'")
  return MLP(**model_config.mlp)


def make_network(model_config, data_shape) -> nn.Module:
  """The backbone ``config.model.name`` for examples of shape ``data_shape``."""
  return NETWORKS.get(model_config.name, 'config.model.name')(model_config, tuple(data_shape))


def init_params(module: nn.Module, key, data_shape):
  """Parameters for a batch of examples of shape ``data_shape``."""
  x = jnp.zeros((1,) + tuple(data_shape))
  return module.init({'params': key, 'dropout': key}, x, jnp.zeros((1,)))['params']


def _preconditioned(module: nn.Module, path: Path, precond: str, sigma_data: float):
  """``apply(params, x, t, train, rng) -> (c_out F, x~, c)``: the one network application both
  :func:`make_denoiser` and :func:`make_denoise_and_score` build on."""
  coefficients = PRECONDS.get(precond, 'config.model.precond')

  def apply(params, x, t, train, rng):
    x_tilde = x / per_example(path.alpha(t), x)
    c = coefficients(path.ratio(t), sigma_data)
    rngs = {'dropout': rng} if (train and rng is not None) else {}
    out = per_example(c.c_out, x) * module.apply({'params': params}, per_example(c.c_in, x) * x_tilde, c.c_noise,
                                                 train=train, rngs=rngs).astype(x.dtype)
    return out, x_tilde, c

  return apply


def make_denoiser(module: nn.Module, path: Path, precond: str, sigma_data: float):
  """Returns ``denoise(params, x, t, train=False, rng=None, residual=False) -> f32[B, *S]``,

      D(x, t) = c_skip x~ + c_out F(c_in x~, c_noise),   x~ = x / alpha(t),   r = sigma(t) / alpha(t).

  ``x: f32[B, *S]``, ``t: f32[B]`` per example (t = 0 data end); ``rng`` drives dropout when training.
  ``residual=True`` returns ``D - x~ = c_out F - (1 - c_skip) x~`` without cancellation (for the score).
  """
  apply = _preconditioned(module, path, precond, sigma_data)

  def denoise(params, x, t, train=False, rng=None, residual=False):
    out, x_tilde, c = apply(params, x, t, train, rng)
    if residual:
      return out - per_example(c.skip_gap, x) * x_tilde
    return per_example(c.c_skip, x) * x_tilde + out

  return denoise


def make_denoise_and_score(module: nn.Module, path: Path, precond: str, sigma_data: float):
  """Returns ``denoise_and_score(params, x, t, train=False, rng=None) -> (D f32[B, *S], s f32[B, *S])`` from one
  application of the network: the denoiser of :func:`make_denoiser` and the score of :func:`make_score_fn`
  (``s = alpha (D - x~) / sigma^2`` from the residual, without cancellation), for a loss that also measures
  the score's time derivative in the same pass (``jax.jvp`` in t; :mod:`train.step`)."""
  apply = _preconditioned(module, path, precond, sigma_data)

  def denoise_and_score(params, x, t, train=False, rng=None):
    out, x_tilde, c = apply(params, x, t, train, rng)
    alpha, sigma = per_example(path.alpha(t), x), per_example(path.sigma(t), x)
    return (per_example(c.c_skip, x) * x_tilde + out,
            alpha * (out - per_example(c.skip_gap, x) * x_tilde) / sigma**2)

  return denoise_and_score


def make_score_fn(denoise, params, path: Path):
  """``s(x, t) = (alpha D - x) / sigma^2 = alpha (D - x~) / sigma^2`` (Tweedie, method.md section 1), with
  ``D - x~`` from ``denoise(..., residual=True)`` so no float32 cancellation at small sigma."""
  def score_fn(x, t):
    alpha, sigma = per_example(path.alpha(t), x), per_example(path.sigma(t), x)
    return alpha * denoise(params, x, t, residual=True) / sigma**2
  return score_fn
