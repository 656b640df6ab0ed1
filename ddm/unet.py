"""U-Net denoiser backbone for images (DDPM, Ho et al. 2020; DDPM++ residual scaling, Song et al. 2021).

``F(x: f32[B, H, W, C], c_noise: f32[B]) -> f32[B, H, W, C]``; smooth in ``c_noise`` (the cost estimator
differentiates the denoiser in t with ``jax.jvp``). The default config is DDPM's CIFAR-10 network (~35.7M).
"""
import dataclasses
from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from ddm.networks import embed
from ddm.registry import NETWORKS

SKIP_SCALE = 2.0**-0.5  # DDPM++: residual sums scaled by 1/sqrt(2).


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Built once from ``config.model.unet`` (+ ``config.model.dtype``)."""
  channels: int = 128
  channel_mult: Tuple[int, ...] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Tuple[int, ...] = (16,)
  dropout: float = 0.1
  embedding: str = 'positional'
  dtype: str = 'float32'

  def __post_init__(self):
    object.__setattr__(self, 'channel_mult', tuple(self.channel_mult))
    object.__setattr__(self, 'attn_resolutions', tuple(self.attn_resolutions))


def _norm(h):
  """GroupNorm with at most 32 groups of at least 4 channels (EDM): with one channel per group the norm
  would erase the per-channel embedding bias added before it, and the block could not see the noise level."""
  c = h.shape[-1]
  groups = max(g for g in range(1, min(32, c // 4, c) + 1) if c % g == 0) if c >= 4 else 1
  return nn.GroupNorm(num_groups=groups, dtype=h.dtype)(h)


class ResBlock(nn.Module):
  """GroupNorm-SiLU-conv, + embedding, GroupNorm-SiLU-dropout-conv, 1x1 skip when channels change."""
  out_channels: int
  dropout: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, emb, train):
    conv = lambda c, k=3, **kw: nn.Conv(c, (k, k), dtype=self.dtype, **kw)
    h = conv(self.out_channels)(nn.silu(_norm(x)))
    h = h + nn.Dense(self.out_channels, dtype=self.dtype)(nn.silu(emb))[:, None, None, :]
    h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(_norm(h)))
    h = conv(self.out_channels, kernel_init=nn.initializers.zeros)(h)
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, 1)(x)
    return (x + h) * SKIP_SCALE


class AttnBlock(nn.Module):
  """Single-head self-attention over the H x W positions."""
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    h = _norm(x).reshape(b, hgt * wid, c)
    h = nn.SelfAttention(num_heads=1, dtype=self.dtype, out_kernel_init=nn.initializers.zeros)(h)
    return (x + h.reshape(x.shape)) * SKIP_SCALE


class UNet(nn.Module):
  config: UNetConfig

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False):
    cfg = self.config
    dtype = jnp.bfloat16 if cfg.dtype == 'bfloat16' else jnp.float32
    levels = len(cfg.channel_mult)
    if x.shape[1] % 2**(levels - 1) or x.shape[2] % 2**(levels - 1):
      raise ValueError(f'config.model.unet.channel_mult={cfg.channel_mult} halves the image {levels - 1} times; '
                       f'{x.shape[1]}x{x.shape[2]} is not divisible by {2**(levels - 1)}')
    emb = embed(cfg.embedding, c_noise, cfg.channels)
    emb = nn.Dense(4 * cfg.channels, dtype=dtype)(emb)
    emb = nn.Dense(4 * cfg.channels, dtype=dtype)(nn.silu(emb))
    block = lambda c: ResBlock(c, cfg.dropout, dtype)
    h = nn.Conv(cfg.channels, (3, 3), dtype=dtype)(x.astype(dtype))
    skips = [h]
    for level, mult in enumerate(cfg.channel_mult):
      for _ in range(cfg.num_res_blocks):
        h = block(cfg.channels * mult)(h, emb, train)
        if h.shape[1] in cfg.attn_resolutions:
          h = AttnBlock(dtype)(h)
        skips.append(h)
      if level != levels - 1:
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), dtype=dtype)(h)
        skips.append(h)
    h = block(h.shape[-1])(h, emb, train)
    h = AttnBlock(dtype)(h)
    h = block(h.shape[-1])(h, emb, train)
    for level, mult in reversed(list(enumerate(cfg.channel_mult))):
      for _ in range(cfg.num_res_blocks + 1):
        h = block(cfg.channels * mult)(jnp.concatenate([h, skips.pop()], axis=-1), emb, train)
        if h.shape[1] in cfg.attn_resolutions:
          h = AttnBlock(dtype)(h)
      if level != 0:
        b, hgt, wid, c = h.shape
        h = nn.Conv(c, (3, 3), dtype=dtype)(jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2))
    h = nn.Conv(x.shape[-1], (3, 3), dtype=dtype, kernel_init=nn.initializers.zeros)(nn.silu(_norm(h)))
    return h.astype(jnp.float32)


@NETWORKS.register('unet')
def _unet(model_config, data_shape):
  if len(data_shape) != 3:
    raise ValueError(f"config.model.name='unet' needs images (H, W, C); got shape {tuple(data_shape)}; use 'mlp'")
  return UNet(UNetConfig(**model_config.unet, dtype=model_config.dtype))
