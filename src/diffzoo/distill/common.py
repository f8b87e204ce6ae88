"""Shared pieces of the distillation methods: per-sample schedule coefficients, a differentiable DDIM
chain, teacher noise -> sample pairs, the pseudo-Huber distance, and cost counters (parameters, MACs).

Everything takes its teacher as a :class:`~diffzoo.core.Denoiser` (with classifier-free guidance already
wrapped in, if any) and its student as a plain ``nn.Module``: nothing here loads a model or reads a file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_finite, check_int, check_range, check_tensor
from diffzoo.core.parameterization import ddim_step
from diffzoo.sampling import get_timesteps

Tensor = torch.Tensor


def bc(c: Tensor, x: Tensor) -> Tensor:
    """Per-sample coefficients ``(B,)`` reshaped to broadcast against ``x`` (batch-first), in ``x``'s dtype."""
    return c.to(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))


def times_like(t: Tensor | float, x: Tensor) -> Tensor:
    """One float64 model time per sample of ``x``."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    return t.expand(x.shape[0]).clone() if t.ndim == 0 else t.to(torch.float64)


def alpha_sigma_like(den: Denoiser, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(alpha_t, sigma_t)`` of ``den``'s schedule, one per sample, broadcast against ``x``."""
    a, s = den.schedule.alpha_sigma(times_like(t, x))
    return bc(a, x), bc(s, x)


def check_teacher(teacher: Any) -> Denoiser:
    """The teacher must be a Gaussian :class:`~diffzoo.core.Denoiser` (a masked model or a classifier is not)."""
    if not isinstance(teacher, Denoiser):
        raise TypeError(
            f"teacher: expected a diffzoo Denoiser (a Gaussian diffusion model), got {type(teacher).__name__}"
        )
    return teacher


def check_steps(num_steps: int, arg: str = "steps") -> int:
    """``T'``, a number of sampler steps: an integer >= 1."""
    return check_int(num_steps, arg, 1)


def ddim_chain(
    den: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    cond: Any = None,
    *,
    grad_checkpoint: bool = False,
) -> Tensor:
    """Deterministic DDIM (eta = 0) over ``timesteps`` that keeps the autograd graph (the samplers of
    :mod:`diffzoo.sampling` run under ``no_grad``): MMD-DDM back-propagates through the whole chain.
    ``grad_checkpoint`` recomputes each step in the backward pass (memory ~ one step)."""
    check_tensor(x, "x", floating=True)
    ts = torch.as_tensor(timesteps, dtype=torch.float64)
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"timesteps: expected a 1-D grid of at least 2 times, got shape {tuple(ts.shape)}")

    def step(xt: Tensor, t: Tensor, s: Tensor) -> Tensor:
        x0, eps = den.x0_eps(xt, times_like(t, xt), cond)
        a_s, s_s = alpha_sigma_like(den, s, xt)
        return ddim_step(x0, eps, a_s, s_s)

    for i in range(ts.numel() - 1):
        if grad_checkpoint and torch.is_grad_enabled():
            x = checkpoint(step, x, ts[i], ts[i + 1], use_reentrant=False)
        else:
            x = step(x, ts[i], ts[i + 1])
    return x


@torch.no_grad()
def teacher_pairs(
    den: Denoiser,
    noise: Tensor,
    cond: Any = None,
    num_steps: int = 25,
    batch: int = 256,
) -> Tensor:
    """The teacher's deterministic coupling ``noise -> x0``: ``num_steps``-step DDIM from ``x_T = noise``
    (the reflow pairs of SlimFlow / rectified flow, Liu et al. 2022). Returns the samples, clamped to
    the data range [-1, 1] is left to the caller."""
    check_steps(num_steps, "pair_steps")
    ts = get_timesteps(den.schedule, num_steps)
    outs = []
    for i in range(0, noise.shape[0], batch):
        c = None if cond is None else cond[i : i + batch]
        outs.append(ddim_chain(den, noise[i : i + batch], ts, c))
    return check_finite(torch.cat(outs), "pairs")


def pseudo_huber(a: Tensor, b: Tensor, c: float | None = None) -> Tensor:
    """Per-sample pseudo-Huber distance ``sqrt(|a - b|^2 + c^2) - c`` (Song & Dhariwal 2023, Sec. 3.3),
    with ``c = 0.00054 sqrt(d)`` by default (their constant for ``d`` dimensions). SlimFlow's LPIPS is
    replaced by this: LPIPS needs downloaded VGG weights."""
    d = a[0].numel()
    c = 0.00054 * d**0.5 if c is None else float(c)
    check_range(c, "c", 0.0)
    return torch.sqrt((a - b).flatten(1).pow(2).sum(1) + c * c) - c


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def count_macs(model: nn.Module, *inputs: Any) -> int:
    """Multiply-accumulates of one call ``model(*inputs)`` per sample of the batch: every ``Conv2d`` and
    ``Linear`` (hooks), plus the two matmuls of each ``scaled_dot_product_attention`` (counted by a
    wrapper around it). Normalisations and element-wise ops are not counted (as in ``thop``/``ptflops``)."""
    total = [0]
    batch = next((int(x.shape[0]) for x in inputs if torch.is_tensor(x) and x.ndim > 0), 1)

    def conv_hook(m: nn.Conv2d, inp: tuple[Tensor, ...], out: Tensor) -> None:
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += out.numel() * k

    def lin_hook(m: nn.Linear, inp: tuple[Tensor, ...], out: Tensor) -> None:
        total[0] += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    sdpa = nn.functional.scaled_dot_product_attention

    def counted_sdpa(q: Tensor, k: Tensor, v: Tensor, *a: Any, **kw: Any) -> Tensor:
        total[0] += q.numel() * k.shape[-2] + q.shape[:-1].numel() * k.shape[-2] * v.shape[-1]
        return sdpa(q, k, v, *a, **kw)

    nn.functional.scaled_dot_product_attention = counted_sdpa
    try:
        model(*inputs)
    finally:
        nn.functional.scaled_dot_product_attention = sdpa
        for h in hooks:
            h.remove()
    return total[0] // max(batch, 1)
