"""DDNM and DDNM+ (Wang, Yu & Zhang, ICLR 2023): zero-shot restoration by range-null-space decomposition.

At each step the network's clean estimate ``x0|t`` is corrected so that its range-space part agrees
with the measurement (Eq. 8): ``x0_hat = A^+ y + (I - A^+ A) x0|t = x0|t - A^+(A x0|t - y)``; the
sampler then moves on with the network's ``eps`` -- DDNM is ``diffzoo.sampling.ddim`` over
:class:`DDNMDenoiser`. For noiseless measurements the final sample satisfies ``A x = y`` to float
precision (the last transfer lands on ``alpha = 1``, ``x = x0_hat``).

DDNM+ (Sec. 3.3, Eq. 17-19) for ``y = A x + sigma_y n``: with ``alpha_s, sigma_s`` of the next grid time,
``lambda = 1, gamma = sqrt(sigma_s^2 - (alpha_s sigma_y)^2)`` if ``sigma_s >= alpha_s sigma_y`` else
``lambda = sigma_s / (alpha_s sigma_y), gamma = 0``; ``x0_hat = x0|t - lambda A^+(A x0|t - y)`` and the
noise put back is ``gamma (sqrt(1 - eta^2) eps + eta z)`` (the official code's ``c1, c2`` form, which
differs from DDIM's eta). Because the wrapper then returns ``eps' = (gamma / sigma_s)(...)``, DDNM+ and
DDNM's own ``eta`` run under *deterministic* DDIM (``eta=0``); noiseless DDNM with ``eta=0`` in the
wrapper composes with any sampler (e.g. DDIM with its own eta). As in the official implementation the
``gamma`` scaling is applied to the whole image, not only the range space, so DDNM+ with ``sigma_y > 0``
does not reduce exactly to unconditional sampling when ``A = 0`` (DDNM with ``sigma_y = 0`` does).
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_range
from diffzoo.core.random import Generator, randn
from diffzoo.inverse.base import CorrectedDenoiser
from diffzoo.inverse.operators import LinearOperator

Tensor = torch.Tensor


def ddnm_plus_coefficients(alpha_s: Tensor, sigma_s: Tensor, sigma_y: float) -> tuple[Tensor, Tensor]:
    """``(lambda, gamma)`` of DDNM+ Eq. 19 for the transfer to a time with ``(alpha_s, sigma_s)``."""
    ay = alpha_s * sigma_y
    if float(sigma_s) >= float(ay):
        return torch.ones_like(sigma_s), (sigma_s**2 - ay**2).clamp(min=0).sqrt()
    return sigma_s / ay, torch.zeros_like(sigma_s)


class DDNMDenoiser(CorrectedDenoiser):
    """``x0_eps`` returns the range-null-space corrected ``x0`` (DDNM Eq. 8 / DDNM+ Eq. 17).

    Parameters
    ----------
    base: the prior :class:`Denoiser`. op: a :class:`LinearOperator`. y: the measurement.
    sigma_y: measurement noise std (0 = DDNM, > 0 = DDNM+; needs ``timesteps``).
    eta: DDNM's own stochasticity (official default 0.85; needs ``timesteps`` when > 0).
    timesteps: the sampling grid (to find the next time). generator: noise for ``eta > 0``.
    """

    def __init__(
        self,
        base: Denoiser,
        op: LinearOperator,
        y: Tensor,
        sigma_y: float = 0.0,
        eta: float = 0.0,
        timesteps: Tensor | None = None,
        generator: Generator = None,
    ):
        if not isinstance(op, LinearOperator):
            raise TypeError(f"op: DDNM needs a linear operator with a pseudo-inverse, got {type(op).__name__}")
        self.sigma_y = check_range(sigma_y, "sigma_y", lo=0.0)
        self.eta = check_range(eta, "eta", lo=0.0, hi=1.0)
        if (self.sigma_y > 0 or self.eta > 0) and timesteps is None:
            raise ValueError("timesteps: DDNM+ (sigma_y > 0) and eta > 0 need the sampling grid")
        super().__init__(base, op, y, timesteps)
        self.generator = generator

    def x0_eps(self, x: Tensor, t: Tensor | float, cond: Any = None) -> tuple[Tensor, Tensor]:
        x0, eps = self.base.x0_eps(x, t, cond)
        y = self.y.to(x0.dtype)
        if self.sigma_y == 0 and self.eta == 0:
            return self.op.project(x0, y), eps
        a_s, s_s = self.next_alpha_sigma(t, x0)
        lam, gamma = ddnm_plus_coefficients(a_s, s_s, self.sigma_y)
        x0_hat = self.op.project(x0, y, lam)
        noise = (1 - self.eta**2) ** 0.5 * eps
        if self.eta > 0:
            noise = noise + self.eta * randn(x.shape, self.generator, x.dtype, x.device)
        ratio = torch.where(s_s > 0, gamma / torch.where(s_s > 0, s_s, torch.ones_like(s_s)), torch.ones_like(s_s))
        return x0_hat, ratio * noise
