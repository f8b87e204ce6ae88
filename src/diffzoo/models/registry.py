"""Architecture registry: ``build(arch, **config)`` makes any network diffzoo ships or loads from the zoo.

Model modules register their builders with :func:`register_arch`; :mod:`diffzoo.models` imports every
model module (plain imports), so importing this registry through the package finds them all.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from diffzoo.core.errors import check_choice

_ARCHS: dict[str, Callable[..., torch.nn.Module]] = {}


def register_arch(name: str) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Decorator: register ``builder(**config) -> nn.Module`` under ``name``."""

    def deco(fn: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        if name in _ARCHS and _ARCHS[name] is not fn:
            raise ValueError(f"arch: {name!r} registered twice")
        _ARCHS[name] = fn
        return fn

    return deco


def archs() -> list[str]:
    """Names of every registered architecture."""
    return sorted(_ARCHS)


def build(arch: str, **config: Any) -> torch.nn.Module:
    """Instantiate architecture ``arch`` with its config."""
    check_choice(arch, _ARCHS, "arch")
    return _ARCHS[arch](**config)
