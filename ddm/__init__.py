"""Diffusion paths, toy targets with exact scores, networks, losses, samplers, and the utilities every layer uses:
named PRNG streams (:mod:`ddm.streams`), fixed-size chunks (:mod:`ddm.chunked`), atomic files (:mod:`ddm.files`)."""
from ddm import losses, networks, paths, registry, samplers, targets, unet  # noqa: F401  (fills the registries)
