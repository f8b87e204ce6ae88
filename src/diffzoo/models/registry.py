"""Architecture registry: ``build(arch, **config)`` makes any network diffzoo ships or loads from the zoo.

Model modules register their builders with :func:`register_arch`; :func:`build` imports every model
module first, so a zoo config naming an architecture finds it without the caller importing anything.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable

import torch

from diffzoo.core.errors import check_choice

_ARCHS: dict[str, Callable[..., torch.nn.Module]] = {}

# Every module under diffzoo.models that defines architectures. A module not written yet is skipped.
MODEL_MODULES = (
    "diffzoo.models.mlp",
    "diffzoo.models.unet",
    "diffzoo.models.classifier",
    "diffzoo.models.transformer",
    "diffzoo.models.tinysd",
    "diffzoo.models.idm",
)


def register_arch(name: str) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Decorator: register ``builder(**config) -> nn.Module`` under ``name``."""
    def deco(fn: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        if name in _ARCHS and _ARCHS[name] is not fn:
            raise ValueError(f"arch: {name!r} registered twice")
        _ARCHS[name] = fn
        return fn
    return deco


def _load_all() -> None:
    for mod in MODEL_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


def archs() -> list[str]:
    """Names of every registered architecture."""
    _load_all()
    return sorted(_ARCHS)


def build(arch: str, **config: Any) -> torch.nn.Module:
    """Instantiate architecture ``arch`` with its config."""
    _load_all()
    check_choice(arch, _ARCHS, "arch")
    return _ARCHS[arch](**config)
