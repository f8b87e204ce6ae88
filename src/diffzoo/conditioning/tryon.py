"""IDM-VTON-style virtual try-on: masked inpainting sampling with exact preservation outside the mask,
pattern-fidelity measures, and test-time customisation.

*Improving Diffusion Models for Authentic Virtual Try-on in the Wild* (IDM-VTON, Choi et al., ECCV 2024,
arXiv 2403.05139). The TryonNet inpaints the masked person given the garment; the result outside the
mask is the person itself (here pasted back exactly: ``out = m * x + (1 - m) * person``). The paper's
customisation fine-tunes the model on one person-garment pair (an image of someone wearing the garment)
before trying the garment on others; :func:`customize` does that with the masked epsilon loss.

The denoiser's network reads ``cond`` as the dict ``{person, mask, garment, tokens}`` of
:class:`~diffzoo.models.tryon.TryonUNet` (``person`` is the *masked* person there).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_int, check_range, check_tensor
from diffzoo.core.random import generators_from_seeds
from diffzoo.sampling import get_timesteps, initial_noise, sample

Tensor = torch.Tensor


def make_cond(person: Tensor, mask: Tensor, garment: Tensor, tokens: Tensor | None = None) -> dict[str, Tensor]:
    """The network's conditioning dict: the person blanked inside the mask, the mask, the garment and the
    caption tokens (all-null when ``None``)."""
    b = person.shape[0]
    tok = torch.zeros(b, 4, dtype=torch.long) if tokens is None else tokens
    return {"person": person * (1 - mask), "mask": mask, "garment": garment, "tokens": tok}


def composite(x: Tensor, person: Tensor, mask: Tensor) -> Tensor:
    """``mask * x + (1 - mask) * person``: outside the mask the result *is* the person (bit-exact)."""
    return torch.where(mask.bool().expand_as(x), x, person)


def tryon_sample(
    denoiser: Denoiser,
    person: Tensor,
    mask: Tensor,
    garment: Tensor,
    tokens: Tensor | None = None,
    *,
    num_steps: int = 25,
    sampler: str = "ddim",
    seeds: Sequence[int] | None = None,
) -> Tensor:
    """Try ``garment (B, 3, G, G)`` on ``person (B, 3, H, W)`` inside ``mask (B, 1, H, W)``: sample the
    masked region and paste the person back outside it. Returns ``(B, 3, H, W)`` in ``[-1, 1]``."""
    check_tensor(person, "person", ndim=4, floating=True)
    check_tensor(mask, "mask", ndim=4, shape=(person.shape[0], 1, *person.shape[2:]))
    num_steps = check_int(num_steps, "num_steps", lo=1)
    b = person.shape[0]
    seeds = list(range(b)) if seeds is None else list(seeds)
    if len(seeds) != b:
        raise ValueError(f"seeds: expected {b} seeds, got {len(seeds)}")
    ts = get_timesteps(denoiser.schedule, num_steps)
    gens = generators_from_seeds(seeds)
    x = initial_noise(denoiser, tuple(person.shape), ts, gens)
    out = sample(sampler, denoiser, x, ts, make_cond(person, mask, garment, tokens), generator=gens)
    return composite(out.clamp(-1, 1), person, mask.to(out.dtype))


def masked_diffusion_loss(
    model: torch.nn.Module,
    target: Tensor,
    cond: dict[str, Tensor],
    schedule: Any,
    generator: torch.Generator,
    prediction_type: str = "epsilon",
) -> Tensor:
    """Denoising loss averaged over the masked region only (Ho et al. 2020, Eq. 14 restricted to the mask):
    ``x_t = alpha_t target + sigma_t eps``, ``t`` uniform over the discrete schedule's steps; the network
    predicts ``eps`` (``prediction_type="epsilon"``) or the clean image (``"sample"``)."""
    mask = cond["mask"]
    b = target.shape[0]
    t = torch.randint(int(schedule.t_max) + 1, (b,), generator=generator).to(torch.float64)
    eps = torch.randn(target.shape, generator=generator).to(target)
    a, s = (v.to(target).reshape(b, 1, 1, 1) for v in schedule.alpha_sigma(t))
    pred = model(a * target + s * eps, t.to(target.device), cond)
    goal = target if prediction_type == "sample" else eps
    return ((pred - goal) ** 2 * mask).sum() / (3 * mask.sum()).clamp(min=1)


def customize(
    denoiser: Denoiser,
    person: Tensor,
    mask: Tensor,
    garment: Tensor,
    target: Tensor,
    tokens: Tensor | None = None,
    *,
    steps: int = 50,
    lr: float = 2e-4,
    batch: int = 8,
    seed: int = 0,
) -> Denoiser:
    """Test-time customisation (IDM-VTON Sec. 3.3): fine-tune a copy of the network for ``steps`` Adam
    steps on one pair (``person`` wearing ``garment`` is ``target``; the batch repeats it with fresh
    noise levels) and return a denoiser around the copy (the original is untouched)."""
    steps = check_int(steps, "steps", lo=0)
    check_range(lr, "lr", 0, None, lo_open=True)
    net = copy.deepcopy(denoiser.net).train().requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    rep = [person, mask, garment, target] + ([tokens] if tokens is not None else [])
    rep = [v[:1].expand(batch, *v.shape[1:]).contiguous() for v in rep]
    cond = make_cond(rep[0], rep[1], rep[2], rep[4] if tokens is not None else None)
    for _ in range(steps):
        loss = masked_diffusion_loss(net, rep[3], cond, denoiser.schedule, gen, denoiser.prediction_type)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval().requires_grad_(False)
    return denoiser.with_net(net)


# --------------------------------------------------------------------------------------------- metrics
def masked_psnr(x: Tensor, y: Tensor, mask: Tensor, data_range: float = 2.0) -> Tensor:
    """Per-image PSNR (dB) over the masked pixels only (``(B,)``)."""
    m = mask.expand_as(x).to(x.dtype)
    mse = ((x - y) ** 2 * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)
    return 10 * torch.log10(data_range**2 / mse.clamp(min=1e-12))


def outside_max_error(x: Tensor, person: Tensor, mask: Tensor) -> float:
    """Largest absolute difference to the person outside the mask (0.0 means exact preservation)."""
    keep = ~mask.bool().expand_as(x)
    return float((x - person).abs()[keep].max()) if bool(keep.any()) else 0.0


def mask_box(mask: Tensor) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the bounding box of a ``(1, H, W)`` or ``(H, W)`` mask."""
    m = mask.reshape(mask.shape[-2:]).bool()
    rows, cols = m.any(1).nonzero()[:, 0], m.any(0).nonzero()[:, 0]
    if len(rows) == 0:
        raise ValueError("mask: empty")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def dominant_frequency(region: Tensor) -> tuple[int, int]:
    """The dominant spatial frequency ``(|k_y|, |k_x|)`` (periods across the region) of a ``(3, h, w)``
    region: the 2-D DFT peak (DC excluded) of the pixels' projection on their principal colour axis."""
    c = region.double().reshape(3, -1)
    c = c - c.mean(1, keepdim=True)
    if float(c.abs().max()) < 1e-9:
        return (0, 0)
    u, _, _ = torch.linalg.svd(c, full_matrices=False)
    proj = (u[:, 0] @ c).reshape(region.shape[1:])
    mag = torch.fft.fft2(proj).abs()
    mag[0, 0] = 0
    h, w = proj.shape
    i = int(mag.flatten().argmax())
    ky, kx = divmod(i, w)
    return min(ky, h - ky), min(kx, w - kx)


def dominant_colors(region: Tensor, palette: dict[str, tuple[float, float, float]], k: int = 2) -> set[str]:
    """The ``k`` palette colours (``[0, 1]`` RGB) most pixels of ``region (3, h, w)`` in ``[-1, 1]`` are closest to."""
    names = list(palette)
    pal = torch.tensor([palette[n] for n in names], dtype=torch.float64) * 2 - 1
    px = region.double().reshape(3, -1).T
    idx = torch.cdist(px, pal).argmin(1)
    counts = torch.bincount(idx, minlength=len(names))
    return {names[int(i)] for i in counts.argsort(descending=True)[:k]}


def pattern_match(
    out: Tensor, target: Tensor, mask: Tensor, palette: dict[str, tuple[float, float, float]]
) -> tuple[bool, bool]:
    """Whether the try-on result ``out (3, H, W)`` has the target's dominant frequency and its two colours
    inside the mask's box."""
    top, bottom, left, right = mask_box(mask)
    o, g = out[:, top:bottom, left:right], target[:, top:bottom, left:right]
    return dominant_frequency(o) == dominant_frequency(g), dominant_colors(o, palette) == dominant_colors(g, palette)


__all__ = [
    "composite",
    "customize",
    "dominant_colors",
    "dominant_frequency",
    "make_cond",
    "mask_box",
    "masked_diffusion_loss",
    "masked_psnr",
    "outside_max_error",
    "pattern_match",
    "tryon_sample",
]
