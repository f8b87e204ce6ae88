"""Conditioning beyond a caption: Direct2.5-style multi-view 2.5D generation fused into 3-D, and
IDM-VTON-style virtual try-on with garment conditioning (small exact analogues of the papers).

* :mod:`~diffzoo.conditioning.geometry` -- orthographic cameras, back-projection of normal+depth views,
  cross-view reprojection error, Chamfer distance, depth-aware space-carving fusion into voxels, voxel IoU,
  voxel renders, voxel boundary meshes and PLY bytes (*Direct2.5*, Lu et al., CVPR 2024, arXiv 2311.15980);
* :mod:`~diffzoo.conditioning.multiview` -- ``generate_views`` (any sampler, CFG over caption tokens),
  ``fuse``, ``text_to_3d`` (timed), ``export_mesh``;
* :mod:`~diffzoo.conditioning.tryon` -- ``tryon_sample`` (masked inpainting, the person pasted back exactly
  outside the mask), ``customize`` (test-time fine-tuning on one pair), masked PSNR and pattern-fidelity
  measures (*IDM-VTON*, Choi et al., ECCV 2024, arXiv 2403.05139).

Algorithms only: the denoisers, cameras and data come in as arguments (networks: :mod:`diffzoo.models.
multiview`, :mod:`diffzoo.models.tryon`; worlds: :mod:`diffzoo.data.primitives3d`, :mod:`diffzoo.data.tryon`).
"""

from diffzoo.conditioning import geometry, multiview, tryon
from diffzoo.conditioning.geometry import (
    OrthoCamera,
    backproject,
    chamfer,
    default_cameras,
    fuse_voxels,
    parse_ply,
    ply_bytes,
    reprojection_error,
    view_chamfer,
    voxel_iou,
    voxel_mesh,
)
from diffzoo.conditioning.multiview import MultiViewResult, export_mesh, fuse, generate_views, text_to_3d
from diffzoo.conditioning.tryon import customize, masked_psnr, pattern_match, tryon_sample

__all__ = [
    "MultiViewResult",
    "OrthoCamera",
    "backproject",
    "chamfer",
    "customize",
    "default_cameras",
    "export_mesh",
    "fuse",
    "fuse_voxels",
    "generate_views",
    "geometry",
    "masked_psnr",
    "multiview",
    "parse_ply",
    "pattern_match",
    "ply_bytes",
    "reprojection_error",
    "text_to_3d",
    "tryon",
    "tryon_sample",
    "view_chamfer",
    "voxel_iou",
    "voxel_mesh",
]
