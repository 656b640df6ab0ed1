"""Diffusion paths, toy targets with exact scores, networks, losses and samplers."""
from ddm import losses, networks, paths, registry, samplers, targets, unet  # noqa: F401  (fills the registries)
