"""Diffusion paths, toy targets with exact scores, networks, losses and samplers."""
from ddm import paths, registry, samplers, targets  # noqa: F401  (fills the registries)
