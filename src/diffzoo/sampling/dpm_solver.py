"""DPM-Solver++(2M): second-order multistep solver of the data-prediction ODE in log-SNR time.

Lu et al., *DPM-Solver++* (2022), Alg. 2 with the midpoint ("2M") correction. With half log-SNR
``lambda = log(alpha / sigma)``, step ``h_i = lambda_{i+1} - lambda_i`` and ``r_i = h_{i-1} / h_i``::

    D_i     = (1 + 1 / (2 r_i)) x0_i - 1 / (2 r_i) x0_{i-1}
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + alpha_{i+1} (1 - exp(-h_i)) D_i

The update is the DDIM transfer with the extrapolated data estimate ``D_i``
(:func:`diffzoo.sampling.base.transfer_x0`). The first step has no history and is first order (=
DDIM); so is the last step when it lands on ``sigma = 0`` (``lambda = inf``), as in diffusers'
``DPMSolverMultistepScheduler`` with ``final_sigmas_type="zero"``.
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.random import Generator
from diffzoo.sampling.base import Callback, predict, prepare, report, steps, transfer_x0

Tensor = torch.Tensor


@torch.no_grad()
def dpmpp_2m(denoiser: Denoiser, x: Tensor, timesteps: Tensor, cond: Any = None, *,
             lower_order_final: bool = True, generator: Generator = None, callback: Callback | None = None,
             progress: bool = False) -> Tensor:
    """DPM-Solver++(2M) on the given grid (NFE = N).

    ``lower_order_final``: use a first-order last step when the grid has fewer than 15 steps (the
    stabilising trick of Lu et al. 2022b, Sec. 5; diffusers' default). A last step onto ``sigma = 0`` is
    always first order. Deterministic (``generator`` is unused).
    """
    g = prepare(denoiser, x, timesteps)
    n = g.num_steps
    half = (g.log_snr / 2).to(torch.float64)
    h = half[1:] - half[:-1]
    # D_i = x0_i + w_i (x0_i - x0_{i-1}) with w_i = 1/(2 r_i) = h_i / (2 h_{i-1}); 0 on first-order steps
    w = torch.zeros(n, dtype=torch.float64, device=x.device)
    if n > 1:
        w[1:] = 0.5 * h[1:] / h[:-1]
    final_zero = not bool(g.sigma[-1] > 0)
    if final_zero or (lower_order_final and n < 15):
        w[-1] = 0.0
    w = torch.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0).to(x.dtype)
    x0_prev: Tensor | None = None
    for i in steps(n, progress, "dpmpp_2m"):
        x0, _ = predict(denoiser, x, g.t[i], cond)
        d = x0 if x0_prev is None else x0 + w[i] * (x0 - x0_prev)
        x, eps = transfer_x0(x, d, g.alpha[i], g.sigma[i], g.alpha[i + 1], g.sigma[i + 1])
        x0_prev = x0
        report(callback, g, i, x, d, eps)
    return x
