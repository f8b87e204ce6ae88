"""``diffzoo detect`` and ``diffzoo protect`` end to end (issue 14): a score and label per image, the
protected PNG within its budget, and one-line errors naming the argument for bad input."""

from __future__ import annotations

import pytest
import torch

from diffzoo import zoo
from diffzoo.cli import main
from diffzoo.data import digits, shapes
from diffzoo.io import read_image, save_image


def test_detect_digits(tmp_path, capsys):
    paths = []
    for i, img in enumerate(digits.load("test").images[:2]):
        paths.append(str(save_image(img, tmp_path / f"d{i}.png")))
    models = [m for m in ("pixels-digits", "dire-digits") if m in zoo.names()]
    assert models, "no shipped DIRE/pixel detector"
    for m in models:
        assert main(["detect", *paths, "--detector", "dire", "--model", m]) == 0
        out = capsys.readouterr().out
        assert out.count("d0.png") == 1 and ("real" in out or "generated" in out)
    # a 32x32 RGB image is not a digit: the error names the image
    big = save_image(shapes.render(shapes.random_scenes(1, 0)[0]), tmp_path / "big.png")
    assert main(["detect", str(big), "--model", models[0]]) == 2
    assert "image:" in capsys.readouterr().err
    bad = tmp_path / "not.png"
    bad.write_text("hello")
    assert main(["detect", str(bad), "--model", models[0]]) == 2
    assert "image" in capsys.readouterr().err


def test_protect_cli(tmp_path, capsys):
    src = shapes.render(shapes.random_scenes(1, 3)[0])
    path = save_image(src, tmp_path / "scene.png")
    out = tmp_path / "prot.png"
    assert main(["protect", str(path), "--method", "sds-", "--eps", "8/255", "--steps", "2", "--out", str(out)]) == 0
    msg = capsys.readouterr().out
    assert "budget" in msg and out.exists()
    a, b = read_image(path), read_image(out)
    assert float((a - b).abs().max()) <= 2 * 8 / 255 + 1e-6  # [-1, 1] units, 8-bit PNG
    for eps in ("2", "0", "abc", "1/0"):
        assert main(["protect", str(path), "--eps", eps, "--steps", "1"]) == 2
        assert "eps:" in capsys.readouterr().err
    small = save_image(torch.zeros(1, 3, 8, 8), tmp_path / "small.png")
    assert main(["protect", str(small), "--steps", "1"]) == 2
    assert "image:" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["advdm", "photoguard", "mist", "sdst-"])
def test_protect_methods_parse(method):
    from diffzoo.cli import build_parser

    args = build_parser().parse_args(["protect", "x.png", "--method", method])
    assert args.method == method


def test_detect_shapes_detectors(tmp_path, capsys):
    """The shipped shapes detectors through the CLI: DIRE/pixels on a 32x32 render (a score and a
    label), and the two-stage laundering detector (real / laundered / synthetic per image)."""
    scenes = shapes.random_scenes(2, 5)
    paths = [str(save_image(shapes.render(s), tmp_path / f"s{i}.png")) for i, s in enumerate(scenes)]
    for m in ("dire-shapes", "pixels-shapes"):
        assert m in zoo.names(), f"{m} not shipped"
        assert main(["detect", *paths, "--detector", "dire", "--model", m]) == 0
        out = capsys.readouterr().out
        assert "s1.png" in out and ("real" in out or "generated" in out)
    assert main(["detect", *paths, "--detector", "laundering"]) == 0
    out = capsys.readouterr().out
    assert out.count("s0.png") == 1 and any(w in out for w in ("real", "laundered", "synthetic"))
    digit = save_image(digits.load("test").images[0], tmp_path / "digit.png")
    assert main(["detect", str(digit), "--detector", "laundering"]) == 2
    assert "image:" in capsys.readouterr().err
