"""EDM preconditioning around the digits UNet (Karras et al. 2022, *Elucidating the Design Space of
Diffusion-Based Generative Models*, arXiv 2206.00364, Table 1; the network PFGM++ keeps unchanged, Xu et
al. 2023, arXiv 2302.04265, Sec. 4).

``D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))`` with ``c_skip =
sigma_data^2 / (sigma^2 + sigma_data^2)``, ``c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``,
``c_in = 1 / sqrt(sigma^2 + sigma_data^2)``, ``c_noise = ln(sigma) / 4``. The module's call is
``model(x, sigma, cond) -> D(x; sigma)``: a ``sample`` (x0) prediction on the VE/EDM schedule (``t =
sigma``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_tensor
from diffzoo.models.registry import register_arch
from diffzoo.models.unet import DigitsUNet

Tensor = torch.Tensor


class EDMPrecond(nn.Module):
    """EDM-preconditioned :class:`~diffzoo.models.unet.DigitsUNet`: ``forward(x, sigma, cond) -> x0``."""

    def __init__(self, sigma_data: float = 0.5, **unet: Any):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data: must be > 0, got {sigma_data}")
        self.sigma_data = float(sigma_data)
        self.unet = DigitsUNet(**unet)
        self.sample_shape = self.unet.sample_shape

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in, c_noise)`` at per-sample ``sigma`` (shape ``(B,)``)."""
        sd2 = self.sigma_data**2
        s2 = sigma * sigma
        c_skip = sd2 / (s2 + sd2)
        c_out = sigma * self.sigma_data / (s2 + sd2).sqrt()
        c_in = 1.0 / (s2 + sd2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def forward(self, x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor:
        check_tensor(x, "x", ndim=4)
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        c_skip, c_out, c_in, c_noise = (c[:, None, None, None] for c in self.coefficients(sigma))
        f = self.unet(c_in * x, c_noise.reshape(-1), cond)
        return c_skip * x + c_out * f


@register_arch("edm_digits_unet")
def build_edm_digits_unet(**config: Any) -> EDMPrecond:
    if "mults" in config:
        config["mults"] = tuple(config["mults"])
    return EDMPrecond(**config)
