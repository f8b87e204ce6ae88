"""``diffzoo sample`` on the shipped masked (discrete) zoo model ``masked-digits``."""

from __future__ import annotations

import pytest
import torch

from diffzoo import zoo
from diffzoo.cli import main
from diffzoo.zoo.sampling import check_sampler, sample_zoo

pytestmark = pytest.mark.skipif("masked-digits" not in zoo.names(), reason="masked-digits is not in the zoo")


def test_cli_masked_writes_png_and_integer_tokens(tmp_path, capsys):
    from PIL import Image
    from safetensors.torch import load_file

    png, st = tmp_path / "g.png", tmp_path / "s.safetensors"
    rc = main(["sample", "masked-digits", "-n", "4", "--seed", "0", "--out", str(png), "--out", str(st)])
    assert rc == 0 and png.is_file() and st.is_file()
    data = load_file(str(st))
    tok = data["samples"]
    assert tok.dtype == torch.int64 and tok.shape == (4, 64)
    assert int(tok.min()) >= 0 and int(tok.max()) <= 16
    img = data["images"]
    assert img.shape == (4, 1, 8, 8)
    assert torch.allclose(img, tok.reshape(4, 1, 8, 8).double() / 8 - 1)
    assert Image.open(png).size[0] > 8
    out = capsys.readouterr().out
    assert "with fhs" in out and "NFE 64" in out and " s)" in out


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
def test_cli_masked_other_samplers(sampler, tmp_path, capsys):
    st = tmp_path / "s.npz"
    assert main(["sample", "masked-digits", "--sampler", sampler, "--steps", "8", "-n", "2", "--out", str(st)]) == 0
    import numpy as np

    data = np.load(st)
    assert data["samples"].shape == (2, 64) and data["images"].shape == (2, 1, 8, 8)
    assert "NFE" in capsys.readouterr().out


def test_masked_per_sample_seeds_are_batch_invariant():
    a = sample_zoo("masked-digits", "fhs", 16, n=3, seed=2).samples
    b = sample_zoo("masked-digits", "fhs", 16, n=1, seed=2).samples
    assert torch.equal(a[:1], b) and not torch.equal(a[0], a[1])


def test_cli_masked_errors(capsys):
    assert main(["sample", "masked-digits", "--sampler", "ddim", "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert "sampler" in err and "fhs" in err
    assert main(["sample", "masked-digits", "--guidance", "2", "-n", "2"]) == 2
    assert "guidance" in capsys.readouterr().err
    assert main(["sample", "masked-digits", "--class-label", "1", "-n", "2"]) == 2
    assert "class_label" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", "masked-digits", "--sampler", "nope"])
    assert "sampler" in capsys.readouterr().err
    with pytest.raises(ValueError, match="sampler.*dpmpp_2m"):
        check_sampler("fhs", masked=False)
    with pytest.raises(ValueError, match="sampler.*confidence"):
        check_sampler("euler", masked=True)


@pytest.mark.skipif("masked-shapes" not in zoo.names(), reason="masked-shapes is not in the zoo")
def test_cli_masked_shapes_decodes_patch_tokens(tmp_path):
    import numpy as np

    out = tmp_path / "s.npz"
    assert (
        main(
            ["sample", "masked-shapes", "--steps", "16", "-n", "2", "--out", str(out), "--out", str(tmp_path / "g.png")]
        )
        == 0
    )
    data = np.load(out)
    assert data["samples"].shape == (2, 64) and data["samples"].max() < 256
    assert data["images"].shape == (2, 3, 32, 32) and (tmp_path / "g.png").is_file()
