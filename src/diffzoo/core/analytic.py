"""Exact denoisers for Gaussian-mixture data: the test oracle for every sampler.

For data ``x0 ~ sum_k w_k N(mu_k, s_k^2 I)`` and ``x_t = alpha x0 + sigma eps``, the noisy marginal is
the mixture ``sum_k w_k N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I)`` and Tweedie's formula gives the
exact posterior mean ``E[x0 | x_t]`` (Efron 2011; Lai et al. 2025, Sec. on Tweedie). The probability
flow ODE driven by this denoiser has no learning error, so sampler error is pure discretisation error.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_tensor
from diffzoo.core.schedules import NoiseSchedule

Tensor = torch.Tensor


class GaussianMixture:
    """An isotropic Gaussian mixture in ``dim`` dimensions with exact sampling, density and denoiser."""

    def __init__(
        self, means: Tensor | Sequence, stds: Tensor | Sequence | float, weights: Tensor | Sequence | None = None
    ):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        check_tensor(self.means, "means", ndim=2)
        k, self.dim = self.means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        self.stds = stds.expand(k).clone() if stds.ndim == 0 else stds
        if self.stds.shape != (k,) or bool((self.stds <= 0).any()):
            raise ValueError(f"stds: expected {k} positive values, got {tuple(self.stds.shape)}")
        w = (
            torch.full((k,), 1.0 / k, dtype=torch.float64)
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float64)
        )
        if w.shape != (k,) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"weights: expected {k} non-negative values with a positive sum")
        self.weights = w / w.sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + self.stds[comp, None] * z

    def _noisy_log_joint(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Per-component log w_k N(x; alpha mu_k, v_k I) and the variances v_k (batch x K)."""
        x = x.to(torch.float64)
        a = alpha.to(torch.float64).reshape(-1, 1)
        s = sigma.to(torch.float64).reshape(-1, 1)
        var = a**2 * self.stds[None] ** 2 + s**2  # (B|1, K)
        d2 = ((x[:, None, :] - a[..., None] * self.means[None]) ** 2).sum(-1)  # (B, K)
        logp = torch.log(self.weights)[None] - 0.5 * d2 / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return logp, var

    def log_prob(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        """Exact log-density of the data (or of the noisy marginal at ``alpha, sigma``)."""
        check_tensor(x, "x", ndim=2, floating=True)
        if x.shape[1] != self.dim:
            raise ValueError(f"x: expected {self.dim} features, got {x.shape[1]}")
        logp, _ = self._noisy_log_joint(x, torch.as_tensor(alpha), torch.as_tensor(sigma))
        return torch.logsumexp(logp, -1)

    def posterior_mean(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """``E[x0 | x_t = x]`` in closed form (per-component Gaussian posterior, mixed by responsibility)."""
        check_tensor(x, "x", ndim=2, floating=True, shape=(None, self.dim))
        logp, var = self._noisy_log_joint(x, alpha, sigma)
        r = torch.softmax(logp, -1)  # (B, K)
        a = alpha.to(torch.float64).reshape(-1, 1)
        s2k = self.stds[None] ** 2
        gain = a * s2k / var  # (B|1, K)
        comp_mean = self.means[None] + gain[..., None] * (
            x.to(torch.float64)[:, None] - a[..., None] * self.means[None]
        )
        return (r[..., None] * comp_mean).sum(1)

    def denoiser(self, schedule: NoiseSchedule) -> Denoiser:
        """The exact x0-predicting :class:`Denoiser` for this mixture under ``schedule``."""

        def net(x: Tensor, t: Tensor, cond: object = None) -> Tensor:
            # no range check (host sync) per call on continuous schedules: samplers validated their grid
            a, s = schedule.alpha_sigma(t.to(torch.float64), check=schedule.kind == "discrete")
            return self.posterior_mean(x, a.expand(x.shape[0]), s.expand(x.shape[0])).to(x.dtype)

        return Denoiser(net, schedule, "sample", validate=False)
