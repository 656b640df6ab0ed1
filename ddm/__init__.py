"""Diffusion paths, toy targets with exact scores, networks, losses and samplers."""
from ddm import paths, registry, targets  # noqa: F401  (registers paths and targets)
