"""Hostile inputs to the commands, as a new user would try them: each ends in exit status 2 and one line
``diffzoo <command>: error: <argument>: ...`` on stderr -- no traceback -- and leaves no output file."""

from __future__ import annotations

import io as _io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffzoo.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _png(path: Path, size: int = 32, cut: int | None = None) -> Path:
    buf = _io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    path.write_bytes(data if cut is None else data[:cut])
    return path


def _fails(capsys, argv: list[str], command: str, arg: str) -> str:
    """Run ``diffzoo argv``; it must return 2 with exactly one error line naming ``arg`` (a regular
    expression); returns that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"diffzoo {command}: error: ")]
    assert len(lines) == 1, err
    assert re.match(rf"diffzoo {command}: error: {arg}: ", lines[0]), lines[0]
    return lines[0]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def inputs(tmp_path):
    """A folder with a complete PNG, a PNG cut to its first 300 bytes and a copy of README.md."""
    _png(tmp_path / "good.png")
    _png(tmp_path / "cut.png", cut=300)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


# ------------------------------------------------------------------------------------------- restore


@pytest.mark.parametrize("name", ["/etc/passwd", "README.md", "cut.png"])
def test_restore_refuses_files_that_are_not_complete_images(inputs, capsys, name):
    image = name if name.startswith("/") else str(inputs / name)
    before = _files(inputs)
    line = _fails(capsys, ["restore", image, "--out", str(inputs / "out.png")], "restore", "IMAGE")
    assert "is not a readable image file" in line
    assert _files(inputs) == before  # no out.png


def test_restore_default_output_is_not_written_on_failure(inputs, capsys):
    _fails(capsys, ["restore", str(inputs / "README.md")], "restore", "IMAGE")
    assert not (inputs / "README_ddnm.png").exists()


def test_restore_missing_file_and_folder(inputs, capsys):
    assert "no such file" in _fails(
        capsys, ["restore", str(inputs / "nope.png"), "--out", str(inputs / "o.png")], "restore", "IMAGE"
    )
    assert "is a folder" in _fails(capsys, ["restore", str(inputs), "--out", str(inputs / "o.png")], "restore", "IMAGE")
    assert not (inputs / "o.png").exists()


def test_restore_refuses_bad_output_paths_before_any_work(inputs, capsys):
    good = str(inputs / "good.png")
    before = _files(inputs)
    assert "is a folder" in _fails(capsys, ["restore", good, "--out", str(inputs)], "restore", "out")
    assert ".jpg" in _fails(capsys, ["restore", good, "--out", str(inputs / "o.jpg")], "restore", "out")
    assert "not a folder" in _fails(
        capsys, ["restore", good, "--out", str(inputs / "good.png" / "o.png")], "restore", "out"
    )
    assert _files(inputs) == before


def test_restore_refuses_bad_models_shapes_and_threads(inputs, capsys):
    good = str(inputs / "good.png")
    out = ["--out", str(inputs / "o.png")]
    assert "unknown zoo model" in _fails(capsys, ["restore", good, "--model", "nope", *out], "restore", "model")
    assert "idm model; expected a diffusion model" in _fails(
        capsys, ["restore", good, "--model", "idm-cs10", *out], "restore", "model"
    )
    assert "not images" in _fails(capsys, ["restore", good, "--model", "toy2d-moons", *out], "restore", "model")
    assert "1-channel" in _fails(capsys, ["restore", good, "--shape", "3", "8", "8", *out], "restore", "shape")
    assert "cannot run at 9 x 9" in _fails(
        capsys, ["restore", good, "--shape", "1", "9", "9", *out], "restore", "shape"
    )
    _fails(capsys, ["restore", good, "--threads", "0", *out], "restore", "threads")
    assert not (inputs / "o.png").exists()


def test_restore_still_restores_a_good_image(inputs, capsys):
    assert main(["restore", str(inputs / "good.png"), "--steps", "2", "--out", str(inputs / "o.png")]) == 0
    assert "PSNR" in capsys.readouterr().out and Image.open(inputs / "o.png").size == (3 * 8 * 16, 8 * 16)


# ------------------------------------------------------------------------------------------- sample


@pytest.mark.parametrize(
    "argv, arg, words",
    [
        (["nope"], "model", "unknown zoo model 'nope'"),
        (["no-such.safetensors"], "model", "no such file"),
        (["digits-classifier"], "model", "is a classifier model"),
        (["toy2d-moons", "--out", "{tmp}/s.jpg"], "out", "unsupported file type '.jpg'"),
        (["toy2d-moons", "--out", "{tmp}"], "out", "is a folder"),
        (["toy2d-moons", "-n", "0"], "n", "positive number of samples"),
        (["toy2d-moons", "--sampler", "fhs"], "sampler", "cannot sample a Gaussian model"),
        (["masked-digits", "--sampler", "ddim"], "sampler", "cannot sample a masked (discrete) model"),
        (["toy2d-moons", "--class-label", "3"], "class_label", "not class-conditional"),
        (["digits-unet", "--class-label", "10"], "class_label", "expected a value in [0, 9]"),
    ],
)
def test_sample_refuses_bad_input_and_writes_nothing(tmp_path, capsys, argv, arg, words):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "s.png")]
    if "-n" not in argv:
        argv += ["-n", "2"]
    assert words in _fails(capsys, ["sample", *argv, "--steps", "2"], "sample", arg)
    assert _files(tmp_path) == []


def test_sample_removes_its_outputs_when_a_later_one_fails(tmp_path, capsys, monkeypatch):
    from diffzoo.cli import sample as sample_cli

    real = sample_cli.save_samples

    def flaky(path, *a, **kw):
        if str(path).endswith(".npz"):
            raise ValueError("out: disk full (simulated)")
        return real(path, *a, **kw)

    monkeypatch.setattr(sample_cli, "save_samples", flaky)
    _fails(
        capsys,
        [
            "sample",
            "toy2d-moons",
            "-n",
            "4",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "a.png"),
            "--out",
            str(tmp_path / "b.npz"),
        ],
        "sample",
        "out",
    )
    assert _files(tmp_path) == []


# ------------------------------------------------------------------------------------------- invert / edit


@pytest.fixture(scope="module")
def _latent_stack_imported():
    """Build the tiny random latent model once, so that the (one-off) import of diffusers is not timed
    in the tests below."""
    from diffzoo.zoo.latent import load_latent_model

    load_latent_model("tiny-random")


def test_invert_refuses_a_text_file(inputs, capsys, _latent_stack_imported):
    line = _fails(
        capsys,
        [
            "invert",
            "--image",
            str(inputs / "README.md"),
            "--model",
            "tiny-random",
            "--prompt",
            "x",
            "--out",
            str(inputs / "o.png"),
        ],
        "invert",
        "(--)?image",
    )
    assert "README.md' is not a readable image file" in line
    assert not (inputs / "o.png").exists()


def test_edit_refuses_a_truncated_png(inputs, capsys, _latent_stack_imported):
    line = _fails(
        capsys,
        [
            "edit",
            "--image",
            str(inputs / "cut.png"),
            "--model",
            "tiny-random",
            "--source-prompt",
            "a",
            "--target-prompt",
            "b",
            "--out",
            str(inputs / "o.png"),
        ],
        "edit",
        "(--)?image",
    )
    assert "cut.png' is not a readable image file" in line
    assert not (inputs / "o.png").exists()


def test_invert_and_edit_errors_name_the_option(inputs, capsys, _latent_stack_imported):
    assert (
        main(
            [
                "invert",
                "--image",
                str(inputs / "cut.png"),
                "--model",
                "tiny-random",
                "--prompt",
                "x",
                "--out",
                str(inputs / "o.png"),
            ]
        )
        == 2
    )
    assert "diffzoo invert: error: --image: " in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- train


def test_train_unknown_recipe_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:  # argparse: exit status 2, usage + one error line
        main(["train", "no-such-recipe"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "diffzoo train: error: argument RECIPE: invalid choice: 'no-such-recipe'" in err
    assert "Traceback" not in err


def test_train_refuses_bad_options_before_training(tmp_path, capsys):
    run = ["--steps", "1", "--no-progress", "--out-dir", str(tmp_path / "run")]
    assert "plain name" in _fails(capsys, ["train", "toy2d", *run, "--zoo-name", "../evil"], "train", "zoo-name")
    assert "not to the zoo" in _fails(capsys, ["train", "tinysd-vae", *run, "--zoo-name", "x"], "train", "zoo-name")
    assert "no such file" in _fails(
        capsys, ["train", "tinysd-unet", *run, "--vae", str(tmp_path / "v.safetensors")], "train", "vae"
    )
    _fails(capsys, ["train", "toy2d", "--steps", "0", "--no-progress"], "train", "steps")
    assert not (tmp_path / "run").exists()
