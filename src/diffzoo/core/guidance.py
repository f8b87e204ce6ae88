"""Classifier-free guidance (Ho & Salimans 2022): the one batcher and the one combination.

``pred = pred_u + w (pred_c - pred_u)``: the conditional and unconditional passes run as one batch
``[cond; uncond]`` of ``2B`` rows (so that attention controllers see every row of both passes), and
``w = 1`` runs the conditional pass alone. The combination is applied to the network's native
prediction (eps, x0, v, ...), before the denoiser converts it to ``(x0, eps)`` and applies any x0
correction; the conversion is affine in the prediction at fixed ``x_t``, so this equals combining
``eps`` (or ``x0``). :func:`cfg_combine` is the one place the formula lives, :func:`cfg_denoiser` the
one place the batch is built; :func:`guided_x0_eps` is the per-call form used by inversion and editing
(per-sample scales, a null condition that changes per step).
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
    raise TypeError(
        f"cond: classifier-free guidance needs tensor (or dict of tensor) conditions, got {type(cond).__name__}"
    )


def _check_scale(scale: float | Tensor) -> tuple[float | Tensor, bool]:
    """``(scale, all_one)``: a Python float, or a 1-D tensor of one scale per sample."""
    if torch.is_tensor(scale) and scale.ndim > 0:
        if scale.ndim != 1 or not scale.is_floating_point():
            raise ValueError(
                f"scale: expected a float or a 1-D floating tensor (one scale per sample), got "
                f"shape {tuple(scale.shape)} {scale.dtype}"
            )
        if not bool(torch.isfinite(scale).all()):
            raise ValueError("scale: guidance scales must be finite")
        return scale.detach(), bool((scale == 1).all())
    scale = float(scale)
    if scale != scale:
        raise ValueError("scale: guidance scale is NaN")
    return scale, scale == 1.0


def cfg_denoiser(denoiser: Denoiser, scale: float | Tensor, uncond: Any) -> Denoiser:
    """A denoiser whose call runs ``[cond; uncond]`` as one batch and combines with ``scale``.

    ``uncond`` is the null condition (a null class label, the empty-prompt embedding, ...), either one
    row (broadcast) or one per sample, or a zero-argument callable returning it at each network call
    (null-text inversion's per-step embeddings inside one sampler run). ``scale`` is one float, or a 1-D
    tensor of one scale per sample
    (e.g. an edit batch ``[source; target]`` with different scales per branch). ``scale = 1`` everywhere
    returns the conditional prediction alone (``uncond`` may then be ``None``); callers of the wrapped
    denoiser pass ``cond`` as usual. The wrapper counts its own ``nfe`` (one per batched call).
    """
    scale, all_one = _check_scale(scale)
    base = denoiser.net
    if all_one:
        return denoiser.with_net(base)
    if uncond is None:
        raise TypeError("uncond: classifier-free guidance with scale != 1 needs the null condition")
    per_sample = scale if isinstance(scale, Tensor) else None

    def net(x: Tensor, t: Tensor, cond: Any) -> Tensor:
        null = uncond() if callable(uncond) else uncond
        out = base(torch.cat([x, x]), torch.cat([t, t]), _cat_cond(cond, null))
        pc, pu = out.chunk(2)
        if per_sample is None:
            return cfg_combine(pu, pc, scale)
        if per_sample.shape[0] != pc.shape[0]:
            raise ValueError(f"scale: got {per_sample.shape[0]} per-sample scales for a batch of {pc.shape[0]}")
        w = per_sample.to(device=pc.device, dtype=pc.dtype).reshape(-1, *([1] * (pc.ndim - 1)))
        return cfg_combine(pu, pc, w)

    return denoiser.with_net(net)


def guided_x0_eps(
    denoiser: Denoiser, x: Tensor, t: Tensor | float, cond: Any, uncond: Any, scale: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Classifier-free guided ``(x0, eps)`` of ``denoiser`` at ``(x, t)``: :func:`cfg_denoiser`'s batch,
    evaluated once.

    For loops whose null condition or scales change from call to call (null-text inversion's per-step
    embeddings, per-branch scales of an edit). ``scale == 1`` everywhere runs the conditional pass alone
    (``uncond`` may then be ``None``). The network call is counted in ``denoiser.nfe``.
    """
    guided = cfg_denoiser(denoiser, scale, uncond)
    try:
        return guided.x0_eps(x, t, cond)
    finally:
        denoiser.nfe += guided.nfe
