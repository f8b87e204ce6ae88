"""SIMPLE SHAPES: the hallucination paper's image data set (Aithal et al., *Understanding Hallucinations in
Diffusion Models through Mode Interpolation*, NeurIPS 2024, arXiv 2406.09358; official
``shapes/gen_simple_shapes_dataset.py``), rendered procedurally at a small size.

A binary image (``(1, S, S)`` in ``{-1, 1}``, white shapes on black) of three vertical strips; strip ``k``
may hold only shape ``k`` (triangle, square, pentagon), present with probability 0.5 at a random vertical
position inside its strip -- so every real image holds at most one of each shape. A *hallucination* is an
image a model generates outside that support: a strip with two or more shapes (a repeated shape), or a
shape of the wrong kind in a strip.

:func:`read_strips` is the shapes detector used to find hallucinations: per strip, the connected
components of the binarised image (``scipy.ndimage.label``) and each component's kind from its fill ratio
inside its bounding box (square ~1, pentagon ~0.7, triangle ~0.5).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from diffzoo.core.errors import check_int, check_tensor

KINDS = ("triangle", "square", "pentagon")
SIZE = 32
#: Fill ratio (area / bounding-box area) boundaries between triangle | pentagon | square.
_FILL_EDGES = (0.6, 0.85)


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    n = 3 if kind == "triangle" else 5
    return [(cx + r * math.sin(2 * math.pi * i / n), cy - r * math.cos(2 * math.pi * i / n)) for i in range(n)]


def render(present: list[bool], ys: list[float], size: int = SIZE) -> torch.Tensor:
    """One image: shape ``k`` in strip ``k`` where ``present[k]``, centred at relative height ``ys[k]``."""
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    w = size / 3
    r = 0.32 * w
    for k, kind in enumerate(KINDS):
        if present[k]:
            cy = r + 1 + ys[k] * (size - 2 * r - 2)
            d.polygon(_polygon(kind, (k + 0.5) * w, cy, r), fill=255)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1)
    return (x > 0).float().mul(2).sub(1)[None]


def sample(n: int, seed: int, size: int = SIZE, p: float = 0.5) -> torch.Tensor:
    """``n`` images ``(n, 1, size, size)`` in ``{-1, 1}`` (each shape present with probability ``p``)."""
    n = check_int(n, "n", 0)
    g = torch.Generator().manual_seed(int(seed))
    pres = torch.rand(n, 3, generator=g) < p
    ys = torch.rand(n, 3, generator=g)
    if n == 0:
        return torch.zeros(0, 1, size, size)
    return torch.stack([render(pres[i].tolist(), ys[i].tolist(), size) for i in range(n)])


def read_strips(images: torch.Tensor, min_pixels: int = 4) -> list[list[list[str]]]:
    """For each image, for each strip, the kinds of the shapes found there (components of at least
    ``min_pixels`` pixels)."""
    from scipy import ndimage

    check_tensor(images, "images", ndim=4, floating=True, shape=(None, 1, None, None))
    size = images.shape[-1]
    out = []
    for x in (images[:, 0] > 0).cpu().numpy():
        strips: list[list[str]] = [[], [], []]
        lab, num = ndimage.label(x)
        for j, sl in enumerate(ndimage.find_objects(lab)):
            comp = lab[sl] == j + 1
            if comp.sum() < min_pixels:
                continue
            fill = comp.sum() / comp.size
            kind = "triangle" if fill < _FILL_EDGES[0] else ("pentagon" if fill < _FILL_EDGES[1] else "square")
            cx = (sl[1].start + sl[1].stop) / 2
            strips[min(2, int(cx / (size / 3)))].append(kind)
        out.append(strips)
    return out


def is_hallucination(images: torch.Tensor) -> torch.Tensor:
    """Bool per image: a strip with two or more shapes, or a shape of the wrong kind in a strip."""
    flags = []
    for strips in read_strips(images):
        bad = any(len(s) > 1 or (s and s[0] != KINDS[k]) for k, s in enumerate(strips))
        flags.append(bad)
    return torch.tensor(flags, dtype=torch.bool)
