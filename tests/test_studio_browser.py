"""diffzoo studio as a person uses it: a real headless Chromium (Debian's ``chromium`` package) driven by
Playwright against a live server. Skips cleanly without playwright, chromium or fastapi/uvicorn.

Screenshots of each panel go to ``$DIFFZOO_STUDIO_SCREENSHOTS`` when set (``docs/results/studio/`` for the
docs), else to the test's temporary folder. CI: ``.ci/browser``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

#: The CI step (.ci/browser) sets this: a missing browser or client is then a failure, not a skip.
REQUIRED = os.environ.get("DIFFZOO_REQUIRE_BROWSER") == "1"
try:
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
    from playwright import sync_api
except ImportError as e:
    if REQUIRED:
        raise
    pytest.skip(f"browser tests need fastapi, uvicorn and playwright ({e})", allow_module_level=True)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if REQUIRED:
        raise RuntimeError("DIFFZOO_REQUIRE_BROWSER=1 but no chromium executable (apt-get install chromium)")
    pytest.skip("no chromium executable (apt-get install chromium)", allow_module_level=True)

import studio_server as srv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SCENE = ROOT / "docs" / "results" / "example_scene.png"
EXAMPLE_DIGIT = ROOT / "docs" / "results" / "example_digit.png"
TIMEOUT = 240_000  # ms: generous for a loaded 2-core CI machine (the runs themselves take seconds)


@pytest.fixture(scope="module")
def page():
    url, _, _ = srv.start()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(url + "/")
        pg.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT)
        yield pg
        assert not errors, f"JavaScript errors in the page: {errors}"
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = os.environ.get("DIFFZOO_STUDIO_SCREENSHOTS")
    path = Path(out) if out else tmp_path_factory.mktemp("studio_shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tab(page, name: str) -> None:
    page.click(f"#tabs button[data-panel='{name}']")


def _wait_done(page, panel: str) -> None:
    page.wait_for_function(
        "p => document.querySelector('#status-msg').textContent.startsWith(p + ': done')", arg=panel, timeout=TIMEOUT
    )


def _images_loaded(page, sel: str) -> int:
    return page.eval_on_selector_all(sel, "els => els.filter(e => e.complete && e.naturalWidth > 0).length")


@pytest.mark.skipif(not EXAMPLE_SCENE.exists(), reason="docs/results/example_scene.png is missing")
def test_edit_two_methods_on_the_uploaded_example_scene(page, shots):
    _tab(page, "edit")
    page.set_input_files("#edit-file", str(EXAMPLE_SCENE))
    page.wait_for_function("() => document.querySelector('#edit-preview').naturalWidth > 0", timeout=TIMEOUT)
    page.fill("#edit-source", "green triangle top right on white")
    page.fill("#edit-target", "yellow triangle top right on white")
    for box in page.query_selector_all("#edit-methods input"):
        box.set_checked(box.get_attribute("value") in ("ddim", "sdedit"))
    page.fill("#edit-steps", "3")
    page.click("#edit-run")
    _wait_done(page, "edit")
    cards = page.query_selector_all("#edit-results .card.result")
    assert [c.get_attribute("data-label") for c in cards] == ["ddim", "sdedit"]
    page.wait_for_function("() => document.querySelectorAll('#edit-results .card img').length === 3", timeout=TIMEOUT)
    page.wait_for_timeout(200)
    assert _images_loaded(page, "#edit-results .card img") == 3  # the input and two edits
    for c in cards:
        text = c.inner_text()
        assert "PSNR" in text and "round-trip" in text and "NFE" in text and "seconds" in text
    assert page.query_selector("#edit-results a.download-settings-json") is not None
    assert page.is_hidden("#error")
    page.screenshot(path=str(shots / "edit.png"), full_page=True)


@pytest.mark.skipif(not EXAMPLE_DIGIT.exists(), reason="docs/results/example_digit.png is missing")
def test_draw_a_mask_and_restore(page, shots):
    _tab(page, "restore")
    page.set_input_files("#restore-file", str(EXAMPLE_DIGIT))
    page.wait_for_function("() => document.querySelector('#restore-preview').naturalWidth > 0", timeout=TIMEOUT)
    page.select_option("#restore-prior", "digits-unet")
    page.select_option("#restore-operator", "mask")
    box = page.query_selector("#restore-mask").bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.35
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + k * box["width"] * 0.04, y0 + k * box["height"] * 0.02)
    page.mouse.up()
    for b in page.query_selector_all("#restore-methods input"):
        b.set_checked(b.get_attribute("value") in ("ddnm", "pinv"))
    page.fill("#restore-steps", "5")
    page.click("#restore-run")
    _wait_done(page, "restore")
    labels = [c.get_attribute("data-label") for c in page.query_selector_all("#restore-results .card.result")]
    assert labels == ["ddnm", "pinv"]
    assert page.query_selector("#restore-results .card.reference[data-label='degraded (A^+ y)']") is not None
    ddnm = page.query_selector("#restore-results .card[data-label='ddnm']").inner_text()
    assert "||A x - y||" in ddnm and "PSNR" in ddnm
    page.wait_for_timeout(200)
    assert _images_loaded(page, "#restore-results .card img") == 4  # input, A^+ y, two restorations
    page.screenshot(path=str(shots / "restore.png"), full_page=True)


def test_a_non_image_upload_shows_a_message(page, tmp_path):
    _tab(page, "edit")
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an image\n")
    page.set_input_files("#edit-file", str(bad))
    page.wait_for_selector("#error:not([hidden])", timeout=TIMEOUT)
    msg = page.inner_text("#error")
    assert "notes.txt" in msg and "not a readable image file" in msg and "Traceback" not in msg


def test_sample_then_cancel_a_long_run(page, shots):
    _tab(page, "sample")
    page.select_option("#sample-model", "digits-unet")
    for b in page.query_selector_all("#sample-samplers input"):
        b.set_checked(b.get_attribute("value") in ("ddim", "dpmpp_2m"))
    for b in page.query_selector_all("#sample-variants input"):
        b.set_checked(b.get_attribute("value") in ("none", "faster-diffusion"))
    page.fill("#sample-steps", "10")
    page.fill("#sample-n", "16")
    page.click("#sample-run")
    _wait_done(page, "sample")
    labels = [c.get_attribute("data-label") for c in page.query_selector_all("#sample-results .card.result")]
    assert len(labels) == 4 and sum("faster-diffusion" in x for x in labels) == 2
    assert "NFE" in page.inner_text("#sample-results") and "full / partial calls" in page.inner_text("#sample-results")
    page.screenshot(path=str(shots / "sample.png"), full_page=True)
    # a long run: progress moves, Cancel stops it
    for b in page.query_selector_all("#sample-samplers input"):
        b.set_checked(b.get_attribute("value") == "ddpm")
    for b in page.query_selector_all("#sample-variants input"):
        b.set_checked(b.get_attribute("value") == "none")
    page.fill("#sample-steps", "500")
    page.fill("#sample-n", "64")
    page.click("#sample-run")
    page.wait_for_selector("#cancel:enabled", timeout=TIMEOUT)
    page.wait_for_function("() => document.querySelector('#progress').value > 0", timeout=TIMEOUT)
    assert "network calls" in page.inner_text("#status-msg")
    page.click("#cancel")
    page.wait_for_function(
        "() => document.querySelector('#status-msg').textContent === 'sample: cancelled'", timeout=TIMEOUT
    )
    assert page.is_disabled("#cancel") and page.is_hidden("#error")


def test_audit_panel_lists_the_families_and_scores_dire(page, shots):
    _tab(page, "audit")
    fams = page.query_selector_all("#audit-families .family")
    assert {f.get_attribute("data-family") for f in fams} == {"detectors", "watermarks", "attacks", "protection"}
    for f in fams:  # each family lists its registry or says it is not installed
        assert "not installed" in f.inner_text() or f.query_selector("input[type=checkbox]") is not None
    page.select_option("#audit-example", "digit0")
    page.wait_for_function("() => document.querySelector('#audit-preview').naturalWidth > 0", timeout=TIMEOUT)
    for b in page.query_selector_all("#audit-detectors input"):
        b.set_checked(b.get_attribute("value") == "dire_digits")
    page.click("#audit-run")
    _wait_done(page, "audit")
    assert "mean DIRE" in page.inner_text("#audit-results .card[data-label='dire_digits']")
    page.screenshot(path=str(shots / "audit.png"), full_page=True)
