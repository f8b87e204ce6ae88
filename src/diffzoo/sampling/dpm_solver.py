"""DPM-Solver++(2M): second-order multistep solver of the data-prediction ODE in log-SNR time.

Lu et al., *DPM-Solver++* (2022), Alg. 2 with the midpoint ("2M") correction. With half log-SNR
``lambda = log(alpha / sigma)``, step ``h_i = lambda_{i+1} - lambda_i`` and ``r_i = h_{i-1} / h_i``::

    D_i     = (1 + 1 / (2 r_i)) x0_i - 1 / (2 r_i) x0_{i-1}
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + alpha_{i+1} (1 - exp(-h_i)) D_i

The update is the DDIM transfer with the extrapolated data estimate ``D_i``
(:attr:`diffzoo.sampling.base.Grid.x0_transfer`). The first step has no history and is first order (=
DDIM); so is the last step when it lands on ``sigma = 0`` (``lambda = inf``), as in diffusers'
``DPMSolverMultistepScheduler`` with ``final_sigmas_type="zero"``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.random import Generator
from diffzoo.sampling.base import Callback, finish, pair_from_x0, predict_x0, prepare, report, steps, transfer

Tensor = torch.Tensor


@torch.no_grad()
def dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    cond: Any = None,
    *,
    lower_order_final: bool = True,
    generator: Generator = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) on the given grid (NFE = N).

    ``lower_order_final``: use a first-order last step when the grid has fewer than 15 steps (the
    stabilising trick of Lu et al. 2022b, Sec. 5; diffusers' default). A last step onto ``sigma = 0`` is
    always first order. Deterministic (``generator`` is unused).
    """
    g = prepare(denoiser, x, timesteps, name="dpmpp_2m")
    n = g.num_steps
    # half log-SNR lambda = log(alpha / sigma) per grid point (-inf at alpha = 0, +inf at sigma = 0), in float64
    half = [
        (math.log(a) if a > 0 else -math.inf) - (math.log(s) if s > 0 else -math.inf)
        for a, s in zip(g.alpha_f, g.sigma_f)
    ]
    h = [half[i + 1] - half[i] for i in range(n)]
    # D_i = x0_i + w_i (x0_i - x0_{i-1}) with w_i = 1/(2 r_i) = h_i / (2 h_{i-1}); 0 on first-order steps
    # (the first; a step after one from alpha = 0, where h_{i-1} = inf)
    w = [0.0] + [0.5 * h[i] / h[i - 1] if math.isfinite(h[i]) and math.isfinite(h[i - 1]) else 0.0 for i in range(1, n)]
    if not g.sigma_f[-1] > 0 or (lower_order_final and n < 15):
        w[-1] = 0.0
    tr = g.x0_transfer
    x0_prev: Tensor | None = None
    for i in steps(n, progress, "dpmpp_2m"):
        x0 = predict_x0(denoiser, x, g, i, cond)
        # D = x0 + w (x0 - x0_prev) = lerp(x0, x0_prev, -w)
        d = x0 if x0_prev is None or w[i] == 0 else torch.lerp(x0, x0_prev, -w[i])
        x_new = transfer(x, d, tr[i])
        if callback is not None:
            x_new = report(callback, g, i, x_new, d, pair_from_x0(x, d, g, i))
        x, x0_prev = x_new, x0
    return finish(denoiser, x)
