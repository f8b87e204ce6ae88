"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper.

``pred = pred_u + w (pred_c - pred_u)``: the conditional and unconditional passes run as one batch.
The combination is linear, so applying it to the native prediction (eps, x0, v, ...) equals applying it
to eps at fixed ``x_t``. The one place this formula lives.
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser

Tensor = torch.Tensor


def cfg_combine(pred_uncond: Tensor, pred_cond: Tensor, scale: float | Tensor) -> Tensor:
    """``pred_u + scale * (pred_c - pred_u)``."""
    return pred_uncond + scale * (pred_cond - pred_uncond)


def _cat_cond(cond: Any, uncond: Any) -> Any:
    if torch.is_tensor(cond):
        if not torch.is_tensor(uncond):
            raise TypeError("uncond: must be a tensor when cond is a tensor")
        if uncond.shape[0] != cond.shape[0]:
            uncond = uncond.expand(cond.shape[0], *uncond.shape[1:]) if uncond.shape[0] == 1 else uncond
        if uncond.shape != cond.shape:
            raise ValueError(f"uncond: shape {tuple(uncond.shape)} does not match cond {tuple(cond.shape)}")
        return torch.cat([cond, uncond.to(cond.dtype)])
    if isinstance(cond, dict):
        return {k: _cat_cond(v, uncond[k]) for k, v in cond.items()}
    raise TypeError(f"cond: classifier-free guidance needs tensor (or dict of tensor) conditions, got {type(cond).__name__}")


def cfg_denoiser(denoiser: Denoiser, scale: float, uncond: Any) -> Denoiser:
    """A denoiser whose call runs ``[cond; uncond]`` as one batch and combines with ``scale``.

    ``uncond`` is the null condition (a null class label, the empty-prompt embedding, ...), either one
    row (broadcast) or one per sample. ``scale = 1`` returns the conditional prediction; callers of
    the wrapped denoiser pass ``cond`` as usual.
    """
    scale = float(scale)
    if scale != scale:
        raise ValueError("scale: guidance scale is NaN")
    base = denoiser.net

    def net(x: Tensor, t: Tensor, cond: Any) -> Tensor:
        if scale == 1.0:
            return base(x, t, cond)
        out = base(torch.cat([x, x]), torch.cat([t, t]), _cat_cond(cond, uncond))
        pc, pu = out.chunk(2)
        return cfg_combine(pu, pc, scale)

    return denoiser.with_net(net)
