"""Euler sampling of a flow / probability-flow ODE in model time (Liu et al., *Rectified Flow*, 2023).

``dx/dt = u(x, t) = alpha'(t) x0 + sigma'(t) eps`` (the ``velocity`` prediction, whatever the network's
native type); one step is ``x_s = x_t + (s - t) u(x_t, t)``. On the rectified-flow schedule
(``alpha = 1 - t``, ``sigma = t``) this coincides with the DDIM transfer; on curved schedules it is the
plain model-time Euler method.
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.parameterization import from_x0_eps
from diffzoo.core.random import Generator
from diffzoo.sampling.base import Callback, finish, predict, prepare, report, steps

Tensor = torch.Tensor


@torch.no_grad()
def flow_euler(
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    cond: Any = None,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """Euler on the velocity field ``u = alpha' x0 + sigma' eps`` (NFE = N). Deterministic."""
    g = prepare(denoiser, x, timesteps, name="flow_euler")
    da, ds = denoiser.schedule.d_alpha_sigma(g.t)
    da, ds = da.to(x.dtype).unbind(), ds.to(x.dtype).unbind()
    dt = (g.t[1:] - g.t[:-1]).to(x.dtype).tolist()
    for i in steps(g.num_steps, progress, "flow_euler"):
        x0, eps = predict(denoiser, x, g, i, cond)
        u = from_x0_eps(x0, eps, "velocity", g.alpha_f[i], g.sigma_f[i], da[i], ds[i])
        x = torch.add(x, u, alpha=dt[i])
        x = report(callback, g, i, x, x0, eps)
    return finish(denoiser, x)
