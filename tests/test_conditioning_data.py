"""The conditioning worlds are exact: ray-cast primitives (surface, normals, depth, areas, volumes) and the
try-on target (the person outside the mask, the garment's pattern inside), and fusion of the exact views
recovers the primitive."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffzoo.conditioning import geometry as G
from diffzoo.conditioning import tryon as CT
from diffzoo.data import primitives3d as P
from diffzoo.data import tryon as T


def _residual(obj: P.Object3D, pts: torch.Tensor) -> np.ndarray:
    """Distance-like residual of world points to the primitive's surface (0 on the surface)."""
    q = pts.numpy() @ obj.rotation() / obj.scale
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    if obj.shape == "sphere":
        return np.abs(np.linalg.norm(q, axis=1) - 1)
    if obj.shape == "cube":
        return np.abs(np.abs(q).max(1) - P.CUBE_HALF)
    if obj.shape == "cylinder":
        return np.minimum(np.abs(np.hypot(x, y) - P.CYL_RADIUS), np.abs(np.abs(z) - P.CYL_HALF))
    if obj.shape == "cone":
        k = P.CONE_RADIUS / (P.CONE_Z1 - P.CONE_Z0)
        return np.minimum(np.abs(np.hypot(x, y) - k * (P.CONE_Z1 - z)), np.abs(z - P.CONE_Z0))
    return np.abs(np.hypot(np.hypot(x, y) - P.TORUS_R, z) - P.TORUS_r)


@pytest.mark.parametrize("shape", P.SHAPES)
def test_hits_lie_on_the_surface_and_normals_face_the_camera(shape):
    obj = P.sample_object(torch.Generator().manual_seed(3), shape)
    views = P.render_views(obj, res=24)
    cams = G.default_cameras(4)
    pts = torch.cat(G.backproject(views, cams))
    assert len(pts) > 100
    assert _residual(obj, pts[:, :3]).max() < 1e-4  # float32 storage of depth
    fg = G.foreground(views)
    assert bool((views[:, 2][fg] > -1e-3).all())  # visible surfaces face the camera
    assert torch.allclose(views[:, :3].norm(dim=1)[fg], torch.ones(()), atol=1e-4)
    assert bool((views[:, 3][~fg] == G.BACKGROUND_DEPTH).all())


@pytest.mark.parametrize("shape", ["sphere", "cube"])
def test_depth_gradient_matches_normals(shape):
    """On a surface z(u, v) seen orthographically, dz/du = n_u / n_c and dz/dv = n_v / n_c."""
    obj = P.Object3D(shape, "large", "red", 0.85, 0.4, 0.2)
    res = 96
    v = P.render_views(obj, [G.OrthoCamera(30.0, 20.0)], res)[0].double()
    h = 2.0 / res
    z = v[3]
    dzdu = (z[1:-1, 2:] - z[1:-1, :-2]) / (2 * h)
    dzdv = -(z[2:, 1:-1] - z[:-2, 1:-1]) / (2 * h)  # rows go down, v goes up
    n = v[:3, 1:-1, 1:-1]
    fg = G.foreground(v[None])[0]
    inner = fg[1:-1, 1:-1] & fg[2:, 1:-1] & fg[:-2, 1:-1] & fg[1:-1, 2:] & fg[1:-1, :-2] & (n[2] > 0.4)
    # same face on both sides (cube edges excluded): the normal does not change across the stencil
    same = (v[:3, 2:, 1:-1] - v[:3, :-2, 1:-1]).abs().amax(0) + (v[:3, 1:-1, 2:] - v[:3, 1:-1, :-2]).abs().amax(0)
    inner &= same < (0.2 if shape == "sphere" else 1e-6)
    assert int(inner.sum()) > 200
    err_u = (dzdu - n[0] / n[2])[inner].abs()
    err_v = (dzdv - n[1] / n[2])[inner].abs()
    tol = 0.05 if shape == "sphere" else 1e-4
    assert float(err_u.median()) < tol and float(err_v.median()) < tol


def test_known_silhouette_areas_and_volume():
    res = 200
    pix = (2.0 / res) ** 2
    s = 0.8

    def area(obj, cam):
        return float(G.foreground(P.render_views(obj, [cam], res)).sum()) * pix

    sph = P.Object3D("sphere", "large", "red", s)
    assert area(sph, G.OrthoCamera(10.0, 35.0)) == pytest.approx(math.pi * s * s, rel=0.01)
    cyl = P.Object3D("cylinder", "large", "red", s)
    assert area(cyl, G.OrthoCamera(0.0, 0.0)) == pytest.approx(4 * P.CYL_RADIUS * P.CYL_HALF * s * s, rel=0.02)
    cone = P.Object3D("cone", "large", "red", s)
    assert area(cone, G.OrthoCamera(0.0, 0.0)) == pytest.approx(
        P.CONE_RADIUS * (P.CONE_Z1 - P.CONE_Z0) * s * s, rel=0.02
    )
    tor = P.Object3D("torus", "large", "red", s)
    assert area(tor, G.OrthoCamera(0.0, 90.0)) == pytest.approx(4 * math.pi * P.TORUS_R * P.TORUS_r * s * s, rel=0.02)
    vol = float(P.occupancy(sph, 64).sum()) * (2 / 64) ** 3
    assert vol == pytest.approx(4 / 3 * math.pi * s**3, rel=0.02)


@pytest.mark.parametrize("shape", P.SHAPES)
def test_fusing_true_views_recovers_the_primitive(shape):
    obj = P.sample_object(torch.Generator().manual_seed(11), shape)
    cams = G.default_cameras(4)
    views = P.render_views(obj, cams, P.RESOLUTION)
    occ = G.fuse_voxels(views, cams, 32)
    # 4 views at 16x16 from 20 degrees above: the torus hole and the undersides are only partly carved
    assert G.voxel_iou(occ, P.occupancy(obj, 32)) > {"torus": 0.6, "cone": 0.65}.get(shape, 0.75)
    floor = G.reprojection_error(views, cams)  # exactly consistent views: only the pixel discretisation
    assert floor < 1e-3
    other = P.render_views(
        P.Object3D("cube" if shape == "sphere" else "sphere", "large", "red", 0.9), cams, P.RESOLUTION
    )
    mixed = torch.cat([views[:2], other[2:]])
    assert G.reprojection_error(mixed, cams) > max(0.005, 10 * floor)
    assert G.voxel_iou(G.fuse_voxels(mixed, cams, 32), P.occupancy(obj, 32)) < G.voxel_iou(occ, P.occupancy(obj, 32))


def test_ply_and_obj_round_trip(tmp_path):
    occ = torch.zeros(4, 4, 4, dtype=torch.bool)
    occ[1, 1, 1] = True
    v, f = G.voxel_mesh(occ)
    assert v.shape == (8, 3) and f.shape == (6, 4)
    occ[1:3, 1:3, 1:3] = True
    v, f = G.voxel_mesh(occ)
    assert v.shape == (26, 3) and f.shape == (24, 4)
    # a closed surface: every edge is shared by exactly two faces
    edges: dict[tuple[int, int], int] = {}
    for quad in f.tolist():
        for a, b in zip(quad, quad[1:] + quad[:1]):
            edges[(min(a, b), max(a, b))] = edges.get((min(a, b), max(a, b)), 0) + 1
    assert set(edges.values()) == {2}
    data = G.ply_bytes(v, f, colors=torch.rand(len(v), 3))
    v2, f2 = G.parse_ply(data)
    assert torch.allclose(v2, v, atol=1e-6) and torch.equal(f2, f)
    obj = G.obj_bytes(v, f).decode().splitlines()
    assert sum(ln.startswith("v ") for ln in obj) == 26 and sum(ln.startswith("f ") for ln in obj) == 24
    with pytest.raises(ValueError, match="faces"):
        G.ply_bytes(v, f + 100)


def test_prompts():
    tok = P.prompt_tokens("a small red cube")
    assert P.shape_of_tokens(tok) == ["cube"] and tok[0, 0] == P.VOCAB.index("small")
    assert P.prompt_tokens("Torus")[0, :2].tolist() == [0, 0]
    for bad in ("a red pyramid", "a red", "a cube and a sphere", ""):
        with pytest.raises(ValueError, match="^prompt:"):
            P.prompt_tokens(bad)


def test_tryon_target_is_the_person_outside_the_mask_and_the_garment_inside():
    data = T.make_dataset(24, seed=5)
    outside = ~data.mask.bool().expand_as(data.target)
    assert torch.equal(data.target[outside], data.person[outside])
    for i, (person, garment) in enumerate(data.pairs):
        top, bottom, left, right = person.box
        assert CT.mask_box(data.mask[i]) == (top, bottom, left, right)
        region = data.target[i, :, top:bottom, left:right]
        assert CT.dominant_colors(region, T.PALETTE) == {garment.color1, garment.color2}
        assert CT.dominant_colors(data.garment[i], T.PALETTE) == {garment.color1, garment.color2}
        f = garment.frequency
        want = {"hstripes": (f, 0), "vstripes": (0, f), "checks": (f, f)}[garment.pattern]
        assert CT.dominant_frequency(data.garment[i]) == want
    assert T.caption_tokens(T.garment_caption(data.pairs[0][1])).tolist() == [T.garment_tokens(data.pairs[0][1])]


def test_tryon_bad_inputs_name_the_argument():
    d = T.make_dataset(2, seed=1)
    with pytest.raises(ValueError, match="^person: no mask"):
        T.check_tryon_inputs(d.person, None, d.garment)
    with pytest.raises(ValueError, match="^garment:"):
        T.check_tryon_inputs(d.person, d.mask, torch.zeros(2, 3, 12, 12))
    with pytest.raises(ValueError, match="^mask:"):
        T.check_tryon_inputs(d.person, torch.zeros_like(d.mask), d.garment)
