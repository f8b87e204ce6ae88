"""Toy low-dimensional datasets with known densities: mixtures, two moons, checkerboard.

Every dataset has ``.sample(n, generator) -> (n, dim) float64`` and ``.dim``; those with a closed-form
density also have exact ``.log_prob(x)`` (the Gaussian mixtures through
:class:`diffzoo.core.analytic.GaussianMixture`, whose ``.mixture`` attribute also gives the exact
denoiser for any schedule; the checkerboard is piecewise uniform). Mixtures of well-separated modes are
the setting of the mode-interpolation study of hallucinations (Aithal et al., NeurIPS 2024: a 1-D
mixture and a 5x5 grid of Gaussians).

``get(name, **kw)`` builds one by name: ``ring8``, ``grid25``, ``mixture1d``, ``moons``, ``checkerboard``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from diffzoo.core.analytic import GaussianMixture
from diffzoo.core.errors import check_choice, check_range, check_tensor

Tensor = torch.Tensor


class MixtureDataset:
    """A Gaussian-mixture dataset (exact sampling, density and denoiser via ``.mixture``)."""

    def __init__(self, name: str, means: Tensor, std: float, weights: Tensor | None = None):
        check_range(std, "std", 0, None, lo_open=True)
        self.name = name
        self.mixture = GaussianMixture(means, std, weights)
        self.dim = self.mixture.dim
        self.modes = self.mixture.means

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.mixture.sample(int(n), generator)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.mixture.log_prob(x)

    def nearest_mode(self, x: Tensor) -> Tensor:
        """Index of the closest mode of each row of ``x``."""
        return torch.cdist(x.to(torch.float64), self.modes).argmin(-1)


def ring8(radius: float = 2.0, std: float = 0.1) -> MixtureDataset:
    """8 equal Gaussians on a circle of ``radius`` (the classic "8 gaussians")."""
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return MixtureDataset("ring8", radius * torch.stack([ang.cos(), ang.sin()], -1), std)


def grid25(spacing: float = 1.0, std: float = 0.05) -> MixtureDataset:
    """A 5x5 grid of equal Gaussians centred at 0 with the given ``spacing`` (Aithal et al. 2024)."""
    c = (torch.arange(5, dtype=torch.float64) - 2) * spacing
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    return MixtureDataset("grid25", torch.stack([gx.flatten(), gy.flatten()], -1), std)


def mixture1d(centers: tuple[float, ...] = (1.0, 2.0, 3.0), std: float = 0.05) -> MixtureDataset:
    """A 1-D mixture of equal Gaussians at ``centers`` (Aithal et al. 2024, Sec. 3)."""
    return MixtureDataset("mixture1d", torch.tensor(centers, dtype=torch.float64)[:, None], std)


class TwoMoons:
    """Two interleaved half circles with Gaussian jitter (no closed-form density), centred near 0."""

    dim = 2
    name = "moons"

    def __init__(self, noise: float = 0.05, scale: float = 1.0):
        check_range(noise, "noise", 0)
        self.noise, self.scale = float(noise), float(scale)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = int(n)
        which = torch.randint(2, (n,), generator=generator)
        u = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        upper = torch.stack([u.cos(), u.sin()], -1)
        lower = torch.stack([1 - u.cos(), 0.5 - u.sin()], -1)
        x = torch.where(which[:, None] == 0, upper, lower) - torch.tensor([0.5, 0.25], dtype=torch.float64)
        x = x + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return self.scale * x * 2.0 / 1.5


class Checkerboard:
    """Uniform density on the dark squares of a ``k x k`` board over ``[-half, half]^2``.

    ``log p(x) = -log(area of dark squares)`` on a dark square, ``-inf`` elsewhere.
    """

    dim = 2
    name = "checkerboard"

    def __init__(self, k: int = 4, half: float = 2.0):
        if int(k) < 2 or int(k) % 2:
            raise ValueError(f"k: expected an even number of squares >= 2, got {k}")
        check_range(half, "half", 0, None, lo_open=True)
        self.k, self.half = int(k), float(half)
        self.cell = 2 * self.half / self.k

    def _dark(self, ij: Tensor) -> Tensor:
        return (ij[..., 0] + ij[..., 1]) % 2 == 0

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = int(n)
        cells = torch.randint(self.k, (n, 2), generator=generator)
        cells[:, 1] = (cells[:, 1] - cells[:, 1] % 2) + (cells[:, 0] % 2)  # force i + j even
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return -self.half + (cells.to(torch.float64) + u) * self.cell

    def log_prob(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=2, floating=True, shape=(None, 2))
        x = x.to(torch.float64)
        ij = torch.floor((x + self.half) / self.cell).long()
        inside = ((x >= -self.half) & (x < self.half)).all(-1)
        ok = inside & self._dark(ij.clamp(0, self.k - 1))
        area = (2 * self.half) ** 2 / 2
        return torch.where(ok, torch.full_like(x[:, 0], -math.log(area)), torch.full_like(x[:, 0], -math.inf))


DATASETS: dict[str, Callable[..., Any]] = {
    "ring8": ring8,
    "grid25": grid25,
    "mixture1d": mixture1d,
    "moons": TwoMoons,
    "checkerboard": Checkerboard,
}


def get(name: str, **kwargs: Any) -> Any:
    """Build the toy dataset ``name`` (one of :data:`DATASETS`)."""
    check_choice(name, DATASETS, "dataset")
    return DATASETS[name](**kwargs)
