"""Null-text inversion (Mokady, Hertz, Aberman, Pritch & Cohen-Or, CVPR 2023, Sec. 3, Alg. 1).

1. *Pivot*: DDIM inversion with guidance 1 (conditional only) gives ``z*_{t_0}, ..., z*_{t_N} = z_0``.
2. For each step ``t_i -> t_{i+1}`` (noisy to clean), starting from ``zbar = z*_{t_0}`` and the empty
   prompt's embedding, optimise the *unconditional* embedding ``null_i`` (initialised from
   ``null_{i-1}``) with Adam, learning rate ``lr (1 - i/100)``, at most ``inner_steps`` iterations::

       eps = eps(zbar, t_i, null_i) + w (eps(zbar, t_i, c) - eps(zbar, t_i, null_i))
       loss = || T_{t_i -> t_{i+1}}(zbar; eps) - z*_{t_{i+1}} ||^2            (mean)

   stopping early when ``loss < early_stop + i * 2e-5``. Then ``zbar <- T(zbar; eps(null_i))``.
3. Reconstruction / editing: DDIM sampling from ``z*_{t_0}`` at guidance ``w`` with ``null_i`` at
   step ``i`` (in both branches of a prompt-to-prompt edit).

Only the null embeddings change; the reconstruction error is bounded by the early-stop threshold
(approximate, not exact), far below plain DDIM inversion at the same guidance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_range
from diffzoo.core.guidance import cfg_combine, guided_x0_eps
from diffzoo.core.random import Generator
from diffzoo.inversion.common import (
    EditResult,
    InversionResult,
    Timer,
    branch_conditions,
    branch_result,
    check_guidance,
    controlled,
    ddim_denoise,
    ddim_invert_trajectory,
    ddim_transfer,
)
from diffzoo.latent.attention import AttentionController
from diffzoo.latent.model import LatentModel
from diffzoo.sampling.base import steps

Tensor = torch.Tensor

#: The guidance the null embeddings are optimised for (and edit at); read through the registry.
DEFAULT_GUIDANCE = 7.5


def _optimise_null(
    den: Denoiser,
    z: Tensor,
    t: Tensor,
    s: Tensor,
    target: Tensor,
    cond: Tensor,
    null: Tensor,
    w: float,
    lr: float,
    inner_steps: int,
    threshold: float,
) -> tuple[Tensor, int]:
    """Adam on ``null`` so that the guided DDIM step from ``z`` lands on ``target``; returns (null, iters).

    Each sample is optimised as if alone: the loss is the sum of per-sample mean squared errors, and a
    sample whose error falls below ``threshold`` keeps its embedding from then on (the early stop of
    batch size 1; ``iters`` counts the steps until every sample stopped)."""
    with torch.no_grad():
        eps_c = den.x0_eps(z, t, cond)[1]
    null = null.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([null], lr=lr)
    iters = 0
    done = torch.zeros(null.shape[0], dtype=torch.bool, device=null.device)
    final = null.detach().clone()
    with torch.enable_grad():
        for _ in range(inner_steps):
            eps_u = den.x0_eps(z, t, null)[1]
            z_prev = ddim_transfer(z, cfg_combine(eps_u, eps_c, w), den.schedule, t, s)
            per_sample = torch.stack([F.mse_loss(z_prev[i], target[i]) for i in range(z_prev.shape[0])])
            # gradient for the embedding only: network weights never accumulate .grad
            (null.grad,) = torch.autograd.grad(per_sample.sum(), [null])
            opt.step()
            iters += 1
            with torch.no_grad():
                null[done] = final[done]  # samples that stopped earlier keep their embedding
                stop = (per_sample.detach() < threshold) & ~done
                final[stop] = null[stop]
                done |= stop
            if bool(done.all()):
                break
    return null.detach(), iters


def invert(
    model: LatentModel,
    z0: Tensor,
    prompts: list[str],
    cond: Tensor,
    ts: Tensor,
    guidance: float,
    generator: Generator = None,
    *,
    inner_steps: int = 10,
    lr: float = 1e-2,
    early_stop: float = 1e-5,
    progress: bool = False,
) -> InversionResult:
    """Pivotal inversion at guidance 1, then per-step null-embedding optimisation for guidance ``w``
    (registry default 7.5). ``progress`` shows a tqdm bar over the steps."""

    w = check_guidance(guidance)
    if not isinstance(inner_steps, int) or inner_steps < 0:
        raise ValueError(f"inner_steps: expected a non-negative integer, got {inner_steps!r}")
    lr = check_range(lr, "lr", 0.0, None, lo_open=True)
    early_stop = check_range(early_stop, "early_stop", 0.0)
    den = model.denoiser()
    b, n = z0.shape[0], ts.numel() - 1
    nulls: list[Tensor] = []
    iters: list[int] = []
    with Timer(den) as tm:
        with torch.no_grad():
            pivot = ddim_invert_trajectory(den, z0, ts, cond, None, 1.0)
        null = model.null_embedding(b)
        z = pivot[0]
        for i in steps(n, progress, "null-text inversion"):
            t = ts[i].expand(b)
            null, k = _optimise_null(
                den,
                z,
                t,
                ts[i + 1],
                pivot[i + 1],
                cond,
                null,
                w,
                lr * max(1.0 - i / 100.0, 0.01),
                inner_steps,
                early_stop + i * 2e-5,
            )
            nulls.append(null)
            iters.append(k)
            with torch.no_grad():
                z = ddim_transfer(z, guided_x0_eps(den, z, ts[i], cond, null, w)[1], den.schedule, ts[i], ts[i + 1])
    return InversionResult(
        "null_text",
        model,
        prompts,
        cond,
        ts,
        w,
        z0,
        latents=pivot[0],
        trajectory=pivot,
        null_embeddings=nulls,
        options=dict(inner_steps=inner_steps, lr=lr, iterations=iters),
        nfe=tm.nfe,
        seconds=tm.seconds,
    )


def reconstruct(result: InversionResult) -> Tensor:
    """DDIM sampling from the pivot's ``z*_{t_0}`` at guidance ``w`` with the optimised null embeddings."""
    den = result.model.denoiser()
    with torch.no_grad():
        return ddim_denoise(den, result.latents, result.timesteps, result.cond, result.null_embeddings, result.guidance)


def edit(
    result: InversionResult,
    target_prompt: str | Sequence[str],
    *,
    guidance: float,
    controller: AttentionController | None = None,
) -> EditResult:
    """Null-text + P2P editing: ``[source; target]`` from ``z*_{t_0}``, both with ``null_i`` at step ``i``.

    ``guidance`` defaults (in the registry) to, and should equal, the guidance the null embeddings
    were optimised for.
    """
    model = result.model
    w = check_guidance(guidance)
    b = result.latent0.shape[0]
    tgt, cond2 = branch_conditions(result, target_prompt)
    nulls = [torch.cat([u, u]) for u in result.null_embeddings]
    den = model.denoiser()
    x = torch.cat([result.latents, result.latents])
    with torch.no_grad(), controlled(model, controller, b), Timer(den) as tm:
        x = ddim_denoise(den, x, result.timesteps, cond2, nulls, w, controller=controller)
    return branch_result("null_text", result, x, tgt, tm, w)
