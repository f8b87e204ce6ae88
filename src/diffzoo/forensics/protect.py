"""Protective perturbations against diffusion-based mimicry (Xue, Liang, Mu, Chen, *Toward Effective
Protection against Diffusion-Based Mimicry through Score Distillation*, ICLR 2024, arXiv 2311.12832;
official code ``xavihart/Diff-Protect``, ``code/diff_mist.py`` and ``code/attacks.py``).

An image ``x`` in ``[-1, 1]`` is perturbed within an L-infinity ball (budget ``eps`` given in ``[0, 1]``
pixel units, 16/255 by default: ``2 eps`` in model units, as the official ``epsilon/255 * 2``) by PGD with
sign steps (``step_size`` 1/255, 100 steps), clamped to ``[-1, 1]``. With ``z = E(x)`` the latent and
``c`` the prompt embedding:

* semantic loss ``L_S(x) = E_{t, eps} |eps_theta(sqrt(abar_t) z + sqrt(1 - abar_t) eps, t, c) - eps|^2``
  (one random ``t`` and ``eps`` per step, as the official code);
* textural loss ``L_T(x) = |E(x) - E(x_target)|^2`` (sum) for a fixed target pattern.

================  =================================================================  =====================
method            update (sign step of size alpha)                                    gradient through
================  =================================================================  =====================
``advdm+``        maximise ``L_S`` (AdvDM, Liang et al. 2023; random start)          encoder + UNet
``advdm-``        minimise ``L_S``                                                   encoder + UNet
``photoguard``    minimise ``L_T`` (encoder attack, Salman et al. 2023)              encoder
``mist``          minimise ``L_T - rate L_S`` (Mist, Liang & Wu 2023; rate 1e4)       encoder + UNet
``sds+``          ``x + alpha sign(J_E^T (eps_theta - eps))`` (SDS, maximise)         encoder only
``sds-``          ``x - alpha sign(J_E^T (eps_theta - eps))`` (SDS(-), recommended)   encoder only
``sdst-``         ``x + alpha sign(-rate J_E^T (eps_theta - eps) - grad L_T)``        encoder only
================  =================================================================  =====================

The score-distillation gradient ``J_E^T (eps_theta - eps)`` is ``grad L_S`` with the UNet Jacobian
dropped (Poole et al. 2023's SDS): the UNet runs forward only, so each step costs about one encoder
backward instead of an encoder + UNet backward. :class:`ProtectResult` reports the wall time and the
bytes autograd saved for the backward pass per step (the activation memory the paper's "about half"
refers to; the CPU has no peak-memory counter like ``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from diffzoo.core.errors import check_choice, check_finite, check_int, check_range, check_tensor
from diffzoo.core.random import Generator, randn
from diffzoo.latent.model import LatentModel

Tensor = torch.Tensor

#: The official budget, step and iteration count (in [0, 1] pixel units).
DEFAULT_EPS = 16 / 255
DEFAULT_STEP = 1 / 255
DEFAULT_STEPS = 100
#: Mist's fusion weight of the semantic loss (official ``rate = 1e4``).
MIST_RATE = 1e4


@dataclass
class ProtectResult:
    """The protected images, the perturbation's L-inf size in [0, 1] units, the cost and the losses."""

    image: Tensor
    linf: float
    seconds: float
    saved_bytes: int  # bytes saved for backward in one step (activation memory of the gradient)
    method: str
    losses: list[float] = field(default_factory=list)


class _SavedBytes:
    """Counts the bytes of the tensors autograd saves for backward inside the context."""

    def __init__(self) -> None:
        self.bytes = 0

    def pack(self, t: Tensor) -> Tensor:
        self.bytes += t.numel() * t.element_size()
        return t

    def __enter__(self) -> _SavedBytes:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def _noisy(model: LatentModel, z: Tensor, generator: Generator) -> tuple[Tensor, Tensor, Tensor]:
    sch = model.schedule
    t = torch.randint(
        int(sch.t_max) + 1, (z.shape[0],), generator=generator if isinstance(generator, torch.Generator) else None
    )
    t = t.to(torch.float64)
    eps = randn(z.shape, generator, z.dtype, z.device)
    a, s = sch.alpha_sigma(t)
    shape = (-1,) + (1,) * (z.ndim - 1)
    return a.to(z.dtype).view(shape) * z + s.to(z.dtype).view(shape) * eps, t, eps


def semantic_loss(model: LatentModel, z: Tensor, cond: Tensor, generator: Generator = None) -> Tensor:
    """``|eps_theta(z_t, t, c) - eps|^2`` (mean) at one random ``t``, ``eps`` -- differentiable in ``z``."""
    zt, t, eps = _noisy(model, z, generator)
    pred = model.denoiser().x0_eps(zt, t, cond)[1]
    return (pred - eps).pow(2).mean()


def sds_direction(model: LatentModel, x: Tensor, cond: Tensor, generator: Generator = None) -> tuple[Tensor, float]:
    """The score-distillation gradient ``J_E(x)^T (eps_theta(z_t, t, c) - eps)`` with respect to the
    image (UNet forward only, backward through the encoder), and ``|eps_theta - eps|``."""
    xg = x.detach().requires_grad_(True)
    z = model.encode_image(xg)
    with torch.no_grad():
        zt, t, eps = _noisy(model, z.detach(), generator)
        delta = model.denoiser().x0_eps(zt, t, cond)[1] - eps
    (g,) = torch.autograd.grad(z, xg, grad_outputs=delta)
    return g, float(delta.norm())


def textural_loss(model: LatentModel, x: Tensor, z_target: Tensor) -> Tensor:
    """``|E(x) - z_target|^2`` (sum, as the official ``MSELoss(reduction='sum')``)."""
    return (model.encode_image(x) - z_target).pow(2).sum()


def _grad(loss_fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, float]:
    xg = x.detach().requires_grad_(True)
    loss = loss_fn(xg)
    (g,) = torch.autograd.grad(loss, xg)
    return g, float(loss)


#: name -> (needs a target pattern, random start); the update rules are in :func:`protect`.
PROTECT_METHODS: dict[str, tuple[bool, bool]] = {
    "advdm+": (False, True),
    "advdm-": (False, True),
    "photoguard": (True, True),
    "mist": (True, True),
    "sds+": (False, False),
    "sds-": (False, False),
    "sdst-": (True, False),
}


def default_target(like: Tensor) -> Tensor:
    """The fixed textural target: a high-contrast checkerboard of 4-pixel squares (a stand-in for Mist's
    ``MIST.png`` pattern), shape of ``like``."""
    h, w = like.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    board = (((yy // 4) + (xx // 4)) % 2).to(like.dtype) * 2 - 1
    return board.expand_as(like).clone()


def protect(
    model: LatentModel,
    images: Tensor,
    method: str = "sds-",
    *,
    eps: float = DEFAULT_EPS,
    step_size: float = DEFAULT_STEP,
    steps: int = DEFAULT_STEPS,
    prompt: str = "",
    target: Tensor | None = None,
    rate: float | None = None,
    generator: Generator = None,
) -> ProtectResult:
    """Protect ``images`` ``(B, 3, H, W)`` in ``[-1, 1]`` with ``method`` (one of :data:`PROTECT_METHODS`)
    within ``|delta|_inf <= eps`` (``eps`` and ``step_size`` in ``[0, 1]`` pixel units; ``eps`` in (0, 1]).

    ``prompt`` conditions the semantic loss; ``target`` is the textural target image (default
    :func:`default_target`); ``rate`` the fusion weight (mist: 1e4, sdst-: 1).
    """
    check_choice(method, PROTECT_METHODS, "method")
    model.check_image(images, "images")
    check_range(eps, "eps", 0.0, 1.0, lo_open=True)
    check_range(step_size, "step_size", 0.0, 1.0, lo_open=True)
    steps = check_int(steps, "steps", 1)
    uses_target, random_start = PROTECT_METHODS[method]
    rate = (MIST_RATE if method == "mist" else 1.0) if rate is None else check_range(rate, "rate", 0.0)
    x0 = images.detach().to(torch.float32)
    e, a = 2 * float(eps), 2 * float(step_size)  # model units ([-1, 1] images)
    with torch.no_grad():
        cond = model.encode_prompt([prompt] * x0.shape[0])
        z_target = None
        if uses_target:
            tgt = default_target(x0) if target is None else target
            check_tensor(tgt, "target", ndim=4, floating=True, shape=(None, *x0.shape[1:]))
            check_finite(tgt, "target")
            z_target = model.encode_image(tgt.expand_as(x0).to(x0.dtype))
    g0 = generator if isinstance(generator, torch.Generator) else None
    x = x0.clone()
    if random_start:
        x = (x + (torch.rand(x.shape, generator=g0) * 2 - 1) * e).clamp(-1, 1)
    losses: list[float] = []
    saved = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        with _SavedBytes() as sb, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the latent model's range check reads a leaf with grad
            if method in ("advdm+", "advdm-"):
                g, loss = _grad(lambda v: semantic_loss(model, model.encode_image(v), cond, generator), x)
                direction = g if method == "advdm+" else -g
            elif method == "photoguard":
                g, loss = _grad(lambda v: textural_loss(model, v, z_target), x)
                direction = -g
            elif method == "mist":

                def mist_loss(v: Tensor) -> Tensor:
                    z = model.encode_image(v)
                    return (z - z_target).pow(2).sum() - rate * semantic_loss(model, z, cond, generator)

                g, loss = _grad(mist_loss, x)
                direction = -g
            else:
                g, loss = sds_direction(model, x, cond, generator)
                if method == "sds+":
                    direction = g
                elif method == "sds-":
                    direction = -g
                else:  # sdst-: SDS(-) fused with the textural pull toward the target
                    g_tex, _ = _grad(lambda v: textural_loss(model, v, z_target), x)
                    direction = -rate * g - g_tex
        saved = max(saved, sb.bytes)
        losses.append(loss)
        with torch.no_grad():
            x = x + a * direction.sign()
            x = torch.minimum(torch.maximum(x, x0 - e), x0 + e).clamp(-1, 1)
    seconds = time.perf_counter() - t0
    linf = float((x - x0).abs().max()) / 2
    return ProtectResult(x.detach(), linf, seconds, saved, method, losses)


def latent_change(model: LatentModel, clean: Tensor, protected: Tensor) -> dict[str, float]:
    """The encoder's amplification: ``|dz|/|z|`` against ``|dx|/|x|`` (L2, over the batch)."""
    with torch.no_grad():
        z, zp = model.encode_image(clean), model.encode_image(protected)
    dz = float((zp - z).norm() / z.norm())
    dx = float((protected - clean).norm() / clean.norm())
    return {"dz_rel": dz, "dx_rel": dx, "ratio": dz / dx if dx > 0 else float("nan")}
