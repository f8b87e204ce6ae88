"""The conditioning networks and algorithms: cross-view attention is the only coupling between views and
between objects, each try-on switch uses exactly its conditioning path, try-on sampling preserves the
person outside the mask bit for bit, and the CLI refuses bad input with one line naming the argument."""

from __future__ import annotations

import pytest
import torch

from diffzoo import zoo
from diffzoo.cli import main
from diffzoo.conditioning import geometry as G
from diffzoo.conditioning.multiview import export_mesh, fuse, generate_views
from diffzoo.conditioning.tryon import customize, outside_max_error, tryon_sample
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.schedules import get_schedule
from diffzoo.data import primitives3d as P
from diffzoo.data import tryon as T
from diffzoo.io import read_image, save_image
from diffzoo.models import build
from diffzoo.models.tryon import MODES


def _mv(joint: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("multiview_unet", ch=8, emb_dim=16, vocab_size=len(P.VOCAB), joint=joint, heads=2).eval()


@torch.no_grad()
def test_views_couple_only_through_joint_attention():
    x = torch.randn(2, 4, 4, 16, 16)
    t = torch.tensor([500.0, 500.0])
    tok = torch.tensor([[1, 3, 9], [2, 4, 10]])
    for joint in (True, False):
        net = _mv(joint)
        y = net(x, t, tok)
        # objects never see each other: row 0 alone gives the same output
        assert torch.allclose(net(x[:1], t[:1], tok[:1]), y[:1], atol=1e-5)
        x2 = x.clone()
        x2[:, 1] += 1.0  # change view 1 only
        y2 = net(x2, t, tok)
        changed = (y2[:, 0] - y[:, 0]).abs().max()
        assert (changed > 1e-4) if joint else (changed < 1e-6)


@torch.no_grad()
def test_generate_views_is_seed_batch_invariant_and_fuses():
    den = Denoiser(_mv(True), get_schedule("linear"), "epsilon")
    tok = torch.cat([P.prompt_tokens("a red cube"), P.prompt_tokens("a large torus")])
    both = generate_views(den, tok, num_steps=3, seeds=[5, 6])
    one = generate_views(den, tok[1:], num_steps=3, seeds=[6])
    assert both.shape == (2, 4, 4, 16, 16) and torch.allclose(both[1:], one, atol=1e-3)
    guided = generate_views(den, tok, num_steps=3, seeds=[5, 6], guidance=2.0)
    assert guided.shape == both.shape and bool(guided.abs().le(1).all())
    res = fuse(both, G.default_cameras(4), 16)
    assert res.occupancy.shape == (2, 16, 16, 16) and len(res.reprojection) == 2
    mesh = export_mesh(res.occupancy[0] | True, both[0], G.default_cameras(4))
    assert mesh["faces"].shape[1] == 4 and len(mesh["colors"]) == len(mesh["vertices"])
    with pytest.raises(ValueError, match="^seeds:"):
        generate_views(den, tok, num_steps=3, seeds=[1])


def _tryon_batch(n: int = 3) -> T.TryonData:
    return T.make_dataset(n, seed=7)


@pytest.mark.parametrize("mode", MODES)
def test_tryon_switches_use_their_paths_and_preserve_the_person(mode):
    torch.manual_seed(0)
    net = build("tryon_unet", mode=mode, ch=8, emb_dim=16, caption_vocab=len(T.CAPTION_VOCAB), heads=2).eval()
    full = build("tryon_unet", mode="full", ch=8, emb_dim=16, caption_vocab=len(T.CAPTION_VOCAB), heads=2)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in full.parameters())  # equal size
    d = _tryon_batch()
    cond = {"person": T.masked_person(d.person, d.mask), "mask": d.mask, "garment": d.garment, "tokens": d.tokens}
    x, t = torch.randn(3, 3, 24, 24), torch.full((3,), 300.0)
    with torch.no_grad():
        y = net(x, t, cond)
        other = dict(cond, garment=d.garment.roll(1, 0))
        assert (net(x, t, other) - y).abs().max() > 1e-5  # every switch reads the garment
        outside = x + 5.0 * (1 - d.mask)  # the noisy image outside the mask is never read
        assert torch.allclose(net(outside, t, cond), y, atol=1e-5)
    net.zero_grad()
    net(x, t, cond).square().mean().backward()
    used = sum(p.numel() for p in net.parameters() if p.grad is not None and p.grad.abs().sum() > 0)
    assert used <= net.used_parameters()
    den = Denoiser(net, get_schedule("linear"), "epsilon")
    out = tryon_sample(den, d.person, d.mask, d.garment, d.tokens, num_steps=3, seeds=[1, 2, 3])
    assert out.shape == d.person.shape and outside_max_error(out, d.person, d.mask) == 0.0


def test_customize_changes_only_a_copy():
    torch.manual_seed(0)
    net = build("tryon_unet", mode="full", ch=8, emb_dim=16, caption_vocab=len(T.CAPTION_VOCAB), heads=2).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    den = Denoiser(net, get_schedule("linear"), "epsilon")
    d = _tryon_batch(1)
    ft = customize(den, d.person, d.mask, d.garment, d.target, d.tokens, steps=2, batch=2)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(ft.net.parameters(), net.parameters()))


def test_cli_bad_inputs_name_the_argument(tmp_path, capsys):
    d = _tryon_batch(1)
    save_image(d.person, tmp_path / "p.png")  # RGB, no alpha: no mask
    save_image(d.garment, tmp_path / "g.png")
    save_image(d.person, tmp_path / "big_g.png")  # 24x24: the wrong garment size
    save_image(d.mask.expand(-1, 3, -1, -1) * 2 - 1, tmp_path / "m.png")
    cases = [
        (
            [
                "tryon",
                "--person",
                str(tmp_path / "p.png"),
                "--garment",
                str(tmp_path / "g.png"),
                "--out",
                str(tmp_path / "o.png"),
            ],
            "person: no mask",
        ),
        (
            [
                "tryon",
                "--person",
                str(tmp_path / "p.png"),
                "--mask",
                str(tmp_path / "m.png"),
                "--garment",
                str(tmp_path / "big_g.png"),
                "--out",
                str(tmp_path / "o.png"),
            ],
            "garment:",
        ),
        (
            [
                "tryon",
                "--person",
                str(tmp_path / "p.png"),
                "--mask",
                str(tmp_path / "m.png"),
                "--garment",
                str(tmp_path / "g.png"),
                "--out",
                str(tmp_path / "o.jpg"),
            ],
            "out:",
        ),
        (["sample", "multiview", "--prompt", "a red pyramid", "--out", str(tmp_path / "x.ply")], "prompt:"),
        (["sample", "multiview", "--prompt", "a red cube", "--out", str(tmp_path / "x.stl")], "out:"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and msg in err, err


@pytest.mark.skipif(
    not {"multiview-joint", "tryon-full"} <= set(zoo.names()), reason="conditioning models not shipped yet"
)
def test_cli_end_to_end_with_shipped_models(tmp_path, capsys):
    assert (
        main(["sample", "multiview", "--prompt", "a red cube", "--steps", "4", "--out", str(tmp_path / "c.ply")]) == 0
    )
    v, f = G.parse_ply((tmp_path / "c.ply").read_bytes())
    assert f is not None and len(v) > 0 and int(f.max()) < len(v)
    d = _tryon_batch(1)
    save_image(d.person, tmp_path / "p.png")
    save_image(d.garment, tmp_path / "g.png")
    save_image(d.mask.expand(-1, 3, -1, -1) * 2 - 1, tmp_path / "m.png")
    argv = ["tryon", "--person", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png")]
    argv += ["--garment", str(tmp_path / "g.png"), "--out", str(tmp_path / "o.png"), "--steps", "4"]
    assert main(argv) == 0
    out = read_image(tmp_path / "o.png")
    person = read_image(tmp_path / "p.png")
    keep = ~d.mask.bool().expand_as(out)
    assert torch.equal(out[keep], person[keep])
