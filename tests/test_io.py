"""diffzoo.io: image round trips, grids, sample files, atomic writes, tables, and one-line errors for
files that are not (complete) images."""

from __future__ import annotations

import io as _io
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from safetensors.torch import load_file

from diffzoo import io


def _png_bytes(h: int = 16, w: int = 16, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = _io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("channels", [1, 3])
def test_save_image_read_image_round_trip_is_exact_on_the_uint8_grid(tmp_path, channels):
    x = torch.randint(0, 256, (1, channels, 5, 7)).float() / 127.5 - 1
    path = io.save_image(x, tmp_path / "x.png")
    y = io.read_image(path, channels=channels)
    assert y.shape == (1, channels, 5, 7) and y.dtype == torch.float32
    assert torch.allclose(x, y, atol=1e-6)
    assert _leftovers(tmp_path) == []


def test_read_image_converts_channels_and_resizes_with_a_box_filter(tmp_path):
    img = torch.full((1, 3, 4, 4), -1.0)
    img[:, :, :2, :2] = 1.0  # top-left quarter white
    img[:, :, 2:, 2:3] = 1.0  # half of the bottom-right quarter white
    io.save_image(img, tmp_path / "q.png")
    grey = io.read_image(tmp_path / "q.png", channels=1, size=(2, 2))
    assert grey.shape == (1, 1, 2, 2)
    assert torch.allclose(grey[0, 0], torch.tensor([[1.0, -1.0], [-1.0, 0.0]]), atol=1 / 127.5)
    with pytest.raises(ValueError, match="channels"):
        io.read_image(tmp_path / "q.png", channels=2)


def test_save_image_scales_with_nearest_neighbour(tmp_path):
    x = torch.tensor([[[[-1.0, 1.0]]]])
    io.save_image(x, tmp_path / "s.png", scale=3)
    arr = np.asarray(Image.open(tmp_path / "s.png"))
    assert arr.shape == (3, 6) and (arr[:, :3] == 0).all() and (arr[:, 3:] == 255).all()


def test_sixteen_bit_and_float_grey_images_are_brought_to_eight_bits(tmp_path):
    ramp = np.linspace(0, 65535, 16, dtype=np.uint16).reshape(4, 4)
    Image.fromarray(ramp).save(tmp_path / "a.png")  # a 16-bit grey PNG (mode I;16)
    Image.fromarray((ramp / 65535.0).astype(np.float32)).save(tmp_path / "b.tiff")  # float in [0, 1]
    a = io.read_image(tmp_path / "a.png", channels=1)
    b = io.read_image(tmp_path / "b.tiff", channels=1)
    want = torch.from_numpy(np.rint(ramp / 257.0) / 127.5 - 1).float()
    assert torch.allclose(a[0, 0], want, atol=1e-6) and torch.allclose(b[0, 0], want, atol=1e-6)


def test_grid_and_strip_layout(tmp_path):
    x = torch.linspace(-1, 1, 6 * 2 * 3).reshape(6, 1, 2, 3)
    g = io.image_grid(x, nrow=3, pad=1, scale=1)
    assert g.size == (3 * (3 + 1) + 1, 2 * (2 + 1) + 1)  # (W, H)
    path = io.save_grid(x, tmp_path / "g.png", nrow=3, pad=1, scale=2)
    assert Image.open(path).size == (2 * 13, 2 * 7)
    strip = io.save_strip([x[:1], x[1:2], x[2:3]], tmp_path / "s.png", scale=1)
    arr = np.asarray(Image.open(strip))
    assert arr.shape == (2, 9)
    assert np.array_equal(arr[:, 3:6], io.to_uint8(x[1]))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        io.image_grid(torch.zeros(2, 2, 4, 4))


# ------------------------------------------------------------------------------------------- samples


def test_save_samples_png_npz_safetensors(tmp_path):
    s = torch.rand(4, 1, 8, 8) * 2 - 1
    labels = torch.arange(4)
    png = io.save_samples(tmp_path / "s.png", s, labels)
    assert Image.open(png).size == ((2 * 9 + 1) * 4, (2 * 9 + 1) * 4)
    npz = np.load(io.save_samples(tmp_path / "s.npz", s, labels))
    assert np.array_equal(npz["samples"], s.numpy()) and np.array_equal(npz["labels"], labels.numpy())
    st = load_file(str(io.save_samples(tmp_path / "s.safetensors", s, labels)))
    assert torch.equal(st["samples"], s) and torch.equal(st["labels"], labels)
    points = io.save_samples(tmp_path / "p.png", torch.randn(50, 2))  # 2-D points: a scatter plot
    assert Image.open(points).size == (400, 400)
    tokens = torch.randint(0, 17, (2, 64))  # masked models: the PNG draws the decoded images
    io.save_samples(tmp_path / "t.png", tokens, images=torch.zeros(2, 1, 8, 8))
    assert set(load_file(str(io.save_samples(tmp_path / "t.safetensors", tokens, images=torch.zeros(2, 1, 8, 8))))) == {
        "samples",
        "images",
    }
    assert _leftovers(tmp_path) == []


def test_save_samples_refusals_leave_no_file(tmp_path):
    with pytest.raises(ValueError, match=r"out: unsupported file type '\.pt'"):
        io.save_samples(tmp_path / "s.pt", torch.zeros(2, 2))
    with pytest.raises(ValueError, match="cannot draw samples of shape"):
        io.save_samples(tmp_path / "s.png", torch.zeros(2, 5))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_check_output_path(tmp_path):
    assert io.check_output_path(tmp_path / "new" / "x.png", "out", (".png",)) == tmp_path / "new" / "x.png"
    assert not (tmp_path / "new").exists()  # nothing is created
    with pytest.raises(ValueError, match="out: .* is a folder"):
        io.check_output_path(tmp_path, "out", (".png",))
    with pytest.raises(ValueError, match="out: unsupported file type '.jpg'"):
        io.check_output_path(tmp_path / "x.jpg", "out", (".png",))
    (tmp_path / "f").write_text("a file, not a folder")
    with pytest.raises(ValueError, match="is not a folder"):
        io.check_output_path(tmp_path / "f" / "x.png", "out")


# ------------------------------------------------------------------------------------------- atomic writes


def test_atomic_writes_round_trip(tmp_path):
    io.atomic_write_text(tmp_path / "a.txt", "hello")
    io.atomic_write_json({"b": 1, "a": [1.5]}, tmp_path / "a.json")
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    assert oct((tmp_path / "a.json").stat().st_mode & 0o777) == oct(0o644)
    io.atomic_save_safetensors({"w": torch.arange(3.0)}, tmp_path / "w.safetensors", {"step": 3})
    tensors, meta = io.read_safetensors(tmp_path / "w.safetensors")
    assert torch.equal(tensors["w"], torch.arange(3.0)) and meta == {"step": 3}
    assert _leftovers(tmp_path) == []


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a.json"
    io.atomic_write_json({"v": 1}, target)
    with pytest.raises(TypeError):
        io.atomic_write_json({"v": object()}, target)  # not JSON-serialisable: fails mid-write
    with pytest.raises(RuntimeError, match="boom"), io.atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert _leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["a.json"]
    with pytest.raises(ValueError, match="is a folder"):
        io.atomic_write_text(tmp_path, "x")


def test_read_safetensors_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.read_safetensors(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors: not a readable safetensors file"):
        io.read_safetensors(tmp_path / "bad.safetensors")


# ------------------------------------------------------------------------------------------- tables


def test_format_table():
    rows = [{"name": "a|b", "x": 0.123456, "n": 3, "none": None}, {"name": "c", "x": 10.0, "n": 12, "none": 1}]
    out = io.format_table(rows, floatfmt=".3g").splitlines()
    assert out[0].split("|")[1:-1] == [" name ", " x     ", " n  ", " none "]
    assert out[1] == "|------|-------|----|------|"
    assert out[2] == r"| a\|b | 0.123 | 3  |      |"
    assert io.format_table(rows, columns=["n"]).splitlines()[2] == "| 3  |"
    assert io.format_table([]) == "(no rows)"
    # columns are the union of the rows' keys: a key only a later row has is not dropped
    mixed = io.format_table([{"a": 1}, {"a": 2, "b": 0.5}]).splitlines()
    assert mixed[0] == "| a | b   |" and mixed[2] == "| 1 |     |" and mixed[3] == "| 2 | 0.5 |"


# ------------------------------------------------------------------------------------------- hostile files


@pytest.fixture(params=[False, True], ids=["strict", "LOAD_TRUNCATED_IMAGES"])
def truncated_flag(request, monkeypatch):
    """Some library may switch Pillow's LOAD_TRUNCATED_IMAGES on globally: reading must stay strict."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", request.param)
    return request.param


@pytest.mark.parametrize("cut", [33, 100, 300, -12])
def test_truncated_png_is_refused(tmp_path, truncated_flag, cut):
    data = _png_bytes(32, 32)
    (tmp_path / "t.png").write_bytes(data[:cut])
    with pytest.raises(ValueError, match=r"^IMAGE: '.*t\.png' is not a readable image file \(") as e:
        io.read_image(tmp_path / "t.png", arg="IMAGE")
    assert "\n" not in str(e.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES == truncated_flag  # the caller's setting is restored


def test_truncated_jpeg_is_refused(tmp_path, truncated_flag):
    buf = _io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ValueError, match="is not a readable image file"):
        io.read_image(tmp_path / "t.jpg")


def test_non_image_missing_and_folder_paths_name_the_argument(tmp_path):
    (tmp_path / "notes.md").write_text("# not an image\n")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("notes.md", "empty.png"):
        with pytest.raises(ValueError, match=rf"^--image: '.*{name}' is not a readable image file"):
            io.read_image(tmp_path / name, arg="--image")
    with pytest.raises(FileNotFoundError, match=r"^--image: no such file '.*nope\.png'$"):
        io.read_image(tmp_path / "nope.png", arg="--image")
    with pytest.raises(ValueError, match="^--image: .* is a folder, not an image file$"):
        io.read_image(tmp_path, arg="--image")
    # a complete image still reads
    (tmp_path / "ok.png").write_bytes(_png_bytes())
    assert io.read_image(tmp_path / "ok.png").shape == (1, 3, 16, 16)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (4, 2), "black")
    img.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.png", exif=exif)
    x = io.read_image(tmp_path / "r.png", channels=1)
    assert x.shape == (1, 1, 4, 2) and float(x[0, 0, 0, 1]) == 1.0
