"""The corrected-denoiser pattern: a posterior sampler = a foundation sampler over a wrapped Denoiser.

Every diffzoo sampler obtains predictions only through ``Denoiser.x0_eps`` (CONTRACTS.md), so an
inverse-problem method that changes the prediction -- DDNM's range-null-space correction, DPS's
likelihood gradient -- is a :class:`CorrectedDenoiser` whose ``x0_eps`` returns the corrected pair,
and runs under ``diffzoo.sampling.ddim`` unchanged (deepinv's operator / data-fidelity / solver split).

Some corrections depend on the *next* grid time ``s`` (DDNM+'s ``lambda_t, gamma_t``, DPS's step
``x_s -= zeta grad``, folded into ``x0`` as ``-zeta grad / alpha_s``); the wrapper is given the
sampling grid and looks ``s`` up from the current model time.
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_tensor
from diffzoo.inverse.operators import Operator

Tensor = torch.Tensor


class CorrectedDenoiser(Denoiser):
    """Base class of the inverse-problem wrappers: delegates to ``base`` and counts its NFE."""

    def __init__(self, base: Denoiser, op: Operator, y: Tensor, timesteps: Tensor | None = None):
        if not isinstance(base, Denoiser):
            raise TypeError(f"base: expected a diffzoo Denoiser, got {type(base).__name__}")
        if not isinstance(op, Operator):
            raise TypeError(f"op: expected a diffzoo.inverse Operator, got {type(op).__name__}")
        super().__init__(base.net, base.schedule, base.prediction_type, base.dtype, base.validate, base.module)
        self.base, self.op = base, op
        self.y = op.check_measurement(y)
        if timesteps is not None:
            check_tensor(timesteps, "timesteps", ndim=1)
            timesteps = timesteps.detach().to(torch.float64)
        self.timesteps = timesteps

    @property  # type: ignore[override]
    def nfe(self) -> int:
        return self.base.nfe

    @nfe.setter
    def nfe(self, value: int) -> None:  # Denoiser.__init__ sets it; the count lives in ``base``
        pass

    def __call__(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        return self.base(x, t, cond)

    def next_alpha_sigma(self, t: Tensor | float, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha_s, sigma_s)`` at the grid time following ``t`` (0-d tensors in ``like.dtype``)."""
        if self.timesteps is None:
            raise ValueError("timesteps: this correction needs the sampling grid; pass timesteps=...")
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)[0].to(self.timesteps.device)
        i = int(torch.argmin((self.timesteps - tt).abs()))
        if i + 1 >= self.timesteps.numel() or abs(float(self.timesteps[i] - tt)) > 1e-6 * max(1.0, float(tt.abs())):
            raise ValueError(f"t: model time {float(tt):g} is not a non-final point of the given timesteps")
        a, s = self.schedule.alpha_sigma(self.timesteps[i + 1 : i + 2])
        return a[0].to(like.dtype), s[0].to(like.dtype)
