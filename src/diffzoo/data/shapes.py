"""The shapes world: procedural 32x32 RGB scenes with captions, labels and exact edit ground truth.

A :class:`Scene` is one to three coloured shapes (circle, square, triangle), each in its own cell of a
3x3 grid (with a small pixel jitter and one of two sizes), on a plain or textured background. Because
the world is procedural, every quantity an editing benchmark needs is exact:

* :func:`render` draws a scene deterministically (anti-aliased by 4x4 super-sampling: a pixel's
  coverage is the fraction of its 16 sub-pixel centres inside the shape), as a float tensor in
  ``[-1, 1]`` of shape ``(3, 32, 32)``;
* :func:`caption` describes it in a small vocabulary (:data:`VOCAB`, 20 words, at most 16 words);
* :func:`labels` gives its attribute labels (per grid cell: empty or a (shape, colour) pair; background);
* :func:`apply_edit` changes one attribute (colour, shape, position, background) and returns the edited
  scene and the mask of pixels that change, so the ground-truth edited image is ``render(edited)``.

Captions list the objects in reading order of their cells, e.g.
``"red circle top left and blue square right on white"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from diffzoo.core.errors import check_choice, check_range

SIZE = 32
GRID = 3
SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.10, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.15, 0.75),
}
BACKGROUNDS = ("white", "black", "gray", "striped")
SIZES = {"small": 3.0, "large": 4.2}
#: Position words of the 3x3 grid cells, row-major (cell = 3 * row + column).
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
EDIT_KINDS = ("color", "shape", "move", "background")
MAX_OBJECTS = 3

#: Every word a caption can use (the text encoder's vocabulary, without special tokens).
VOCAB: tuple[str, ...] = tuple(
    dict.fromkeys(
        list(COLORS) + list(SHAPES) + [w for p in POSITIONS for w in p.split()] + ["and", "on"] + list(BACKGROUNDS)
    )
)
#: The longest caption in words: three objects of 4 words, two "and", "on", background.
MAX_CAPTION_WORDS = 3 * 4 + 2 + 2

_SUPER = 4  # sub-pixels per pixel side for anti-aliasing
_CELL = SIZE / GRID


@dataclass(frozen=True)
class ShapeObject:
    """One shape: kind, colour name, grid cell (0..8, row-major), size name and pixel jitter (dx, dy)."""

    shape: str
    color: str
    cell: int
    size: str = "large"
    jitter: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        check_choice(self.shape, SHAPES, "shape")
        check_choice(self.color, COLORS, "color")
        check_choice(self.size, SIZES, "size")
        if not (isinstance(self.cell, int) and 0 <= self.cell < GRID * GRID):
            raise ValueError(f"cell: expected an int in [0, {GRID * GRID - 1}], got {self.cell!r}")
        if len(self.jitter) != 2 or any(abs(int(j)) > 1 for j in self.jitter):
            raise ValueError(f"jitter: expected (dx, dy) with entries in {{-1, 0, 1}}, got {self.jitter!r}")

    @property
    def center(self) -> tuple[float, float]:
        """Pixel coordinates (x, y) of the shape's centre."""
        row, col = divmod(self.cell, GRID)
        return ((col + 0.5) * _CELL + self.jitter[0], (row + 0.5) * _CELL + self.jitter[1])


@dataclass(frozen=True)
class Scene:
    """One to three :class:`ShapeObject` in distinct cells (kept sorted by cell) on a background."""

    objects: tuple[ShapeObject, ...]
    background: str = "white"

    def __post_init__(self) -> None:
        check_choice(self.background, BACKGROUNDS, "background")
        objs = tuple(self.objects)
        if not 1 <= len(objs) <= MAX_OBJECTS:
            raise ValueError(f"objects: expected 1 to {MAX_OBJECTS} shapes, got {len(objs)}")
        cells = [o.cell for o in objs]
        if len(set(cells)) != len(cells):
            raise ValueError(f"objects: two shapes share a grid cell ({cells})")
        object.__setattr__(self, "objects", tuple(sorted(objs, key=lambda o: o.cell)))


@dataclass(frozen=True)
class Edit:
    """A single-attribute edit: ``kind`` in :data:`EDIT_KINDS`, the object ``index`` (reading order;
    ignored for ``background``) and the new ``value`` (colour, shape, cell index or background name)."""

    kind: str
    value: str | int
    index: int = 0

    def __post_init__(self) -> None:
        kind = "color" if self.kind == "colour" else self.kind
        object.__setattr__(self, "kind", kind)
        check_choice(kind, EDIT_KINDS, "edit.kind")


# -------------------------------------------------------------------------------------------------
# Rendering
# -------------------------------------------------------------------------------------------------


def _subpixel_grid() -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel centre coordinates, shape (SIZE*_SUPER,) each, in pixel units (pixel i spans [i, i+1))."""
    u = (torch.arange(SIZE * _SUPER, dtype=torch.float64) + 0.5) / _SUPER
    return u[None, :].expand(SIZE * _SUPER, -1), u[:, None].expand(-1, SIZE * _SUPER)


def _inside(obj: ShapeObject, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean inside-test of ``obj`` at sub-pixel points (x right, y down)."""
    cx, cy = obj.center
    r = SIZES[obj.size]
    dx, dy = x - cx, y - cy
    if obj.shape == "circle":
        return dx * dx + dy * dy <= r * r
    if obj.shape == "square":
        h = 0.85 * r
        return (dx.abs() <= h) & (dy.abs() <= h)
    # upward isosceles triangle: apex (0, -r), base y = 0.8 r from x = -r to r
    base = 0.8 * r
    height = base + r
    return (dy <= base) & (dx.abs() <= r * (dy + r) / height)


def coverage(obj: ShapeObject) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1] of ``obj`` per pixel, shape (SIZE, SIZE), float64 (4x4 super-sampling)."""
    x, y = _subpixel_grid()
    m = _inside(obj, x, y).to(torch.float64)
    return m.reshape(SIZE, _SUPER, SIZE, _SUPER).mean(dim=(1, 3))


def background_image(name: str) -> torch.Tensor:
    """The background ``name`` as a (3, SIZE, SIZE) float64 image in [0, 1]; ``striped`` is a diagonal
    texture of light-grey and white bands 3 pixels wide."""
    check_choice(name, BACKGROUNDS, "background")
    if name == "striped":
        i = torch.arange(SIZE)
        band = ((i[None, :] + i[:, None]) // 3) % 2
        v = torch.where(band == 0, 1.0, 0.72).to(torch.float64)
        return v.expand(3, SIZE, SIZE).clone()
    level = {"white": 1.0, "black": 0.0, "gray": 0.5}[name]
    return torch.full((3, SIZE, SIZE), level, dtype=torch.float64)


def render(scene: Scene, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Draw ``scene`` as a (3, 32, 32) image in [-1, 1]: the background, then each shape composited with
    its coverage, ``img = (1 - c) img + c colour``. Deterministic (no randomness, float64 inside)."""
    if not isinstance(scene, Scene):
        raise TypeError(f"scene: expected a Scene, got {type(scene).__name__}")
    img = background_image(scene.background)
    for obj in scene.objects:
        c = coverage(obj)[None]
        col = torch.tensor(COLORS[obj.color], dtype=torch.float64)[:, None, None]
        img = (1 - c) * img + c * col
    return (img * 2 - 1).to(dtype)


def render_batch(scenes: Sequence[Scene], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``render`` for a list of scenes, stacked to (B, 3, 32, 32)."""
    return torch.stack([render(s, dtype) for s in scenes])


# -------------------------------------------------------------------------------------------------
# Captions and labels
# -------------------------------------------------------------------------------------------------


def describe(obj: ShapeObject) -> str:
    """``"<colour> <shape> <position>"``, e.g. ``"red circle top left"``."""
    return f"{obj.color} {obj.shape} {POSITIONS[obj.cell]}"


def caption(scene: Scene) -> str:
    """The scene's caption: its objects in reading order joined by ``and``, then ``on <background>``."""
    return " and ".join(describe(o) for o in scene.objects) + f" on {scene.background}"


def parse_caption(text: str) -> Scene:
    """Inverse of :func:`caption` (sizes and jitters take their defaults). Raises on bad captions."""
    words = text.split()
    if len(words) < 2 or words[-2] != "on":
        raise ValueError(f"caption: expected '... on <background>', got {text!r}")
    background = words[-1]
    objs = []
    for part in " ".join(words[:-2]).split(" and "):
        w = part.split()
        if len(w) < 3:
            raise ValueError(f"caption: bad object description {part!r}")
        pos = " ".join(w[2:])
        check_choice(pos, POSITIONS, "caption position")
        objs.append(ShapeObject(w[1], w[0], POSITIONS.index(pos)))
    return Scene(tuple(objs), background)


#: Per-cell class of :func:`labels`: 0 = empty, 1 + 5 * shape + colour otherwise.
NUM_CELL_CLASSES = 1 + len(SHAPES) * len(COLORS)


def cell_class(obj: ShapeObject | None) -> int:
    """Class index of one grid cell (0 empty, else ``1 + shape_idx * n_colours + colour_idx``)."""
    if obj is None:
        return 0
    return 1 + SHAPES.index(obj.shape) * len(COLORS) + list(COLORS).index(obj.color)


def labels(scene: Scene) -> dict[str, torch.Tensor]:
    """Attribute labels: ``cells`` (9,) long — per grid cell 0 (empty) or 1 + shape * 5 + colour;
    ``background`` () long; ``count`` () long."""
    cells = torch.zeros(GRID * GRID, dtype=torch.long)
    for o in scene.objects:
        cells[o.cell] = cell_class(o)
    return {
        "cells": cells,
        "background": torch.tensor(BACKGROUNDS.index(scene.background)),
        "count": torch.tensor(len(scene.objects)),
    }


def decode_cells(cells: Sequence[int]) -> list[tuple[int, str, str] | None]:
    """Per cell ``None`` or ``(cell, shape, colour)`` from class indices (inverse of :func:`cell_class`)."""
    out: list[tuple[int, str, str] | None] = []
    for i, c in enumerate(int(v) for v in cells):
        if c == 0:
            out.append(None)
        else:
            s, col = divmod(c - 1, len(COLORS))
            out.append((i, SHAPES[s], list(COLORS)[col]))
    return out


# -------------------------------------------------------------------------------------------------
# Random scenes
# -------------------------------------------------------------------------------------------------


def _randint(n: int, g: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=g))


def random_scene(
    generator: torch.Generator, max_objects: int = MAX_OBJECTS, count_probs: Sequence[float] = (0.5, 0.3, 0.2)
) -> Scene:
    """A random scene drawn with ``generator`` (same generator state -> same scene).

    The number of shapes is 1..``max_objects`` with probabilities ``count_probs`` (renormalised);
    cells are distinct and uniform; shape, colour, size, jitter and background uniform.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"max_objects: expected 1..{MAX_OBJECTS}, got {max_objects}")
    p = torch.tensor(list(count_probs)[:max_objects], dtype=torch.float64)
    if p.numel() < max_objects or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise ValueError(f"count_probs: need {max_objects} non-negative weights, got {count_probs}")
    n = int(torch.multinomial(p / p.sum(), 1, generator=generator)) + 1
    cells = torch.randperm(GRID * GRID, generator=generator)[:n].tolist()
    objs = []
    for cell in cells:
        objs.append(
            ShapeObject(
                shape=SHAPES[_randint(len(SHAPES), generator)],
                color=list(COLORS)[_randint(len(COLORS), generator)],
                cell=int(cell),
                size=list(SIZES)[_randint(len(SIZES), generator)],
                jitter=(_randint(3, generator) - 1, _randint(3, generator) - 1),
            )
        )
    return Scene(tuple(objs), BACKGROUNDS[_randint(len(BACKGROUNDS), generator)])


def random_scenes(n: int, seed: int, **kw) -> list[Scene]:
    """``n`` scenes from one generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    return [random_scene(g, **kw) for _ in range(int(n))]


def is_heldout(text: str, heldout_fraction: float = 0.1) -> bool:
    """Whether a caption belongs to the held-out split (a deterministic hash of its object
    descriptions: a scene is held out when any of its (colour, shape, position) triples is). Training
    never sees a held-out triple, so held-out captions test compositional generalisation."""
    check_range(heldout_fraction, "heldout_fraction", 0.0, 1.0)
    scene = parse_caption(text)
    return any(_triple_heldout(o, heldout_fraction) for o in scene.objects)


def _triple_heldout(obj: ShapeObject, frac: float) -> bool:
    # a fixed, platform-independent hash (Python's hash() is salted per process)
    key = SHAPES.index(obj.shape) * 131 + list(COLORS).index(obj.color) * 17 + obj.cell * 7919
    return ((key * 2654435761) % 2**32) / 2**32 < frac


def scene_stream(seed: int, split: str = "train", heldout_fraction: float = 0.1, **kw) -> Iterator[Scene]:
    """Endless deterministic stream of scenes of one ``split`` (``train``: no held-out triple;
    ``heldout``: at least one held-out triple; ``all``)."""
    check_choice(split, ("train", "heldout", "all"), "split")
    g = torch.Generator().manual_seed(int(seed))
    while True:
        s = random_scene(g, **kw)
        h = split == "all" or (is_heldout(caption(s), heldout_fraction) == (split == "heldout"))
        if h:
            yield s


# -------------------------------------------------------------------------------------------------
# Edits with exact ground truth
# -------------------------------------------------------------------------------------------------


def apply_edit(scene: Scene, edit: Edit) -> tuple[Scene, torch.Tensor]:
    """Apply ``edit`` to ``scene``: returns ``(edited_scene, mask)`` where ``mask`` (32, 32) bool marks
    exactly the pixels whose rendered value changes (``render(edited) != render(scene)``).

    ``color``/``shape`` replace the attribute of object ``edit.index``; ``move`` puts it in cell
    ``edit.value`` (an int or a position phrase; must be free); ``background`` swaps the background.
    A no-op edit (same value) raises, since it has nothing to change.
    """
    if not isinstance(edit, Edit):
        raise TypeError(f"edit: expected an Edit, got {type(edit).__name__}")
    if edit.kind == "background":
        if edit.value == scene.background:
            raise ValueError(f"edit.value: background is already {edit.value!r}")
        new = Scene(scene.objects, str(edit.value))
    else:
        if not 0 <= edit.index < len(scene.objects):
            raise ValueError(f"edit.index: expected 0..{len(scene.objects) - 1}, got {edit.index}")
        obj = scene.objects[edit.index]
        if edit.kind == "move":
            cell = POSITIONS.index(edit.value) if isinstance(edit.value, str) else int(edit.value)
            if cell in [o.cell for o in scene.objects]:
                raise ValueError(f"edit.value: cell {cell} ({POSITIONS[cell] if 0 <= cell < 9 else '?'}) is occupied")
            new_obj = dataclasses.replace(obj, cell=cell)
        else:
            field = edit.kind
            if getattr(obj, field) == edit.value:
                raise ValueError(f"edit.value: object {edit.index} already has {field} {edit.value!r}")
            new_obj = dataclasses.replace(obj, **{field: str(edit.value)})
        objs = list(scene.objects)
        objs[edit.index] = new_obj
        new = Scene(tuple(objs), scene.background)
    mask = (render(new, torch.float64) - render(scene, torch.float64)).abs().amax(0) > 0
    return new, mask


def random_edit(scene: Scene, generator: torch.Generator, kinds: Sequence[str] = EDIT_KINDS) -> Edit:
    """A random valid edit of ``scene`` (kind uniform over ``kinds``, new value different from the old)."""
    for k in kinds:
        check_choice("color" if k == "colour" else k, EDIT_KINDS, "kinds")
    kind = kinds[_randint(len(kinds), generator)]
    kind = "color" if kind == "colour" else kind
    if kind == "background":
        opts = [b for b in BACKGROUNDS if b != scene.background]
        return Edit("background", opts[_randint(len(opts), generator)])
    i = _randint(len(scene.objects), generator)
    obj = scene.objects[i]
    if kind == "move":
        used = {o.cell for o in scene.objects}
        opts_c = [c for c in range(GRID * GRID) if c not in used]
        return Edit("move", opts_c[_randint(len(opts_c), generator)], i)
    pool = list(COLORS) if kind == "color" else list(SHAPES)
    opts = [v for v in pool if v != getattr(obj, kind)]
    return Edit(kind, opts[_randint(len(opts), generator)], i)


@dataclass
class EditPair:
    """One benchmark item: source scene/image/caption, the edit, the exact target and its mask."""

    source: Scene
    edit: Edit
    target: Scene
    source_image: torch.Tensor
    target_image: torch.Tensor
    mask: torch.Tensor
    source_caption: str
    target_caption: str


def edit_pairs(n: int, seed: int, kinds: Sequence[str] = EDIT_KINDS, max_objects: int = MAX_OBJECTS) -> list[EditPair]:
    """``n`` deterministic (source, edit, ground truth, mask) items; edit kinds cycle through ``kinds``
    so every kind is equally represented."""
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for i in range(int(n)):
        src = random_scene(g, max_objects=max_objects)
        e = random_edit(src, g, kinds=[kinds[i % len(kinds)]])
        tgt, mask = apply_edit(src, e)
        out.append(EditPair(src, e, tgt, render(src), render(tgt), mask, caption(src), caption(tgt)))
    return out
