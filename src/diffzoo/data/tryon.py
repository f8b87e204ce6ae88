"""The try-on world: procedural "person" canvases, garment images and the exact try-on target (the data
of the IDM-VTON analogue; *Improving Diffusion Models for Authentic Virtual Try-on in the Wild*, Choi et
al., ECCV 2024, arXiv 2403.05139).

A :class:`Person` is a figure on a plain background (``CANVAS`` x ``CANVAS``, 24 x 24): a head, two legs,
two arms at pose angles and a rectangular torso wearing an old shirt of one colour. The torso rectangle
(position and size follow the pose) is the *mask*: the region the try-on model must fill. A
:class:`Garment` is a two-colour pattern (horizontal stripes, vertical stripes or checks) with a
frequency (periods across the garment); its image is the pattern on a ``GARMENT`` x ``GARMENT`` (16 x 16)
grid. The exact target is the person with the pattern mapped onto the torso rectangle (pattern
coordinates ``(u, v) in [0, 1]^2`` stretched over the rectangle, sampled at pixel centres, like the
garment image): outside the mask the target equals the person (tested), inside it is the garment.

:func:`garment_caption` gives the detailed garment caption (IDM-VTON's detailed captions), and
:func:`garment_tokens` its tokens ``(pattern, frequency, colour 1, colour 2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffzoo.core.errors import check_choice, check_int, check_tensor

Tensor = torch.Tensor

CANVAS = 24
GARMENT = 16
PATTERNS = ("hstripes", "vstripes", "checks")
PATTERN_WORDS = {"hstripes": "horizontally striped", "vstripes": "vertically striped", "checks": "checked"}
FREQUENCIES = (1, 2, 3)
PALETTE = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.7, 0.2),
    "blue": (0.1, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.1),
    "white": (0.95, 0.95, 0.95),
    "black": (0.05, 0.05, 0.05),
}
SKINS = ((0.87, 0.7, 0.55), (0.6, 0.42, 0.3), (0.95, 0.8, 0.7))
BACKGROUNDS = ((0.75, 0.75, 0.8), (0.55, 0.6, 0.55), (0.8, 0.72, 0.6))
#: Caption tokens: 0 null, then patterns, frequencies, colours.
CAPTION_VOCAB: tuple[str, ...] = ("<null>", *PATTERNS, *(str(f) for f in FREQUENCIES), *PALETTE)


@dataclass(frozen=True)
class Garment:
    pattern: str
    frequency: int
    color1: str
    color2: str

    def __post_init__(self) -> None:
        check_choice(self.pattern, PATTERNS, "pattern")
        check_choice(self.frequency, FREQUENCIES, "frequency")
        check_choice(self.color1, PALETTE, "color1")
        check_choice(self.color2, PALETTE, "color2")
        if self.color1 == self.color2:
            raise ValueError(f"color2: must differ from color1 ({self.color1!r})")

    def pattern_at(self, u: Tensor, v: Tensor) -> Tensor:
        """RGB ``(3, *u.shape)`` in ``[-1, 1]`` of the pattern at coordinates ``u`` (across), ``v`` (down)."""
        f = self.frequency
        if self.pattern == "hstripes":
            first = torch.frac(f * v) < 0.5
        elif self.pattern == "vstripes":
            first = torch.frac(f * u) < 0.5
        else:
            first = (torch.frac(f * u) < 0.5) == (torch.frac(f * v) < 0.5)
        c1 = torch.tensor(PALETTE[self.color1], dtype=torch.float32)[:, None, None] * 2 - 1
        c2 = torch.tensor(PALETTE[self.color2], dtype=torch.float32)[:, None, None] * 2 - 1
        return torch.where(first[None], c1, c2)


@dataclass(frozen=True)
class Person:
    """A figure: centre column ``cx``, torso rectangle rows ``[top, bottom)`` x columns ``[left, right)``,
    arm angles (radians below horizontal), skin, background and old-shirt colours (indices / palette name)."""

    cx: int
    torso_w: int
    torso_h: int
    top: int
    arm_left: float
    arm_right: float
    skin: int
    background: int
    shirt: str

    @property
    def box(self) -> tuple[int, int, int, int]:
        left = self.cx - self.torso_w // 2
        return self.top, self.top + self.torso_h, left, left + self.torso_w


def sample_pair(generator: torch.Generator) -> tuple[Person, Garment]:
    """A random person and garment."""
    u = torch.rand(12, generator=generator).tolist()
    w, h = 8 + int(u[0] * 5), 9 + int(u[1] * 3)  # torso 8..12 x 9..11 pixels
    cx = 10 + int(u[2] * 5)
    top = 6 + int(u[3] * 2)
    colors = list(PALETTE)
    c1 = colors[int(u[8] * len(colors))]
    c2 = [c for c in colors if c != c1][int(u[9] * (len(colors) - 1))]
    person = Person(
        cx,
        w,
        h,
        top,
        math.radians(15 + 60 * u[4]),
        math.radians(15 + 60 * u[5]),
        int(u[6] * len(SKINS)),
        int(u[7] * len(BACKGROUNDS)),
        colors[int(u[10] * len(colors))],
    )
    garment = Garment(PATTERNS[int(u[11] * len(PATTERNS))], FREQUENCIES[int(u[11] * 9) % 3], c1, c2)
    return person, garment


def _col(rgb: tuple[float, float, float]) -> Tensor:
    return torch.tensor(rgb, dtype=torch.float32)[:, None, None] * 2 - 1


def render_person(p: Person) -> tuple[Tensor, Tensor]:
    """The person ``(3, CANVAS, CANVAS)`` in ``[-1, 1]`` (wearing the old shirt) and the torso mask
    ``(1, CANVAS, CANVAS)`` (1 inside the region to fill)."""
    n = CANVAS
    yy, xx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    img = _col(BACKGROUNDS[p.background]).expand(3, n, n).clone()
    skin = _col(SKINS[p.skin])
    top, bottom, left, right = p.box
    # legs
    legs = (
        (yy >= bottom)
        & (yy < n - 1)
        & (((xx >= left + 1) & (xx < p.cx - 0.5)) | ((xx > p.cx + 0.5) & (xx < right - 1)))
    )
    img = torch.where(legs[None], _col((0.2, 0.2, 0.35)), img)
    # arms: thick segments from the shoulders, going out and down at the pose angles
    for sx, ang, sgn in ((left, p.arm_left, -1), (right, p.arm_right, 1)):
        dx, dy = sgn * math.cos(ang), math.sin(ang)
        rx, ry = xx - sx, yy - (top + 1.0)
        along = rx * dx + ry * dy
        across = (rx * dy - ry * dx).abs()
        arm = (along >= 0) & (along <= 8) & (across <= 1.0)
        img = torch.where(arm[None], skin, img)
    # head
    head = (xx - p.cx) ** 2 + (yy - (top - 3)) ** 2 <= 2.6**2
    img = torch.where(head[None], skin, img)
    mask = torch.zeros(1, n, n)
    mask[:, top:bottom, left:right] = 1.0
    img = torch.where(mask.bool(), _col(PALETTE[p.shirt]), img)
    return img, mask


def render_garment(g: Garment, size: int = GARMENT) -> Tensor:
    """The garment image ``(3, size, size)``: the pattern sampled at the pixel centres."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    v, u = torch.meshgrid(c, c, indexing="ij")
    return g.pattern_at(u, v)


def render_target(p: Person, g: Garment) -> Tensor:
    """The exact try-on result: the person with the garment's pattern stretched over the torso rectangle."""
    img, mask = render_person(p)
    top, bottom, left, right = p.box
    h, w = bottom - top, right - left
    v, u = torch.meshgrid(
        (torch.arange(h, dtype=torch.float32) + 0.5) / h,
        (torch.arange(w, dtype=torch.float32) + 0.5) / w,
        indexing="ij",
    )
    out = img.clone()
    out[:, top:bottom, left:right] = g.pattern_at(u, v)
    return out


def garment_caption(g: Garment) -> str:
    unit = "stripes" if g.pattern != "checks" else "checks"
    return f"a {g.color1} and {g.color2} {PATTERN_WORDS[g.pattern]} shirt with {g.frequency} {unit}"


def garment_tokens(g: Garment) -> list[int]:
    return [
        CAPTION_VOCAB.index(g.pattern),
        CAPTION_VOCAB.index(str(g.frequency)),
        CAPTION_VOCAB.index(g.color1),
        CAPTION_VOCAB.index(g.color2),
    ]


def caption_tokens(text: str) -> Tensor:
    """``(1, 4)`` tokens ``(pattern, frequency, colour 1, colour 2)`` of a detailed garment caption such as
    :func:`garment_caption` writes (missing parts -> the null token); ``ValueError`` naming ``caption``
    when it names nothing of the vocabulary."""
    if not isinstance(text, str):
        raise TypeError(f"caption: expected a string, got {type(text).__name__}")
    low = text.lower()
    slots = [0, 0, 0, 0]
    for pat, words in PATTERN_WORDS.items():
        if words in low or pat in low:
            slots[0] = CAPTION_VOCAB.index(pat)
    words = low.replace(",", " ").split()
    nums = [w for w in words if w in {str(f) for f in FREQUENCIES}]
    if nums:
        slots[1] = CAPTION_VOCAB.index(nums[0])
    cols = [w for w in words if w in PALETTE]
    for i, c in enumerate(cols[:2]):
        slots[2 + i] = CAPTION_VOCAB.index(c)
    if not any(slots):
        raise ValueError(f"caption: no pattern, frequency or colour word in {text!r}")
    return torch.tensor([slots], dtype=torch.long)


def masked_person(person: Tensor, mask: Tensor) -> Tensor:
    """The person with the masked region blanked (set to 0, mid-grey): what the try-on model sees."""
    return person * (1 - mask)


def check_tryon_inputs(person: Tensor, mask: Tensor | None, garment: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Batch and check try-on inputs: ``person (B, 3, CANVAS, CANVAS)``, ``mask (B, 1, CANVAS, CANVAS)`` with
    values in {0, 1} and at least one masked pixel, ``garment (B, 3, GARMENT, GARMENT)``; one-line
    ``ValueError``/``TypeError`` naming the argument otherwise."""
    person = person[None] if torch.is_tensor(person) and person.ndim == 3 else person
    check_tensor(person, "person", ndim=4, floating=True, shape=(None, 3, CANVAS, CANVAS))
    if mask is None:
        raise ValueError("person: no mask; give the region to replace (a mask image, or the person's alpha channel)")
    mask = mask[None] if mask.ndim == 3 else mask
    check_tensor(mask, "mask", ndim=4, shape=(None, 1, CANVAS, CANVAS))
    mask = mask.float()
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask: expected values 0 (keep) or 1 (replace)")
    if bool((mask.flatten(1).sum(1) == 0).any()):
        raise ValueError("mask: empty; mark the torso region to replace")
    garment = garment[None] if torch.is_tensor(garment) and garment.ndim == 3 else garment
    check_tensor(garment, "garment", ndim=4, floating=True)
    if tuple(garment.shape[1:]) != (3, GARMENT, GARMENT):
        raise ValueError(
            f"garment: expected a {GARMENT}x{GARMENT} RGB garment image, got shape {tuple(garment.shape[1:])}"
        )
    b = person.shape[0]
    if mask.shape[0] != b or garment.shape[0] != b:
        raise ValueError(f"garment: batch sizes differ (person {b}, mask {mask.shape[0]}, garment {garment.shape[0]})")
    return person, mask, garment


@dataclass
class TryonData:
    """``n`` pairs: ``person`` (old shirt), ``mask``, ``garment``, ``target``, caption ``tokens (n, 4)``."""

    person: Tensor
    mask: Tensor
    garment: Tensor
    target: Tensor
    tokens: Tensor
    pairs: list[tuple[Person, Garment]]

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        idx = torch.randint(len(self), (batch_size,), generator=generator)
        return {k: getattr(self, k)[idx] for k in ("person", "mask", "garment", "target", "tokens")}

    def subset(self, idx: list[int] | Tensor) -> TryonData:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return TryonData(
            self.person[idx],
            self.mask[idx],
            self.garment[idx],
            self.target[idx],
            self.tokens[idx],
            [self.pairs[int(i)] for i in idx],
        )


def make_dataset(n: int, seed: int = 0) -> TryonData:
    """``n`` random person/garment pairs with their exact targets, from ``seed``."""
    n = check_int(n, "n", lo=1)
    gen = torch.Generator().manual_seed(int(seed))
    pairs = [sample_pair(gen) for _ in range(n)]
    persons, masks = zip(*(render_person(p) for p, _ in pairs))
    return TryonData(
        torch.stack(persons),
        torch.stack(masks),
        torch.stack([render_garment(g) for _, g in pairs]),
        torch.stack([render_target(p, g) for p, g in pairs]),
        torch.tensor([garment_tokens(g) for _, g in pairs], dtype=torch.long),
        pairs,
    )


__all__ = [
    "CANVAS",
    "CAPTION_VOCAB",
    "GARMENT",
    "Garment",
    "PALETTE",
    "PATTERNS",
    "Person",
    "TryonData",
    "caption_tokens",
    "check_tryon_inputs",
    "garment_caption",
    "garment_tokens",
    "make_dataset",
    "masked_person",
    "render_garment",
    "render_person",
    "render_target",
    "sample_pair",
]
