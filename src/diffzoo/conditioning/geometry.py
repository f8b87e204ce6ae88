"""Multi-view 2.5D geometry: orthographic cameras, back-projection of depth/normal maps, cross-view
consistency metrics, fusion into a voxel occupancy, and a PLY export.

The Direct2.5 analogue (*Direct2.5: Diverse Text-to-3D Generation via Multi-view 2.5D Diffusion*,
Lu et al., CVPR 2024, arXiv 2311.15980) generates K views of 2.5D maps and fuses them into one shape.
The paper fuses normal maps by differentiable rasterisation of a mesh; here the views carry depth as
well as normals, so fusion is a closed-form *depth-aware space carving*: a voxel is occupied when, in
at least ``min_votes`` views, it projects onto the foreground and lies on or behind the visible
surface. Fusing the exact views of a convex primitive recovers it up to the views' discretisation
(tested). This reconstruction of the fusion step is ours, not the paper's.

View format (shared with :mod:`diffzoo.data.primitives3d`): a view is a ``(4, H, W)`` tensor in
``[-1, 1]``: channels 0-2 the unit surface normal in the camera frame ``(right, up, towards camera)``,
channel 3 the depth ``z = -P . c`` of the surface point ``P`` along the viewing direction (``c``: unit
vector from the origin towards the camera); background pixels have normal 0 and depth
:data:`BACKGROUND_DEPTH`. K views of one object form a ``(K, 4, H, W)`` tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffzoo.core.errors import check_finite, check_int, check_range, check_tensor

Tensor = torch.Tensor

#: Depth value of background pixels (the far end of the unit cube's depth range).
BACKGROUND_DEPTH = 1.0
#: A pixel is foreground when its normal's length exceeds this and its depth is below ``1 - FG_DEPTH_MARGIN``.
FG_NORMAL_MIN = 0.5
FG_DEPTH_MARGIN = 0.03


@dataclass(frozen=True)
class OrthoCamera:
    """An orthographic camera looking at the origin from azimuth/elevation (degrees), its image plane
    spanning ``[-extent, extent]^2`` in world units. World frame: z up."""

    azimuth: float
    elevation: float
    extent: float = 1.0

    def basis(self, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
        """``(right, up, c)``: image-plane axes and the unit vector from the origin towards the camera."""
        a, e = math.radians(self.azimuth), math.radians(self.elevation)
        c = torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)], dtype=dtype)
        right = torch.tensor([-math.sin(a), math.cos(a), 0.0], dtype=dtype)
        up = torch.linalg.cross(right, -c)
        return right, up, c

    def pixel_coords(self, res: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """Image-plane coordinates ``(u, v)`` of the pixel centres, each ``(res, res)``; row 0 is the top."""
        g = (torch.arange(res, dtype=dtype) + 0.5) / res * 2 - 1
        v, u = torch.meshgrid(-g * self.extent, g * self.extent, indexing="ij")
        return u, v

    def ray_points(self, res: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """Per-pixel points on the plane through the origin ``(res, res, 3)`` and the viewing direction
        ``-c``: the ray of a pixel is ``p + z * (-c)`` with depth ``z``."""
        right, up, c = self.basis(dtype)
        u, v = self.pixel_coords(res, dtype)
        return u[..., None] * right + v[..., None] * up, -c

    def project(self, points: Tensor, res: int) -> tuple[Tensor, Tensor, Tensor]:
        """Points ``(N, 3)`` -> nearest pixel ``(row, col)`` (clamped into the image) and depth ``z``."""
        right, up, c = (b.to(points) for b in self.basis(points.dtype))
        u, v, z = points @ right, points @ up, -(points @ c)
        col = ((u / self.extent + 1) / 2 * res).floor().long().clamp(0, res - 1)
        row = ((1 - v / self.extent) / 2 * res).floor().long().clamp(0, res - 1)
        return row, col, z


def default_cameras(k: int = 4, elevation: float = 20.0, azimuth0: float = 30.0) -> tuple[OrthoCamera, ...]:
    """``k`` cameras evenly spaced in azimuth (starting at ``azimuth0``) at one elevation."""
    k = check_int(k, "k", lo=1)
    check_range(elevation, "elevation", -90, 90)
    return tuple(OrthoCamera(azimuth0 + 360.0 * i / k, elevation) for i in range(k))


def check_views(views: Tensor, cameras: tuple[OrthoCamera, ...] | list[OrthoCamera], arg: str = "views") -> Tensor:
    """``views`` as a finite ``(K, 4, H, H)`` tensor with one camera per view (else ``ValueError`` naming ``arg``)."""
    check_tensor(views, arg, ndim=4, floating=True)
    check_finite(views, arg)
    if views.shape[1] != 4 or views.shape[2] != views.shape[3]:
        raise ValueError(f"{arg}: expected (K, 4, H, H) normal+depth maps, got {tuple(views.shape)}")
    if len(cameras) != views.shape[0]:
        raise ValueError(f"cameras: expected one camera per view ({views.shape[0]}), got {len(cameras)}")
    return views


def foreground(views: Tensor) -> Tensor:
    """Boolean foreground mask ``(..., H, W)`` of normal+depth maps ``(..., 4, H, W)``."""
    n = views[..., :3, :, :].norm(dim=-3)
    return (n > FG_NORMAL_MIN) & (views[..., 3, :, :] < BACKGROUND_DEPTH - FG_DEPTH_MARGIN)


def backproject(views: Tensor, cameras: tuple[OrthoCamera, ...] | list[OrthoCamera]) -> list[Tensor]:
    """The foreground pixels of each view as world points: a list of ``(N_k, 6)`` float64 tensors
    ``[x, y, z, nx, ny, nz]`` (normals rotated from the camera frame into the world frame, normalised)."""
    check_views(views, cameras)
    res = views.shape[-1]
    out = []
    for view, cam in zip(views.double(), cameras):
        base, d = cam.ray_points(res)
        right, up, c = cam.basis()
        fg = foreground(view)
        pts = base[fg] + view[3][fg][:, None] * d
        n = view[0][fg][:, None] * right + view[1][fg][:, None] * up + view[2][fg][:, None] * c
        n = n / n.norm(dim=1, keepdim=True).clamp(min=1e-8)
        out.append(torch.cat([pts, n], 1))
    return out


def reprojection_error(views: Tensor, cameras: tuple[OrthoCamera, ...] | list[OrthoCamera]) -> float:
    """Cross-view reprojection error: every foreground point of view ``i``, projected into view ``j != i``,
    must not lie in front of what view ``j`` sees (a free-space violation). The error is the mean over
    points and ordered view pairs of ``max(0, d_j(pixel) - z_j(P))`` with ``d_j`` the smallest depth in
    the 3x3 neighbourhood of the pixel (one pixel of slack; background depth counts as 1), in
    world units (the object lies in the unit ball). Exactly consistent views give the discretisation floor only."""
    pts = backproject(views, cameras)
    res = views.shape[-1]
    depth = torch.where(foreground(views), views[:, 3].double(), BACKGROUND_DEPTH)
    depth = -torch.nn.functional.max_pool2d(-depth[:, None], 3, 1, 1)[:, 0]  # one pixel of slack
    total, count = 0.0, 0
    for i, p in enumerate(pts):
        if len(p) == 0:
            continue
        for j, cam in enumerate(cameras):
            if j == i:
                continue
            row, col, z = cam.project(p[:, :3], res)
            total += float((depth[j][row, col] - z).clamp(min=0).sum())
            count += len(p)
    return total / max(count, 1)


def chamfer(a: Tensor, b: Tensor) -> float:
    """Symmetric Chamfer distance between point sets ``(N, 3)`` and ``(M, 3)``: the mean nearest-neighbour
    distance from ``a`` to ``b`` plus that from ``b`` to ``a`` (``inf`` when one set is empty)."""
    if len(a) == 0 or len(b) == 0:
        return math.inf
    d = torch.cdist(a[:, :3].double(), b[:, :3].double())
    return float(d.min(1).values.mean() + d.min(0).values.mean())


def view_chamfer(views: Tensor, cameras: tuple[OrthoCamera, ...] | list[OrthoCamera]) -> float:
    """Mean Chamfer distance between the back-projected points of neighbouring views ``(i, i+1 mod K)``
    (neighbours share most of their visible surface; the exact views' value is the floor)."""
    pts = backproject(views, cameras)
    k = len(pts)
    vals = [chamfer(pts[i], pts[(i + 1) % k]) for i in range(k)] if k > 1 else [0.0]
    return sum(vals) / len(vals)


def voxel_centers(res: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Centres of a ``res^3`` grid over ``[-1, 1]^3`` as ``(res, res, res, 3)``, indexed ``[ix, iy, iz]``."""
    g = (torch.arange(res, dtype=dtype) + 0.5) / res * 2 - 1
    return torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1)


def fuse_voxels(
    views: Tensor,
    cameras: tuple[OrthoCamera, ...] | list[OrthoCamera],
    res: int = 32,
    min_votes: int | None = None,
    tol: float | None = None,
) -> Tensor:
    """Depth-aware space carving: voxel ``v`` is occupied when in at least ``min_votes`` views (default:
    all) it projects onto a foreground pixel and its depth is at least that pixel's depth minus ``tol``
    (default: one pixel size ``2 / H``). Returns a boolean ``(res, res, res)`` grid over ``[-1, 1]^3``."""
    check_views(views, cameras)
    res = check_int(res, "res", lo=2, hi=256)
    k, h = views.shape[0], views.shape[-1]
    min_votes = k if min_votes is None else check_int(min_votes, "min_votes", lo=1, hi=k)
    tol = 2.0 / h if tol is None else check_range(tol, "tol", 0)
    pts = voxel_centers(res).reshape(-1, 3)
    fg = foreground(views)
    votes = torch.zeros(len(pts), dtype=torch.long)
    for j, cam in enumerate(cameras):
        row, col, z = cam.project(pts, h)
        ok = fg[j][row, col] & (z >= views[j, 3].double()[row, col] - tol)
        votes += ok.long()
    return (votes >= min_votes).reshape(res, res, res)


def voxel_iou(a: Tensor, b: Tensor) -> float:
    """Intersection over union of two boolean occupancy grids (1.0 when both are empty)."""
    if a.shape != b.shape:
        raise ValueError(f"b: expected shape {tuple(a.shape)}, got {tuple(b.shape)}")
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def render_voxels(
    occ: Tensor, camera: OrthoCamera, res: int = 64, light: tuple[float, ...] = (0.4, 0.5, 0.77)
) -> Tensor:
    """A shaded grey ``(3, res, res)`` image in ``[-1, 1]`` of an occupancy grid seen by ``camera``
    (ray marching to the first occupied voxel; Lambertian shading of the voxel face normal)."""
    check_tensor(occ, "occ", ndim=3)
    n = occ.shape[0]
    base, d = camera.ray_points(res)
    steps = torch.linspace(-1.8, 1.8, 4 * n + 1, dtype=torch.float64)
    p = base[:, :, None, :] + steps[None, None, :, None] * d  # (res, res, S, 3)
    idx = ((p + 1) / 2 * n).floor().long()
    inside = ((idx >= 0) & (idx < n)).all(-1)
    idx = idx.clamp(0, n - 1)
    hit = inside & occ[idx[..., 0], idx[..., 1], idx[..., 2]]
    any_hit = hit.any(-1)
    first = hit.float().argmax(-1)
    vox = idx.gather(2, first[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]
    prev = idx.gather(2, (first - 1).clamp(min=0)[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]
    normal = (prev - vox).double()
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    lvec = torch.tensor(light, dtype=torch.float64)
    shade = (normal @ (lvec / lvec.norm())).clamp(min=0) * 0.75 + 0.2
    img = torch.where(any_hit, shade, torch.ones_like(shade))
    return (img * 2 - 1).float()[None].expand(3, -1, -1).clone()


def surface_points(occ: Tensor, views_points: list[Tensor] | None = None) -> Tensor:
    """Points of the fused surface: the back-projected view points that fall in an occupied voxel or
    its neighbours (``(N, 6)``, positions and normals); with no view points, the boundary voxel centres."""
    n = occ.shape[0]
    if views_points is None:
        pad = torch.nn.functional.pad(occ[None, None].float(), (1, 1, 1, 1, 1, 1), value=0.0)
        interior = -torch.nn.functional.max_pool3d(-pad, 3, 1)[0, 0].bool()
        boundary = occ & ~interior
        c = voxel_centers(n)[boundary]
        return torch.cat([c, torch.zeros_like(c)], 1)
    pts = torch.cat(views_points) if views_points else torch.zeros(0, 6, dtype=torch.float64)
    near = torch.nn.functional.max_pool3d(occ[None, None].float(), 3, 1, 1)[0, 0].bool()
    idx = ((pts[:, :3] + 1) / 2 * n).floor().long().clamp(0, n - 1)
    return pts[near[idx[:, 0], idx[:, 1], idx[:, 2]]]


_FACES = (  # (axis, direction) -> the four corners of that voxel face, counter-clockwise seen from outside
    ((0, 1), ((1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1))),
    ((0, -1), ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0))),
    ((1, 1), ((0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0))),
    ((1, -1), ((0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1))),
    ((2, 1), ((0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1))),
    ((2, -1), ((0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0))),
)


def voxel_mesh(occ: Tensor) -> tuple[Tensor, Tensor]:
    """The boundary of an occupancy grid over ``[-1, 1]^3`` as a quad mesh: vertices ``(V, 3)`` float64
    (shared corners merged) and faces ``(F, 4)`` int64, outward-facing."""
    check_tensor(occ, "occ", ndim=3)
    n = occ.shape[0]
    pad = torch.nn.functional.pad(occ.bool(), (1, 1, 1, 1, 1, 1), value=False)
    corners = []
    for (axis, sgn), corner in _FACES:
        nb = torch.roll(pad, -sgn, dims=axis)[1:-1, 1:-1, 1:-1]
        vox = (occ.bool() & ~nb).nonzero()
        if len(vox) == 0:
            continue
        c = vox[:, None, :] + torch.tensor(corner)[None]
        corners.append(c.reshape(-1, 3))
    if not corners:
        return torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.long)
    allc = torch.cat(corners)
    uniq, inv = torch.unique(allc, dim=0, return_inverse=True)
    verts = uniq.double() / n * 2 - 1
    return verts, inv.reshape(-1, 4)


def ply_bytes(
    vertices: Tensor,
    faces: Tensor | None = None,
    normals: Tensor | None = None,
    colors: Tensor | None = None,
) -> bytes:
    """An ASCII PLY file (Stanford polygon format) of a point cloud or mesh: ``vertices (V, 3)``, optional
    ``normals (V, 3)``, ``colors (V, 3)`` in ``[0, 1]`` and polygon ``faces (F, n)`` of vertex indices."""
    check_tensor(vertices, "vertices", ndim=2, shape=(None, 3))
    check_finite(vertices, "vertices")
    v = vertices.double()
    cols = [v]
    head = ["ply", "format ascii 1.0", "comment written by diffzoo", f"element vertex {len(v)}"]
    head += [f"property float {a}" for a in "xyz"]
    if normals is not None:
        check_tensor(normals, "normals", shape=(len(v), 3))
        cols.append(normals.double())
        head += [f"property float {a}" for a in ("nx", "ny", "nz")]
    if colors is not None:
        check_tensor(colors, "colors", shape=(len(v), 3))
        cols.append((colors.double().clamp(0, 1) * 255).round())
        head += [f"property uchar {a}" for a in ("red", "green", "blue")]
    nf = 0 if faces is None else len(faces)
    if faces is not None:
        check_tensor(faces, "faces", ndim=2, floating=False)
        if nf and (int(faces.min()) < 0 or int(faces.max()) >= len(v)):
            raise ValueError(f"faces: vertex indices must lie in [0, {len(v)}), got [{faces.min()}, {faces.max()}]")
        head += [f"element face {nf}", "property list uchar int vertex_indices"]
    head.append("end_header")
    data = torch.cat(cols, 1).tolist()
    ncol = 3 + (3 if normals is not None else 0)
    lines = [" ".join([f"{x:.6g}" for x in row[:ncol]] + [str(int(x)) for x in row[ncol:]]) for row in data]
    if faces is not None:
        lines += [" ".join([str(faces.shape[1])] + [str(int(i)) for i in f]) for f in faces.tolist()]
    return ("\n".join(head + lines) + "\n").encode("ascii")


def obj_bytes(vertices: Tensor, faces: Tensor) -> bytes:
    """A Wavefront OBJ file of a polygon mesh (``vertices (V, 3)``, ``faces (F, n)`` 0-based indices)."""
    check_tensor(vertices, "vertices", ndim=2, shape=(None, 3))
    check_tensor(faces, "faces", ndim=2, floating=False)
    lines = ["# written by diffzoo"] + [f"v {x:.6g} {y:.6g} {z:.6g}" for x, y, z in vertices.double().tolist()]
    lines += ["f " + " ".join(str(int(i) + 1) for i in f) for f in faces.tolist()]
    return ("\n".join(lines) + "\n").encode("ascii")


def parse_ply(data: bytes) -> tuple[Tensor, Tensor | None]:
    """Read back an ASCII PLY written by :func:`ply_bytes` (or any ASCII PLY whose first three vertex
    properties are x, y, z): ``(vertices (V, 3), faces (F, n) or None)``; ``ValueError`` if malformed."""
    text = data.decode("ascii", errors="strict").splitlines()
    if not text or text[0].strip() != "ply" or "format ascii 1.0" not in (text[1] if len(text) > 1 else ""):
        raise ValueError("data: not an ASCII PLY file")
    nv = nf = 0
    end = None
    for i, line in enumerate(text):
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            nv = int(parts[2])
        elif parts[:2] == ["element", "face"]:
            nf = int(parts[2])
        elif line.strip() == "end_header":
            end = i
            break
    if end is None or len(text) < end + 1 + nv + nf:
        raise ValueError("data: truncated PLY file")
    verts = torch.tensor([[float(x) for x in text[end + 1 + i].split()[:3]] for i in range(nv)], dtype=torch.float64)
    faces = None
    if nf:
        rows = [[int(x) for x in text[end + 1 + nv + i].split()] for i in range(nf)]
        if any(r[0] != len(r) - 1 for r in rows):
            raise ValueError("data: malformed face list")
        faces = torch.tensor([r[1:] for r in rows], dtype=torch.long)
    return verts.reshape(nv, 3), faces
