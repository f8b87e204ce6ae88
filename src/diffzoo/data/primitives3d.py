"""Procedural 3-D primitives with exact multi-view 2.5D renders: the data of the Direct2.5 analogue.

An :class:`Object3D` is one primitive (sphere, cube, cylinder, cone, torus) with a size word and scale,
a pose (tilt about x, then yaw about the vertical z axis) and a colour word. :func:`render_views` ray
casts it *exactly* (closed-form ray/quadric intersections; the torus quartic by companion-matrix
eigenvalues polished by Newton steps) from K orthographic cameras (:func:`diffzoo.conditioning.geometry.
default_cameras`: K = 4 azimuths 90 degrees apart, elevation 20 degrees) into ``(K, 4, H, W)`` maps
(camera-frame normal + depth, the format of :mod:`diffzoo.conditioning.geometry`). :func:`occupancy`
gives the exact solid on a voxel grid (the ground truth of fused IoU), :func:`caption` the text
("a small red cube") and :func:`prompt_tokens` the tokens the text-conditional denoisers read.

Canonical primitives (object frame, scaled by ``scale`` <= 0.95 they fit in the unit ball): sphere of
radius 1; cube of half-side 1/sqrt(3); cylinder of radius 0.6 and half-height 0.6; cone with base radius
0.75 at z = -0.5 and apex at z = 0.75; torus of radii 0.68 / 0.3 around z.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from diffzoo.conditioning.geometry import BACKGROUND_DEPTH, OrthoCamera, default_cameras, voxel_centers
from diffzoo.core.errors import check_choice, check_int, check_range

Tensor = torch.Tensor

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
COLORS = {
    "red": (0.9, 0.15, 0.1),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.85, 0.1),
    "purple": (0.6, 0.2, 0.75),
    "white": (0.92, 0.92, 0.92),
}
SIZES = {"small": (0.55, 0.7), "large": (0.8, 0.95)}
#: Token 0 is the null token (a missing word; classifier-free guidance's unconditional input).
VOCAB: tuple[str, ...] = ("<null>", *SIZES, *COLORS, *SHAPES)
#: Words a prompt may contain besides the vocabulary (ignored).
FILLER = frozenset({"a", "an", "the", "one", "of", "object", "shape", "solid", "3d", "primitive"})
NUM_TOKENS = 3  # (size, colour, shape)
RESOLUTION = 16
NUM_VIEWS = 4

CUBE_HALF = 1 / math.sqrt(3)
CYL_RADIUS, CYL_HALF = 0.6, 0.6
CONE_Z0, CONE_Z1, CONE_RADIUS = -0.5, 0.75, 0.75
TORUS_R, TORUS_r = 0.68, 0.3


@dataclass(frozen=True)
class Object3D:
    """One primitive: ``shape`` in :data:`SHAPES`, ``size`` in :data:`SIZES` (``scale`` in its range),
    ``color`` in :data:`COLORS`, ``yaw`` and ``tilt`` in radians."""

    shape: str
    size: str
    color: str
    scale: float
    yaw: float = 0.0
    tilt: float = 0.0

    def __post_init__(self) -> None:
        check_choice(self.shape, SHAPES, "shape")
        check_choice(self.size, SIZES, "size")
        check_choice(self.color, COLORS, "color")
        check_range(self.scale, "scale", 0, 0.96, lo_open=True)

    def rotation(self) -> np.ndarray:
        """``R = Rz(yaw) Rx(tilt)`` (object -> world)."""
        cy, sy, ct, st = math.cos(self.yaw), math.sin(self.yaw), math.cos(self.tilt), math.sin(self.tilt)
        rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, ct, -st], [0.0, st, ct]])
        return rz @ rx


def caption(obj: Object3D) -> str:
    return f"a {obj.size} {obj.color} {obj.shape}"


def sample_object(generator: torch.Generator, shape: str | None = None) -> Object3D:
    """A random primitive (uniform shape, size, colour, scale within the size's range, yaw, tilt <= 0.5)."""
    u = torch.rand(7, generator=generator, dtype=torch.float64).tolist()
    shape = shape if shape is not None else SHAPES[int(u[0] * len(SHAPES))]
    size = tuple(SIZES)[int(u[1] * len(SIZES))]
    color = tuple(COLORS)[int(u[2] * len(COLORS))]
    lo, hi = SIZES[size]
    return Object3D(shape, size, color, lo + (hi - lo) * u[3], 2 * math.pi * u[4], 0.5 * u[5])


# ------------------------------------------------------------------------------------------------ rays
def _quadratic(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both roots (nan where none) of ``a t^2 + b t + c = 0`` (linear where ``a`` ~ 0), smaller first."""
    with np.errstate(invalid="ignore", divide="ignore"):
        disc = b * b - 4 * a * c
        sq = np.sqrt(np.where(disc >= 0, disc, np.nan))
        q = -0.5 * (b + np.copysign(sq, b))
        r1, r2 = q / a, c / q
        lin = np.abs(a) < 1e-12
        r1 = np.where(lin, -c / b, r1)
        r2 = np.where(lin, np.nan, r2)
    return np.fmin(r1, r2), np.fmax(r1, r2)


def _first(cands: list[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The smallest valid candidate depth per ray and its normal (inf / 0 where none)."""
    t = np.full(n, np.inf)
    nrm = np.zeros((n, 3))
    for tc, nc in cands:
        better = np.isfinite(tc) & (tc < t)
        t = np.where(better, tc, t)
        nrm = np.where(better[:, None], nc, nrm)
    return t, nrm


def _valid(t: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return np.where(ok & np.isfinite(t), t, np.inf)


def _hit_sphere(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t1, _ = _quadratic((d * d).sum(1), 2 * (o * d).sum(1), (o * o).sum(1) - 1.0)
    t1 = _valid(t1, np.ones_like(t1, bool))
    return t1, o + np.nan_to_num(t1, posinf=0)[:, None] * d


def _hit_cube(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = CUBE_HALF
    dd = np.where(np.abs(d) < 1e-15, 1e-15, d)
    t1, t2 = (-a - o) / dd, (a - o) / dd
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    near, far = tmin.max(1), tmax.min(1)
    axis = tmin.argmax(1)
    n = np.zeros_like(o)
    n[np.arange(len(o)), axis] = -np.sign(dd[np.arange(len(o)), axis])
    return _valid(near, near <= far), n


def _hit_cylinder(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, h = CYL_RADIUS, CYL_HALF
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1])
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - r * r
    cands = []
    for tl in _quadratic(a, b, c):
        p = o + np.nan_to_num(tl)[:, None] * d
        cands.append((_valid(tl, np.abs(p[:, 2]) <= h), p * np.array([1.0, 1.0, 0.0])))
    for zc in (-h, h):
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (zc - o[:, 2]) / d[:, 2]
        p = o + np.nan_to_num(tc, posinf=0.0, neginf=0.0)[:, None] * d
        cands.append((_valid(tc, p[:, 0] ** 2 + p[:, 1] ** 2 <= r * r), np.tile([0.0, 0.0, np.sign(zc)], (len(o), 1))))
    return _first(cands, len(o))


def _hit_cone(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z0, z1, r0 = CONE_Z0, CONE_Z1, CONE_RADIUS
    k2 = (r0 / (z1 - z0)) ** 2
    w = z1 - o[:, 2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
    b = 2 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]) + 2 * k2 * w * d[:, 2]
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - k2 * w * w
    cands = []
    for tl in _quadratic(a, b, c):
        p = o + np.nan_to_num(tl)[:, None] * d
        n = np.stack([p[:, 0], p[:, 1], k2 * (z1 - p[:, 2])], 1)
        cands.append((_valid(tl, (p[:, 2] >= z0) & (p[:, 2] <= z1)), n))
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = (z0 - o[:, 2]) / d[:, 2]
    p = o + np.nan_to_num(tc, posinf=0.0, neginf=0.0)[:, None] * d
    cands.append((_valid(tc, p[:, 0] ** 2 + p[:, 1] ** 2 <= r0 * r0), np.tile([0.0, 0.0, -1.0], (len(o), 1))))
    return _first(cands, len(o))


def _torus_f(p: np.ndarray) -> np.ndarray:
    s = (p * p).sum(-1) + TORUS_R**2 - TORUS_r**2
    return s * s - 4 * TORUS_R**2 * (p[..., 0] ** 2 + p[..., 1] ** 2)


def _torus_grad(p: np.ndarray) -> np.ndarray:
    s = (p * p).sum(-1, keepdims=True) + TORUS_R**2 - TORUS_r**2
    return 4 * s * p - 8 * TORUS_R**2 * p * np.array([1.0, 1.0, 0.0])


def _hit_torus(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    big, small = TORUS_R, TORUS_r
    al = (d * d).sum(1)
    be = 2 * (o * d).sum(1)
    ga = (o * o).sum(1) + big * big - small * small
    dxy = d[:, 0] ** 2 + d[:, 1] ** 2
    odxy = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
    oxy = o[:, 0] ** 2 + o[:, 1] ** 2
    coef = np.stack(
        [
            al * al,
            2 * al * be,
            be * be + 2 * al * ga - 4 * big * big * dxy,
            2 * be * ga - 8 * big * big * odxy,
            ga * ga - 4 * big * big * oxy,
        ],
        1,
    )
    coef = coef / coef[:, :1]
    comp = np.zeros((len(o), 4, 4))
    comp[:, 0, :] = -coef[:, 1:]
    comp[:, 1, 0] = comp[:, 2, 1] = comp[:, 3, 2] = 1.0
    roots = np.linalg.eigvals(comp)
    real = np.where(np.abs(roots.imag) < 1e-5 * (1 + np.abs(roots.real)), roots.real, np.inf)
    t = real.min(1)
    hit = np.isfinite(t)
    for _ in range(4):  # Newton polish along the ray: f(t) = G(o + t d)
        p = o + np.where(hit, t, 0)[:, None] * d
        g = (_torus_grad(p) * d).sum(1)
        step = np.where(hit & (np.abs(g) > 1e-12), _torus_f(p) / np.where(np.abs(g) > 1e-12, g, 1.0), 0.0)
        t = np.where(hit, t - step, t)
    p = o + np.where(hit, t, 0)[:, None] * d
    return t, _torus_grad(p)


_HIT = {"sphere": _hit_sphere, "cube": _hit_cube, "cylinder": _hit_cylinder, "cone": _hit_cone, "torus": _hit_torus}


def _inside(shape: str, q: np.ndarray) -> np.ndarray:
    x, y, z = q[..., 0], q[..., 1], q[..., 2]
    if shape == "sphere":
        return (q * q).sum(-1) <= 1.0
    if shape == "cube":
        return np.abs(q).max(-1) <= CUBE_HALF
    if shape == "cylinder":
        return (x * x + y * y <= CYL_RADIUS**2) & (np.abs(z) <= CYL_HALF)
    if shape == "cone":
        k = CONE_RADIUS / (CONE_Z1 - CONE_Z0)
        return (z >= CONE_Z0) & (z <= CONE_Z1) & (x * x + y * y <= (k * (CONE_Z1 - z)) ** 2)
    return _torus_f(q) <= 0.0


def cast(obj: Object3D, origins: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact first hits of the rays ``origins + z * direction`` (``(N, 3)`` world points, one unit
    ``direction``) with ``obj``: the parameter ``z`` (``inf`` on a miss) and the unit world normal."""
    rot = obj.rotation()
    o = origins @ rot / obj.scale  # row-vector form of R^T p / s
    d = np.broadcast_to(direction @ rot / obj.scale, o.shape)
    t, n = _HIT[obj.shape](o, np.ascontiguousarray(d))
    n = n @ rot.T
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return t, np.where(np.isfinite(t)[:, None], n, 0.0)


def render_views(obj: Object3D, cameras: Sequence[OrthoCamera] | None = None, res: int = RESOLUTION) -> Tensor:
    """The exact ``(K, 4, res, res)`` float32 normal+depth maps of ``obj`` from ``cameras``
    (default :func:`~diffzoo.conditioning.geometry.default_cameras`)."""
    cameras = tuple(cameras) if cameras is not None else default_cameras(NUM_VIEWS)
    res = check_int(res, "res", lo=2, hi=1024)
    out = torch.empty(len(cameras), 4, res, res, dtype=torch.float64)
    for k, cam in enumerate(cameras):
        base, d = cam.ray_points(res)
        right, up, c = (b.numpy() for b in cam.basis())
        # start the rays 2 units in front of the plane through the origin (the object lies in the unit ball)
        t, n = cast(obj, base.reshape(-1, 3).numpy() - 2.0 * d.numpy(), d.numpy())
        hit = np.isfinite(t)
        depth = np.where(hit, t - 2.0, BACKGROUND_DEPTH)
        ncam = np.stack([n @ right, n @ up, n @ c], 0)
        out[k, :3] = torch.from_numpy(ncam.reshape(3, res, res))
        out[k, 3] = torch.from_numpy(depth.reshape(res, res))
    return out.float()


def occupancy(obj: Object3D, res: int = 32) -> Tensor:
    """The exact solid of ``obj`` on a ``res^3`` grid over ``[-1, 1]^3`` (voxel centres inside), boolean."""
    res = check_int(res, "res", lo=2, hi=512)
    p = voxel_centers(res).numpy()
    q = p @ obj.rotation() / obj.scale
    return torch.from_numpy(_inside(obj.shape, q))


# ------------------------------------------------------------------------------------------------ text
def tokens_of(obj: Object3D) -> list[int]:
    return [VOCAB.index(obj.size), VOCAB.index(obj.color), VOCAB.index(obj.shape)]


def prompt_tokens(prompt: str) -> Tensor:
    """``(1, 3)`` tokens ``(size, colour, shape)`` of a prompt such as ``"a red cube"`` (missing size or
    colour -> the null token). ``ValueError`` naming ``prompt`` without exactly one known primitive word
    or with a word outside the vocabulary."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt: expected a caption such as 'a red cube', got {prompt!r}")
    words = [w for w in re.findall(r"[a-z0-9<>]+", prompt.lower()) if w not in FILLER]
    slots: list[int] = [0, 0, 0]
    for w in words:
        if w.endswith("s") and w[:-1] in SHAPES:
            w = w[:-1]
        if w in SHAPES:
            if slots[2]:
                raise ValueError(f"prompt: more than one primitive word in {prompt!r}")
            slots[2] = VOCAB.index(w)
        elif w in SIZES:
            slots[0] = VOCAB.index(w)
        elif w in COLORS:
            slots[1] = VOCAB.index(w)
        else:
            raise ValueError(
                f"prompt: unknown word {w!r} in {prompt!r}; primitives are {list(SHAPES)}, "
                f"colours {list(COLORS)}, sizes {list(SIZES)}"
            )
    if not slots[2]:
        raise ValueError(f"prompt: no primitive word in {prompt!r}; expected one of {list(SHAPES)}")
    return torch.tensor([slots], dtype=torch.long)


def shape_of_tokens(tokens: Tensor) -> list[str]:
    """The primitive word of each row of ``(B, 3)`` tokens."""
    return [VOCAB[int(i)] for i in tokens[:, 2]]


def color_of_tokens(tokens: Tensor) -> list[tuple[float, float, float]]:
    """The RGB colour (``[0, 1]``) of each row of tokens (grey for the null colour)."""
    return [COLORS.get(VOCAB[int(i)], (0.7, 0.7, 0.7)) for i in tokens[:, 1]]


# --------------------------------------------------------------------------------------------- dataset
@dataclass
class PrimitiveViews:
    """``n`` random primitives: ``views (n, K, 4, H, W)`` float32, ``tokens (n, 3)``, the objects."""

    views: Tensor
    tokens: Tensor
    objects: list[Object3D]

    def __len__(self) -> int:
        return len(self.objects)

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self), (batch_size,), generator=generator)
        return self.views[idx], self.tokens[idx]


def make_dataset(n: int, seed: int = 0, res: int = RESOLUTION, shapes: Sequence[str] | None = None) -> PrimitiveViews:
    """``n`` primitives from ``seed`` (shape cycled through ``shapes`` when given, else drawn)."""
    n = check_int(n, "n", lo=1)
    gen = torch.Generator().manual_seed(int(seed))
    objs = [sample_object(gen, None if shapes is None else shapes[i % len(shapes)]) for i in range(n)]
    views = torch.stack([render_views(o, res=res) for o in objs])
    tokens = torch.tensor([tokens_of(o) for o in objs], dtype=torch.long)
    return PrimitiveViews(views, tokens, objs)


__all__ = [
    "COLORS",
    "NUM_VIEWS",
    "Object3D",
    "PrimitiveViews",
    "RESOLUTION",
    "SHAPES",
    "SIZES",
    "VOCAB",
    "caption",
    "cast",
    "color_of_tokens",
    "make_dataset",
    "occupancy",
    "prompt_tokens",
    "render_views",
    "sample_object",
    "shape_of_tokens",
    "tokens_of",
]
