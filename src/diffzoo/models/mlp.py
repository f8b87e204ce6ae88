"""An MLP denoiser for low-dimensional (toy) data, with a sinusoidal time embedding.

``MLPDenoiser(dim)(x, t, cond=None)`` predicts the schedule's target (epsilon by default) for
``x`` of shape ``(B, dim)`` and model times ``t`` of shape ``(B,)``. The time embedding is the
transformer / DDPM sinusoidal embedding (Vaswani et al. 2017, Sec. 3.5; Ho et al. 2020, App. B) of
``time_scale * t``; use ``time_scale=1000`` for continuous schedules with ``t in [0, 1]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_tensor
from diffzoo.models.registry import register_arch

Tensor = torch.Tensor


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[cos(t w_k), sin(t w_k)]`` with ``w_k = max_period^(-k / (dim/2))``."""
    half = dim // 2
    dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32  # float64 nets stay float64
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], -1)
    return nn.functional.pad(emb, (0, dim % 2)) if dim % 2 else emb


class TimeMLP(nn.Module):
    """Sinusoidal embedding followed by a 2-layer MLP (DDPM's time embedding)."""

    def __init__(self, freq_dim: int, out_dim: int, time_scale: float = 1.0):
        super().__init__()
        self.freq_dim, self.time_scale = freq_dim, float(time_scale)
        self.net = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.net(timestep_embedding(t * self.time_scale, self.freq_dim))


class MLPDenoiser(nn.Module):
    """Residual MLP ``(x, t[, class]) -> prediction`` for ``dim``-dimensional data.

    The (time + class) embedding is added to the input projection and, with ``time_every_block``
    (default), to the input of every residual block, so each block can be time-dependent.
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 256,
        depth: int = 4,
        time_dim: int = 64,
        num_classes: int = 0,
        time_scale: float = 1.0,
        time_every_block: bool = True,
        fourier_octaves: int = 0,
    ):
        super().__init__()
        self.dim, self.num_classes = int(dim), int(num_classes)
        self.sample_shape = (self.dim,)  # one sample: a point in R^dim
        self.time_every_block = bool(time_every_block)
        self.fourier_octaves = int(fourier_octaves)
        self.time = TimeMLP(time_dim, hidden, time_scale)
        self.label = nn.Embedding(num_classes + 1, hidden) if num_classes > 0 else None
        self.inp = nn.Linear(dim * (1 + 2 * self.fourier_octaves), hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def encode_input(self, x: Tensor) -> Tensor:
        """``[x, sin(2^k x), cos(2^k x)]_{k < fourier_octaves}``: positional encoding (Tancik et al. 2020)
        that lets the MLP fit the sharp, local structure of tight modes (spectral bias)."""
        if not self.fourier_octaves:
            return x
        freqs = 2.0 ** torch.arange(self.fourier_octaves, device=x.device, dtype=x.dtype)
        ang = (x[:, :, None] * freqs).flatten(1)
        return torch.cat([x, ang.sin(), ang.cos()], -1)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        check_tensor(x, "x", ndim=2, shape=(None, self.dim))
        emb = self.time(t.expand(x.shape[0]) if t.ndim == 0 else t)
        if self.label is not None:
            labels = torch.full((x.shape[0],), self.num_classes, device=x.device) if cond is None else cond
            emb = emb + self.label(labels.long())
        h = self.inp(self.encode_input(x)) + emb
        for blk in self.blocks:
            h = h + blk(h + emb if self.time_every_block else h)
        return self.out(h)


@register_arch("mlp")
def build_mlp(**config: Any) -> MLPDenoiser:
    return MLPDenoiser(**config)
