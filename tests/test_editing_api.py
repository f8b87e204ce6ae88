"""The one editing API: every method through ``edit_image`` / ``reconstruct_image``, defaults from the
registries, one result type, and consumers (CLI, bench, demo) that never re-dispatch methods."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import diffzoo.demo as demo
from diffzoo import inversion
from diffzoo.editing import EDIT_METHODS, EditResult, edit_image, get_edit_method, reconstruct_image
from diffzoo.editing import api as editing_api
from diffzoo.latent.model import tiny_random_latent_model

torch.set_num_threads(1)  # 2 shared cores: extra threads only contend
SRC = Path(__file__).resolve().parents[1] / "src" / "diffzoo"
SOURCE, TARGET = "a red circle", "a blue square"
ALL = ("ddim", "edict", "ddpm", "null_text", "direct", "infedit", "sdedit")


@pytest.fixture(scope="module")
def tokdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def model(tokdir):
    return tiny_random_latent_model(tokdir, seed=0)


@pytest.fixture(scope="module")
def model64(tokdir):
    return tiny_random_latent_model(tokdir, seed=0, dtype=torch.float64)


def _image(dtype=torch.float32, seed=0):
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def test_registry_holds_every_method_and_its_defaults():
    assert set(EDIT_METHODS) == set(ALL)
    for name, entry in inversion.METHODS.items():  # inversion methods: the inversion registry's numbers
        expect = entry.default_guidance if entry.default_edit_guidance is None else entry.default_edit_guidance
        assert EDIT_METHODS[name].default_guidance == expect and EDIT_METHODS[name].default_strength is None
    assert EDIT_METHODS["infedit"].default_strength is not None and EDIT_METHODS["sdedit"].default_strength is not None
    assert get_edit_method("null-text").name == "null_text"


@pytest.mark.parametrize("method", ALL)
def test_every_method_runs_through_edit_image(model, method):
    img = _image()
    r = edit_image(method, model, img, SOURCE, TARGET, num_steps=3, reconstruct=True)
    assert isinstance(r, EditResult) and r.method == method
    assert r.image.shape == img.shape and bool(torch.isfinite(r.image).all())
    assert r.latents.shape == r.latent0.shape and bool(torch.isfinite(r.latents).all())
    assert r.nfe > 0 and r.seconds > 0 and r.target_prompt == [TARGET]
    assert r.guidance == EDIT_METHODS[method].default_guidance  # guidance=None: the registry's default
    assert r.reconstruction.shape == r.latent0.shape and r.reconstruction_error is not None
    assert (r.inversion is not None) == (method in inversion.METHODS)
    assert r.timesteps is not None and r.t_start == float(r.timesteps[0])


def test_unknown_method_names_method_and_choices(model):
    img = _image()
    with pytest.raises(ValueError, match="method") as err:
        edit_image("no-such-method", model, img, SOURCE, TARGET, num_steps=2)
    assert "infedit" in str(err.value) and "null_text" in str(err.value)
    with pytest.raises(ValueError, match="method"):
        reconstruct_image("p2p", model, img, SOURCE, num_steps=2)
    with pytest.raises(ValueError, match="p2p"):
        edit_image("ddim", model, img, SOURCE, TARGET, num_steps=2, p2p="swap")
    with pytest.raises(TypeError, match="model"):
        edit_image("ddim", model.denoiser(), img, SOURCE, TARGET, num_steps=2)
    with pytest.raises(TypeError, match="no_such_option"):
        edit_image("ddim", model, img, SOURCE, TARGET, num_steps=2, no_such_option=1)


def test_aliases(model):
    r = edit_image("null-text", model, _image(), SOURCE, TARGET, num_steps=2, inner_steps=1)
    assert r.method == "null_text" and r.inversion.options["inner_steps"] == 1


def test_default_guidance_comes_from_the_registries(model, monkeypatch):
    img = _image()
    monkeypatch.setitem(EDIT_METHODS, "sdedit", dataclasses.replace(EDIT_METHODS["sdedit"], guidance=3.25))
    assert edit_image("sdedit", model, img, SOURCE, TARGET, num_steps=3).guidance == 3.25
    # an inversion method with separate defaults: inversion at one, edit at the other
    monkeypatch.setitem(
        inversion.METHODS,
        "ddim",
        dataclasses.replace(inversion.METHODS["ddim"], default_guidance=2.0, default_edit_guidance=4.0),
    )
    assert EDIT_METHODS["ddim"].default_guidance == 4.0
    r = edit_image("ddim", model, img, SOURCE, TARGET, num_steps=2)
    assert r.guidance == 4.0 and r.inversion.guidance == 2.0
    assert inversion.invert("ddim", model, img, SOURCE, num_steps=2).guidance == 2.0
    r = edit_image("ddim", model, img, SOURCE, TARGET, num_steps=2, guidance=6.0, invert_guidance=1.5)
    assert r.guidance == 6.0 and r.inversion.guidance == 1.5
    # a method that inverts for the guidance it edits at
    edict = dataclasses.replace(inversion.METHODS["edict"], default_guidance=2.5)
    monkeypatch.setitem(inversion.METHODS, "edict", edict)
    r = edit_image("edict", model, img, SOURCE, TARGET, num_steps=2)
    assert r.guidance == 2.5 and r.inversion.guidance == 2.5
    assert inversion.edit(r.inversion, TARGET).guidance == 2.5


@pytest.mark.parametrize("method", ["edict", "ddpm", "direct", "infedit"])
def test_reconstructions_are_exact_and_match_edit_image(model64, method):
    img = _image(torch.float64, 1)
    kw = dict(num_steps=4, strength=0.8 if method == "infedit" else None, seed=3)
    rec = reconstruct_image(method, model64, img, SOURCE, **kw)
    assert rec.reconstruction_error < 1e-9 and rec.image.shape == img.shape
    assert torch.equal(rec.latents, rec.reconstruction)
    r = edit_image(method, model64, img, SOURCE, TARGET, reconstruct=True, **kw)
    assert torch.equal(r.reconstruction, rec.reconstruction)
    assert float((r.latents - r.latent0).abs().max()) > 1e-3  # and the edit moved


def test_unused_options_are_ignored_with_a_warning(model, caplog, monkeypatch):
    img = _image()
    monkeypatch.setattr(editing_api.log, "disabled", False)  # lint-imports (test_architecture) disables loggers
    with caplog.at_level("WARNING", logger=editing_api.log.name):
        r = edit_image("direct", model, img, SOURCE, TARGET, num_steps=2, strength=0.5)
    assert r.method == "direct" and "strength" in caplog.text
    r = edit_image("edict", model, img, SOURCE, TARGET, num_steps=4, strength=0.5)
    assert r.inversion.num_steps == 2  # EDICT's partial inversion


def _method_comparisons(tree: ast.AST) -> list[str]:
    """``x == "infedit"``-style comparisons or ``in (...)`` tests against method names."""
    names = set(EDIT_METHODS) | {m.replace("_", "-") for m in EDIT_METHODS}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for c in [node.left, *node.comparators]:
                consts = c.elts if isinstance(c, (ast.Tuple, ast.List, ast.Set)) else [c]
                found += [k.value for k in consts if isinstance(k, ast.Constant) and k.value in names]
    return found


def test_consumers_do_not_dispatch_methods():
    """The CLI, the benchmark and the demo call the API: no comparison against a method name."""
    for path in (SRC / "cli" / "edit.py", SRC / "bench" / "editing.py"):
        assert not _method_comparisons(ast.parse(path.read_text())), path
    for fn in (demo.demo_edit, demo.editing_section):
        assert not _method_comparisons(ast.parse(inspect.getsource(fn).strip())), fn.__name__
