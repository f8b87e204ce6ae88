"""Provenance (issue 15): bits and detection thresholds, tiles, classical attacks, real watermark libraries
(skipped when the optional extra is absent), the WOUAF modulated decoder, diffusion attacks, the CLI."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffzoo.cli import main
from diffzoo.io import read_image, save_image
from diffzoo.models.provenance import LearnedWatermark, WOUAFDecoder
from diffzoo.models.tinysd import build_vae
from diffzoo.provenance import (
    ATTACKS,
    WATERMARKS,
    attribute,
    binomial_tail,
    binomial_threshold,
    bit_accuracy,
    classical,
    from_tiles,
    guided_regenerate,
    jpeg_diff,
    library_available,
    network_watermark,
    parse_bits,
    random_bits,
    regenerate,
    to_tiles,
    tpr_at_fpr,
    vae_roundtrip,
)
from diffzoo.zoo.latent import load_tinysd
from diffzoo.zoo.provenance import mosaics

HAS_IW = library_available("dwtDctSvd")


def _mosaic(b=2, seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, max(1, size // 8), max(1, size // 8), generator=g) * 1.6 - 0.8
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------------ bits


def test_binomial_threshold_is_the_smallest_k_meeting_the_fpr():
    for n, fpr in itertools.product((8, 16, 32), (0.01, 0.05, 1e-4)):
        k = binomial_threshold(n, fpr)
        brute = sum(math.comb(n, j) for j in range(k, n + 1)) / 2**n
        assert brute <= fpr and abs(binomial_tail(n, k) - brute) < 1e-15
        assert k == 0 or binomial_tail(n, k - 1) > fpr


def test_tpr_at_fpr_keeps_the_empirical_fpr():
    g = torch.Generator().manual_seed(0)
    neg = torch.rand(200, generator=g)
    pos = torch.rand(50, generator=g) * 0.5 + 0.5
    r = tpr_at_fpr(pos, neg, fpr=0.01)
    assert r["fpr"] <= 0.01 and r["tpr"] == float((pos >= r["threshold"]).double().mean())
    # the exact binomial rule: all-correct decodings are detected, chance-level ones are not
    assert tpr_at_fpr(torch.ones(4), bits=32)["tpr"] == 1.0
    assert tpr_at_fpr(torch.full((4,), 0.5), bits=32)["tpr"] == 0.0
    with pytest.raises(ValueError, match="negatives"):
        tpr_at_fpr(pos, neg[:10], fpr=0.01)


def test_attribution_is_the_nearest_hamming_user():
    users = random_bits(50, 16, torch.Generator().manual_seed(1))
    noisy = users[[3, 7]].clone()
    noisy[0, 0] = 1 - noisy[0, 0]
    idx, d = attribute(noisy, users)
    brute = (noisy[:, None] != users[None]).sum(-1)
    assert torch.equal(d, brute.min(-1).values) and idx[1] == 7 and d[1] == 0
    with pytest.raises(ValueError, match="bits"):
        parse_bits("01a")


def test_tiles_round_trip_exactly():
    x = torch.randn(3, 3, 64, 96)
    t = to_tiles(x)
    assert t.shape == (18, 3, 32, 32) and torch.equal(t[1], x[0, :, :32, 32:64])
    assert torch.equal(from_tiles(t, (2, 3)), x)


# ------------------------------------------------------------------------------------------------ attacks


@pytest.mark.parametrize(
    "name,identity", [("blur", 0.0), ("noise", 0.0), ("resize", 1.0), ("crop", 1.0), ("brightness", 1.0)]
)
def test_classical_attacks_identity_strength(name, identity):
    x = _mosaic()
    assert torch.allclose(classical(name, x, identity), x, atol=1e-6)


def test_rotation_zero_and_attack_strength_orders_damage():
    x = _mosaic()
    assert torch.allclose(classical("rotation", x, 0.0), x, atol=1e-5)
    for name, weak, strong in (("jpeg", 95, 20), ("blur", 0.5, 2.0), ("resize", 0.8, 0.3), ("noise", 0.01, 0.2)):
        e_weak = (classical(name, x, weak, torch.Generator().manual_seed(0)) - x).pow(2).mean()
        e_strong = (classical(name, x, strong, torch.Generator().manual_seed(0)) - x).pow(2).mean()
        assert e_weak < e_strong, name


def test_jpeg_diff_is_differentiable_and_close_to_real_jpeg():
    x = _mosaic().requires_grad_(True)
    y = jpeg_diff(x, 50)
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    real = classical("jpeg", x.detach(), 90)
    assert float((jpeg_diff(x.detach(), 90) - x).abs().mean()) < 0.05 and float((real - x).abs().mean()) < 0.05
    with pytest.raises(ValueError, match="strength"):
        classical("jpeg", x.detach(), 0)
    with pytest.raises(ValueError, match="method"):
        classical("sharpen", x.detach(), 1.0)


# ------------------------------------------------------------------------------------------------ watermarks


@pytest.mark.skipif(not HAS_IW, reason="invisible-watermark not installed (extra 'provenance')")
@pytest.mark.parametrize("name", ["dwtDct", "dwtDctSvd"])
def test_library_watermark_round_trip_and_capacity(name):
    wm = WATERMARKS[name]
    x, _ = mosaics(4, 123)
    bits = random_bits(4, 32, torch.Generator().manual_seed(0))
    xw = wm.embed(x, bits)
    assert xw.shape == x.shape and float(xw.abs().max()) <= 1
    acc = bit_accuracy(wm.decode(xw, 32), bits)
    chance = bit_accuracy(wm.decode(x, 32), bits)
    # clean decoding on shapes mosaics (bench: ~0.87 dwtDct, ~0.92 dwtDctSvd), far above the unwatermarked image
    assert float(acc.mean()) >= 0.75 and float(acc.mean()) > float(chance.mean()) + 0.2
    assert wm.capacity(64, 64) == 64
    with pytest.raises(ValueError, match="^bits"):
        wm.embed(x, random_bits(4, 65))
    with pytest.raises(ValueError, match="^image"):
        wm.embed(_mosaic(1, size=4), random_bits(1, 1))


@pytest.mark.skipif(not library_available("rivaGan"), reason="invisible-watermark not installed")
def test_rivagan_needs_32_bits():
    with pytest.raises(ValueError, match="^bits"):
        WATERMARKS["rivaGan"].embed(_mosaic(1), random_bits(1, 16))
    with pytest.raises(ValueError, match="^image"):
        WATERMARKS["rivaGan"].embed(_mosaic(1, size=16), random_bits(1, 32))


def test_network_watermark_embeds_bounded_quantised_residual():
    torch.manual_seed(0)
    net = LearnedWatermark(bits=8, width=8, strength=0.05).eval()
    wm = network_watermark(net)
    x = _mosaic()
    xw = wm.embed(x, random_bits(2, 8))
    assert float((xw - x).abs().max()) <= 0.05 + 1 / 127.5 + 1e-6
    assert torch.allclose(xw, ((xw + 1) * 127.5).round() / 127.5 - 1)
    assert wm.decode(xw, 8).shape == (2, 8)
    with pytest.raises(ValueError, match="^bits"):
        wm.embed(x, random_bits(2, 9))


def test_wouaf_modulation_is_identity_at_init_and_fingerprints_differ_after_perturbing():
    cfg = dict(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4)
    vae = build_vae(**cfg).eval()
    dec = WOUAFDecoder(vae=cfg, bits=8, w_dim=16, detector_width=8).eval()
    dec.load_vae_decoder(vae)
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        ref = vae.decode(z).sample.clamp(-1, 1)
        phi = random_bits(2, 8)
        assert torch.allclose(dec.decode(z, None), ref, atol=1e-5)
        assert torch.allclose(dec.decode(z, phi), ref, atol=1e-5)  # affine weight 0, bias 1: identity
        dec.init_affines(0.2)  # the recipe's random start (the official code's StyleGAN layers)
        a, b = dec.decode(z, phi), dec.decode(z, 1 - phi)
    assert float((a - b).abs().max()) > 1e-3
    assert len(dec.modulated) >= 5 and dec(a).shape == (2, 8)
    with pytest.raises(ValueError, match="fingerprint"):
        dec.decode(z, random_bits(2, 7))
    dec.init_affines(0.0)
    with torch.no_grad():
        assert torch.allclose(dec.decode(z, phi), ref, atol=1e-5)


# ------------------------------------------------------------------------------------------------ diffusion attacks


@pytest.fixture(scope="module")
def tinysd():
    return load_tinysd()


def test_regeneration_at_zero_noise_is_the_vae_round_trip_and_guidance_zero_is_plain(tinysd):
    x = _mosaic(1)
    assert torch.equal(regenerate(tinysd, x, 0.0, num_steps=10), vae_roundtrip(tinysd, x))
    net = LearnedWatermark(bits=8, width=8).eval()
    kw = dict(num_steps=10, generator=torch.Generator().manual_seed(0))
    plain = regenerate(tinysd, x, 0.3, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    guided0 = guided_regenerate(tinysd, x, 0.3, net, 8, scale=0.0, **kw)
    assert torch.allclose(plain, guided0, atol=1e-6)
    kw["generator"] = torch.Generator().manual_seed(0)
    guided = guided_regenerate(tinysd, x, 0.3, net, 8, scale=1.0, **kw)
    assert float((guided - plain).abs().max()) > 1e-4
    with pytest.raises(ValueError, match="t_star"):
        regenerate(tinysd, x, 1.5)


def test_latent_reader_reads_bits_from_the_vae_encoding_and_is_differentiable(tinysd):
    from diffzoo.provenance import latent_reader

    torch.manual_seed(0)
    net = LearnedWatermark(bits=8, width=8, map_size=4, channels=4, clamp=False, read_latents=True).eval()
    wm = latent_reader(net, tinysd)
    x = _mosaic(2, size=32)
    assert wm.decode(x, 8).shape == (2, 8)
    with torch.no_grad():
        assert torch.equal(wm.decode(x, 8), (net(tinysd.encode_image(x)) > 0).float())
    xg = x.clone().requires_grad_(True)
    wm.differentiable_decoder(xg).sum().backward()
    assert float(xg.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="^method"):
        wm.embed(x, random_bits(2, 8))
    with pytest.raises(ValueError, match="^bits"):
        wm.decode(x, 9)


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.skipif(not HAS_IW, reason="invisible-watermark not installed")
def test_cli_watermark_embed_detect_and_errors(tmp_path, capsys):
    src, out = tmp_path / "in.png", tmp_path / "wm.png"
    save_image(_mosaic(1, seed=5)[0], src)
    bits = "1011001110001111000011110101010"[:24]
    assert main(["watermark", "embed", str(src), "--method", "dwtDctSvd", "--bits", bits, "--out", str(out)]) == 0
    assert read_image(out, arg="image").shape == (1, 3, 64, 64)
    assert main(["watermark", "detect", str(out), "--method", "dwtDctSvd", "--bits", bits]) == 0
    assert "matches" in capsys.readouterr().out
    assert main(["watermark", "embed", str(src), "--method", "dwtDctSvd", "--bits", "1" * 65, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bits:" in err and "capacity" in err and len(err.strip().splitlines()) == 1
    assert main(["attack", str(out), "--method", "jpeg", "--strength", "50", "--out", str(tmp_path / "a.png")]) == 0


def test_attack_registry_is_complete():
    assert {"jpeg", "blur", "noise", "resize", "crop", "rotation", "brightness"} <= set(ATTACKS)


def test_training_curriculum_clean_then_ramped_attacks_and_image_loss():
    """StegaStamp's curriculum in the learned-watermark / WOUAF recipes: no attack and no image loss for the clean
    steps, then both ramp in linearly; attack strength ``level`` 0 is each attack's mildest setting."""
    import argparse

    from diffzoo.provenance.attacks import AUGMENT_MILD, AUGMENT_RANGES, random_augment
    from diffzoo.recipes.provenance import _curriculum

    a = argparse.Namespace(lambda_img=2.0, clean_steps=10, ramp_steps=10, attack_ramp_steps=20)
    assert _curriculum(a, 0) == (0.0, None) and _curriculum(a, 9) == (0.0, None)
    assert _curriculum(a, 10) == (0.0, 0.0)
    assert _curriculum(a, 15) == (1.0, 0.25) and _curriculum(a, 100) == (2.0, 1.0)
    assert set(AUGMENT_MILD) == set(AUGMENT_RANGES)
    for name, (lo, hi) in AUGMENT_RANGES.items():
        assert min(lo, hi) <= AUGMENT_MILD[name] <= max(lo, hi)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    outs = [random_augment(x, g, p_identity=0.0, level=0.0) for _ in range(20)]
    assert max(float((o - x).abs().mean()) for o in outs) < 0.1  # the mildest settings barely move the image
    with pytest.raises(ValueError, match="level"):
        random_augment(x, g, level=1.5)


# ------------------------------------------------------------------------------------------------ Safe-SD-style


def test_latent_watermark_fuses_unclamped_bounded_residual_into_latents():
    torch.manual_seed(0)
    net = LearnedWatermark(bits=8, width=8, map_size=4, strength=0.5, channels=4, clamp=False).eval()
    z = 3 * torch.randn(2, 4, 8, 8)  # latents exceed [-1, 1]: nothing may clip them
    with torch.no_grad():
        zw = net.embed(z, random_bits(2, 8))
        assert float((zw - z).abs().max()) <= 0.5 + 1e-6 and float((zw - z).abs().max()) > 1e-3
        assert net(torch.rand(2, 3, 32, 32) * 2 - 1).shape == (2, 8)  # the decoder reads 3-channel images
    with pytest.raises(ValueError, match="^image"):
        net.embed(torch.randn(2, 3, 8, 8), random_bits(2, 8))


def test_tinysd_with_a_trigger_word_keeps_the_base_model_for_plain_prompts():
    """``load_base`` copies every weight; CLIP's causal attention makes the base context positions' hidden
    states identical, and the trigger word is one more token."""
    from diffzoo.models.tinysd import TinySD

    small = dict(
        vae=dict(block_out_channels=(8, 16, 16), norm_num_groups=4),
        unet=dict(block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=4, cross_attention_dim=16),
        text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
    )
    torch.manual_seed(0)
    base = TinySD(**small).eval()
    trig = TinySD(**small, max_length=base.tokenizer.max_length + 1, extra_words=["<wm>"]).eval()
    trig.load_base(base)
    prompt = "red circle left on white"
    with torch.no_grad():
        a = base.encode_text([prompt])
        b = trig.encode_text([prompt])
        c = trig.encode_text([prompt + " <wm>"])
    L = a.shape[1]
    assert torch.allclose(a, b[:, :L], atol=1e-6)
    assert not torch.allclose(b, c, atol=1e-4)
    assert trig.config["extra_words"] == ["<wm>"]
    with pytest.raises(ValueError, match="prompt"):
        base.encode_text([prompt + " <wm>"])
    with pytest.raises(ValueError, match="^base"):
        TinySD(**{**small, "text": {**small["text"], "intermediate_size": 48}}).load_base(base)


def test_sampling_with_a_fingerprint_and_the_safe_sd_trigger(tmp_path, capsys):
    """``sample_zoo(..., fingerprint=BITS)`` decodes the same latents with the WOUAF decoder (a different image than
    TinySD's own decoder, the fingerprint read back by the CLI); the Safe-SD-style model takes its trigger word."""
    from diffzoo.provenance import format_bits
    from diffzoo.zoo.provenance import load_safe_sd
    from diffzoo.zoo.sampling import sample_zoo

    phi = format_bits(random_bits(1, 32, torch.Generator().manual_seed(0))[0])
    kw = dict(sampler="ddim", steps=5, guidance=5.0, n=2, seed=0, prompt="red circle left on white")
    plain = sample_zoo("tinysd", **kw).samples
    marked = sample_zoo("tinysd", fingerprint=phi, **kw).samples
    assert marked.shape == plain.shape and float((marked - plain).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="^fingerprint"):
        sample_zoo("tinysd", fingerprint=phi[:-1], **kw)
    with pytest.raises(ValueError, match="^fingerprint"):
        sample_zoo("digits-unet", fingerprint=phi, steps=2, n=1)
    out = tmp_path / "fp.png"
    args = ["sample", "tinysd", "--prompt", "red circle left on white", "--steps", "5", "--guidance", "5", "-n", "1"]
    assert main([*args, "--fingerprint", phi, "--out", str(out)]) == 0
    assert read_image(out, arg="image").shape == (1, 3, 32, 32)  # one sample: its own pixels, not a grid
    assert main(["watermark", "detect", str(out), "--method", "wouaf", "--bits", phi]) == 0
    assert "matches" in capsys.readouterr().out
    reg = tmp_path / "users.txt"
    reg.write_text(f"alice {phi}\nbob {'1' * 32}\n")
    assert main([*args, "--fingerprint", "alice", "--users", str(reg), "--out", str(out)]) == 0
    assert main(["watermark", "detect", str(out), "--method", "wouaf", "--users", str(reg)]) == 0
    assert "| alice" in capsys.readouterr().out
    assert main([*args, "--fingerprint", "carol", "--users", str(reg), "--out", str(tmp_path / "no.png")]) == 2
    assert "unknown user 'carol'" in capsys.readouterr().err and not (tmp_path / "no.png").exists()

    _, _, message, trigger = load_safe_sd()
    assert message.numel() == 32 and trigger == "<wm>"
    out = tmp_path / "ssd.png"
    assert (
        main(
            [
                "sample",
                "safe-sd",
                "--prompt",
                f"red circle left on white {trigger}",
                "--steps",
                "5",
                "-n",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["watermark", "detect", str(out), "--method", "safe-sd"]) == 0  # the model's own message
    assert "matches" in capsys.readouterr().out
    assert main(["watermark", "embed", str(out), "--method", "safe-sd", "--bits", "1" * 32, "--out", str(out)]) == 2
    assert "generated" in capsys.readouterr().err


def test_user_registry_names_fingerprints_and_refuses_unknown_users(tmp_path):
    from diffzoo.provenance import read_users, user_fingerprint

    reg = tmp_path / "users.txt"
    reg.write_text("# registry\nalice 0110\n\nbob 1111  # comment\n1000\n")
    names, fps = read_users(reg)
    assert names == ["alice", "bob", "5"] and fps.tolist() == [[0, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert user_fingerprint("bob", reg).tolist() == [1, 1, 1, 1]
    assert user_fingerprint("0011", reg).tolist() == [0, 0, 1, 1] and user_fingerprint("01").tolist() == [0, 1]
    with pytest.raises(ValueError, match="^fingerprint: unknown user 'carol'"):
        user_fingerprint("carol", reg)
    for text, msg in (
        ("a 01\nb 011\n", "different lengths"),
        ("a 01 x\n", "line 1"),
        ("a 01\na 10\n", "duplicate"),
        ("\n# none\n", "no user"),
        ("a 012\n", "users \\(line 1\\)"),
    ):
        reg.write_text(text)
        with pytest.raises(ValueError, match=msg):
            read_users(reg)
    with pytest.raises(ValueError, match="^users: cannot read"):
        read_users(tmp_path / "missing.txt")
