"""DPM-OT: a semi-discrete optimal-transport "expressway" from the prior to an intermediate noise level.

Li, Guo, ..., Lei, Gu, *DPM-OT: A New Diffusion Probabilistic Model Based on Optimal Transport*, ICCV 2023
(official code ``cognaclee/DPM-OT``: ``ot_utils/optimal_transport.py``). The target measure is uniform on
``Y = {y_j}`` (data noised to the intermediate level ``t_k``); the source is a simple measure ``mu``
(``U[0,1]^d`` as in the official code, or ``N(0, I)``). The semi-discrete OT map is the gradient of the
Brenier potential ``u_h(z) = max_j <z, y_j> + h_j``: ``T(z) = y_{argmax_j <z, y_j> + h_j}``. The dual
potentials ``h`` minimise the convex energy ``E(h) = int u_h dmu - sum_j h_j / n`` whose gradient is
``mu(W_j(h)) - 1/n`` (``W_j`` the power cell of ``y_j``), estimated by Monte Carlo (bincount of the argmax
over a batch of source samples). We update ``h`` with Adam (beta 0.9/0.999, lr 0.1 by default as in the
official code), mean-centre it, stop when ``|grad| < tol`` and no cell is empty, and double the Monte-Carlo
batch after ``patience`` steps without improvement of ``|grad|``. Sampling: ``z ~ mu``, ``x_k = T(z)``,
then the pretrained model finishes the last few steps (:func:`dpm_ot_sample`).

POT has no exact semi-discrete solver; its exact discrete ``ot.emd2`` is the W2 oracle of the tests and
the benchmark (:func:`w2_exact`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_choice, check_finite, check_int, check_range, check_tensor
from diffzoo.core.random import Generator, rand, randn
from diffzoo.sampling import sample

log = logging.getLogger(__name__)
Tensor = torch.Tensor

SOURCES = ("uniform", "gaussian")


def source_sample(n: int, dim: int, source: str = "uniform", generator: Generator = None) -> Tensor:
    """``n`` draws (float64) of the source measure: ``U[0,1]^dim`` (official) or ``N(0, I)``."""
    check_choice(source, SOURCES, "source")
    draw = rand if source == "uniform" else randn
    return draw((n, dim), generator, torch.float64)


def power_cells(z: Tensor, y: Tensor, h: Tensor, chunk: int = 4096) -> Tensor:
    """``argmax_j <z_i, y_j> + h_j`` for every row of ``z`` (int64, shape ``(len(z),)``)."""
    out = []
    for s in range(0, z.shape[0], chunk):
        out.append((z[s : s + chunk] @ y.T + h).argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


@dataclass
class SemiDiscreteOT:
    """A fitted semi-discrete OT map from ``source`` to the uniform measure on ``targets``."""

    targets: Tensor  # (n, d) float64
    h: Tensor  # (n,) float64, mean zero
    source: str = "uniform"
    history: list[dict[str, float]] = field(default_factory=list)
    converged: bool = False

    def cells(self, z: Tensor) -> Tensor:
        """The target index of each source point."""
        check_tensor(z, "z", ndim=2, floating=True)
        if z.shape[1] != self.targets.shape[1]:
            raise ValueError(f"z: expected dimension {self.targets.shape[1]}, got {z.shape[1]}")
        return power_cells(z.to(torch.float64), self.targets, self.h)

    def __call__(self, z: Tensor) -> Tensor:
        """``T(z)``: the targets the source points are sent to."""
        return self.targets[self.cells(z)]

    def sample(self, n: int, generator: Generator = None) -> Tensor:
        """``T(z)`` for ``n`` fresh source draws."""
        return self(source_sample(n, self.targets.shape[1], self.source, generator))

    def cell_masses(self, num: int = 200_000, generator: Generator = None) -> Tensor:
        """Monte-Carlo masses ``mu(W_j)`` from ``num`` source draws."""
        idx = self.cells(source_sample(num, self.targets.shape[1], self.source, generator))
        return torch.bincount(idx, minlength=self.targets.shape[0]).to(torch.float64) / num


def fit_semi_discrete_ot(
    targets: Tensor,
    *,
    source: str = "uniform",
    lr: float = 0.1,
    batch: int = 10_000,
    max_batch: int = 1_280_000,
    tol: float = 8e-4,
    patience: int = 50,
    max_iter: int = 2000,
    generator: Generator = None,
) -> SemiDiscreteOT:
    """Fit the dual potentials of the semi-discrete OT map from ``source`` to the uniform measure on
    ``targets`` (``(n, d)``, n >= 2 distinct points) by Adam on Monte-Carlo cell masses (module docstring).

    Stops when the gradient norm ``|mass - 1/n|`` falls below ``tol`` with no empty cell, or after
    ``max_iter`` steps (``converged`` says which). The Monte-Carlo batch doubles (up to ``max_batch``)
    after ``patience`` steps without a new best gradient norm.
    """
    check_tensor(targets, "targets", ndim=2, floating=True)
    if targets.shape[0] < 2:
        raise ValueError(f"targets: need at least 2 target points, got {targets.shape[0]}")
    check_finite(targets, "targets")
    check_choice(source, SOURCES, "source")
    check_range(lr, "lr", 0.0, math.inf, lo_open=True, hi_open=True)
    check_range(tol, "tol", 0.0, math.inf, lo_open=True)
    check_int(batch, "batch", 1)
    check_int(max_iter, "max_iter", 1)
    check_int(patience, "patience", 1)
    y = targets.detach().to(torch.float64).cpu()
    n, d = y.shape
    h = torch.zeros(n, dtype=torch.float64)
    m = torch.zeros_like(h)
    v = torch.zeros_like(h)
    b1, b2, eps = 0.9, 0.999, 1e-8
    best, stall, cur_batch = math.inf, 0, int(batch)
    history: list[dict[str, float]] = []
    converged = False
    for it in range(1, max_iter + 1):
        z = source_sample(cur_batch, d, source, generator)
        mass = torch.bincount(power_cells(z, y, h), minlength=n).to(torch.float64) / cur_batch
        g = mass - 1.0 / n
        gnorm = float(g.norm())
        empty = int((mass == 0).sum())
        history.append({"iter": it, "grad_norm": gnorm, "empty": empty, "batch": cur_batch})
        if gnorm < tol and empty == 0:
            converged = True
            break
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = lr * (m / (1 - b1**it)) / ((v / (1 - b2**it)).sqrt() + eps)
        h -= step
        h -= h.mean()
        if gnorm < best:
            best, stall = gnorm, 0
        else:
            stall += 1
            if stall >= patience and cur_batch < max_batch:
                cur_batch, stall = min(2 * cur_batch, int(max_batch)), 0
    log.info("semi-discrete OT: %d iterations, |grad| %.3g, converged %s", len(history), best, converged)
    return SemiDiscreteOT(y, h, source, history, converged)


def noised_targets(x0: Tensor, alpha: float, sigma: float, generator: Generator = None) -> Tensor:
    """DPM-OT's target set ``y_j = alpha x_j + sigma eps_j`` (flattened, float64)."""
    check_tensor(x0, "x0", floating=True)
    if x0.shape[0] < 2:
        raise ValueError(f"x0: need at least 2 data points for the target set, got {x0.shape[0]}")
    flat = x0.detach().reshape(x0.shape[0], -1).to(torch.float64).cpu()
    return alpha * flat + sigma * randn(flat.shape, generator, torch.float64)


@torch.no_grad()
def dpm_ot_sample(
    ot: SemiDiscreteOT,
    denoiser: Denoiser,
    timesteps: Tensor,
    n: int,
    shape: tuple[int, ...],
    cond: Any = None,
    *,
    sampler: str = "ddim",
    generator: Generator = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """The expressway: ``x_k = T(z)``, ``z ~ source``, at ``timesteps[0]`` (the level the targets were noised
    to), then ``sampler`` over ``timesteps`` with the pretrained ``denoiser``. Returns ``(samples, x_k)``;
    the NFE is the sampler's over ``timesteps`` (the OT map costs one matrix product)."""
    check_int(n, "n", 1)
    xk = ot.sample(n, generator)
    if math.prod(shape) != xk.shape[1]:
        raise ValueError(f"shape: {tuple(shape)} does not hold the targets' dimension {xk.shape[1]}")
    xk = xk.reshape(n, *shape).to(dtype)
    return sample(sampler, denoiser, xk, timesteps, cond), xk


def w2_exact(x: Tensor, y: Tensor) -> float:
    """Exact W2 between the empirical measures of ``x`` and ``y`` (POT's ``ot.emd2`` on squared Euclidean costs)."""
    import ot as pot

    check_tensor(x, "x", ndim=2, floating=True)
    check_tensor(y, "y", ndim=2, floating=True)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: dimension {y.shape[1]} does not match x's {x.shape[1]}")
    xa, ya = x.detach().to(torch.float64).cpu().numpy(), y.detach().to(torch.float64).cpu().numpy()
    cost = pot.dist(xa, ya)  # squared Euclidean
    a = pot.unif(xa.shape[0])
    b = pot.unif(ya.shape[0])
    return float(math.sqrt(max(0.0, pot.emd2(a, b, cost, numItermax=1_000_000))))


def nearest_distance(x: Tensor, ref: Tensor) -> Tensor:
    """Euclidean distance of each row of ``x`` (flattened) to its nearest row of ``ref`` (memorisation check)."""
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    rf = ref.reshape(ref.shape[0], -1).to(torch.float64)
    return torch.cdist(xf, rf).min(1).values


__all__ = [
    "SOURCES",
    "SemiDiscreteOT",
    "dpm_ot_sample",
    "fit_semi_discrete_ot",
    "nearest_distance",
    "noised_targets",
    "power_cells",
    "source_sample",
    "w2_exact",
]
