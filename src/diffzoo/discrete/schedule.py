"""Masking schedules of absorbing-state (masked) diffusion.

Forward process (Zheng et al., arXiv 2409.02908, Sec. 2; Sahoo et al. MDLM; Shi et al. MD4): each token
independently stays itself with probability ``alpha_t`` and becomes ``[MASK]`` otherwise,

    q(x_t^i | x_0^i) = alpha_t * delta(x_0^i) + (1 - alpha_t) * delta(m),   alpha_0 = 1, alpha_1 = 0.

* ``linear``: ``alpha_t = 1 - t``;
* ``cosine``: ``alpha_t = cos(pi t / 2)`` (MaskGIT-style, fewer masks early in the reverse process).

The continuous-time ELBO weight is ``-alpha'_t / (1 - alpha_t)`` (``1/t`` for linear).
"""

from __future__ import annotations

import math

import torch

from diffzoo.core.errors import check_choice

Tensor = torch.Tensor

MASK_SCHEDULES = ("linear", "cosine")


class MaskSchedule:
    """``alpha(t)``, ``d_alpha(t)``, its inverse ``t_of_alpha(a)`` and the ELBO weight, for ``t`` in [0, 1]."""

    def __init__(self, name: str = "linear") -> None:
        check_choice(name, MASK_SCHEDULES, "schedule")
        self.name = name

    def alpha(self, t: Tensor) -> Tensor:
        """Probability that a token is still unmasked at time ``t``."""
        if self.name == "linear":
            return 1.0 - t
        return torch.cos(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        """``d alpha / dt`` (negative)."""
        if self.name == "linear":
            return -torch.ones_like(t)
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def t_of_alpha(self, a: Tensor) -> Tensor:
        """Inverse of :meth:`alpha` (used by the first-hitting sampler to map hitting levels to times)."""
        a = a.clamp(0.0, 1.0)
        if self.name == "linear":
            return 1.0 - a
        return torch.arccos(a) * (2.0 / math.pi)

    def elbo_weight(self, t: Tensor) -> Tensor:
        """``-alpha'_t / (1 - alpha_t)``, the per-masked-token weight of the continuous-time ELBO."""
        return -self.d_alpha(t) / (1.0 - self.alpha(t)).clamp_min(1e-12)

    def __repr__(self) -> str:
        return f"MaskSchedule({self.name!r})"


def get_mask_schedule(schedule: str | MaskSchedule) -> MaskSchedule:
    """A :class:`MaskSchedule` from its name (or the schedule itself)."""
    return schedule if isinstance(schedule, MaskSchedule) else MaskSchedule(schedule)
