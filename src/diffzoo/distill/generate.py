"""Sampling a distilled one-/few-step generator (zoo kind ``generator``).

A generator's zoo JSON records ``generator = {"type": ..., "time": ..., "steps": ...}``:

* ``signal`` (BOOT): ``x = g(z, t_end, c)`` -- the student's signal prediction at the end time; one call;
* ``flow`` (SlimFlow, rectified flow): Euler steps of ``dx/dt = v(x, t, c)`` from ``x = z`` at ``t = 0`` to
  ``t = 1`` (``steps`` calls; 1 = the one-step student ``z + v(z, 0)``);
* ``idempotent`` (IGN / SIGN-style): ``x_1 = f(z)``, ``x_{k+1} = f(x_k)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_choice, check_finite, check_int, check_tensor

Tensor = torch.Tensor
GENERATOR_TYPES = ("signal", "flow", "idempotent")


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A generator spec: ``type`` one of :data:`GENERATOR_TYPES`; ``signal`` needs a ``time``."""
    if not isinstance(spec, dict):
        raise TypeError(f"generator: expected an object {{'type': ..., ...}}, got {type(spec).__name__}")
    check_choice(spec.get("type"), GENERATOR_TYPES, "generator.type")
    if spec["type"] == "signal" and not isinstance(spec.get("time"), (int, float)):
        raise ValueError(f"generator.time: a signal generator needs its end time, got {spec.get('time')!r}")
    return spec


@torch.no_grad()
def generate(
    model: nn.Module, z: Tensor, cond: Any = None, *, spec: dict[str, Any], steps: int | None = None
) -> Tensor:
    """Samples of generator ``model`` from noise ``z`` (see the module docstring); ``steps`` overrides the
    spec's default number of network calls (``flow`` and ``idempotent`` only)."""
    check_spec(spec)
    check_tensor(z, "z", floating=True)
    kind = spec["type"]
    n = int(spec.get("steps", 1) if steps is None else steps)
    check_int(n, "steps", 1)
    if kind == "signal":
        if steps not in (None, 1):
            raise ValueError(f"steps: a BOOT (signal) generator is one-step only, got {steps}")
        t = torch.full((z.shape[0],), float(spec["time"]), dtype=z.dtype, device=z.device)
        x = model(z, t, cond)
    elif kind == "flow":
        x = z
        for i in range(n):
            t = torch.full((z.shape[0],), i / n, dtype=z.dtype, device=z.device)
            x = x + model(x, t, cond) / n
    else:
        x = z
        for _ in range(n):
            x = model(x, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device), cond)
    return check_finite(x, "samples")
