"""diffzoo studio's HTTP API (a real uvicorn server on a local port): every endpoint, bad files and bad
settings answered with one-line messages, runs whose downloaded settings reproduce them with the CLI,
exact properties of the results (DDNM keeps the observed pixels), progress, busy and cancel."""

from __future__ import annotations

import io
import json
import re
import shlex
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import studio_server as srv  # noqa: E402

from diffzoo.cli import main  # noqa: E402
from diffzoo.editing import EDIT_METHODS  # noqa: E402
from diffzoo.forensics.dire import DIRE_STEPS, dire  # noqa: E402
from diffzoo.inverse.posterior import METHODS as POSTERIOR_METHODS  # noqa: E402
from diffzoo.io import image_grid, image_to_tensor  # noqa: E402
from diffzoo.provenance import ATTACKS, WATERMARKS  # noqa: E402
from diffzoo.sampling import SAMPLERS  # noqa: E402
from diffzoo.studio import Studio  # noqa: E402
from diffzoo.studio.audit import zoo_detectors  # noqa: E402
from diffzoo.zoo.forensics import detector_probs, load_detector  # noqa: E402


@pytest.fixture(scope="module")
def server():
    return srv.start()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_page_and_static_files_are_local_only(server):
    status, page = srv.call("/")
    assert status == 200 and b"diffzoo studio" in page
    for name in ("studio.js", "studio.css"):
        status, body = srv.call(f"/static/{name}")
        assert status == 200 and b"http://" not in body and b"https://" not in body  # no CDN, no analytics
    assert b"https://" not in page and b"http://" not in page
    ids = re.findall(rb'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate element ids in the page"
    status, err = srv.call("/static/../app.py")
    assert status == 404
    status, err = srv.call("/docs")  # no Swagger UI (it would load assets from a CDN)
    assert status == 404


def test_info_lists_the_registries(server):
    status, info = srv.call("/api/info")
    assert status == 200
    assert [m["name"] for m in info["edit"]["methods"]] == list(EDIT_METHODS)
    assert info["restore"]["methods"]["gaussian"] == list(POSTERIOR_METHODS)
    assert "digits-unet" in info["restore"]["priors"] and "mask" in info["restore"]["operators"]
    assert info["sample"]["samplers"]["diffusion"] == sorted(SAMPLERS)
    fams = {f["name"]: f for f in info["audit"]["families"]}
    assert set(fams) == {"detectors", "watermarks", "attacks", "protection"}
    for f in fams.values():  # installed with entries, or said to be missing
        assert f["entries"] if f["installed"] else "not installed" in f["message"]
    ex = info["examples"][0]
    assert ex["source_prompt"] and ex["target_prompt"] and len(ex["mask"]) == 32


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"this is not an image\n", "not a readable image file"),
        (_png(np.zeros((8, 8), np.uint8))[:40], "not a readable image file"),  # a PNG cut short
        (b"", "empty"),
    ],
)
def test_bad_files_get_one_line_messages(server, data, needle):
    status, err = srv.upload(data, "notes.txt")
    assert status == 400 and needle in err["error"] and "\n" not in err["error"]
    assert "Traceback" not in err["error"] and err["error"].startswith("image:")


def test_malformed_requests(server):
    status, err = srv.call("/api/upload", {"name": "x", "data": "%%%not base64"})
    assert status == 400 and "base64" in err["error"]
    status, err = srv.call("/api/upload", raw=b"{not json")
    assert status == 400 and "JSON" in err["error"]
    status, err = srv.call("/api/run/nonsense", {})
    assert status == 400 and err["error"].startswith("panel:")
    status, err = srv.call("/api/jobs/doesnotexist")
    assert status == 404
    status, err = srv.call("/api/uploads/doesnotexist.png")
    assert status == 404


@pytest.mark.parametrize(
    "panel, settings, field",
    [
        ("edit", {"image": "example0", "source_prompt": "a", "target_prompt": "b", "methods": ["nope"]}, "methods"),
        ("edit", {"image": "example0", "source_prompt": "a", "target_prompt": "b", "methods": []}, "methods"),
        ("edit", {"image": "missing", "source_prompt": "a", "target_prompt": "b", "methods": ["ddim"]}, "image"),
        (
            "edit",
            {"image": "example0", "source_prompt": " ", "target_prompt": "b", "methods": ["ddim"]},
            "source_prompt",
        ),
        (
            "edit",
            {"image": "example0", "source_prompt": "a", "target_prompt": "b", "methods": ["ddim"], "steps": "x"},
            "steps",
        ),
        (
            "edit",
            {"image": "example0", "source_prompt": "a", "target_prompt": "b", "methods": ["ddim"], "steps": 0},
            "steps",
        ),
        ("restore", {"image": "digit0", "operator": "blurry", "methods": ["ddnm"]}, "operator"),
        ("restore", {"image": "digit0", "prior": "tinysd", "methods": ["ddnm"]}, "prior"),
        ("restore", {"image": "digit0", "operator": "sr", "methods": ["aps_ii"]}, "methods"),
        ("restore", {"image": "digit0", "operator": "mask", "methods": ["ddnm"]}, "mask"),
        ("restore", {"image": "digit0", "operator": "mask", "methods": ["ddnm"], "mask": [[0, 0], [0, 0]]}, "mask"),
        ("restore", {"image": "digit0", "operator": "mask", "methods": ["ddnm"], "mask": [[1, 2], [0, 0]]}, "mask"),
        (
            "edit",
            {
                "image": "example0",
                "source_prompt": "a",
                "target_prompt": "b",
                "methods": ["ddim"],
                "mask": [[1], [0, 1]],
            },
            "mask",
        ),
        ("restore", {"image": "digit0", "operator": "sr", "methods": ["ddnm"], "sigma_y": -1}, "sigma_y"),
        ("sample", {"model": "nope", "samplers": ["ddim"]}, "model"),
        ("sample", {"model": "digits-unet", "samplers": ["fhs"]}, "samplers"),
        ("sample", {"model": "digits-unet", "samplers": ["ddim"], "n": 10_000}, "n"),
        ("audit", {"image": "digit0", "family": "horoscopes", "entries": ["x"]}, "family"),
    ],
)
def test_bad_settings_name_the_field(server, panel, settings, field):
    status, err = srv.call(f"/api/run/{panel}", settings)
    assert status == 400, err
    assert err["error"].startswith(f"{field}:") and "\n" not in err["error"]


def test_drawn_mask_restore_is_consistent_and_keeps_observed_pixels(server):
    status, up = srv.upload(_png((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)), "ramp.png")
    assert status == 200 and (up["width"], up["height"]) == (8, 8)
    mask = [[1 if 2 <= i < 6 and 1 <= j < 5 else 0 for j in range(8)] for i in range(8)]  # 1 = painted = missing
    settings = {"image": up["id"], "prior": "digits-unet", "operator": "mask", "methods": ["ddnm", "pinv"]}
    status, job = srv.call("/api/run/restore", {**settings, "steps": 5, "mask": mask})
    assert status == 200, job
    job = srv.wait(job["id"])
    assert job["state"] == "done", job
    cards = {r["label"]: r for r in job["results"]}
    assert float(cards["ddnm"]["metrics"]["||A x - y||"]) < 1e-5  # DDNM's range-space projection: A x = y
    _, inp = srv.call(f"/api/jobs/{job['id']}/files/input.png")
    _, out = srv.call(f"/api/jobs/{job['id']}/files/restore_ddnm.png")
    keep = ~np.array(mask, bool)
    assert np.abs(_pixels(out)[keep].astype(int) - _pixels(inp)[keep].astype(int)).max() <= 1
    _, doc = srv.call(f"/api/jobs/{job['id']}/files/settings.json")
    doc = json.loads(doc)
    steps = {r["label"]: r for r in doc["reproduce"]}
    assert doc["settings"]["mask"] == mask and "Inpainting" in steps["ddnm"]["python"]


@pytest.mark.parametrize("prior, method", [("digits-unet", "ddnm"), ("masked-digits", "aps_like")])
def test_drawn_mask_restores_reproduce_from_the_python_snippet(server, tmp_path, monkeypatch, prior, method):
    mask = [[1 if 8 <= i < 20 and 4 <= j < 28 else 0 for j in range(32)] for i in range(32)]  # the page's 32 grid
    settings = {"image": "digit2", "prior": prior, "operator": "mask", "methods": [method], "steps": 6, "seed": 1}
    status, job = srv.call("/api/run/restore", {**settings, "mask": mask})
    assert status == 200, job
    job = srv.wait(job["id"])
    assert job["state"] == "done", job
    monkeypatch.chdir(tmp_path)
    for name in ("input.png", "settings.json"):
        (tmp_path / name).write_bytes(srv.call(f"/api/jobs/{job['id']}/files/{name}")[1])
    card = job["results"][-1]
    scope: dict = {}
    exec(card["python"], scope)
    ours = _pixels(srv.call(f"/api/jobs/{job['id']}/files/{card['file']}")[1])
    np.testing.assert_array_equal(ours, np.asarray(image_grid(scope["out"].float(), pad=0, scale=1)))


def test_restore_and_sample_reproduce_with_the_cli(server, tmp_path, monkeypatch, capsys):
    status, job = srv.call(
        "/api/run/restore",
        {"image": "digit1", "prior": "digits-unet", "operator": "sr", "methods": ["ddnm"], "steps": 4, "seed": 3},
    )
    job = srv.wait(job["id"])
    assert job["state"] == "done", job
    status, job2 = srv.call(
        "/api/run/sample", {"model": "digits-unet", "samplers": ["ddim"], "steps": [3], "n": 4, "seed": 5}
    )
    job2 = srv.wait(job2["id"])
    assert job2["state"] == "done", job2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.png").write_bytes(srv.call(f"/api/jobs/{job['id']}/files/input.png")[1])
    for j in (job, job2):
        card = j["results"][-1]
        argv = card["cli"].split()  # no quoted arguments in these two commands
        assert argv[0] == "diffzoo" and main(argv[1:]) == 0
        ours = _pixels(srv.call(f"/api/jobs/{j['id']}/files/{card['file']}")[1])
        theirs = _pixels((tmp_path / card["file"]).read_bytes())
        if j is job:  # `diffzoo restore` writes the strip input | A^+ y | restored at 16x
            theirs = theirs[::16, 2 * 8 * 16 :: 16]
        np.testing.assert_array_equal(ours, theirs)


def test_cached_sampling_variant_counts_its_calls_and_reproduces_from_python(server):
    status, job = srv.call(
        "/api/run/sample",
        {"model": "digits-unet", "samplers": ["ddim"], "steps": [10], "n": 4, "seed": 2, "variants": ["deepcache"]},
    )
    assert status == 200, job
    job = srv.wait(job["id"])
    assert job["state"] == "done", job
    card = job["results"][0]
    full, partial = (int(v) for v in card["metrics"]["full / partial calls"].split(" / "))
    assert full + partial == card["metrics"]["NFE"] == 10 and 0 < full < 10  # DeepCache: uniform 1:3 key steps
    scope: dict = {}
    exec(card["python"], scope)  # the settings' reproduction snippet, public API only
    want = srv.call(f"/api/jobs/{job['id']}/files/{card['file']}")[1]
    np.testing.assert_array_equal(_pixels(want), np.asarray(image_grid(scope["x"])))
    status, err = srv.call(
        "/api/run/sample", {"model": "masked-digits", "samplers": ["fhs"], "variants": ["deepcache"]}
    )
    assert status == 400 and err["error"].startswith("variants:")


def test_text_to_image_sampling_from_a_prompt_reproduces_from_python(server, monkeypatch):
    url, studio, _ = server
    status, info = srv.call("/api/info")
    text = [n for n, m in info["sample"]["models"].items() if m["kind"] == "text"]
    assert text == ["text:tinysd"]
    prompt = "red circle center on white"
    settings = {"model": text[0], "samplers": ["ddim"], "steps": [3], "n": 2, "guidance": 5, "prompt": prompt}
    status, job = srv.call("/api/run/sample", settings)
    assert status == 200, job
    job = srv.wait(job["id"], 300)
    assert job["state"] == "done", job
    card = job["results"][0]
    assert card["metrics"]["NFE"] == 3 and card["cli"] is None  # `diffzoo sample` has no text-to-image option
    monkeypatch.setattr("diffzoo.zoo.latent.load_latent_model", lambda spec: studio.latent_model())
    scope: dict = {}
    exec(card["python"], scope)
    want = _pixels(srv.call(f"/api/jobs/{job['id']}/files/{card['file']}")[1])
    np.testing.assert_array_equal(want, np.asarray(image_grid(scope["x"])))
    status, err = srv.call("/api/run/sample", {**settings, "prompt": ""})
    assert status == 400 and err["error"].startswith("prompt:")
    status, err = srv.call("/api/run/sample", {"model": "digits-unet", "samplers": ["ddim"], "prompt": "a cat"})
    assert status == 400 and err["error"].startswith("prompt:")


def test_two_edit_methods_with_metrics_and_cli_reproduction(server, tmp_path, monkeypatch):
    url, studio, _ = server
    status, info = srv.call("/api/info")
    ex = info["examples"][0]
    settings = {
        "image": ex["id"],
        "source_prompt": ex["source_prompt"],
        "target_prompt": ex["target_prompt"],
        "methods": ["ddim", "sdedit"],
        "steps": 3,
        "mask": ex["mask"],
    }
    status, job = srv.call("/api/run/edit", settings)
    assert status == 200, job
    job = srv.wait(job["id"], 300)
    assert job["state"] == "done", job
    methods = [r for r in job["results"] if r.get("kind") != "reference"]
    assert [r["label"] for r in methods] == ["ddim", "sdedit"]
    for r in methods:
        m = r["metrics"]
        assert float(m["background PSNR (dB)"]) > 0 and m["NFE"] > 0 and float(m["round-trip max|z-z0|"]) >= 0
    # the downloaded settings reproduce the result with `diffzoo edit` (the same model object, loaded once)
    monkeypatch.setattr("diffzoo.cli.edit.load_latent_model", lambda spec, dtype: studio.latent_model())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.png").write_bytes(srv.call(f"/api/jobs/{job['id']}/files/input.png")[1])
    doc = json.loads(srv.call(f"/api/jobs/{job['id']}/files/settings.json")[1])
    step = doc["reproduce"][1]
    assert main(shlex.split(step["cli"])[1:]) == 0
    ours = _pixels(srv.call(f"/api/jobs/{job['id']}/files/{step['file']}")[1])
    np.testing.assert_array_equal(ours, _pixels((tmp_path / step["file"]).read_bytes()))


def test_progress_busy_and_cancel(server):
    status, job = srv.call(
        "/api/run/sample", {"model": "digits-unet", "samplers": ["ddpm"], "steps": [500], "n": 64, "seed": 0}
    )
    assert status == 200 and job["state"] == "running"
    t0 = time.time()
    while srv.call(f"/api/jobs/{job['id']}")[1]["progress"] <= 0 and time.time() - t0 < 60:
        time.sleep(0.05)
    running = srv.call(f"/api/jobs/{job['id']}")[1]
    assert 0 < running["progress"] < 1 and "network calls" in running["message"]
    status, err = srv.call("/api/run/sample", {"model": "digits-unet", "samplers": ["ddim"], "steps": [2]})
    assert status == 409 and "in progress" in err["error"]
    t_cancel = time.time()
    assert srv.call(f"/api/jobs/{job['id']}/cancel", {})[0] == 200
    done = srv.wait(job["id"], 30)
    assert done["state"] == "cancelled" and time.time() - t_cancel < 5
    status, job = srv.call("/api/run/sample", {"model": "digits-unet", "samplers": ["ddim"], "steps": [2], "n": 2})
    assert status == 200 and srv.wait(job["id"])["state"] == "done"  # the server is free again


def test_a_cancelled_edit_leaves_the_model_usable(server):
    """Cancelling inside an edit (attention processors installed) restores the model: the same edit
    afterwards gives the same image as before the cancelled run."""
    url, studio, _ = server
    studio.examples()
    ex = studio.uploads["example2"]
    edit = {"image": ex.id, "source_prompt": ex.source_prompt, "target_prompt": ex.target_prompt, "steps": 2}
    edit["methods"] = ["ddim"]
    first = srv.wait(srv.call("/api/run/edit", edit)[1]["id"], 300)
    assert first["state"] == "done", first
    status, job = srv.call("/api/run/edit", {**edit, "methods": ["null_text"], "steps": 200})
    t0 = time.time()
    while srv.call(f"/api/jobs/{job['id']}")[1]["progress"] <= 0 and time.time() - t0 < 120:
        time.sleep(0.05)
    srv.call(f"/api/jobs/{job['id']}/cancel", {})
    assert srv.wait(job["id"], 60)["state"] == "cancelled"
    again = srv.wait(srv.call("/api/run/edit", edit)[1]["id"], 300)
    assert again["state"] == "done", again
    files = [srv.call(f"/api/jobs/{j['id']}/files/edit_ddim.png")[1] for j in (first, again)]
    assert files[0] == files[1]


def test_audit_dire_matches_the_library_and_missing_families_say_so(server):
    url, studio, _ = server
    status, info = srv.call("/api/info")
    fams = {f["name"]: f for f in info["audit"]["families"]}
    assert fams["detectors"]["installed"] and "dire_digits" in fams["detectors"]["entries"]
    assert fams["watermarks"]["entries"] == list(WATERMARKS) and fams["attacks"]["entries"] == list(ATTACKS)
    for name in [n for n, f in fams.items() if not f["installed"]]:
        status, err = srv.call("/api/run/audit", {"image": "digit0", "family": name, "entries": ["x"]})
        assert status == 400 and "not installed" in err["error"]
    status, err = srv.call("/api/run/audit", {"image": "digit0", "family": "detectors", "entries": ["nope"]})
    assert status == 400 and err["error"].startswith("entries:")
    status, job = srv.call("/api/run/audit", {"image": "digit0", "family": "detectors", "entries": ["dire_digits"]})
    job = srv.wait(job["id"])
    assert job["state"] == "done", job
    card = job["results"][0]
    zm = studio.zoo_model("digits-unet")
    x = image_to_tensor(studio.uploads["digit0"].image, 1, (8, 8))
    want = dire(zm.denoiser(), x, DIRE_STEPS, torch.tensor([zm.config["null_class"]])).score()[0]
    assert float(card["metrics"]["mean DIRE"]) == pytest.approx(float(want), rel=1e-3)
    assert _pixels(srv.call(f"/api/jobs/{job['id']}/files/{card['file']}")[1]).shape == (8, 8)
    shipped = [e for e in fams["detectors"]["entries"] if e in zoo_detectors()]
    for name in shipped[:1]:  # a shipped classifier: the page shows what diffzoo.zoo.forensics computes
        job = srv.wait(
            srv.call("/api/run/audit", {"image": "digit0", "family": "detectors", "entries": [name]})[1]["id"]
        )
        assert job["state"] == "done", job
        zm = load_detector(name)
        shape = tuple(zm.config["detector"]["image_shape"])
        want = float(detector_probs(zm, image_to_tensor(studio.uploads["digit0"].image, shape[0], shape[1:]))[0])
        assert float(job["results"][0]["metrics"]["P(generated)"]) == pytest.approx(want, abs=1e-3)


def test_audit_watermark_round_trip_and_attack(server):
    pytest.importorskip("imwatermark")  # the optional extra `provenance`
    status, job = srv.call("/api/run/audit", {"image": "example0", "family": "watermarks", "entries": ["dwtDct"]})
    job = srv.wait(job["id"], 120)
    assert job["state"] == "done", job
    m = job["results"][0]["metrics"]
    assert m["bits"] == 16 and m["bit accuracy"] == "1.000"  # 32x32: one bit per 8x8 block; decodes exactly
    settings = {"image": "example0", "family": "attacks", "entries": ["noise"], "watermark": "dwtDct", "strength": 0}
    status, job = srv.call("/api/run/audit", {**settings, "bits": "0110"})
    job = srv.wait(job["id"], 120)
    assert job["state"] == "done", job
    m = job["results"][0]["metrics"]
    assert m["bit accuracy before"] == m["bit accuracy after"] == "1.000"  # zero-strength noise is the identity
    for bad, field in (
        ({"bits": "01x"}, "bits"),
        ({"watermark": "nope"}, "watermark"),
        ({"strength": "x"}, "strength"),
    ):
        status, err = srv.call("/api/run/audit", {**settings, **bad})
        assert status == 400 and err["error"].startswith(f"{field}:")


def test_audit_protection_stays_in_its_budget(server):
    url, studio, _ = server
    settings = {"image": "example1", "family": "protection", "entries": ["sds-"], "steps": 2}
    status, job = srv.call("/api/run/audit", settings)
    assert status == 200, job
    job = srv.wait(job["id"], 300)
    assert job["state"] == "done", job
    m = job["results"][0]["metrics"]
    assert 0 < float(m["L-inf (pixel units)"]) <= 16 / 255 + 1e-6 and m["PGD steps"] == 2
    protected = _pixels(srv.call(f"/api/jobs/{job['id']}/files/{job['results'][0]['file']}")[1]).astype(int)
    clean = np.asarray(studio.uploads["example1"].image).astype(int)
    assert np.abs(protected - clean).max() <= 16 + 1  # 16/255 in 8-bit levels, plus rounding


def test_run_errors_inside_a_job_are_one_line(server):
    """A request that passes the checks but fails in the library (a non-linear operator for DDNM) ends the
    job with a one-line message, not a traceback."""
    status, job = srv.call(
        "/api/run/restore", {"image": "digit0", "prior": "digits-unet", "operator": "saturation", "methods": ["ddnm"]}
    )
    assert status == 200
    job = srv.wait(job["id"])
    if job["state"] == "error":
        assert "\n" not in job["error"] and "Traceback" not in job["error"]
    else:  # the library may restore it; then the metrics are there
        assert job["state"] == "done" and job["results"][-1]["metrics"]["||A x - y||"] is not None


def test_model_dir_must_be_a_folder_holding_a_pipeline(tmp_path):
    for folder in (tmp_path / "missing", tmp_path):  # no folder; a folder without a diffusers pipeline
        with pytest.raises(ValueError, match="model-dir"):
            Studio(str(folder))
    assert main(["studio", "--model-dir", str(tmp_path), "--port", "8"]) == 2  # one line, nothing served
    assert main(["studio", "--port", "0"]) == 2  # the CLI's one-line error, before anything starts
