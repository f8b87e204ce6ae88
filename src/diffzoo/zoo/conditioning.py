"""Shipped conditioning models (kinds ``multiview`` and ``tryon``) and the file-level pipelines behind
``diffzoo sample multiview --prompt ... --out X.ply`` and ``diffzoo tryon --person ... --garment ...``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffzoo.conditioning.geometry import default_cameras, obj_bytes, ply_bytes
from diffzoo.conditioning.multiview import export_mesh, text_to_3d
from diffzoo.conditioning.tryon import tryon_sample
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.parameterization import ClipX0
from diffzoo.data import primitives3d, tryon
from diffzoo.io import atomic_path, check_output_path, open_image, save_image
from diffzoo.zoo import ZooModel, load

DEFAULT_MULTIVIEW = "multiview-joint"
DEFAULT_TRYON = "tryon-full"
MESH_SUFFIXES = (".ply", ".obj")


def load_multiview(name: str = DEFAULT_MULTIVIEW, arg: str = "model") -> tuple[Denoiser, ZooModel]:
    """A shipped K-view denoiser (kind ``multiview``) as a :class:`~diffzoo.core.Denoiser` (x0 clipped to
    ``[-1, 1]``, the data range, as DDPM samples pixel models) and its zoo entry."""
    zm = load(name, kinds=("multiview",), arg=arg)
    return zm.denoiser(x0_correction=ClipX0(1.0)), zm


def load_tryon(name: str = DEFAULT_TRYON, arg: str = "model") -> tuple[Denoiser, ZooModel]:
    """A shipped try-on denoiser (kind ``tryon``; x0 clipped to ``[-1, 1]``) and its zoo entry."""
    zm = load(name, kinds=("tryon",), arg=arg)
    return zm.denoiser(x0_correction=ClipX0(1.0)), zm


def write_mesh(path: str | os.PathLike, mesh: dict[str, Any]) -> Path:
    """Write :func:`~diffzoo.conditioning.multiview.export_mesh`'s mesh as ``.ply`` (mesh + coloured
    vertices) or ``.obj``, atomically."""
    p = check_output_path(path, "out", MESH_SUFFIXES)
    if p.suffix.lower() == ".ply":
        data = ply_bytes(mesh["vertices"], mesh["faces"], colors=mesh["colors"])
    else:
        data = obj_bytes(mesh["vertices"], mesh["faces"])
    with atomic_path(p) as tmp:
        Path(tmp).write_bytes(data)
    return p


def text_to_mesh(
    prompt: str,
    out: str | os.PathLike,
    *,
    model: str = DEFAULT_MULTIVIEW,
    seed: int = 0,
    num_steps: int = 25,
    guidance: float = 1.0,
    voxel_res: int = 32,
    views_png: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Prompt -> K generated views -> fused voxels -> ``out`` (``.ply`` or ``.obj``). Bad input raises a
    one-line ``ValueError`` naming ``prompt`` (unknown primitive word), ``out`` (unsupported suffix) or
    ``model`` -- all checked before any work. Returns a summary (shape, voxels, timings, consistency)."""
    check_output_path(out, "out", MESH_SUFFIXES)
    if views_png is not None:
        check_output_path(views_png, "views", (".png",))
    tokens = primitives3d.prompt_tokens(prompt)
    den, zm = load_multiview(model)
    cams = default_cameras(zm.sample_shape[0])
    res = text_to_3d(den, tokens, cams, num_steps=num_steps, guidance=guidance, seeds=[seed], voxel_res=voxel_res)
    color = primitives3d.color_of_tokens(tokens)[0]
    mesh = export_mesh(res.occupancy[0], color=color)
    write_mesh(out, mesh)
    if views_png is not None:
        save_image(views_grid(res.views[0]), views_png, scale=4)
    return {
        "prompt": prompt,
        "model": zm.name,
        "voxels": int(res.occupancy[0].sum()),
        "vertices": len(mesh["vertices"]),
        "faces": len(mesh["faces"]),
        "reprojection_error": res.reprojection[0],
        "seconds": res.seconds_per_object,
        "out": str(out),
    }


def views_grid(views: torch.Tensor) -> torch.Tensor:
    """``(K, 4, H, W)`` views as one ``(3, 2H, K W)`` image: normals (as RGB) above depths (grey)."""
    k, _, h, w = views.shape
    normals = torch.cat(list(views[:, :3]), 2)
    depth = torch.cat(list(views[:, 3:4].expand(-1, 3, -1, -1)), 2)
    return torch.cat([normals, -depth], 1)


def _read_rgba(path: str | os.PathLike, arg: str) -> tuple[np.ndarray, np.ndarray | None]:
    img = open_image(path, arg)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    return rgba[..., :3], (rgba[..., 3] if has_alpha else None)


def read_tryon_inputs(
    person: str | os.PathLike, garment: str | os.PathLike, mask: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Person ``(1, 3, 24, 24)``, mask ``(1, 1, 24, 24)`` and garment ``(1, 3, 16, 16)`` tensors from image
    files. The mask is ``mask`` (white = replace) or, without one, the person's transparent pixels; a person
    with neither, or an image of the wrong size, raises a one-line ``ValueError`` naming the argument."""
    rgb, alpha = _read_rgba(person, "person")
    if rgb.shape[:2] != (tryon.CANVAS, tryon.CANVAS):
        raise ValueError(f"person: expected a {tryon.CANVAS}x{tryon.CANVAS} image, got {rgb.shape[1]}x{rgb.shape[0]}")
    if mask is not None:
        mrgb, _ = _read_rgba(mask, "mask")
        if mrgb.shape[:2] != rgb.shape[:2]:
            raise ValueError(
                f"mask: expected the person's size {rgb.shape[1]}x{rgb.shape[0]}, got {mrgb.shape[1]}x{mrgb.shape[0]}"
            )
        m = (mrgb.mean(-1) > 0.5).astype(np.float32)
    elif alpha is not None and bool((alpha < 0.5).any()):
        m = (alpha < 0.5).astype(np.float32)
    else:
        raise ValueError(
            "person: no mask; pass --mask M.png (white = region to replace) or a person PNG whose transparent "
            "pixels mark that region"
        )
    g, _ = _read_rgba(garment, "garment")
    if g.shape[:2] != (tryon.GARMENT, tryon.GARMENT):
        raise ValueError(f"garment: expected a {tryon.GARMENT}x{tryon.GARMENT} image, got {g.shape[1]}x{g.shape[0]}")

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous() * 2 - 1

    person_t, _, garment_t = tryon.check_tryon_inputs(t(rgb), torch.from_numpy(m)[None, None], t(g))
    return person_t, torch.from_numpy(m)[None, None], garment_t


def tryon_files(
    person: str | os.PathLike,
    garment: str | os.PathLike,
    out: str | os.PathLike,
    *,
    mask: str | os.PathLike | None = None,
    model: str = DEFAULT_TRYON,
    caption: str | None = None,
    seed: int = 0,
    num_steps: int = 25,
) -> dict[str, Any]:
    """Read the person, mask and garment images, try the garment on, write ``out`` (PNG). ``caption``: the
    detailed garment caption's tokens are used by ``full`` models (default: the null caption)."""
    check_output_path(out, "out", (".png",))
    person_t, mask_t, garment_t = read_tryon_inputs(person, garment, mask)
    tokens = tryon.caption_tokens(caption) if caption else None
    den, zm = load_tryon(model)
    result = tryon_sample(den, person_t, mask_t, garment_t, tokens, num_steps=num_steps, seeds=[seed])
    save_image(result, out)
    return {
        "model": zm.name,
        "mode": zm.config["arch_config"].get("mode"),
        "masked_pixels": int(mask_t.sum()),
        "out": str(out),
    }


__all__ = [
    "DEFAULT_MULTIVIEW",
    "DEFAULT_TRYON",
    "MESH_SUFFIXES",
    "load_multiview",
    "load_tryon",
    "read_tryon_inputs",
    "text_to_mesh",
    "tryon_files",
    "views_grid",
    "write_mesh",
]
