"""Hostile and broken files (issue 10, section 2): decompression bombs, image modes and their documented
conversions, torn / oversized / foreign / mistyped checkpoints, hostile zoo JSONs, and a zoo that never
half-writes (saves killed with SIGKILL at every step of the write protocol and at random times).

Non-image files, truncated PNG/JPEG, folders and 16-bit images are covered by ``tests/test_io.py`` and
``tests/test_cli_inputs.py``. The table of cases is ``docs/results/reliability.md`` ("Hostile files").
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import signal
import struct
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from safetensors.torch import save_file

from diffzoo import io, zoo
from diffzoo.cli import main
from diffzoo.models.registry import build
from diffzoo.train.checkpoint import CKPT_NAME, load_checkpoint

# ------------------------------------------------------------------------------------------------ helpers


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_claiming(w: int, h: int, bit_depth: int = 8, colour: int = 2, idat: bytes | None = None) -> bytes:
    """A PNG whose header claims ``w x h`` pixels (by default with a few bytes of pixel data)."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, 0)
    data = zlib.compress(b"\0" * 16) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _real_bomb(w: int, h: int) -> bytes:
    """A *valid* 1-bit black PNG of ``w x h``: a few kB on disk, ``w * h`` bytes once Pillow decodes it."""
    row = b"\0" * (1 + (w + 7) // 8)  # filter byte + packed bits
    return _png_claiming(w, h, bit_depth=1, colour=0, idat=zlib.compress(row * h, 9))


def _no_decoding(monkeypatch):
    """Any pixel decoding fails the test: the refusal must come from the header alone."""

    def boom(self, *a, **k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)


# ------------------------------------------------------------------------------------------ decompression bombs


@pytest.mark.parametrize("w,h", [(100_000, 100_000), (10_000, 10_000), (9_000, 8_000), (1, 2**31 - 1)])
def test_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch, w, h):
    """A 100k x 100k claim, sizes between diffzoo's limit (67 M) and Pillow's (warns at 89 M, fails at 179 M),
    and an absurd 1 x 2**31 strip: one line naming the argument, the size and the limit; no pixel decoded,
    no Pillow warning."""
    (tmp_path / "bomb.png").write_bytes(_png_claiming(w, h))
    _no_decoding(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would be an error here
        with pytest.raises(ValueError) as e:
            io.read_image(tmp_path / "bomb.png", arg="--image")
    msg = str(e.value)
    assert msg.startswith("--image: ") and "bomb.png" in msg and "\n" not in msg
    assert f"{w} x {h} = {w * h:,} pixels" in msg and f"{io.MAX_IMAGE_PIXELS:,}" in msg
    assert "MAX_IMAGE_PIXELS" in msg


def test_a_valid_bomb_is_refused_quickly(tmp_path):
    """A valid 1-bit 9000 x 8000 PNG of a few kB (72 MB once decoded) is refused in milliseconds."""
    data = _real_bomb(9000, 8000)
    assert len(data) < 100_000
    (tmp_path / "bomb.png").write_bytes(data)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"9000 x 8000 = 72,000,000 pixels, more than diffzoo's limit"):
        io.open_image(tmp_path / "bomb.png", arg="IMAGE")
    assert time.perf_counter() - t0 < 1.0


def test_pixel_limit_is_diffzoos_or_pillows_if_lower_and_pillow_settings_are_restored(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "x.png")  # 256 pixels
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", 256)
    assert io.read_image(tmp_path / "x.png").shape == (1, 3, 16, 16)  # the limit itself is allowed
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", 255)
    with pytest.raises(ValueError, match=r"^x: .* is 16 x 16 = 256 pixels, more than diffzoo's limit of 255"):
        io.read_image(tmp_path / "x.png", arg="x")
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", 2**26)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a caller who lowered Pillow's own limit
    with pytest.raises(ValueError, match="limit of 100 "):
        io.read_image(tmp_path / "x.png")
    assert Image.MAX_IMAGE_PIXELS == 100 and ImageFile.LOAD_TRUNCATED_IMAGES is False
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a caller who switched Pillow's check off
    (tmp_path / "bomb.png").write_bytes(_png_claiming(10_000, 10_000))
    with pytest.raises(ValueError, match="limit of 67,108,864"):
        io.read_image(tmp_path / "bomb.png")
    assert Image.MAX_IMAGE_PIXELS is None


def test_cli_refuses_a_bomb_in_one_line_before_loading_a_model(tmp_path, capsys, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(_png_claiming(50_000, 50_000))
    monkeypatch.setattr(zoo, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["restore", str(tmp_path / "bomb.png"), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffzoo restore: error: IMAGE: ") and "2,500,000,000 pixels" in err
    assert "Traceback" not in err and "Warning" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_extreme_shapes_within_the_limit_and_empty_images(tmp_path):
    Image.new("L", (5000, 1), 255).save(tmp_path / "strip.png")
    assert io.read_image(tmp_path / "strip.png", size=(1, 10)).shape == (1, 3, 1, 10)
    (tmp_path / "zero.png").write_bytes(_png_claiming(0, 5))  # a zero-width header
    with pytest.raises(ValueError, match="is not a readable image file"):
        io.read_image(tmp_path / "zero.png")


# ------------------------------------------------------------------------------------------ image modes


def _rgb(x: torch.Tensor) -> list[list[int]]:
    """``(1, C, H, W)`` in [-1, 1] -> per-pixel integer values, row-major."""
    v = ((x[0] + 1) * 127.5).round().to(torch.int64)
    return v.permute(1, 2, 0).reshape(-1, v.shape[0]).tolist()


def test_palette_image_takes_its_palette_colours_and_transparent_entries_are_white(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 0, 255, 10, 200, 30] + [0] * 759)
    img.putdata([0, 1, 2])
    img.save(tmp_path / "p.png")
    assert _rgb(io.read_image(tmp_path / "p.png")) == [[255, 0, 0], [0, 0, 255], [10, 200, 30]]
    img.save(tmp_path / "pt.png", transparency=1)  # palette entry 1 is transparent (tRNS)
    assert _rgb(io.read_image(tmp_path / "pt.png")) == [[255, 0, 0], [255, 255, 255], [10, 200, 30]]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_onto_white(tmp_path, mode):
    """Opaque pixels keep their colour exactly, transparent ones are white whatever colour they store, and
    partial alpha blends toward white."""
    if mode == "RGBA":
        px = [(200, 30, 60, 255), (200, 30, 60, 0), (0, 0, 0, 128), (0, 0, 0, 0)]
        want3 = [[200, 30, 60], [255, 255, 255], [127, 127, 127], [255, 255, 255]]
    else:
        px = [(90, 255), (90, 0), (0, 128), (0, 0)]
        want3 = [[90] * 3, [255] * 3, [127] * 3, [255] * 3]
    img = Image.new(mode, (4, 1))
    img.putdata(px)
    img.save(tmp_path / "a.png")
    got = _rgb(io.read_image(tmp_path / "a.png"))
    assert all(abs(g - w) <= 1 for gp, wp in zip(got, want3) for g, w in zip(gp, wp)), got
    grey = _rgb(io.read_image(tmp_path / "a.png", channels=1))
    assert [g[0] for g in grey][1] == 255 and [g[0] for g in grey][3] == 255


def test_grey_to_rgb_repeats_and_rgb_to_grey_is_itu_601_luma(tmp_path):
    Image.fromarray(np.array([[0, 77, 255]], np.uint8)).save(tmp_path / "g.png")
    assert _rgb(io.read_image(tmp_path / "g.png", channels=3)) == [[0] * 3, [77] * 3, [255] * 3]
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 120, 250]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    got = [g[0] for g in _rgb(io.read_image(tmp_path / "c.png", channels=1))]
    want = [(299 * r + 587 * g + 114 * b) / 1000 for r, g, b in rgb[0].tolist()]
    assert all(abs(a - b) <= 0.5 + 1e-9 for a, b in zip(got, want)), (got, want)
    Image.new("1", (2, 1), 1).save(tmp_path / "b.png")  # bilevel: white
    assert _rgb(io.read_image(tmp_path / "b.png")) == [[255] * 3] * 2


def _png16(colour: int, pixels: list[tuple[int, ...]], w: int) -> bytes:
    """A 16-bit PNG (colour type 0 grey, 2 RGB, 4 grey + alpha, 6 RGBA) of big-endian samples."""
    h = len(pixels) // w
    rows = (b"\0" + b"".join(struct.pack(f">{len(p)}H", *p) for p in pixels[r * w : (r + 1) * w]) for r in range(h))
    return _png_claiming(w, h, bit_depth=16, colour=colour, idat=zlib.compress(b"".join(rows)))


@pytest.mark.parametrize(
    "colour,pixels,want",
    [
        (2, [(65535, 0, 32896), (257, 514, 65535)], [[255, 0, 128], [1, 2, 255]]),  # RGB: the high byte
        (6, [(65535, 0, 0, 65535), (0, 0, 0, 0)], [[255, 0, 0], [255, 255, 255]]),  # RGBA: onto white
        (4, [(32896, 65535), (0, 0)], [[128] * 3, [255] * 3]),  # grey + alpha
    ],
)
def test_sixteen_bit_colour_and_alpha_pngs(tmp_path, colour, pixels, want):
    (tmp_path / "x.png").write_bytes(_png16(colour, pixels, 2))
    assert _rgb(io.read_image(tmp_path / "x.png")) == want


def test_cmyk_jpeg_and_other_modes_are_converted(tmp_path):
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "c.jpg")  # no ink: white
    assert bool((io.read_image(tmp_path / "c.jpg") > 0.95).all())
    for mode in ("YCbCr", "LAB", "HSV", "RGBX", "PA", "La", "RGBa", "I", "F"):
        x = io.image_to_tensor(Image.new(mode, (2, 3)), 1)
        y = io.image_to_tensor(Image.new(mode, (2, 3)), 3)
        assert x.shape == (1, 1, 3, 2) and y.shape == (1, 3, 3, 2), mode


# ------------------------------------------------------------------------------------------ checkpoints

ARCH = {"dim": 2, "hidden": 16, "depth": 1}


@pytest.fixture
def shipped(tmp_path):
    """A zoo folder with one model ``m`` (and its bytes, header length and state dict)."""
    torch.manual_seed(0)
    model = build("mlp", **ARCH)
    zoo.save(
        "m",
        model,
        "mlp",
        ARCH,
        schedule={"name": "linear", "kwargs": {}},
        prediction_type="epsilon",
        weights_dir=tmp_path,
    )
    data = (tmp_path / "m.safetensors").read_bytes()
    return tmp_path, data, struct.unpack("<Q", data[:8])[0], model.state_dict()


def _load_fails(d: Path, pattern: str, name: str = "m") -> str:
    with pytest.raises(ValueError, match=pattern) as e:
        zoo.load(name, weights_dir=d)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("cut", ["0", "4", "8", "20", "header-1", "header", "header+10", "end-1"])
def test_truncated_safetensors_name_the_file(shipped, cut):
    d, data, n, _ = shipped
    at = {"header-1": 8 + n - 1, "header": 8 + n, "header+10": 8 + n + 10, "end-1": len(data) - 1}.get(cut)
    (d / "m.safetensors").write_bytes(data[: int(cut) if at is None else at])
    _load_fails(d, r"m\.safetensors: not a (readable )?safetensors file")
    with pytest.raises(ValueError, match=r"m\.safetensors"):
        io.read_safetensors(d / "m.safetensors")


@pytest.mark.parametrize("claim", [2**63, 2**40, 100_000_001, "file+1"])
def test_oversized_header_length_is_refused_from_8_bytes(shipped, monkeypatch, claim):
    """A header length above safetensors' 100 MB limit, or beyond the end of the file: refused before
    safetensors even opens the file (nothing is allocated)."""
    d, data, n, _ = shipped
    claim = len(data) - 8 + 1 if claim == "file+1" else claim
    (d / "m.safetensors").write_bytes(struct.pack("<Q", claim) + data[8:])
    monkeypatch.setattr(io, "safe_open", lambda *a, **k: pytest.fail("safetensors opened the file"))
    msg = _load_fails(d, r"m\.safetensors: not a readable safetensors file \(its header claims")
    assert f"{claim:,}" in msg


def _with_header(data: bytes, n: int, header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + data[8 + n :]


@pytest.mark.parametrize(
    "case",
    [
        "not-json",
        "not-utf8",
        "json-array",
        "unknown-dtype",
        "negative-shape",
        "offsets-past-end",
        "meta-not-object",
        "meta-not-json",
        "meta-not-string",
    ],
)
def test_malformed_safetensors_header_names_the_file(shipped, case):
    d, data, n, _ = shipped
    header = json.loads(data[8 : 8 + n])
    key = next(k for k in header if k != "__metadata__")
    if case == "not-json":
        raw = data[8 : 8 + n].replace(b'"', b"'", 3)
    elif case == "not-utf8":
        raw = b"\xff\xfe" + data[10 : 8 + n]
    elif case == "json-array":
        raw = b"[1, 2, 3]"
    else:
        if case == "unknown-dtype":
            header[key]["dtype"] = "X99"
        elif case == "negative-shape":
            header[key]["shape"] = [-1]
        elif case == "offsets-past-end":
            header[key]["data_offsets"] = [0, 10**12]
        elif case == "meta-not-object":
            header["__metadata__"][io.META_KEY] = "[1, 2]"
        elif case == "meta-not-json":
            header["__metadata__"][io.META_KEY] = "{not json"
        elif case == "meta-not-string":
            header["__metadata__"][io.META_KEY] = 5
        raw = json.dumps(header).encode()
    (d / "m.safetensors").write_bytes(_with_header(data, n, raw))
    _load_fails(d, r"m\.safetensors: (not a readable safetensors file|corrupt JSON header)")


class _Evil:
    """Unpickling this creates ``marker``: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "torch.save-legacy", "pickle"])
def test_pickle_renamed_to_safetensors_is_refused_without_running_it(tmp_path, how):
    marker = tmp_path / "pwned"
    st = tmp_path / "m.safetensors"
    if how == "torch.save":
        torch.save({"w": _Evil(marker)}, st)
    elif how == "torch.save-legacy":
        torch.save({"w": _Evil(marker)}, st, _use_new_zipfile_serialization=False)
    else:
        st.write_bytes(pickle.dumps(_Evil(marker)))
    (tmp_path / "m.json").write_text(json.dumps({"arch": "mlp", "arch_config": ARCH, "kind": "classifier"}))
    for call in (
        lambda: zoo.load("m", weights_dir=tmp_path),
        lambda: zoo.load(str(st)),
        lambda: io.read_safetensors(st),
    ):
        with pytest.raises(ValueError, match=r"m\.safetensors: not a readable safetensors file") as e:
            call()
        assert ("pickle" in str(e.value) or "zip archive" in str(e.value)) and "not unpickled" in str(e.value)
    # a training checkpoint that is a renamed pickle: the same refusal, no code run
    run = tmp_path / "run"
    run.mkdir()
    os.replace(st, run / CKPT_NAME)
    net = torch.nn.Linear(2, 2)  # the file is refused before model or optimizer are touched (and the first
    with pytest.raises(ValueError, match=r"checkpoint\.safetensors: not a readable safetensors file"):
        load_checkpoint(run, net, net, None)  # torch optimizer built in a process costs seconds of imports)
    assert not marker.exists()


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("float64", r"has dtype float64, expected float32"),
        ("float16", r"has dtype float16, expected float32"),
        ("int64", r"has dtype int64, expected float32"),
        ("shape", r"has shape \(256,\), expected \(16, 16\)"),
        ("nan", r"has non-finite values"),
        ("inf", r"has non-finite values"),
        ("missing", r"missing blocks\.0\.1\.weight"),
        ("extra", r"unexpected intruder"),
    ],
)
def test_wrong_dtype_shape_or_values_name_the_file_and_tensor(shipped, case, pattern):
    """Nothing is cast silently: a float64 / float16 / int64 file for a float32 network is refused (before,
    ``load_state_dict`` cast it without a word), and so are non-finite weights."""
    d, _, _, sd = shipped
    t = {k: v.clone() for k, v in sd.items()}
    if case in ("float64", "float16", "int64"):
        t = {k: v.to(getattr(torch, case)) for k, v in t.items()}
    elif case == "shape":
        t["blocks.0.1.weight"] = t["blocks.0.1.weight"].flatten().contiguous()
    elif case in ("nan", "inf"):
        t["blocks.0.1.weight"][0, 0] = float(case)
    elif case == "missing":
        del t["blocks.0.1.weight"]
    else:
        t["intruder"] = torch.zeros(1)
    save_file(t, str(d / "m.safetensors"))
    _load_fails(d, r"^.*m\.safetensors: weights do not match arch MLPDenoiser .*" + pattern)


# ------------------------------------------------------------------------------------------ zoo JSON configs


@pytest.mark.parametrize(
    "key,value,pattern",
    [
        ("arch", 3, r"arch: expected a non-empty string, got 3"),
        ("arch", "no-such-arch", r"arch: unknown value 'no-such-arch'"),
        ("arch_config", [1], r"arch_config: expected an object"),
        ("arch_config", {"dim": 2, "bogus": 1}, r"arch_config does not fit arch 'mlp' \(TypeError"),
        ("arch_config", {"dim": "two"}, r"arch_config does not fit arch 'mlp' \(ValueError"),
        ("arch_config", {"dim": 2, "hidden": -16, "depth": 1}, r"arch_config does not fit arch 'mlp' \(RuntimeError"),
        ("kind", "gan", r"unknown kind 'gan'"),
        ("kind", 1, r"unknown kind 1"),
        ("kind", "masked", r"prediction_type: a masked model has 'masked-x0-logits'"),
        ("schedule", "linear", r"schedule: expected null or \{"),
        ("schedule", {"kwargs": {}}, r"schedule: expected null or \{"),
        ("schedule", {"name": "linear", "kwargs": [1]}, r"schedule: expected null or \{"),
        ("schedule", {"name": "nope"}, r"schedule: unknown value 'nope'"),
        ("schedule", {"name": "linear", "kwargs": {"bogus": 1}}, r"schedule: .*unexpected keyword argument 'bogus'"),
        ("schedule", None, r"schedule: a diffusion model needs one"),
        ("prediction_type", "banana", r"prediction_type: unknown value 'banana'"),
        ("prediction_type", 3, r"prediction_type: expected null or a string"),
        ("sample_shape", "2", r"sample_shape: expected null or a non-empty list of positive integers"),
        ("sample_shape", [2.5], r"sample_shape: expected"),
        ("sample_shape", [-2], r"sample_shape: expected"),
        ("sample_shape", [True], r"sample_shape: expected"),
        ("sample_shape", [], r"sample_shape: expected"),
        ("null_class", "x", r"null_class: expected null or a non-negative integer"),
        ("seed", 1.5, r"seed: expected null or an integer"),
        ("steps", -1, r"steps: expected null or a non-negative integer"),
        ("metrics", [1], r"metrics: expected null or an object"),
        ("train_command", ["diffzoo"], r"train_command: expected null or a string"),
        ("scaling_factor", "x", r"scaling_factor: expected null or a positive number"),
        ("operator", 3, r"operator: expected null or an object"),
    ],
)
def test_config_with_a_wrong_type_names_the_file_and_key(shipped, key, value, pattern):
    d = shipped[0]
    cfg = json.loads((d / "m.json").read_text())
    cfg[key] = value
    (d / "m.json").write_text(json.dumps(cfg))
    _load_fails(d, r"m\.json: " + pattern)


@pytest.mark.parametrize(
    "text,pattern",
    [
        (b"{ not json", r"unreadable zoo config \(JSONDecodeError"),
        (b"\xff\xfe{}", r"unreadable zoo config \(UnicodeDecodeError"),
        (b"[1, 2]", r"expected a JSON object, got list"),
        (b"null", r"expected a JSON object, got NoneType"),
        (b"[" * 100_000 + b"]" * 100_000, r"unreadable zoo config \(RecursionError|expected a JSON object"),
        (b'{"arch_config": {}}', r"missing key\(s\) \['arch'\]"),
    ],
)
def test_unreadable_config_names_the_file(shipped, text, pattern):
    d = shipped[0]
    (d / "m.json").write_bytes(text)
    _load_fails(d, r"m\.json: " + pattern)


def test_oversized_config_is_refused_before_parsing(shipped, monkeypatch):
    d = shipped[0]
    monkeypatch.setattr(zoo, "MAX_CONFIG_BYTES", 100)
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("parsed"))
    _load_fails(d, r"m\.json: unreadable zoo config \(\d+ bytes; a zoo JSON is at most 100\)")


@pytest.mark.parametrize(
    "key,value,named",
    [
        ("schedule", {"kwargs": {}}, "schedule: expected"),
        ("arch_config", {"dim": 2, "hidden": -16}, "arch_config does not fit arch 'mlp' (RuntimeError"),
        ("kind", "masked", "prediction_type: a masked model has"),
        ("sample_shape", [-2], "sample_shape: expected"),
    ],
)
def test_cli_reports_a_hostile_config_in_one_line(shipped, capsys, key, value, named):
    """Before, these four ended in a traceback (KeyError, RuntimeError, AttributeError, RuntimeError)."""
    d = shipped[0]
    cfg = json.loads((d / "m.json").read_text())
    (d / "m.json").write_text(json.dumps({**cfg, key: value}))
    assert main(["sample", str(d / "m.safetensors"), "-n", "2", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffzoo sample: error: ") and f"m.json: {named}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_top_level_key_is_kept_and_logged(shipped, caplog):
    d = shipped[0]
    cfg = json.loads((d / "m.json").read_text())
    (d / "m.json").write_text(json.dumps({**cfg, "comment": "hand-edited", "future_key": [1]}))
    with caplog.at_level(logging.WARNING, logger="diffzoo.zoo"):
        zm = zoo.load("m", weights_dir=d)
    assert zm.config["comment"] == "hand-edited"
    assert "unknown key(s) ['comment', 'future_key']" in caplog.text and "m.json" in caplog.text


def test_every_shipped_config_passes_the_checks():
    for name in zoo.names():
        zoo.read_config(zoo.WEIGHTS_DIR / f"{name}.json")


# ------------------------------------------------------------------------------------------ the zoo never half-writes

BIG = {"dim": 2, "hidden": 256, "depth": 3}  # ~0.8 MB of weights: a write takes a few milliseconds


def _version(v: int) -> tuple[torch.nn.Module, dict]:
    """Version ``v`` of model ``m``: an architecture and weights (every value = ``v``) of its own, so a
    mixed pair cannot load at all."""
    arch = {**BIG, "hidden": BIG["hidden"] + 32 * v}
    model = build("mlp", **arch)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(v))
    return model, arch


def _save_version(d: Path, v: int) -> None:
    model, arch = _version(v)
    zoo.save(
        "m",
        model,
        "mlp",
        arch,
        schedule={"name": "linear", "kwargs": {}},
        prediction_type="epsilon",
        seed=v,
        weights_dir=d,
    )


def _consistent_version(d: Path) -> int:
    """The version of the pair in ``d`` after a kill, checking that the pair is whole and consistent."""
    assert zoo.names(d) == ["m"]
    zm = zoo.load("m", weights_dir=d)
    v = zm.config["seed"]
    assert all(bool((t == v).all()) for t in zm.model.parameters())
    return v


def _hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def _fork_and_kill(body, *, at: float | None = None) -> None:
    """Run ``body(ready)`` in a forked child that must die by SIGKILL: ``body`` kills itself, or the parent
    kills it ``at`` seconds after ``body`` calls ``ready()``. The child never returns into pytest."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 3  # body() returned without dying
        try:
            torch.set_num_threads(1)  # no OpenMP pool in a forked child
            body(lambda: os.write(w, b"."))
        except BaseException:  # noqa: BLE001 -- report it, never unwind into pytest
            traceback.print_exc()
            code = 4
        finally:
            os._exit(code)
    os.close(w)
    if at is not None:
        assert os.read(r, 1) == b"."
        time.sleep(at)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(r)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"child exit status {status}"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@needs_fork
@pytest.mark.parametrize(
    "point,expect",
    [
        ("writing the new JSON", 1),  # a torn temporary JSON file
        ("before the pending JSON's rename", 1),  # the JSON complete under its temporary name
        ("writing the weights", 1),  # a torn temporary weights file
        ("before the weights' rename", 1),  # the weights complete under their temporary name
        ("before the JSON's rename", 2),  # committed (weights renamed): the next read finishes the save
        ("after the save", 2),
    ],
)
def test_save_killed_at_each_step_leaves_a_whole_pair(tmp_path, point, expect):
    """SIGKILL at each step of ``zoo.save``'s protocol (JSON to a pending file, weights renamed: the
    commit, JSON renamed): the folder then holds the previous pair or, once the weights are committed, the
    new one -- never new weights with an old JSON."""
    _save_version(tmp_path, 1)
    real_replace, real_write = os.replace, io.write_safetensors

    def body(ready):
        import diffzoo.io as dio

        calls = {"replace": 0}

        def replace(src, dst):
            calls["replace"] += 1
            k = calls["replace"]  # 1: JSON temp -> .pending, 2: weights temp -> m.safetensors, 3: .pending -> m.json
            if (point, k) in {
                ("before the pending JSON's rename", 1),
                ("before the weights' rename", 2),
                ("before the JSON's rename", 3),
            }:
                _die()
            real_replace(src, dst)

        def torn_text_write(path, text):
            with dio.atomic_path(path) as tmp, open(tmp, "w") as f:
                f.write(text[: len(text) // 2])
                f.flush()
                _die()

        def torn_weights(tensors, tmp, metadata=None):
            real_write(tensors, tmp, metadata)
            with open(tmp, "r+b") as f:
                f.truncate(os.path.getsize(tmp) // 2)
            _die()

        os.replace = replace
        if point == "writing the new JSON":
            zoo.atomic_write_text = torn_text_write
        if point == "writing the weights":
            dio.write_safetensors = torn_weights
        _save_version(tmp_path, 2)
        if point == "after the save":
            _die()

    _fork_and_kill(body)
    assert _consistent_version(tmp_path) == expect
    assert not list(tmp_path.glob(".*.pending")) or expect == 1  # a finished save leaves no pending JSON
    _save_version(tmp_path, 3)  # the next save works and removes what the killed one left
    assert _consistent_version(tmp_path) == 3 and _hidden(tmp_path) == []


@needs_fork
def test_save_killed_at_random_times_never_leaves_a_half_pair(tmp_path):
    """A child alternates saves of two versions (~0.1 s each here); SIGKILL at a random moment of its first
    two saves, 8 times: the pair left is always whole (version 1 or 2, weights matching their JSON)."""
    _save_version(tmp_path, 1)
    models = [(v, *_version(v)) for v in (2, 1)]
    rng = random.Random(0)
    seen = []

    def body(ready):
        ready()
        while True:
            for v, model, arch in models:
                zoo.save(
                    "m", model, "mlp", arch, schedule={"name": "linear", "kwargs": {}}, seed=v, weights_dir=tmp_path
                )

    for _ in range(8):
        _fork_and_kill(body, at=rng.uniform(0.0, 0.2))
        seen.append(_consistent_version(tmp_path))
    assert set(seen) <= {1, 2}
    _save_version(tmp_path, 3)
    assert _consistent_version(tmp_path) == 3 and _hidden(tmp_path) == []


def test_a_committed_save_is_read_from_its_pending_json_in_a_read_only_folder(tmp_path, monkeypatch):
    """Killed between the weights' and the JSON's rename, in a folder the reader cannot write: load()
    reads the pending JSON the weights name (their header records its digest)."""
    _save_version(tmp_path, 1)
    monkeypatch.setattr(os, "replace", _replace_all_but_the_json(os.replace))
    with pytest.raises(_Stop):
        _save_version(tmp_path, 2)
    monkeypatch.undo()
    assert len(list(tmp_path.glob(".m.json.*.pending"))) == 1

    def read_only(src, dst):
        raise PermissionError(f"read-only: {dst}")

    monkeypatch.setattr(os, "replace", read_only)
    zm = zoo.load("m", weights_dir=tmp_path)
    assert zm.config["seed"] == 2 and all(bool((p == 2).all()) for p in zm.model.parameters())
    assert json.loads((tmp_path / "m.json").read_text())["seed"] == 1  # nothing was written
    monkeypatch.undo()
    assert _consistent_version(tmp_path) == 2 and not list(tmp_path.glob(".*.pending"))  # finished now


class _Stop(BaseException):
    pass


def _replace_all_but_the_json(real):
    def replace(src, dst):
        if str(dst).endswith("m.json"):
            raise _Stop()
        return real(src, dst)

    return replace


def test_a_hand_edited_json_is_kept_and_a_new_model_half_saved_is_not_listed(tmp_path, monkeypatch):
    _save_version(tmp_path, 1)
    cfg = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**cfg, "metrics": {"fid": 1.0}}))  # digest no longer matches
    assert zoo.load("m", weights_dir=tmp_path).metrics == {"fid": 1.0}
    # a first save of model "n" that never committed its JSON (nor left a pending one): not listed
    model, arch = _version(2)
    monkeypatch.setattr(zoo, "atomic_write_text", lambda path, text: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        zoo.save("n", model, "mlp", arch, schedule={"name": "linear", "kwargs": {}}, weights_dir=tmp_path)
    assert zoo.names(tmp_path) == ["m"] and not (tmp_path / "n.safetensors").exists()
