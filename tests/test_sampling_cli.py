"""``diffzoo sample``: a tiny zoo model saved to a temp dir, sampled through the CLI and the library."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffzoo import zoo
from diffzoo.cli import main
from diffzoo.io import save_samples
from diffzoo.models.registry import build
from diffzoo.zoo.sampling import class_labels, sample_zoo


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    sched = {"name": "linear", "kwargs": {}}
    mlp = zoo.save(
        "tiny-mlp",
        build("mlp", dim=2, hidden=16, depth=1, num_classes=3),
        "mlp",
        {"dim": 2, "hidden": 16, "depth": 1, "num_classes": 3},
        schedule=sched,
        prediction_type="epsilon",
        weights_dir=d,
        null_class=3,
    )
    cfg = {"in_ch": 1, "ch": 8, "mults": [1], "blocks": 1, "num_classes": 10, "emb_dim": 16, "attention": False}
    unet = zoo.save(
        "tiny-unet",
        build("digits_unet", **cfg),
        "digits_unet",
        cfg,
        schedule=sched,
        prediction_type="epsilon",
        weights_dir=d,
        null_class=10,
    )
    return str(mlp), str(unet)


def test_cli_writes_png_npz_safetensors(tiny_models, tmp_path, capsys):
    _, unet = tiny_models
    outs = [tmp_path / "g.png", tmp_path / "s.npz", tmp_path / "s.safetensors"]
    rc = main(
        [
            "sample",
            unet,
            "--sampler",
            "ddim",
            "--steps",
            "3",
            "-n",
            "5",
            "--guidance",
            "2",
            "--class-label",
            "all",
            "--seed",
            "1",
            *[a for o in outs for a in ("--out", str(o))],
        ]
    )
    assert rc == 0 and all(o.is_file() for o in outs)
    data = np.load(outs[1])
    assert data["samples"].shape == (5, 1, 8, 8) and data["labels"].tolist() == [0, 1, 2, 3, 4]
    from safetensors.torch import load_file

    assert np.allclose(load_file(str(outs[2]))["samples"].numpy(), data["samples"])
    assert "NFE 3" in capsys.readouterr().out


def test_per_sample_seeds_are_batch_invariant(tiny_models):
    mlp, _ = tiny_models
    a = sample_zoo(mlp, "ddpm", 4, "leading", n=6, seed=3, class_label="1", guidance=1.5).samples
    b = sample_zoo(mlp, "ddpm", 4, "leading", n=2, seed=3, class_label="1", guidance=1.5).samples
    c = sample_zoo(mlp, "ddpm", 4, "leading", n=2, seed=4, class_label="1", guidance=1.5).samples
    assert torch.allclose(a[:2], b, atol=1e-6) and not torch.allclose(b, c)


def test_cli_errors(tiny_models, tmp_path, capsys):
    mlp, _ = tiny_models
    assert main(["sample", mlp, "--out", str(tmp_path / "x.pt")]) == 2
    assert "out" in capsys.readouterr().err
    assert main(["sample", mlp, "--guidance", "3"]) == 2
    assert "guidance" in capsys.readouterr().err
    assert main(["sample", mlp, "--sampler", "plms", "--eta", "0.5"]) == 2
    with pytest.raises(SystemExit):
        main(["sample", mlp, "--sampler", "lms"])
    with pytest.raises(ValueError, match="class_label"):
        class_labels("7", 4, 3)
    with pytest.raises(ValueError, match="out"):
        save_samples(tmp_path / "a.png", torch.zeros(3, 5))


def test_python_dash_m_diffzoo_cli_runs_the_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "diffzoo.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "sample" in out.stdout
