"""SlimFlow: smaller one-step students with rectified flow (Yuanzhi Zhu, Xingchao Liu, Qiang Liu; "SlimFlow:
Training Smaller One-Step Diffusion Models with Rectified Flow", ECCV 2024, arXiv 2407.12718; official code
``yuanzhi-zhu/SlimFlow``, ``reflow/``).

Rectified-flow convention of the paper: ``z0`` noise at ``t = 0``, ``z1`` data at ``t = 1``,
``x_t = z0 + t (z1 - z0)``, the network ``v(x_t, t, c)`` regresses ``z1 - z0``; one step is ``z0 + v(z0, 0)``.
The coupling ``(z0, z1 = ODE_teacher(z0))`` comes from the teacher's deterministic sampler
(:func:`diffzoo.distill.common.teacher_pairs`: DDIM from ``x_T = z0``).

* **Annealing reflow** (paper Sec. 4.1): a small student trained from scratch on the pairs with the
  noise ``z0' = sqrt(1 - beta_k^2) z0 + beta_k n`` (fresh ``n``), ``beta_k = 1 - min(1, k / K)``: at
  ``beta = 1`` the noise is independent of ``z1`` (plain flow matching on the teacher's samples), at
  ``beta = 0`` it is the teacher's coupling. ``K = 0`` is plain reflow (``beta = 0`` throughout). The
  paper's random horizontal flip of both ends is left out: digits are not mirror-symmetric.
* **Flow-guided distillation** (paper Sec. 4.2): a one-step student (initialised from the small 2-RF)
  with ``L_distill = D(z0 + v(z0, 0), z1)`` plus, with ``guided``, the 2-step term on fresh noise ``z``:
  ``t' ~ U(0.2, 0.8)``, ``x' = z + t' v(z, 0)``, ``z1^ = x' + (1 - t') v_2RF(x', t')`` (frozen 2-RF;
  the target is not differentiated), ``L_guide = D(z + v(z, 0), z1^)``.
* ``D`` is a pseudo-Huber distance (:func:`~diffzoo.distill.common.pseudo_huber`), **not** the paper's LPIPS
  (LPIPS needs VGG weights we cannot download).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_int, check_range, check_tensor
from diffzoo.distill.common import bc, pseudo_huber

Tensor = torch.Tensor


def anneal_beta(step: int, anneal_steps: int) -> float:
    """``beta_k = 1 - min(1, k / K)``; ``K = 0``: plain reflow (``beta = 0``)."""
    check_int(step, "step", 0)
    check_int(anneal_steps, "anneal_steps", 0)
    return 0.0 if anneal_steps == 0 else 1.0 - min(1.0, step / anneal_steps)


def annealed_noise(z0: Tensor, beta: float, generator: torch.Generator) -> Tensor:
    """``sqrt(1 - beta^2) z0 + beta n`` with fresh ``n`` (unit variance for every ``beta``)."""
    check_range(beta, "beta", 0.0, 1.0)
    n = torch.randn(z0.shape, generator=generator).to(z0)
    return math.sqrt(1.0 - beta * beta) * z0 + beta * n


def reflow_loss(
    student: nn.Module, z0: Tensor, z1: Tensor, cond: Any, generator: torch.Generator, beta: float = 0.0
) -> Tensor:
    """Rectified-flow (reflow) loss on pairs ``(z0, z1)`` with annealing noise ``beta``."""
    check_tensor(z0, "z0", floating=True)
    check_tensor(z1, "z1", floating=True, shape=tuple(z0.shape))
    z0 = annealed_noise(z0, beta, generator)
    t = torch.rand(z0.shape[0], generator=generator).to(z0)
    xt = z0 + bc(t, z0) * (z1 - z0)
    return (student(xt, t, cond) - (z1 - z0)).flatten(1).pow(2).mean(1).mean()


def one_step(student: nn.Module, z: Tensor, cond: Any = None) -> Tensor:
    """``z + v(z, 0)``: the one-step sample of a rectified-flow network."""
    return z + student(z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device), cond)


def distill_loss(
    student: nn.Module,
    z0: Tensor,
    z1: Tensor,
    cond: Any,
    generator: torch.Generator,
    *,
    flow: nn.Module | None = None,
    guided: bool = True,
    huber_c: float | None = None,
) -> Tensor:
    """``L_distill`` (+ ``L_guide`` with ``guided``, which needs the frozen 2-RF ``flow``); see the module
    docstring."""
    check_tensor(z0, "z0", floating=True)
    check_tensor(z1, "z1", floating=True, shape=tuple(z0.shape))
    loss = pseudo_huber(one_step(student, z0, cond), z1, huber_c).mean()
    if guided:
        if flow is None:
            raise ValueError("flow: flow-guided distillation needs the frozen 2-rectified flow")
        z = torch.randn(z0.shape, generator=generator).to(z0)
        tp = (0.2 + 0.6 * torch.rand(z0.shape[0], generator=generator)).to(z0)
        pred = one_step(student, z, cond)
        with torch.no_grad():
            xp = z + bc(tp, z) * (pred - z)
            target = xp + bc(1.0 - tp, z) * flow(xp, tp, cond)
        loss = loss + pseudo_huber(pred, target, huber_c).mean()
    return loss


@torch.no_grad()
def straightness(flow: nn.Module, z0: Tensor, z1: Tensor, cond: Any = None, num_t: int = 8) -> float:
    """``E ||(z1 - z0) - v(x_t, t)||^2`` on a grid of ``num_t`` times (Liu et al. 2022): 0 for a straight
    coupling that the network has learned exactly."""
    out = 0.0
    for i in range(num_t):
        t = torch.full((z0.shape[0],), (i + 0.5) / num_t, dtype=z0.dtype)
        xt = z0 + bc(t, z0) * (z1 - z0)
        out += float((flow(xt, t, cond) - (z1 - z0)).flatten(1).pow(2).mean(1).mean())
    return out / num_t
