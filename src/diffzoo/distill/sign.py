"""SIGN-style idempotent distillation, with the adversarial IGN baseline.

IGN (Shocher et al., "Idempotent Generative Network", ICLR 2024): a network ``f`` with ``f(f(z)) = f(z)``
whose fixed points are the data. Losses (``D`` = mean L1; ``f'`` = ``f`` with frozen weights, used to route
gradients): ``L_rec = D(f(x), x)`` on data; ``L_idem = D(f'(f(z)), f(z))`` (gradient through the inner
``f``); ``L_tight = -D(f(f'(z)), f'(z))`` (gradient through the outer ``f``), clamped to
``tanh(L_tight / (a L_rec)) a L_rec``; ``L = 20 L_rec + 20 L_idem + 2.5 L_tight``, ``a = 1.5``.

SIGN (Zaman, Liu, Chiu, "Score-based Idempotent Distillation of Diffusion Models", arXiv 2509.21470)
replaces the adversarial tightness term with supervision from a pretrained diffusion model. Its equations
were not available (BRIEFS-addendum section 1: only the abstract and reviews), so this is our
reconstruction, labelled "SIGN-style": ``L = lr L_rec + li L_idem + lt L_teach + ls L_score`` with

* ``L_teach = D(f(z), SG[Phi(z)])``: regression onto the teacher's probability-flow ODE endpoint from the
  same noise (DMD's regression term; ``Phi`` = deterministic DDIM of the teacher, computed once per batch);
* ``L_score = D(f(z), SG[x0_T(alpha f(z) + sigma n, t)])``: a score-based tightness pull -- the teacher's
  denoised estimate of a re-noised output (at ``t`` uniform in the lower ``score_t_max`` part of the
  schedule) moves ``f(z)`` toward higher data density (Tweedie: ``x0_T = (x + sigma^2 grad log p) / alpha``);
* weights ``lr = li = 20`` (IGN's), ``lt = ls = 5`` (our choice; the paper's four weights are unknown).

Sampling (both): ``x_1 = f(z)``, ``x_{k+1} = f(x_k)`` (1-4 steps). The network ``f(x, t, cond)`` is any
diffzoo denoiser-shaped module, called with ``t = 0``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_choice, check_int, check_tensor
from diffzoo.distill.common import alpha_sigma_like, check_teacher, ddim_chain
from diffzoo.sampling import get_timesteps

log = logging.getLogger(__name__)
Tensor = torch.Tensor
LOSSES = ("ign", "sign")


def _l1(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().flatten(1).mean(1).mean()


def _call(f: nn.Module, x: Tensor, params: dict[str, Tensor] | None = None, cond: Any = None) -> Tensor:
    t = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    args = (x, t) if cond is None else (x, t, cond)
    return f(*args) if params is None else functional_call(f, params, args)


def iterate(f: nn.Module, z: Tensor, steps: int = 1, cond: Any = None) -> Tensor:
    """``f`` applied ``steps`` times: ``x_1 = f(z)``, ``x_{k+1} = f(x_k)`` (``cond``: class labels, if any)."""
    check_int(steps, "steps", 1)
    x = z
    for _ in range(steps):
        x = _call(f, x, cond=cond)
    return x


def ign_losses(f: nn.Module, x: Tensor, z: Tensor, a: float = 1.5, cx: Any = None, cz: Any = None) -> dict[str, Tensor]:
    """IGN's three terms (see the module docstring) for data ``x`` (labels ``cx``) and noise ``z`` (``cz``)."""
    frozen = {k: v.detach() for k, v in f.named_parameters()}
    fz = _call(f, z, cond=cz)
    rec = _l1(_call(f, x, cond=cx), x)
    idem = _l1(_call(f, fz, frozen, cz), fz)
    fz_d = _call(f, z, frozen, cz)
    tight = -_l1(_call(f, fz_d, cond=cz), fz_d)
    tight = torch.tanh(tight / (a * rec.detach().clamp(min=1e-8))) * a * rec.detach()
    return {"rec": rec, "idem": idem, "tight": tight, "fz": fz}


def sign_losses(
    f: nn.Module,
    x: Tensor,
    z: Tensor,
    teacher: Denoiser,
    target: Tensor,
    generator: torch.Generator,
    score_t_max: float,
    cx: Any = None,
    cz: Any = None,
) -> dict[str, Tensor]:
    """SIGN-style terms: IGN's ``rec`` and ``idem`` plus ``teach`` (to the teacher's ODE endpoint ``target``
    of ``z``) and ``score`` (toward the teacher's denoised re-noised output); ``cx`` / ``cz`` the labels of
    the data and of the noise (the teacher sees ``cz``)."""
    frozen = {k: v.detach() for k, v in f.named_parameters()}
    fz = _call(f, z, cond=cz)
    rec = _l1(_call(f, x, cond=cx), x)
    idem = _l1(_call(f, fz, frozen, cz), fz)
    teach = _l1(fz, target)
    sch = teacher.schedule
    lo, hi = sch.t_min, sch.t_min + score_t_max * (sch.t_max - sch.t_min)
    t = lo + (hi - lo) * torch.rand(z.shape[0], generator=generator, dtype=torch.float64)
    n = torch.randn(z.shape, generator=generator, dtype=z.dtype)
    with torch.no_grad():
        a_t, s_t = alpha_sigma_like(teacher, t, fz)
        pull = teacher.x0_eps(a_t * fz.detach() + s_t * n, t, cz)[0]
    score = _l1(fz, pull)
    return {"rec": rec, "idem": idem, "teach": teach, "score": score, "fz": fz}


WEIGHTS = {
    "ign": {"rec": 20.0, "idem": 20.0, "tight": 2.5},
    "sign": {"rec": 20.0, "idem": 20.0, "teach": 5.0, "score": 5.0},
}
ADAM_BETAS = (0.5, 0.999)  # IGN's optimiser


def idempotent_unet_config(ch: int = 16, num_classes: int = 10) -> dict[str, Any]:
    """The DigitsUNet of the digits idempotent generators (called at ``t = 0``; ``num_classes = 0``:
    unconditional)."""
    check_int(ch, "ch", 1)
    return {"ch": ch, "blocks": 1, "mults": [1, 2], "num_classes": num_classes, "emb_dim": 4 * ch}


def split_batch(batch: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor | None]:
    """``(x, labels)`` from a data draw that is ``x`` alone (unconditional) or ``(x, labels)``."""
    x, c = (batch, None) if torch.is_tensor(batch) else batch
    check_tensor(x, "data", floating=True)
    return x, c


class NoiseBank:
    """A fixed bank of ``N(0, I)`` noise (with labels drawn from the data when it is conditional) and, for
    SIGN-style, the teacher's deterministic-DDIM endpoints of every entry, computed once."""

    def __init__(
        self,
        data: Callable[[int, torch.Generator], Any],
        size: int,
        generator: torch.Generator,
        teacher: Denoiser | None,
        teacher_steps: int,
    ):
        x, c = split_batch(data(size, generator))
        self.z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        self.c = c
        self.target = None
        if teacher is not None:
            with torch.no_grad():
                ts = get_timesteps(check_teacher(teacher).schedule, teacher_steps)
                self.target = torch.cat(
                    [
                        ddim_chain(teacher, z, ts, None if c is None else c[i : i + 512])
                        for i, z in zip(range(0, size, 512), self.z.split(512))
                    ]
                )

    def draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Any, Tensor | None]:
        idx = torch.randint(self.z.shape[0], (n,), generator=generator)
        return (
            self.z[idx],
            None if self.c is None else self.c[idx],
            None if self.target is None else self.target[idx],
        )


def idempotent_loss(
    f: nn.Module,
    method: str,
    x: Tensor,
    cx: Any,
    z: Tensor,
    cz: Any,
    target: Tensor | None,
    teacher: Denoiser | None,
    generator: torch.Generator,
    score_t_max: float = 0.3,
) -> Tensor:
    """The weighted loss of ``method`` (``WEIGHTS``) for one batch of data and of bank noise."""
    if method == "ign":
        terms = ign_losses(f, x, z, cx=cx, cz=cz)
    else:
        terms = sign_losses(f, x, z, teacher, target, generator, score_t_max, cx, cz)
    return sum(w * terms[k] for k, w in WEIGHTS[method].items())


@dataclass
class IdempotentResult:
    model: nn.Module
    losses: list[float]


def train_idempotent(
    f: nn.Module,
    data: Callable[[int, torch.Generator], Any],
    method: str,
    *,
    teacher: Denoiser | None = None,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    teacher_steps: int = 25,
    score_t_max: float = 0.3,
    bank: int = 4096,
) -> IdempotentResult:
    """Train ``f`` (in place, Adam with IGN's betas (0.5, 0.999)) with ``method`` ``"ign"`` or ``"sign"``
    (which needs ``teacher``); ``data(n, generator)`` draws data (``x`` or ``(x, labels)``), the noise comes
    from a :class:`NoiseBank` of ``bank`` draws. The in-process loop of the benchmark's seed sweeps; the
    shipped students train with the shared trainer (recipe ``distill-sign``, resumable) on the same loss."""
    check_choice(method, LOSSES, "method")
    check_int(steps, "steps", 1)
    if method == "sign":
        check_teacher(teacher)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(f.parameters(), lr=lr, betas=ADAM_BETAS)
    noise = NoiseBank(data, bank, g, teacher if method == "sign" else None, teacher_steps)
    losses = []
    for _ in range(steps):
        x, cx = split_batch(data(batch_size, g))
        z, cz, target = noise.draw(batch_size, g)
        loss = idempotent_loss(f, method, x, cx, z, cz, target, teacher, g, score_t_max)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return IdempotentResult(f, losses)


def fresh_copy(f: nn.Module) -> nn.Module:
    """An independent trainable copy (the same initial weights for both methods)."""
    return copy.deepcopy(f).requires_grad_(True).train()
