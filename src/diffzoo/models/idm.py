"""IDM for compressed sensing at digits scale (Chen et al., "Invertible Diffusion Models for Compressed
Sensing", TPAMI 2025; BRIEFS section 19).

A ``T``-step DDIM chain becomes the reconstruction network and is trained end to end:

    abar = [1, cumprod(alpha)],  alpha = sigmoid(a) in (0, 1)^T learnable (init 0.5)
    x1 = x2 = sqrt(abar_T) A^T y                     (two-channel state for the coupling; x2 scaled by s)
    for k = T..1, each a reversible coupling (x1, x2) -> ((1 - v_k) F_k(x1) + v_k x2, x1):
        e = eps_unet(x1, t(abar_k)) + R(x1; A, y)     (pretrained UNet, null class, + invertible injector net)
        x0 = (x1 - sqrt(1 - abar_k) e) / sqrt(abar_k);  x0 <- x0 - A^T(A x0 - y)   (range-space projection)
        F_k(x1) = sqrt(abar_{k-1}) x0 + sqrt(1 - abar_{k-1}) e
    out = x1 + m x2  (m learnable, init 0);  loss = L1(out, x)

Level 1 (sampling steps) and level 2 (the injector network ``R``: reversible coupling blocks whose
``G`` contains IDM's measurement-injection module ``h += i2f([f2i(h), A^T A f2i(h), A^T y])``) both run
under :func:`diffzoo.models.reversible.rev_sequence`. Scale-down honestly stated: the pretrained
digits UNet (concatenated skips) is *not* itself made reversible -- its activations are recomputed one
step at a time in the backward pass (level 1 still removes the ``T``-fold activation stack); the
reversible level-2 blocks are the injector branch. The model time fed to the UNet is the (detached)
fractional timestep whose ``abar`` equals the learned ``abar_k``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from diffzoo.core.schedules import NoiseSchedule, get_schedule
from diffzoo.models.registry import build, register_arch
from diffzoo.models.reversible import RevCoupling, rev_sequence

Tensor = torch.Tensor


class LinearOperator(Protocol):
    """What the chain needs of its measurement operator (e.g. :class:`diffzoo.inverse.CompressedSensing`,
    passed in at call time: a network never imports an algorithm)."""

    def forward(self, x: Tensor) -> Tensor: ...  # A x

    def adjoint(self, y: Tensor) -> Tensor: ...  # A^T y

    def At(self, y: Tensor) -> Tensor: ...  # A^T y in image shape

    def project(self, x: Tensor, y: Tensor) -> Tensor: ...  # x + A^+ (y - A x)


class MeasurementContext:
    """The operator and measurement the chain is conditioned on (set per forward call)."""

    def __init__(self) -> None:
        self.op: LinearOperator | None = None
        self.y: Tensor | None = None
        self.aty: Tensor | None = None

    def set(self, op: LinearOperator, y: Tensor) -> None:
        self.op, self.y, self.aty = op, y, op.At(y)

    def require(self) -> tuple[LinearOperator, Tensor, Tensor]:
        if self.op is None:
            raise ValueError("op: call the IDM chain with an operator and a measurement")
        return self.op, self.y, self.aty  # type: ignore[return-value]


class Injector(nn.Module):
    """IDM's measurement injection: ``h + i2f([f2i(h), A^T A f2i(h), A^T y])`` (init: identity)."""

    def __init__(self, ch: int, ctx: MeasurementContext, img_ch: int = 1):
        super().__init__()
        self.ctx = ctx
        self.f2i = nn.Conv2d(ch, img_ch, 3, padding=1)
        self.i2f = nn.Conv2d(3 * img_ch, ch, 3, padding=1)
        nn.init.zeros_(self.i2f.weight)
        nn.init.zeros_(self.i2f.bias)

    def forward(self, h: Tensor) -> Tensor:
        op, _, aty = self.ctx.require()
        z = self.f2i(h)
        ata = op.adjoint(op.forward(z))
        return h + self.i2f(torch.cat([z, ata, aty.to(z.dtype).expand_as(z)], 1))


class InjectedBlock(nn.Module):
    """``G(h) = conv(SiLU(GN(conv(inject(h)))))``: the F of one level-2 reversible coupling."""

    def __init__(self, ch: int, ctx: MeasurementContext):
        super().__init__()
        self.inject = Injector(ch, ctx)
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1)
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.body(self.inject(h))


class RevInjectorNet(nn.Module):
    """Level-2 invertible estimator branch: lift -> reversible injected blocks -> zero-init head."""

    def __init__(self, ctx: MeasurementContext, ch: int = 16, blocks: int = 2, img_ch: int = 1):
        super().__init__()
        self.lift = nn.Conv2d(img_ch, 2 * ch, 3, padding=1)
        self.blocks = nn.ModuleList(RevCoupling(InjectedBlock(ch, ctx)) for _ in range(blocks))
        self.head = nn.Conv2d(2 * ch, img_ch, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.invertible = True

    def forward(self, x: Tensor) -> Tensor:
        h1, h2 = self.lift(x).chunk(2, 1)
        h1, h2 = rev_sequence(self.blocks, h1, h2, self.invertible)
        return self.head(torch.cat([h1, h2], 1))


class IDMStep(nn.Module):
    """``F_k(x1)``: one projected DDIM step from ``abar_k`` to ``abar_{k-1}`` (see module docstring)."""

    def __init__(self, chain: IDMChain, k: int):
        super().__init__()
        self.k = k
        object.__setattr__(self, "_chain", chain)  # shared parameters live in the chain, not here

    def forward(self, x1: Tensor) -> Tensor:
        ch: IDMChain = self._chain  # type: ignore[assignment]
        op, y, _ = ch.ctx.require()
        abar = ch.abar().to(x1.dtype)
        a_t, s_t = abar[self.k].sqrt(), (1 - abar[self.k]).sqrt()
        a_s, s_s = abar[self.k - 1].sqrt(), (1 - abar[self.k - 1]).clamp(min=0).sqrt()
        e = ch.noise(x1, abar[self.k])
        x0 = op.project((x1 - s_t * e) / a_t, y.to(x1.dtype))
        return a_s * x0 + s_s * e


class IDMChain(nn.Module):
    """The IDM reconstruction network: ``chain(y, op) -> x_hat`` (see the module docstring)."""

    def __init__(
        self,
        unet: nn.Module,
        schedule: NoiseSchedule,
        steps: int = 3,
        ch: int = 16,
        blocks: int = 2,
        null_class: int | None = 10,
    ):
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {steps}")
        self.unet, self.schedule, self.null_class = unet, schedule, null_class
        self.ctx = MeasurementContext()
        self.alpha_raw = nn.Parameter(torch.zeros(steps))  # sigmoid(0) = 0.5 (IDM init)
        self.s = nn.Parameter(torch.ones(()))
        self.m = nn.Parameter(torch.zeros(()))
        self.injector = RevInjectorNet(self.ctx, ch, blocks)
        self.steps = nn.ModuleList(RevCoupling(IDMStep(self, k)) for k in range(steps, 0, -1))
        self.invertible = True

    def abar(self) -> Tensor:
        """``[1, cumprod(alpha)]``: decreasing in ``(0, 1]`` by construction."""
        a = torch.sigmoid(self.alpha_raw)
        return torch.cat([a.new_ones(1), torch.cumprod(a, 0)])

    def model_time(self, abar: Tensor) -> Tensor:
        """The (detached) fractional model time whose ``abar`` equals ``abar``."""
        ve = ((1 - abar) / abar).sqrt().detach().to(torch.float64)
        return self.schedule.t_from_ve_sigma(ve.reshape(1)).clamp(self.schedule.t_min, self.schedule.t_max)

    def noise(self, x: Tensor, abar: Tensor) -> Tensor:
        t = self.model_time(abar).to(x.dtype).expand(x.shape[0])
        cond = None if self.null_class is None else torch.full((x.shape[0],), self.null_class, dtype=torch.long)
        return self.unet(x, t, cond) + self.injector(x)

    def forward(self, y: Tensor, op: LinearOperator, invertible: bool | None = None) -> Tensor:
        inv = self.invertible if invertible is None else invertible
        self.injector.invertible = inv
        self.ctx.set(op, y)
        try:
            x = self.abar()[-1].sqrt().to(y.dtype) * op.At(y)
            x1, x2 = rev_sequence(
                self.steps,
                x,
                self.s.to(x.dtype) * x,
                inv,
                extra_params=[p for n, p in self.named_parameters() if not n.startswith("steps.")],
            )
            return x1 + self.m.to(x1.dtype) * x2
        finally:
            self.injector.invertible = True


@register_arch("idm_cs")
def build_idm_cs(
    unet_arch: str = "digits_unet",
    unet_config: dict[str, Any] | None = None,
    schedule: dict[str, Any] | None = None,
    steps: int = 3,
    ch: int = 16,
    blocks: int = 2,
    null_class: int | None = 10,
) -> IDMChain:
    """Build an :class:`IDMChain` around a fresh ``unet_arch`` (weights come from the zoo file)."""
    sch = schedule or {"name": "linear", "kwargs": {}}
    unet = build(unet_arch, **dict(unet_config or {}))
    return IDMChain(unet, get_schedule(sch["name"], **sch.get("kwargs", {})), steps, ch, blocks, null_class)
