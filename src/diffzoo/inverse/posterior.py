"""One entry point for the training-free posterior samplers: ``posterior_sample(method, ...)``.

``ddnm``: DDIM (deterministic transfer) over :class:`~diffzoo.inverse.ddnm.DDNMDenoiser` with DDNM's
own ``eta`` (official default 0.85) and DDNM+ when ``sigma_y > 0``. ``dps``: DDIM with ``eta=1``
(= DDPM ancestral, DPS Algorithm 1) over :class:`~diffzoo.inverse.dps.DPSDenoiser`. ``prior``:
unconditional DDIM (the ``A = 0`` reference). ``pinv``: the non-generative baseline ``A^+ y``.
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_choice, check_finite, check_range
from diffzoo.core.random import Generator, generator_list, randn
from diffzoo.inverse.ddnm import DDNMDenoiser
from diffzoo.inverse.dps import DPSDenoiser
from diffzoo.inverse.operators import LinearOperator, Operator, Saturation
from diffzoo.sampling import ddim, get_timesteps

Tensor = torch.Tensor
METHODS = ("ddnm", "dps", "prior", "pinv")


def measurement_error(op: Operator, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample measurement consistency ``||A x - y||_2``."""
    return torch.linalg.vector_norm((op.A(x) - y.to(x.dtype)).flatten(1), dim=1)


def pinv_estimate(op: Operator, y: Tensor) -> Tensor:
    """``A^+ y`` (for :class:`Saturation`: ``L^+ atanh(y) / gain``)."""
    if isinstance(op, Saturation):
        return op.invert(y)
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op: no pseudo-inverse for {type(op).__name__}")
    return op.A_pinv(y)


def posterior_sample(
    method: str,
    denoiser: Denoiser,
    op: Operator,
    y: Tensor,
    num_steps: int = 50,
    *,
    x_T: Tensor | None = None,
    cond: Any = None,
    sigma_y: float = 0.0,
    eta: float = 0.85,
    zeta: float = 1.0,
    generator: Generator = None,
    spacing: str = "uniform",
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Restore ``x`` from ``y = A x + sigma_y n`` with ``method`` in ``ddnm | dps | prior | pinv``.

    ``x_T`` (default: standard normal from ``generator``) is the start; ``eta`` is DDNM's noise mix;
    ``zeta`` the DPS step size. Returns ``(B, C, H, W)`` in ``dtype``.
    """

    check_choice(method, METHODS, "method")
    if not isinstance(op, Operator):
        raise TypeError(f"op: expected a diffzoo.inverse Operator, got {type(op).__name__}")
    if method != "pinv" and not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser: expected a diffzoo Denoiser, got {type(denoiser).__name__}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating-point torch.dtype, got {dtype!r}")
    check_range(sigma_y, "sigma_y", lo=0.0)
    check_range(eta, "eta", 0.0, 1.0)
    check_range(zeta, "zeta", lo=0.0)
    y = op.check_measurement(y)
    if (
        generator is not None
        and not isinstance(generator, torch.Generator)
        and len(generator_list(generator)) != len(y)
    ):
        raise ValueError(f"generator: expected a torch.Generator or a list of {y.shape[0]} (one per measurement)")
    if method == "pinv":
        return pinv_estimate(op, y).to(dtype)
    ts = get_timesteps(denoiser.schedule, num_steps, spacing)
    if x_T is None:
        x_T = randn((y.shape[0], *op.in_shape), generator, dtype)
    x_T = check_finite(op.check_image(x_T, "x_T"), "x_T").to(dtype)  # the result is in ``dtype``
    if x_T.shape[0] != y.shape[0]:
        raise ValueError(f"x_T: batch {x_T.shape[0]} does not match y's batch {y.shape[0]}")
    if method == "prior":
        return ddim(denoiser, x_T, ts, cond, eta=0.0)
    if method == "ddnm":
        den = DDNMDenoiser(denoiser, op, y, sigma_y=sigma_y, eta=eta, timesteps=ts, generator=generator)
        return ddim(den, x_T, ts, cond, eta=0.0, progress=progress)
    den = DPSDenoiser(denoiser, op, y, ts, zeta=zeta)
    return ddim(den, x_T, ts, cond, eta=1.0, generator=generator, progress=progress)
