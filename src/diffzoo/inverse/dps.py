"""Diffusion Posterior Sampling (DPS; Chung et al., ICLR 2023, Algorithm 1).

After each ancestral step the state is pushed down the gradient of the measurement residual through
Tweedie's estimate: ``x_s <- x_s' - zeta grad_{x_t} ||y - A(x0_hat(x_t))||_2`` (the norm, not squared,
i.e. the paper's ``zeta_i = zeta / ||y - A(x0_hat)||`` on the squared loss). Composition: since
``ddim_step`` is linear in ``x0`` with coefficient ``alpha_s``, :class:`DPSDenoiser` returns
``x0_hat - zeta grad / alpha_s`` and the network's ``eps``, so ``diffzoo.sampling.ddim`` with ``eta=1``
(= DDPM ancestral sampling, DPS's sampler) or ``eta=0`` performs exactly that update. The residual
norm is taken per sample (a whole-batch norm couples the samples of a batch), and its gradient is 0
when the residual is 0, so ``A = 0`` gives unconditional sampling. Works for nonlinear operators.
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_range
from diffzoo.inverse.base import CorrectedDenoiser
from diffzoo.inverse.operators import Operator

Tensor = torch.Tensor


def measurement_grad(
    base: Denoiser, op: Operator, y: Tensor, x: Tensor, t: Tensor | float, cond: Any = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x0_hat, eps_hat, grad, residual_norm)`` with ``grad = d ||y - A(x0_hat(x))|| / dx`` per sample."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0, eps = base.x0_eps(xg, t, cond)
        r = (y.to(x0.dtype) - op.forward(x0)).flatten(1)
        norm = torch.linalg.vector_norm(r, dim=1)
        (grad,) = torch.autograd.grad(norm.sum(), xg)
    return x0.detach(), eps.detach(), grad, norm.detach()


class DPSDenoiser(CorrectedDenoiser):
    """``x0_eps`` returns ``(x0_hat - zeta grad / alpha_s, eps_hat)``; needs the sampling grid."""

    def __init__(self, base: Denoiser, op: Operator, y: Tensor, timesteps: Tensor, zeta: float = 1.0):
        super().__init__(base, op, y, timesteps)
        self.zeta = check_range(zeta, "zeta", lo=0.0)

    def x0_eps(self, x: Tensor, t: Tensor | float, cond: Any = None) -> tuple[Tensor, Tensor]:
        x0, eps, grad, _ = measurement_grad(self.base, self.op, self.y, x, t, cond)
        a_s, _ = self.next_alpha_sigma(t, x0)
        return x0 - (self.zeta / a_s) * grad, eps
