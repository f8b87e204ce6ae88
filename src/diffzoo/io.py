"""One home for files: reading images, writing PNGs and grids, markdown tables, atomic writes, safetensors.

Every writer here is atomic (a temporary file in the target folder, then ``os.replace``), so a killed
process leaves either the old file or the new one, never a torn one. Every reader names the argument it
was given in a one-line ``ValueError`` / ``FileNotFoundError`` when the file is missing, is a folder, is
not an image, or is truncated -- never a PIL traceback, whatever ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``
says. Images larger than :data:`MAX_IMAGE_PIXELS` (a decompression-bomb guard) are refused from their
header, before any pixel is decoded. Commands check an output path (:func:`check_output_path`) before they
do any work. Nothing is ever unpickled: tensors are read only from safetensors files, and a file that is
not one (a ``torch.save`` pickle renamed to ``.safetensors``, a torn file, a header that claims more bytes
than the file holds) is refused with a ``ValueError`` naming it, from its first bytes.

Images are tensors in ``[-1, 1]``: ``(B, C, H, W)`` with ``C`` = 1 (grey) or 3 (RGB); how other modes
(palette, alpha, 16-bit, CMYK) are converted is documented in :func:`image_to_tensor`.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFile, ImageOps
from safetensors import safe_open
from safetensors.torch import save as _safetensors_bytes

Tensor = torch.Tensor

#: Key of the JSON header diffzoo stores in a safetensors file's metadata.
META_KEY = "diffzoo"
#: Suffixes :func:`save_samples` writes.
SAMPLE_SUFFIXES = (".png", ".npz", ".safetensors")
_FILE_MODE = 0o644  # mkstemp creates 0600, too strict for shipped files
#: The largest image (width x height) :func:`open_image` decodes: 2**26 = 67,108,864 pixels (8192 x 8192,
#: about 200 MB as 8-bit RGB). Larger images -- or a few-kB PNG whose header claims a 100,000 x 100,000
#: canvas (a decompression bomb) -- are refused from the header, before any pixel is decoded. Pillow's own
#: ``Image.MAX_IMAGE_PIXELS`` (warning at 89 M pixels, error at 179 M) is applied too when it is lower.
MAX_IMAGE_PIXELS = 2**26
#: safetensors' own limit on the JSON header (100 MB); a larger claim is refused before anything is read.
MAX_SAFETENSORS_HEADER = 100_000_000


# -------------------------------------------------------------------------------------------------
# Atomic writes
# -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, else removed."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_safetensors(
    tensors: dict[str, Tensor], path: str | os.PathLike, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``tensors`` (+ JSON ``meta`` in the header under :data:`META_KEY`) to ``path`` atomically."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        write_safetensors(flat, tmp, {META_KEY: json.dumps(meta or {}, sort_keys=True)})
    return Path(path)


def write_safetensors(
    tensors: dict[str, Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Serialise ``tensors`` in memory and write them to ``path`` (not atomic: :func:`atomic_path` is).

    Not ``safetensors.torch.save_file``: that writes through its own hidden ``.tmpXXXXXX`` file in the
    target folder, which a kill leaves behind under a name nothing can attribute; here a killed write
    leaves only diffzoo's own temporary file, which the zoo and the trainer clean up."""
    data = _safetensors_bytes(tensors, metadata=metadata)
    with open(path, "wb") as f:
        f.write(data)


def _not_safetensors_hint(head: bytes) -> str:
    """What a file that is not a safetensors file looks like, from its first bytes (for the error)."""
    if head.startswith(b"PK\x03\x04"):
        return "; it is a zip archive -- a torch.save() checkpoint renamed to .safetensors? It is not unpickled"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "; it is a Python pickle -- a torch.save() checkpoint renamed to .safetensors? It is not unpickled"
    return ""


def _check_safetensors_prefix(path: Path) -> None:
    """Refuse, from its first 8 bytes, a file too short for a safetensors header or whose header length
    is absurd or runs past the end of the file (``ValueError`` naming ``path``; nothing is allocated)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if size < 8:
        raise ValueError(
            f"{path}: not a safetensors file ({size} bytes, shorter than the 8-byte header length)"
            + _not_safetensors_hint(head)
        )
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
        why = (
            f"above safetensors' limit of {MAX_SAFETENSORS_HEADER:,}"
            if n > MAX_SAFETENSORS_HEADER
            else f"but the file has only {size - 8:,} bytes after it: truncated?"
        )
        raise ValueError(
            f"{path}: not a readable safetensors file (its header claims {n:,} bytes, {why})"
            + _not_safetensors_hint(head)
        )


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header (:data:`META_KEY`) of a safetensors file, without reading its tensors."""
    return _read_safetensors(Path(path), tensors=False)[1]


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Every tensor and the JSON header of a safetensors file.

    A missing file is a ``FileNotFoundError``; anything else that is not a complete safetensors file with a
    JSON-object header -- truncated at any length, a header length beyond the file or above safetensors'
    100 MB limit, malformed header JSON, a pickle or zip (``torch.save``) renamed to ``.safetensors`` -- is
    a one-line ``ValueError`` naming the file. Nothing is unpickled, and the oversized cases are refused
    from the first 8 bytes, before anything is allocated.
    """
    return _read_safetensors(Path(path), tensors=True)


def _read_safetensors(path: Path, tensors: bool) -> tuple[dict[str, Tensor], dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    _check_safetensors_prefix(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as e:  # safetensors raises its own error types for torn / foreign files
        with open(path, "rb") as fh:
            hint = _not_safetensors_hint(fh.read(16))
        raise ValueError(f"{path}: not a readable safetensors file ({_one_line(e)}){hint}") from None
    try:
        meta = json.loads(raw[META_KEY]) if META_KEY in raw else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt JSON header ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(
            f"{path}: corrupt JSON header (the {META_KEY!r} entry is a {type(meta).__name__}, expected an object)"
        )
    return out, meta


# -------------------------------------------------------------------------------------------------
# Tables
# -------------------------------------------------------------------------------------------------


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".4g") -> str:
    """A GitHub-markdown table of ``rows`` (dicts); floats formatted with ``floatfmt``. The columns default
    to every key of every row, in order of first appearance (a row without a key gets an empty cell)."""
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v).replace("|", "\\|")  # a bare | would split the cell

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    names = [fmt(c) for c in cols]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(names)]

    def line(vals: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"

    out = [line(names), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


# -------------------------------------------------------------------------------------------------
# Reading images
# -------------------------------------------------------------------------------------------------


_DECODING = threading.Lock()  # Pillow's switches below are process-wide: one decode at a time


@contextlib.contextmanager
def _strict_decoding() -> Iterator[int]:
    """Decode with ``ImageFile.LOAD_TRUNCATED_IMAGES`` off (some library may have switched it on globally,
    which makes Pillow pad a truncated JPEG with grey instead of failing) and Pillow's own
    decompression-bomb check off (:func:`open_image` applies the limit itself, from the header, with an
    error naming the argument instead of a warning or a Pillow exception). Both settings are restored;
    a lock keeps concurrent calls from restoring each other's values. Yields the pixel limit: diffzoo's
    :data:`MAX_IMAGE_PIXELS`, or Pillow's ``Image.MAX_IMAGE_PIXELS`` where that is set lower."""
    with _DECODING:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
        limit = int(MAX_IMAGE_PIXELS) if not saved[1] else min(int(MAX_IMAGE_PIXELS), int(saved[1]))
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield limit
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = saved


class _TooLarge(ValueError):
    pass


def open_image(path: str | os.PathLike, arg: str = "image") -> Image.Image:
    """Open and fully decode an image file; a missing, non-image or truncated file raises a one-line
    error naming ``arg``, and so does an image of more than :data:`MAX_IMAGE_PIXELS` pixels (checked from
    the header, before decoding: a decompression bomb costs nothing). The EXIF orientation, if any, is
    applied. Multi-frame files (GIF, APNG, TIFF) give their first frame."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{arg}: no such file {str(p)!r}")
    if p.is_dir():
        raise ValueError(f"{arg}: {str(p)!r} is a folder, not an image file")
    if not p.is_file():
        raise ValueError(f"{arg}: {str(p)!r} is not a regular file")
    try:
        with _strict_decoding() as limit:
            with Image.open(p) as probe:  # reads the header only
                w, h = probe.size
                if w * h > limit:
                    raise _TooLarge(
                        f"{arg}: {str(p)!r} is {w} x {h} = {w * h:,} pixels, more than diffzoo's "
                        f"limit of {limit:,} (diffzoo.io.MAX_IMAGE_PIXELS; a decompression bomb?)"
                    )
                probe.verify()  # structure and checksums (catches a PNG cut short)
            with Image.open(p) as img:  # a full decode (catches truncated data verify() does not check)
                img.load()
                out = img.copy()
    except _TooLarge as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # noqa: BLE001 -- any failure to decode a user's file (UnidentifiedImageError,
        # OSError, SyntaxError, plugin errors on hostile input, MemoryError on absurd sizes) is "not an image"
        raise ValueError(f"{arg}: {str(p)!r} is not a readable image file ({_one_line(e)})") from None
    try:
        return ImageOps.exif_transpose(out)
    except Exception:  # noqa: BLE001 -- a malformed EXIF block: keep the pixels as stored
        return out


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] + " ..." if len(text) > 200 else text or type(e).__name__


def _to_8bit(img: Image.Image) -> Image.Image:
    """High bit-depth grey images (``I;16*``, ``I``, ``F``) as 8-bit ``L``: 16-bit ranges scaled by 1/257,
    floats in ``[0, 1]`` by 255 (other values are clipped to ``[0, 255]``)."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    arr = np.asarray(img, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    hi = float(finite.max()) if finite.size else 0.0
    lo = float(finite.min()) if finite.size else 0.0
    if img.mode.startswith("I;16") or (img.mode == "I" and hi > 255):
        arr = arr / 257.0
    elif img.mode == "F" and lo >= 0.0 and hi <= 1.0:
        arr = arr * 255.0
    arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """An image with transparency (an alpha channel, or a palette / colour-key ``transparency`` entry)
    composited onto white, as ``RGB``; others unchanged."""
    if not (img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info):
        return img
    try:
        rgba = img.convert("RGBA")
    except ValueError:  # e.g. premultiplied "La": un-premultiply first
        rgba = img.convert("LA").convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def image_to_tensor(img: Image.Image, channels: int = 3, size: tuple[int, int] | None = None) -> Tensor:
    """A PIL image as a ``(1, C, H, W)`` float32 tensor in ``[-1, 1]``.

    ``channels`` 1 converts to grey, 3 to RGB; ``size = (H, W)`` resizes with a box filter (after the
    conversions below). How each kind of image is converted:

    * 16-bit and float grey (``I;16*``, ``I``, ``F``): brought to 8 bits first (see :func:`_to_8bit`);
      16-bit colour PNGs (RGB, RGBA, grey + alpha) are opened by Pillow as 8-bit, keeping the high byte.
    * Transparency (``RGBA``, ``LA``, ``PA``, a palette or colour key with a ``transparency`` entry):
      **composited onto white** (what a viewer shows; a fully transparent pixel is white whatever colour
      it stores, a fully opaque one keeps its colour exactly). The alpha channel is then dropped.
    * Palette (``P``): the palette's colours. Bilevel (``1``): black 0, white 255.
    * Grey to RGB (``channels=3``): the grey value in all three channels.
    * Colour to grey (``channels=1``): Pillow's ITU-R 601-2 luma, ``L = (299 R + 587 G + 114 B) / 1000``.
    * ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's conversion to RGB (no ICC colour management: an
      embedded profile is ignored).

    A mode Pillow cannot convert raises a ``ValueError``.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels}")
    mode = img.mode
    try:
        img = _flatten_alpha(_to_8bit(img))
        if channels == 1 and img.mode not in ("L", "RGB"):
            img = img.convert("RGB")  # e.g. LAB -> L is not a Pillow conversion; LAB -> RGB -> L is
        img = img.convert("L" if channels == 1 else "RGB")
    except ValueError as e:
        raise ValueError(f"cannot convert a {mode} image to {'grey' if channels == 1 else 'RGB'} ({e})") from None
    if size is not None:
        h, w = (int(v) for v in size)
        if h < 1 or w < 1:
            raise ValueError(f"size: expected positive (H, W), got {tuple(size)}")
        img = img.resize((w, h), Image.BOX)
    arr = np.asarray(img, dtype=np.float32).reshape(img.height, img.width, channels) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def read_image(
    path: str | os.PathLike, *, arg: str = "image", channels: int = 3, size: tuple[int, int] | None = None
) -> Tensor:
    """An image file as a ``(1, C, H, W)`` float32 tensor in ``[-1, 1]``: :func:`open_image` (one-line
    errors naming ``arg`` for missing, non-image, truncated and oversized files), then
    :func:`image_to_tensor`, whose conversions apply: alpha (and palette transparency) is composited onto
    white, palette images take their palette's colours, grey becomes RGB by repetition and colour becomes
    grey by ITU-R 601-2 luma, 16-bit images are scaled to 8 bits."""
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels}")
    img = open_image(path, arg)
    try:
        return image_to_tensor(img, channels, size)
    except ValueError as e:
        if str(e).startswith("size:"):
            raise
        raise ValueError(f"{arg}: {str(Path(path))!r}: {e}") from None


# -------------------------------------------------------------------------------------------------
# Writing images
# -------------------------------------------------------------------------------------------------


def to_uint8(x: Tensor) -> np.ndarray:
    """``(C, H, W)`` in ``[-1, 1]`` -> ``(H, W)`` (C = 1) or ``(H, W, 3)`` uint8 array."""
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"image: expected (C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()


def save_pil(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PIL image as PNG, atomically."""
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def save_image(img: Tensor, path: str | os.PathLike, scale: int = 1) -> Path:
    """Write one ``(1, C, H, W)`` or ``(C, H, W)`` image in ``[-1, 1]`` as PNG (nearest upscaling by ``scale``)."""
    x = img[0] if img.ndim == 4 else img
    pil = Image.fromarray(to_uint8(x))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return save_pil(pil, path)


def image_grid(x: Tensor, nrow: int | None = None, pad: int = 1, scale: int = 4, pad_value: float = 1.0) -> Image.Image:
    """A PIL image tiling ``(B, C, H, W)`` images in ``[-1, 1]`` (C = 1 or 3), ``nrow`` per row
    (default about sqrt(B)), ``pad`` pixels of ``pad_value`` between them, nearest-upscaled by ``scale``."""
    b, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"images: a PNG grid needs 1 or 3 channels, got {c}")
    nrow = nrow or max(1, round(b**0.5))
    rows = (b + nrow - 1) // nrow
    canvas = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), float(pad_value))
    img = x.detach().float().cpu().clamp(-1, 1)
    for i in range(b):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[:, top : top + h, left : left + w] = img[i]
    pil = Image.fromarray(to_uint8(canvas))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def save_grid(
    images: Tensor,
    path: str | os.PathLike,
    nrow: int | None = None,
    pad: int = 1,
    scale: int = 4,
    pad_value: float = 1.0,
) -> Path:
    """Write :func:`image_grid` of ``images`` as a PNG."""
    return save_pil(image_grid(images, nrow, pad, scale, pad_value), path)


def save_strip(images: Sequence[Tensor], path: str | os.PathLike, scale: int = 16) -> Path:
    """Write ``(1, C, H, W)`` images side by side (no padding), nearest-upscaled by ``scale``."""
    return save_grid(torch.cat(list(images)), path, nrow=len(images), pad=0, scale=scale)


def scatter_png(x: Tensor, size: int = 400, lim: float | None = None) -> Image.Image:
    """A PIL scatter plot of 2-D points ``(N, 2)``."""
    p = x.detach().double().cpu()
    lim = lim or float(p.abs().max().clamp(min=1e-6)) * 1.05
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    for u, v in ((p / lim + 1) / 2 * (size - 1)).tolist():
        d.ellipse((u - 1, size - 2 - v, u + 1, size - v), fill=(20, 60, 160))
    return img


def check_output_path(path: str | os.PathLike, arg: str = "out", suffixes: Sequence[str] | None = None) -> Path:
    """``path`` if a file can be written there: its suffix one of ``suffixes`` (any when ``None``), not an
    existing folder, and its nearest existing parent a writable folder; else a ``ValueError`` naming
    ``arg``. Nothing is created (commands call it before doing any work)."""
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise ValueError(f"{arg}: {str(path)!r} is a folder; expected a file name")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise ValueError(f"{arg}: unsupported file type {p.suffix!r} of {str(p)!r}; expected one of {list(suffixes)}")
    parent = p.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{arg}: cannot write {str(p)!r}: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{arg}: cannot write {str(p)!r}: no write permission in {str(parent)!r}")
    return p


def check_sample_path(path: str | os.PathLike, arg: str = "out") -> Path:
    """``path`` if its suffix is one :func:`save_samples` writes and it can be written
    (``ValueError`` naming ``arg`` otherwise, see :func:`check_output_path`)."""
    return check_output_path(path, arg, SAMPLE_SUFFIXES)


def save_samples(
    path: str | os.PathLike, samples: Tensor, labels: Tensor | None = None, images: Tensor | None = None
) -> Path:
    """Write samples by suffix: ``.png`` (an image grid, or a scatter plot of 2-D points; a single image is
    written at its own resolution, pixel for pixel, so ``diffzoo watermark detect`` / ``detect`` can read it),
    ``.npz`` or ``.safetensors`` (keys ``samples`` and, when given, ``labels`` and ``images``).

    ``images`` (masked models: the decoded tokens, ``(B, C, H, W)``) is what the PNG draws.
    """
    path = check_sample_path(path)
    suffix = path.suffix.lower()
    tensors = {"samples": samples, "labels": labels, "images": images}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items() if v is not None}
    if suffix == ".png":
        pix = images if images is not None else samples if samples.ndim == 4 else None
        if pix is not None:
            return save_image(pix[0], path) if pix.shape[0] == 1 and pix.shape[1] in (1, 3) else save_grid(pix, path)
        if samples.ndim == 2 and samples.shape[1] == 2:
            return save_pil(scatter_png(samples), path)
        raise ValueError(f"out: cannot draw samples of shape {tuple(samples.shape)} as a PNG; use .npz")
    with atomic_path(path) as tmp:
        if suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **{k: v.numpy() for k, v in tensors.items()})
        else:
            write_safetensors(tensors, tmp)
    return path


__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_SAFETENSORS_HEADER",
    "META_KEY",
    "SAMPLE_SUFFIXES",
    "atomic_path",
    "atomic_save_safetensors",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_path",
    "check_sample_path",
    "format_table",
    "image_grid",
    "image_to_tensor",
    "open_image",
    "read_image",
    "read_safetensors",
    "read_safetensors_metadata",
    "save_grid",
    "save_image",
    "save_pil",
    "save_samples",
    "save_strip",
    "scatter_png",
    "to_uint8",
    "write_safetensors",
]
