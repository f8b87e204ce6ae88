"""``diffzoo edit`` / ``diffzoo invert``: PNG in, PNG out, on the tiny random SD-shaped model."""

from __future__ import annotations

import torch

from diffzoo.cli import main
from diffzoo.io import read_image as load_image
from diffzoo.io import save_image
from diffzoo.zoo.latent import latent_model

torch.set_num_threads(1)  # 2 shared cores: extra threads only contend


def test_image_io_round_trip(tmp_path):
    img = torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
    path = save_image(img, tmp_path / "a" / "x.png")
    back = load_image(path)
    assert back.shape == img.shape and (back - img).abs().max() <= 1 / 127.5 + 1e-6


def test_edit_and_invert_commands(tmp_path, capsys):
    src = tmp_path / "in.png"
    save_image(torch.rand(1, 3, 16, 16) * 2 - 1, src)
    for method in ("infedit", "sdedit", "direct"):
        out = tmp_path / f"{method}.png"
        rc = main(
            [
                "edit",
                "--model",
                "tiny-random",
                "--image",
                str(src),
                "--out",
                str(out),
                "--steps",
                "3",
                "--method",
                method,
                "--source-prompt",
                "a red circle",
                "--target-prompt",
                "a blue circle",
                "--blend",
                "red circle,blue circle",
                "--strength",
                "0.8",
            ]
        )
        assert rc == 0 and load_image(out).shape == (1, 3, 16, 16)
    out = tmp_path / "rec.png"
    assert (
        main(
            [
                "invert",
                "--model",
                "tiny-random",
                "--method",
                "ddpm",
                "--image",
                str(src),
                "--out",
                str(out),
                "--steps",
                "3",
                "--prompt",
                "a red circle",
            ]
        )
        == 0
    )
    assert "reconstruction" in capsys.readouterr().out and out.is_file()


def test_cli_errors(tmp_path, capsys):
    src = tmp_path / "in.png"
    save_image(torch.zeros(1, 3, 16, 16), src)
    base = [
        "edit",
        "--model",
        "tiny-random",
        "--out",
        str(tmp_path / "o.png"),
        "--source-prompt",
        "a",
        "--target-prompt",
        "b",
        "--steps",
        "3",
    ]
    assert main(base + ["--image", str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert main(base + ["--image", str(src), "--method", "no-such-method"]) == 2
    assert "method" in capsys.readouterr().err
    assert main(base + ["--image", str(src), "--strength", "1.5"]) == 2
    assert "strength" in capsys.readouterr().err
    assert main(base + ["--image", str(src), "--reweight", "red"]) == 2
    assert "--reweight" in capsys.readouterr().err
    assert (
        main(
            [
                "edit",
                "--model",
                "no-such-model",
                "--image",
                str(src),
                "--out",
                "o.png",
                "--source-prompt",
                "a",
                "--target-prompt",
                "b",
            ]
        )
        == 2
    )
    assert "no-such-model" in capsys.readouterr().err


def test_demo_edit(tmp_path, monkeypatch):
    import diffzoo.demo as C
    from diffzoo.models.tinysd import TinySD

    torch.manual_seed(0)
    sd = TinySD(
        vae=dict(block_out_channels=(8, 8, 16), norm_num_groups=4),
        unet=dict(block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4),
        text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
    )
    lm = latent_model(sd.eval().requires_grad_(False))
    monkeypatch.setattr(C, "load_latent_model", lambda spec, dtype=torch.float32: lm)  # stand-in for the zoo TinySD
    paths = C.demo_edit(tmp_path, steps=3)
    assert set(paths) == {"source", "ground_truth", "infedit", "direct"}
    assert all(load_image(p).shape == (1, 3, 32, 32) for p in paths.values())
