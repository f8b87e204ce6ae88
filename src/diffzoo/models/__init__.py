"""Networks only (no algorithms): MLP denoiser (toy data), class-conditional digits UNet, digit classifier,
masked transformer, TinySD and its attribute classifier, the IDM chain and its reversible blocks.

Build any registered architecture with :func:`build` (``build(arch, **config)``); every model module is
imported here, so a zoo config naming an architecture always finds it.
"""

from diffzoo.models import (
    classifier,
    edm,
    forensics,
    idm,
    judge,
    mlp,
    multiview,
    provenance,
    tinysd,
    transformer,
    tryon,
    unet,
    wavelet,
)
from diffzoo.models.registry import archs, build, register_arch

MODULES = (
    mlp,
    unet,
    classifier,
    transformer,
    tinysd,
    idm,
    judge,
    edm,
    forensics,
    multiview,
    tryon,
    wavelet,
    provenance,
)

__all__ = ["MODULES", "archs", "build", "register_arch"]
