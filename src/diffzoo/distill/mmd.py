"""MMD-DDM: fine-tuning a diffusion model so that its few-step sampler matches the data under MMD
(Aiello, Valsesia, Magli, "Fast Inference in Denoising Diffusion Models via MMD Finetuning",
arXiv 2301.07969; official code ``diegovalsesia/MMD-DDM``).

For a real batch ``x`` and noise ``e``: ``x~ = DDIM_{T'}(e; eps_theta)`` (eta = 0) *with* its autograd graph
(:func:`~diffzoo.distill.common.ddim_chain`, optionally checkpointed per step), features ``phi`` of both,
loss ``MMD^2_u(phi(x~), phi(x))`` with the KID polynomial kernel ``k(a, b) = (gamma a.b + coef0)^degree``,
``gamma = 1/d``, ``coef0 = 1``, ``degree = 3``, computed in float64; Adam lr 5e-6 and gradient clipping
(0.5 in the issue's settings; the brief cites 1) are the trainer's options. The paper's features are
Inception pool3; ours are the penultimate layer of the shipped digits classifier (the benchmark judges the
result with a second, held-out classifier).

Unbiased estimator (Gretton et al. 2012, Eq. 3): ``MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) +
sum_{i != j} k(y_i, y_j) / (n (n - 1)) - 2 sum_{i, j} k(x_i, y_j) / (m n)`` -- zero in expectation for
equal distributions (a single draw may be negative).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_finite, check_int, check_range, check_tensor
from diffzoo.distill.common import check_teacher, ddim_chain

Tensor = torch.Tensor


def polynomial_kernel(a: Tensor, b: Tensor, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> Tensor:
    """``(gamma a b^T + coef0)^degree`` in float64; ``gamma`` defaults to ``1 / d`` (KID, Binkowski et al. 2018)."""
    check_int(degree, "degree", 1)
    a, b = a.to(torch.float64), b.to(torch.float64)
    g = 1.0 / a.shape[1] if gamma is None else check_range(gamma, "gamma", 0.0, lo_open=True)
    return (g * a @ b.T + coef0) ** degree


def mmd2_unbiased(x: Tensor, y: Tensor, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> Tensor:
    """Unbiased ``MMD^2`` between feature sets ``x (m, d)`` and ``y (n, d)`` under the polynomial kernel (float64)."""
    check_tensor(x, "x", ndim=2, floating=True)
    check_tensor(y, "y", ndim=2, floating=True, shape=(None, x.shape[1]))
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"x: the unbiased MMD^2 needs at least 2 samples per set, got {m} and {n}")
    kxx = polynomial_kernel(x, x, degree, gamma, coef0)
    kyy = polynomial_kernel(y, y, degree, gamma, coef0)
    kxy = polynomial_kernel(x, y, degree, gamma, coef0)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return sxx + syy - 2.0 * kxy.mean()


def mmd_ddm_loss(
    den: Denoiser,
    noise: Tensor,
    cond: Any,
    timesteps: Tensor,
    features: Callable[[Tensor], Tensor],
    real: Tensor,
    *,
    grad_checkpoint: bool = False,
) -> Tensor:
    """``MMD^2_u(phi(DDIM_{T'}(noise)), phi(real))``, differentiable through the whole chain (the model inside
    ``den`` is the one being fine-tuned; ``features`` is frozen but lets gradients through)."""
    check_teacher(den)
    check_tensor(real, "real", floating=True)
    x = ddim_chain(den, noise, timesteps, cond, grad_checkpoint=grad_checkpoint)
    with torch.no_grad():
        fy = features(real)
    return check_finite(mmd2_unbiased(features(x), fy), "loss")
