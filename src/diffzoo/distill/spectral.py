"""Spectrum-aware distillation of Spectral Diffusion (Yang, Zhou, Feng, Wang, "Diffusion Probabilistic Model
Made Slim", CVPR 2023, arXiv 2211.17106) -- "-style": the official code was not found; the loss follows the
public re-derivation (BRIEFS-addendum section 5), with the choices below labelled as ours.

``L = L_DDPM + lambda_s L_spatial + lambda_f L_freq`` with ``lambda_s = lambda_f = 0.1``:

* ``L_DDPM = ||eps_S(x_t) - eps||^2`` (the student's own denoising loss on data);
* ``L_spatial = ||eps_S(x_t) - eps_T(x_t)||^2`` (teacher and student on the same noisy input; the paper also
  matches intermediate features through 1x1 convs -- we match outputs only);
* ``L_freq = sum_f w(f) |F(eps_S - eps_T)(f)|^2 / (H W)``, ``F`` the orthonormal 2-D DFT, with
  ``w(f) = |F(x0)(f)|^alpha`` (``alpha = -1``: low-magnitude, i.e. high-frequency, bins weigh more), averaged
  over channels, floored at ``floor`` times its mean and normalised to mean 1 per sample, not differentiated.
  With ``alpha = 0`` (uniform weights) ``L_freq`` equals ``L_spatial`` exactly (Parseval; tested).

Also :func:`radial_power` / :func:`high_frequency_ratio`: the radially averaged power spectrum and the
generated/real ratio of power in the upper half of radial frequencies (1 = the data's high-frequency content).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_range, check_tensor
from diffzoo.distill.common import alpha_sigma_like

Tensor = torch.Tensor


def spectral_weights(x0: Tensor, alpha: float = -1.0, floor: float = 1e-2) -> Tensor:
    """``w(f) = |F(x0)(f)|^alpha`` per sample ``(B, 1, H, W)`` (channel-averaged magnitude), mean 1."""
    check_tensor(x0, "x0", ndim=4, floating=True)
    mag = torch.fft.fft2(x0.double(), norm="ortho").abs().mean(1, keepdim=True)
    mag = torch.maximum(mag, floor * mag.mean((-2, -1), keepdim=True) + 1e-12)
    w = mag**alpha
    return (w / w.mean((-2, -1), keepdim=True)).to(x0.dtype)


def frequency_loss(a: Tensor, b: Tensor, weights: Tensor) -> Tensor:
    """``mean_b sum_f w(f) |F(a - b)(f)|^2 / (C H W)`` with the orthonormal DFT (= the MSE for ``w = 1``)."""
    check_tensor(a, "a", ndim=4, floating=True)
    check_tensor(b, "b", ndim=4, floating=True, shape=tuple(a.shape))
    spec = torch.fft.fft2(a - b, norm="ortho").abs().pow(2)
    return (weights * spec).mean()


def spectral_distill_loss(
    student: nn.Module,
    teacher: Denoiser,
    x0: Tensor,
    cond: Any,
    generator: torch.Generator,
    *,
    lambda_spatial: float = 0.1,
    lambda_freq: float = 0.1,
    alpha: float = -1.0,
) -> Tensor:
    """The loss of the module docstring for one data batch ``x0`` (labels ``cond``; the teacher runs
    unguided on the same ``x_t``). ``student(x_t, t, cond) -> eps`` on the teacher's schedule."""
    check_range(lambda_spatial, "lambda_spatial", 0.0)
    check_range(lambda_freq, "lambda_freq", 0.0)
    sch = teacher.schedule
    b = x0.shape[0]
    if sch.kind == "discrete":
        t = torch.randint(int(sch.t_max) + 1, (b,), generator=generator).to(torch.float64)
    else:
        t = sch.t_min + (sch.t_max - sch.t_min) * torch.rand(b, generator=generator, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    a_t, s_t = alpha_sigma_like(teacher, t, x0)
    xt = a_t * x0 + s_t * eps
    pred = student(xt, t.to(x0.dtype), cond)
    loss = (pred - eps).pow(2).mean()
    if lambda_spatial > 0 or lambda_freq > 0:
        with torch.no_grad():
            tgt = teacher.x0_eps(xt, t, cond)[1]
        loss = loss + lambda_spatial * (pred - tgt).pow(2).mean()
        if lambda_freq > 0:
            loss = loss + lambda_freq * frequency_loss(pred, tgt, spectral_weights(x0, alpha))
    return loss


def radial_power(x: Tensor) -> Tensor:
    """Radially averaged power spectrum ``(n_bins,)`` of images ``(B, C, H, W)`` (mean over images, channels)."""
    check_tensor(x, "x", ndim=4, floating=True)
    h, w = x.shape[-2:]
    p = torch.fft.fft2(x.double() - x.double().mean((-2, -1), keepdim=True), norm="ortho").abs().pow(2).mean((0, 1))
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    r = torch.sqrt(fy[:, None] ** 2 + fx[None] ** 2)
    bins = torch.round(r * min(h, w)).long()
    return torch.bincount(bins.flatten(), p.flatten()) / torch.bincount(bins.flatten()).clamp(min=1)


def high_frequency_ratio(generated: Tensor, real: Tensor) -> float:
    """Power in the upper half of radial frequency bins, generated / real (1 = matched)."""
    pg, pr = radial_power(generated), radial_power(real)
    k = pg.numel() // 2
    return float(pg[k:].sum() / pr[k:].sum())
