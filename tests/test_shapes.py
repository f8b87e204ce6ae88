"""The shapes world: deterministic rendering, captions, labels and exact edit ground truth."""

import math

import pytest
import torch

from diffzoo.data import shapes as S


def _scene(*objs, bg="white"):
    return S.Scene(tuple(S.ShapeObject(*o) for o in objs), bg)


def test_render_deterministic_range_and_shape():
    sc = S.random_scenes(20, seed=3)
    a, b = S.render_batch(sc), S.render_batch(S.random_scenes(20, seed=3))
    assert a.shape == (20, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert not torch.equal(a, S.render_batch(S.random_scenes(20, seed=4)))


def test_antialiased_coverage_matches_area():
    for shape, area in (
        ("circle", math.pi * S.SIZES["large"] ** 2),
        ("square", (2 * 0.85 * S.SIZES["large"]) ** 2),
        ("triangle", 0.5 * 2 * S.SIZES["large"] * 1.8 * S.SIZES["large"]),
    ):
        c = S.coverage(S.ShapeObject(shape, "red", 4))
        assert abs(float(c.sum()) - area) / area < 0.05  # 4x4 super-sampling quantises edges to 1/4 px
        frac = ((c > 0) & (c < 1)).sum()
        assert frac > 0  # edges are anti-aliased, not binary


def test_caption_roundtrip_vocab_and_length():
    for s in S.random_scenes(300, seed=0):
        text = S.caption(s)
        words = text.split()
        assert len(words) <= S.MAX_CAPTION_WORDS <= 16
        assert set(words) <= set(S.VOCAB)
        p = S.parse_caption(text)
        assert [(o.shape, o.color, o.cell) for o in p.objects] == [(o.shape, o.color, o.cell) for o in s.objects]
        assert p.background == s.background
    assert len(S.VOCAB) <= 40


def test_caption_example_and_reading_order():
    s = _scene(("square", "blue", 5), ("circle", "red", 0))
    assert S.caption(s) == "red circle top left and blue square right on white"


def test_labels_decode_roundtrip():
    s = _scene(("triangle", "purple", 8), ("circle", "green", 1), bg="striped")
    lab = S.labels(s)
    assert int(lab["count"]) == 2 and S.BACKGROUNDS[int(lab["background"])] == "striped"
    dec = [d for d in S.decode_cells(lab["cells"]) if d is not None]
    assert dec == [(1, "circle", "green"), (8, "triangle", "purple")]


@pytest.mark.parametrize("kind", S.EDIT_KINDS)
def test_edit_mask_is_exact_difference(kind):
    for p in S.edit_pairs(12, seed=7, kinds=[kind]):
        diff = (p.target_image.double() - p.source_image.double()).abs().amax(0) > 0
        assert p.mask.dtype == torch.bool and torch.equal(p.mask, diff)
        assert p.mask.any()
        assert torch.equal(p.source_image[:, ~p.mask], p.target_image[:, ~p.mask])
        assert p.target_caption != p.source_caption
        assert p.target_caption == S.caption(p.target)
        assert torch.equal(p.target_image, S.render(p.target))


def test_color_edit_touches_only_the_object():
    s = _scene(("circle", "red", 0), ("square", "blue", 8))
    new, mask = S.apply_edit(s, S.Edit("colour", "green", 0))
    assert S.caption(new) == "green circle top left and blue square bottom right on white"
    cov = S.coverage(s.objects[0]) > 0
    assert torch.equal(mask, cov)


def test_background_edit_mask_is_uncovered_area():
    s = _scene(("circle", "red", 4))
    _, mask = S.apply_edit(s, S.Edit("background", "black"))
    assert torch.equal(mask, S.coverage(s.objects[0]) < 1)


def test_edit_errors():
    s = _scene(("circle", "red", 0), ("square", "blue", 1))
    with pytest.raises(ValueError, match="occupied"):
        S.apply_edit(s, S.Edit("move", 1, 0))
    with pytest.raises(ValueError, match="already"):
        S.apply_edit(s, S.Edit("color", "red", 0))
    with pytest.raises(ValueError, match="edit.index"):
        S.apply_edit(s, S.Edit("shape", "triangle", 5))
    with pytest.raises(ValueError, match="edit.kind"):
        S.Edit("rotate", 1)
    with pytest.raises(ValueError, match="color"):
        S.apply_edit(s, S.Edit("color", "pink", 0))


def test_scene_validation():
    with pytest.raises(ValueError, match="shape"):
        S.ShapeObject("hexagon", "red", 0)
    with pytest.raises(ValueError, match="cell"):
        S.ShapeObject("circle", "red", 9)
    with pytest.raises(ValueError, match="share a grid cell"):
        _scene(("circle", "red", 0), ("square", "blue", 0))
    with pytest.raises(ValueError, match="objects"):
        _scene(*[("circle", "red", i) for i in range(4)])
    with pytest.raises(ValueError, match="background"):
        _scene(("circle", "red", 0), bg="pink")


def test_edit_pairs_deterministic_and_balanced():
    a, b = S.edit_pairs(16, seed=1), S.edit_pairs(16, seed=1)
    assert [p.target_caption for p in a] == [p.target_caption for p in b]
    kinds = [p.edit.kind for p in a]
    assert all(kinds.count(k) == 4 for k in S.EDIT_KINDS)


def test_heldout_split_is_disjoint():
    gen = S.scene_stream(0, "train")
    train = [next(gen) for _ in range(200)]
    assert not any(S.is_heldout(S.caption(s)) for s in train)
    gen = S.scene_stream(0, "heldout")
    held = [next(gen) for _ in range(50)]
    assert all(S.is_heldout(S.caption(s)) for s in held)
    frac = sum(S.is_heldout(S.caption(s)) for s in S.random_scenes(1000, 5)) / 1000
    assert 0.05 < frac < 0.4
