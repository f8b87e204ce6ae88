"""The studio's panels over the public API: validation, runs, result cards and reproducible settings.

Each panel has a ``check_<panel>(studio, settings) -> dict`` that validates a request with the checks the
CLI applies (``core.errors``, ``io.open_image``, the registries) and raises a one-line ``ValueError`` /
``TypeError`` naming the field before anything runs, and a ``run_<panel>(studio, settings, progress) ->
Outcome`` executed on the worker thread. Every result card carries a PNG, its metrics and the ``diffzoo``
command line that reproduces it from the downloaded ``input.png`` (where no CLI option exists -- a mask
drawn by hand, the masked-model posterior samplers -- the settings JSON holds a Python snippet over the
public API instead).

* **Edit**: :data:`diffzoo.editing.EDIT_METHODS` through :func:`diffzoo.editing.edit_image` on the
  latent model (the zoo's ``tinysd`` or a diffusers pipeline folder), with reconstruction error (max
  latent round-trip error), background PSNR outside an edit mask (drawn, or the example scene's exact
  mask; PSNR to the input when there is none), NFE and wall time.
* **Restore**: an operator of :data:`diffzoo.inverse.operators.OPERATORS` or a hand-drawn inpainting
  mask, restored by :func:`diffzoo.inverse.posterior.posterior_sample` (DDNM, DPS, A^+ y, the prior) on
  a Gaussian zoo prior, the shipped IDM chains (compressed sensing), or the APS samplers of
  :mod:`diffzoo.discrete.aps` on a masked zoo model; measurement consistency ``||A x - y||`` and PSNR.
* **Sample**: :func:`diffzoo.zoo.sampling.sample_zoo` with several samplers and step counts.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shlex
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffzoo import zoo
from diffzoo.accel.cache import CACHES, cached_denoiser
from diffzoo.core.errors import check_choice, check_int, check_range
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.data import digits, shapes
from diffzoo.discrete.aps import aps_sample, aps_style_sample, replacement_sample
from diffzoo.discrete.samplers import SAMPLERS as MASKED_SAMPLERS
from diffzoo.discrete.tokens import token_space
from diffzoo.editing import EDIT_METHODS, edit_image, get_edit_method
from diffzoo.inverse.operators import OPERATORS, Inpainting, get_operator
from diffzoo.inverse.posterior import METHODS as POSTERIOR_METHODS
from diffzoo.inverse.posterior import measurement_error, pinv_estimate, posterior_sample
from diffzoo.io import image_to_tensor, open_image, save_samples, to_uint8
from diffzoo.latent.model import LatentModel
from diffzoo.metrics import psnr
from diffzoo.sampling import SAMPLERS, SPACINGS, get_timesteps
from diffzoo.sampling import nfe as sampler_nfe
from diffzoo.studio.jobs import Outcome, Progress
from diffzoo.zoo.idm import load_idm
from diffzoo.zoo.latent import load_latent_model
from diffzoo.zoo.sampling import SampleResult, class_labels, draw, guided, sample_zoo

log = logging.getLogger(__name__)
Tensor = torch.Tensor

#: Largest upload accepted (bytes, before decoding; ``io.open_image`` also refuses decompression bombs).
MAX_UPLOAD_BYTES = 20 * 2**20
#: Uploads kept in memory (older ones are dropped; their runs keep their own files).
KEEP_UPLOADS = 64
MAX_STEPS = 500
MAX_SAMPLES = 64
MAX_METHODS = 12
MAX_GRID = 36
#: Masked zoo models that are image priors (their token space decodes to pictures).
MASKED_IMAGE_PRIORS = ("masked-digits", "masked-shapes")
#: Posterior samplers of the masked priors (APS: arXiv 2510.02291, reconstructions; see discrete.aps).
MASKED_RESTORE_CHOICES = ("aps_ii", "aps_i", "aps_like", "replacement", "pinv")
#: APS-style inner Adam steps and learning rate (the bench's quick setting, same steps * lr budget).
APS_INNER, APS_LR = 25, 0.4
#: DDNM's eta and DPS's zeta: ``diffzoo restore``'s defaults.
DDNM_ETA, DPS_ZETA = 0.85, 1.5
#: The example scenes: ``data.shapes.edit_pairs(EXAMPLES, EXAMPLE_SEED)`` (source, exact edit and mask).
EXAMPLES, EXAMPLE_SEED = 6, 2026
DIGIT_EXAMPLES = 3
#: Zoo kinds of the Sample panel, and the pseudo-sampler name of distilled generators (kind "generator").
SAMPLE_KINDS = ("diffusion", "masked", "generator", "text")
GENERATOR = "generator"
#: What the Sample panel says about accelerated / distilled / quantized variants.
VARIANTS_NOTE = (
    "A prompt samples the Edit panel's latent model (the 'text:' entry). Variants: feature caching "
    "(Faster Diffusion, DeepCache; diffzoo.accel.cache) for Gaussian models; distilled students appear as "
    "zoo models of kind 'generator'; quantized variants are not offered yet."
)


# -------------------------------------------------------------------------------------------------
# State: uploads and models
# -------------------------------------------------------------------------------------------------


@dataclass
class Upload:
    id: str
    name: str
    image: Image.Image
    source_prompt: str | None = None
    target_prompt: str | None = None
    mask: list[list[int]] | None = None  # example scenes: the exact edit mask (1 = changed)
    extra: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "width": self.image.width,
            "height": self.image.height,
            "source_prompt": self.source_prompt,
            "target_prompt": self.target_prompt,
            "mask": self.mask,
            "url": f"/api/uploads/{self.id}.png",
        }


class Studio:
    """What the server holds: uploads, loaded models (cached) and the job manager's runs.

    ``model_dir``: a diffusers Stable Diffusion pipeline folder on disk for the Edit panel (default:
    the zoo's ``tinysd``). ``threads``: ``torch.set_num_threads`` of the runs (``None``: unchanged).
    """

    def __init__(self, model_dir: str | None = None, threads: int | None = None):
        if model_dir is not None and not os.path.isdir(model_dir):
            raise ValueError(
                f"model-dir: {model_dir!r} is not a folder (a diffusers pipeline saved with save_pretrained)"
            )
        if model_dir is not None and not os.path.isfile(os.path.join(model_dir, "model_index.json")):
            raise ValueError(f"model-dir: no model_index.json in {model_dir!r}; expected a diffusers pipeline folder")
        self.model_dir = model_dir
        self.threads = threads
        self.uploads: dict[str, Upload] = {}
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._examples: list[Upload] | None = None

    # uploads -----------------------------------------------------------------------------------------
    def add_upload(self, data: bytes, name: str = "upload") -> Upload:
        """Validate an uploaded file with ``io.open_image`` (the CLI's reader) and keep it."""
        if not isinstance(data, bytes | bytearray) or not data:
            raise ValueError("image: the file is empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise ValueError(f"image: the file is {len(data):,} bytes, more than the studio's {MAX_UPLOAD_BYTES:,}")
        shown = Path(str(name)).name[:80] or "upload"
        with tempfile.TemporaryDirectory(prefix="diffzoo-studio-") as d:
            path = Path(d) / "upload"
            path.write_bytes(bytes(data))
            try:
                img = open_image(path, arg="image")
            except ValueError as e:  # name the user's file, not the temporary one
                raise ValueError(str(e).replace(repr(str(path)), repr(shown))) from None
        up = Upload(uuid.uuid4().hex[:12], shown, img)
        self.uploads[up.id] = up
        user = [k for k, v in self.uploads.items() if k not in self._example_ids()]
        for old in user[:-KEEP_UPLOADS]:  # the oldest uploads go first (examples stay)
            del self.uploads[old]
        return up

    def _example_ids(self) -> set[str]:
        return {e.id for e in self._examples or ()}

    def upload(self, upload_id: Any, arg: str = "image") -> Upload:
        if self._examples is None and isinstance(upload_id, str) and upload_id not in self.uploads:
            self.examples()  # example ids are valid before the page has listed them
        if not isinstance(upload_id, str) or upload_id not in self.uploads:
            raise ValueError(f"{arg}: no uploaded image {upload_id!r}; upload a file or pick an example scene")
        return self.uploads[upload_id]

    def examples(self) -> list[Upload]:
        """Example inputs: shapes scenes from :func:`diffzoo.data.shapes.edit_pairs` (image, source and
        target captions, the exact edit mask) and test-set digits (:func:`diffzoo.data.digits.load`)."""
        if self._examples is None:
            out = []
            for i, pair in enumerate(shapes.edit_pairs(EXAMPLES, EXAMPLE_SEED)):
                src = pair.source_image[0] if pair.source_image.ndim == 4 else pair.source_image
                up = Upload(
                    f"example{i}",
                    f"scene {i} ({pair.edit.kind} edit)",
                    Image.fromarray(to_uint8(src)),
                    pair.source_caption,
                    pair.target_caption,
                    pair.mask.to(torch.int64).tolist(),
                )
                out.append(up)
            test = digits.load("test")
            for i in range(DIGIT_EXAMPLES):
                img = Image.fromarray(to_uint8(test.images[i]))
                out.append(Upload(f"digit{i}", f"test digit {i} (a {int(test.labels[i])})", img))
            for up in out:
                self.uploads[up.id] = up
            self._examples = out
        return self._examples

    # models ------------------------------------------------------------------------------------------
    def _cached(self, key: str, make: Any) -> Any:
        with self._lock:
            if key not in self._models:
                self._models[key] = make()
            return self._models[key]

    def edit_model_spec(self) -> str:
        return self.model_dir or "tinysd"

    def latent_model(self) -> LatentModel:
        spec = self.edit_model_spec()
        return self._cached("latent:" + spec, lambda: load_latent_model(spec))

    def zoo_model(self, name: str) -> zoo.ZooModel:
        return self._cached("zoo:" + name, lambda: zoo.load(name))


def zoo_kinds() -> dict[str, dict[str, Any]]:
    """Every complete zoo entry's kind and sample shape, from its JSON (no weights are read)."""
    out = {}
    for name in zoo.names():
        try:
            cfg = zoo.read_config(zoo.WEIGHTS_DIR / f"{name}.json")
        except (ValueError, OSError):
            continue
        out[name] = {
            "kind": cfg.get("kind") or zoo.default_kind(cfg),
            "sample_shape": cfg.get("sample_shape"),
            "conditional": cfg.get("null_class") is not None,
        }
    return out


def restore_priors() -> dict[str, str]:
    """Prior name -> ``gaussian`` | ``masked`` for the Restore panel."""
    out = {}
    for name, k in zoo_kinds().items():
        if k["kind"] == "diffusion" and k["sample_shape"] and len(k["sample_shape"]) == 3:
            out[name] = "gaussian"
        elif k["kind"] == "masked" and name in MASKED_IMAGE_PRIORS:
            out[name] = "masked"
    return out


def idm_chains() -> list[str]:
    return [n for n, k in zoo_kinds().items() if k["kind"] == "idm"]


def sample_models() -> dict[str, dict[str, Any]]:
    """Zoo models ``diffzoo sample`` draws from: Gaussian (``diffusion``), ``masked`` and, where the zoo has
    them, distilled ``generator`` students (:data:`SAMPLE_KINDS`)."""
    return {n: k for n, k in zoo_kinds().items() if k["kind"] in SAMPLE_KINDS}


def variants_for(kind: str) -> list[str]:
    """Sampling variants of a model kind: ``none`` and, for Gaussian models, the feature caches of
    :mod:`diffzoo.accel.cache` (:data:`~diffzoo.accel.cache.CACHES`)."""
    return ["none", *CACHES] if kind == "diffusion" else ["none"]


def samplers_for(kind: str) -> list[str]:
    """The sampler choices of a model kind (a distilled generator is its own sampler: ``generator``)."""
    if kind == "masked":
        return list(MASKED_SAMPLERS)
    if kind == "generator":
        return [GENERATOR]
    return sorted(SAMPLERS)  # Gaussian models and the latent text-to-image model (kind "text")


def text_model_name(studio: Studio) -> str:
    """The Sample panel's name for the Edit panel's latent model sampled from a prompt."""
    return f"text:{studio.edit_model_spec()}"


# -------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------


def png_bytes(x: Tensor, scale: int = 1) -> bytes:
    """``(1, C, H, W)`` / ``(C, H, W)`` in ``[-1, 1]`` as PNG bytes (what ``io.save_image`` writes)."""
    pil = Image.fromarray(to_uint8(x[0] if x.ndim == 4 else x))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def _quantized(x: Tensor) -> Tensor:
    """The image as its 8-bit PNG holds it (so the CLI, reading ``input.png``, sees the same tensor)."""
    arr = torch.from_numpy(np.asarray(to_uint8(x[0]), dtype=np.float32))
    arr = arr[None] if arr.ndim == 2 else arr.permute(2, 0, 1)
    return (arr / 127.5 - 1.0)[None].contiguous()


def _text(value: Any, arg: str, max_len: int = 300) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{arg}: expected a non-empty text")
    if len(value) > max_len:
        raise ValueError(f"{arg}: expected at most {max_len} characters, got {len(value)}")
    return value.strip()


def _opt_float(value: Any, arg: str, lo: float, hi: float) -> float | None:
    if value is None or value == "":
        return None
    return check_range(value, arg, lo, hi)


def int_field(value: Any, arg: str, default: int, lo: int, hi: int) -> int:
    """An integer form field (``None`` / empty: ``default``; a numeric string is accepted) in ``[lo, hi]``."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise TypeError(f"{arg}: expected an integer, got {value!r:.40}") from None
    return check_int(value, arg, lo, hi)


def _names(value: Any, choices: Any, arg: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{arg}: tick at least one")
    if len(value) > MAX_METHODS:
        raise ValueError(f"{arg}: at most {MAX_METHODS} at once, got {len(value)}")
    choices = list(choices)
    out = []
    for v in value:
        check_choice(v, choices, arg)
        if v not in out:
            out.append(v)
    return out


def _mask(value: Any, shape: tuple[int, int] | None, arg: str, required: bool = False) -> Tensor | None:
    """A drawn mask: rows of 0/1 values (1 = painted), at any grid size up to 1024 x 1024, brought to the
    image's ``shape`` (``None``: kept at its own size, the request-time check): max-pooled when smaller (a
    pixel is painted if any of its cells is), nearest when larger."""
    if value is None:
        if required:
            raise ValueError(f"{arg}: draw the region on the image first")
        return None
    if not (isinstance(value, list) and 0 < len(value) <= 1024 and all(isinstance(r, list) for r in value)):
        raise ValueError(f"{arg}: expected a list of rows of 0/1 values")
    w0 = len(value[0])
    if not 0 < w0 <= 1024 or any(len(r) != w0 for r in value):
        raise ValueError(f"{arg}: expected rows of equal length (at most 1024)")
    if not all(type(v) is int and v in (0, 1) for r in value for v in r):
        raise ValueError(f"{arg}: expected values 0 or 1")
    m = torch.tensor(value, dtype=torch.float32)[None, None]
    if required and not bool(m.any()):
        raise ValueError(f"{arg}: the mask is empty; paint the region to restore")
    if required and bool(m.all()):
        raise ValueError(f"{arg}: the mask covers the whole image; nothing is observed")
    if shape is None:
        return m[0, 0] > 0.5
    h, w = shape
    if m.shape[-2] >= h and m.shape[-1] >= w:
        m = F.adaptive_max_pool2d(m, (h, w))
    else:
        m = F.interpolate(m, size=(h, w), mode="nearest")
    m = m[0, 0] > 0.5
    if required and not bool(m.any()):
        raise ValueError(f"{arg}: the mask is empty; paint the region to restore")
    if required and bool(m.all()):
        raise ValueError(f"{arg}: the mask covers the whole image; nothing is observed")
    return m


def _cmd(args: list[Any]) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


def _num(v: float | None, fmt: str = ".4g") -> str | None:
    return None if v is None or not math.isfinite(v) else format(v, fmt)


def _settings_json(panel: str, settings: dict[str, Any], results: list[dict[str, Any]], notes: str = "") -> bytes:
    doc = {
        "panel": panel,
        "settings": settings,
        "reproduce": [
            {k: r[k] for k in ("label", "file", "cli", "python") if r.get(k) is not None}
            for r in results
            if r.get("file")
        ],
        "notes": notes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return json.dumps(doc, indent=2).encode()


def _finish(panel: str, settings: dict[str, Any], results: list[dict[str, Any]], files: dict[str, bytes], notes: str):
    files["settings.json"] = _settings_json(panel, settings, results, notes)
    return Outcome(results, files, settings)


# -------------------------------------------------------------------------------------------------
# Edit
# -------------------------------------------------------------------------------------------------


def check_edit(studio: Studio, s: dict[str, Any]) -> dict[str, Any]:
    up = studio.upload(s.get("image"))
    methods = [get_edit_method(m).name for m in _names(s.get("methods"), _edit_names(), "methods")]
    return {
        "image": up.id,
        "source_prompt": _text(s.get("source_prompt"), "source_prompt"),
        "target_prompt": _text(s.get("target_prompt"), "target_prompt"),
        "methods": methods,
        "steps": int_field(s.get("steps"), "steps", 10, 1, MAX_STEPS),
        "seed": int_field(s.get("seed"), "seed", 0, 0, 2**31 - 1),
        "guidance": _opt_float(s.get("guidance"), "guidance", 0.0, 50.0),
        "strength": _opt_float(s.get("strength"), "strength", 0.0, 1.0),
        "mask": _checked_mask(s.get("mask")),
    }


def _checked_mask(value: Any, required: bool = False) -> list[list[int]] | None:
    """The request-time check of a drawn mask (its structure; sizes are fitted when the run starts)."""
    _mask(value, None, "mask", required)
    return value


def _edit_names() -> list[str]:
    return list(EDIT_METHODS) + [m.replace("_", "-") for m in EDIT_METHODS if "_" in m]


def run_edit(studio: Studio, s: dict[str, Any], progress: Progress) -> Outcome:
    up = studio.upload(s["image"])
    progress.unit(0, len(s["methods"]), "loading the model")
    model = studio.latent_model()
    size = int(model.image_size)
    mask = _mask(s["mask"], (size, size), "mask")
    x = _quantized(image_to_tensor(up.image, 3, (size, size)))
    files = {"input.png": png_bytes(x)}
    results: list[dict[str, Any]] = [{"label": "input", "image": "input.png", "kind": "reference", "metrics": {}}]
    spec = studio.edit_model_spec()
    for i, method in enumerate(s["methods"]):
        progress.unit(i, len(s["methods"]), method, 3 * s["steps"])
        given = {k: s[k] for k in ("guidance", "strength") if s[k] is not None}
        res = edit_image(
            method,
            model,
            x,
            s["source_prompt"],
            s["target_prompt"],
            num_steps=s["steps"],
            seed=s["seed"],
            reconstruct=True,
            **given,
        )
        img = res.image.float().clamp(-1, 1)
        if mask is None:
            bg, bg_label = float(psnr(img, x)), "PSNR to input (dB)"
        else:
            keep = (~mask).to(img.dtype)[None, None]
            bg, bg_label = float(psnr(img * keep, x * keep)), "background PSNR (dB)"
        name = f"edit_{method}.png"
        files[name] = png_bytes(img)
        cli = ["diffzoo", "edit", "--model", spec, "--image", "input.png", "--method", method]
        cli += ["--source-prompt", s["source_prompt"], "--target-prompt", s["target_prompt"]]
        cli += ["--steps", s["steps"], "--seed", s["seed"]]
        for k in ("guidance", "strength"):
            if s[k] is not None:
                cli += [f"--{k}", s[k]]
        results.append(
            {
                "label": method,
                "file": name,
                "image": name,
                "metrics": {
                    "round-trip max|z-z0|": _num(res.reconstruction_error, ".3e"),
                    bg_label: _num(bg),
                    "NFE": int(res.nfe),
                    "seconds": _num(res.seconds, ".3g"),
                    "guidance": _num(res.guidance, ".3g"),
                },
                "cli": _cmd([*cli, "--out", name]),
            }
        )
    settings = {**s, "model": spec, "image_name": up.name}
    notes = (
        "Run the commands in the folder holding input.png (the uploaded image at the model's size, "
        "8-bit, exactly what the studio edited). The round-trip error is the latent max |z - z0| of the "
        "method's reconstruction with the source prompt."
    )
    return _finish("edit", settings, results, files, notes)


# -------------------------------------------------------------------------------------------------
# Restore
# -------------------------------------------------------------------------------------------------

RESTORE_OPERATOR_CHOICES = ("mask", *OPERATORS)


def check_restore(studio: Studio, s: dict[str, Any]) -> dict[str, Any]:
    up = studio.upload(s.get("image"))
    priors = restore_priors()
    prior = s.get("prior") or "digits-unet"
    check_choice(prior, list(priors), "prior")
    operator = s.get("operator") or "box_inpaint"
    check_choice(operator, RESTORE_OPERATOR_CHOICES, "operator")
    allowed = _restore_methods(priors[prior], operator)
    out = {
        "image": up.id,
        "prior": prior,
        "operator": operator,
        "methods": _names(s.get("methods"), allowed, "methods"),
        "steps": int_field(s.get("steps"), "steps", 20, 1, MAX_STEPS),
        "seed": int_field(s.get("seed"), "seed", 0, 0, 2**31 - 1),
        "sigma_y": check_range(s.get("sigma_y", 0.0) or 0.0, "sigma_y", 0.0, 1.0),
        "ratio": check_range(s.get("ratio", 0.25) or 0.25, "ratio", 0.0, 1.0, lo_open=True),
        "factor": int_field(s.get("factor"), "factor", 2, 1, 64),
        "missing": check_range(s.get("missing", 0.5) or 0.5, "missing", 0.0, 1.0, hi_open=True),
        "blur_sigma": check_range(s.get("blur_sigma", 1.0) or 1.0, "blur_sigma", 0.0, 20.0, lo_open=True),
        "op_seed": int_field(s.get("op_seed"), "op_seed", 0, 0, 2**31 - 1),
        "mask": s.get("mask"),
    }
    if operator == "mask" and out["mask"] is None:
        raise ValueError("mask: draw the region to restore on the image first (operator 'mask')")
    out["mask"] = _checked_mask(out["mask"], required=operator == "mask")
    return out


def _restore_methods(kind: str, operator: str) -> list[str]:
    if kind == "masked":
        return list(MASKED_RESTORE_CHOICES)
    return list(POSTERIOR_METHODS) + (idm_chains() if operator == "cs" else [])


def _image_shape(studio: Studio, prior: str, kind: str) -> tuple[int, int, int]:
    if kind == "masked":
        return tuple(token_space(studio.zoo_model(prior).model).image_shape)  # type: ignore[return-value]
    return tuple(studio.zoo_model(prior).sample_shape)  # type: ignore[return-value]


def run_restore(studio: Studio, s: dict[str, Any], progress: Progress) -> Outcome:
    up = studio.upload(s["image"])
    kind = restore_priors()[s["prior"]]
    n = len(s["methods"])
    progress.unit(0, n, "loading the prior")
    shape = _image_shape(studio, s["prior"], kind)
    painted = _mask(s["mask"], shape[1:], "mask", required=s["operator"] == "mask")
    x = _quantized(image_to_tensor(up.image, shape[0], shape[1:]))
    if painted is not None and s["operator"] == "mask":
        op = Inpainting(shape, ~painted)
    else:
        op = get_operator(
            s["operator"],
            shape,
            ratio=s["ratio"],
            factor=s["factor"],
            missing=s["missing"],
            sigma=s["blur_sigma"],
            seed=s["op_seed"],
        )
    y0 = op.measure(x, s["sigma_y"], torch.Generator().manual_seed(s["seed"]))
    degraded = pinv_estimate(op, y0).float()
    files = {"input.png": png_bytes(x), "degraded.png": png_bytes(degraded.clamp(-1, 1))}
    results: list[dict[str, Any]] = [
        {"label": "input", "image": "input.png", "kind": "reference", "metrics": {}},
        {
            "label": "degraded (A^+ y)",
            "image": "degraded.png",
            "kind": "reference",
            "metrics": {"PSNR (dB)": _num(float(psnr(degraded.clamp(-1, 1), x)))},
        },
    ]
    for i, method in enumerate(s["methods"]):
        progress.unit(i, n, method, s["steps"])
        t0 = time.perf_counter()
        calls0 = progress.calls
        gen = torch.Generator().manual_seed(s["seed"])  # as `diffzoo restore`: measure, then restore
        python = None
        if method.startswith("idm"):
            chain, op_m, _ = load_idm(method)
            x_m = image_to_tensor(up.image, op_m.in_shape[0], op_m.in_shape[1:])
            y = op_m.measure(x_m, s["sigma_y"], gen)
            with torch.no_grad():
                out = chain.eval()(y, op_m)
            cons = float(measurement_error(op_m, out, y)[0])
            x_ref = x_m
        else:
            y = op.measure(x, s["sigma_y"], gen)
            out = _restore_one(studio, s, kind, method, op, y, gen)
            cons = float(measurement_error(op, out.to(y.dtype), y)[0])
            x_ref = x
        seconds = time.perf_counter() - t0
        out = out.float().clamp(-1, 1)
        name = f"restore_{method}.png"
        files[name] = png_bytes(out)
        cli = None
        if kind == "gaussian" and s["operator"] != "mask":
            cli = _cmd(_restore_cli(s, method))
        else:
            python = _restore_python(s, kind, method)
        results.append(
            {
                "label": method,
                "file": name,
                "image": name,
                "metrics": {
                    "PSNR (dB)": _num(float(psnr(out, x_ref))),
                    "||A x - y||": _num(cons, ".3g"),
                    "network calls": int(progress.calls - calls0),
                    "seconds": _num(seconds, ".3g"),
                },
                "cli": cli,
                "python": python,
            }
        )
    settings = {**s, "image_name": up.name, "image_shape": list(shape)}
    if painted is not None:  # the mask as run: at the image's size (the page draws on a finer grid)
        settings["mask"] = painted.to(torch.int64).tolist()
    notes = (
        "input.png is the uploaded image at the prior's size. Commands print PSNR and ||Ax-y|| and write "
        "'input | A^+ y | restored' strips. A drawn mask (operator 'mask') and the masked-model samplers "
        "have no CLI option: the 'python' entries reproduce them with the public API "
        "(settings.mask: 1 = painted = missing, at the image's size)."
    )
    return _finish("restore", settings, results, files, notes)


def _restore_one(
    studio: Studio, s: dict[str, Any], kind: str, method: str, op: Any, y: Tensor, gen: torch.Generator
) -> Tensor:
    if kind == "gaussian":
        den = studio.zoo_model(s["prior"]).denoiser()
        return posterior_sample(
            method, den, op, y, s["steps"], sigma_y=s["sigma_y"], eta=DDNM_ETA, zeta=DPS_ZETA, generator=gen
        )
    model = studio.zoo_model(s["prior"]).model.eval()
    space = token_space(model)
    if method == "pinv":
        return pinv_estimate(op, y)
    if method == "replacement":
        if not hasattr(op, "mask"):
            raise ValueError("methods: 'replacement' needs an inpainting operator (mask, box_inpaint, random_inpaint)")
        tokens = replacement_sample(model, op, y, generator=gen, space=space)
    elif method == "aps_like":
        tokens = aps_sample(model, op, y, s["steps"], sigma_y=s["sigma_y"], generator=gen, space=space)
    else:
        variant = "II" if method == "aps_ii" else "I"
        tokens = aps_style_sample(model, op, y, s["steps"], variant, APS_INNER, APS_LR, generator=gen, space=space)
    return space.decode(tokens)


def _restore_cli(s: dict[str, Any], method: str) -> list[Any]:
    if method.startswith("idm"):
        return ["diffzoo", "restore", "input.png", "--method", "idm", "--model", method, "--sigma-y", s["sigma_y"],
                "--seed", s["seed"], "--out", f"restore_{method}.png"]  # fmt: skip
    return [
        "diffzoo", "restore", "input.png", "--operator", s["operator"], "--method", method, "--model", s["prior"],
        "--steps", s["steps"], "--seed", s["seed"], "--sigma-y", s["sigma_y"], "--ratio", s["ratio"],
        "--factor", s["factor"], "--missing", s["missing"], "--blur-sigma", s["blur_sigma"],
        "--op-seed", s["op_seed"], "--out", f"restore_{method}.png",
    ]  # fmt: skip


def _restore_python(s: dict[str, Any], kind: str, method: str) -> str:
    op = (
        "Inpainting(shape, ~torch.tensor(settings['mask'], dtype=torch.bool))"
        if s["operator"] == "mask"
        else f"get_operator({s['operator']!r}, shape, ratio={s['ratio']}, factor={s['factor']}, "
        f"missing={s['missing']}, sigma={s['blur_sigma']}, seed={s['op_seed']})"
    )
    head = (
        "import json, torch; from diffzoo import zoo; from diffzoo.io import read_image; "
        "from diffzoo.inverse.operators import Inpainting, get_operator; "
        "settings = json.load(open('settings.json'))['settings']; "
    )
    if kind == "gaussian":
        return head + (
            f"from diffzoo.inverse.posterior import posterior_sample; zm = zoo.load({s['prior']!r}); "
            f"shape = zm.sample_shape; x = read_image('input.png', channels=shape[0]); op = {op}; "
            f"g = torch.Generator().manual_seed({s['seed']}); y = op.measure(x, {s['sigma_y']}, g); "
            f"out = posterior_sample({method!r}, zm.denoiser(), op, y, {s['steps']}, sigma_y={s['sigma_y']}, "
            f"eta={DDNM_ETA}, zeta={DPS_ZETA}, generator=g)"
        )
    call = {
        "pinv": "space.encode(op.A_pinv(y))",
        "replacement": "replacement_sample(m, op, y, generator=g, space=space)",
        "aps_like": f"aps_sample(m, op, y, {s['steps']}, sigma_y={s['sigma_y']}, generator=g, space=space)",
        "aps_ii": f"aps_style_sample(m, op, y, {s['steps']}, 'II', {APS_INNER}, {APS_LR}, generator=g, space=space)",
        "aps_i": f"aps_style_sample(m, op, y, {s['steps']}, 'I', {APS_INNER}, {APS_LR}, generator=g, space=space)",
    }[method]
    return head + (
        "from diffzoo.discrete.aps import aps_sample, aps_style_sample, replacement_sample; "
        f"from diffzoo.discrete.tokens import token_space; m = zoo.load({s['prior']!r}).model.eval(); "
        "space = token_space(m); shape = space.image_shape; x = read_image('input.png', channels=shape[0]); "
        f"op = {op}; g = torch.Generator().manual_seed({s['seed']}); y = op.measure(x, {s['sigma_y']}, g); "
        f"out = space.decode({call})" + (" (pinv: the image is op.A_pinv(y) itself)" if method == "pinv" else "")
    )


# -------------------------------------------------------------------------------------------------
# Sample
# -------------------------------------------------------------------------------------------------


def check_sample(studio: Studio, s: dict[str, Any]) -> dict[str, Any]:
    models = {**sample_models(), text_model_name(studio): {"kind": "text"}}
    model = s.get("model") or "digits-unet"
    check_choice(model, list(models), "model")
    kind = models[model]["kind"]
    samplers = _names(s.get("samplers"), samplers_for(kind), "samplers")
    steps = s.get("steps") or [10]
    if isinstance(steps, int | str):
        steps = [steps]
    if not isinstance(steps, list) or not 1 <= len(steps) <= 6:
        raise ValueError("steps: expected 1 to 6 step counts")
    steps = sorted({int_field(v, "steps", 10, 1, MAX_STEPS) for v in steps})
    spacing = s.get("spacing") or "uniform"
    check_choice(spacing, SPACINGS, "spacing")
    if kind != "diffusion" and spacing != "uniform":
        raise ValueError(f"spacing: {kind} models use their own time grids; use 'uniform'")
    variants = _names(s.get("variants") or ["none"], variants_for(kind), "variants")
    label = s.get("class_label")
    label = None if label in (None, "") else str(label)
    prompt = None
    if kind == "text":
        prompt = _text(s.get("prompt"), "prompt")
        if label is not None:
            raise ValueError("class_label: the text-to-image model takes a prompt, not a class")
    elif s.get("prompt") not in (None, ""):
        raise ValueError(f"prompt: {model!r} is not a text-to-image model; pick {text_model_name(studio)!r}")
    guidance = check_range(1.0 if s.get("guidance") in (None, "") else s.get("guidance"), "guidance", 0.0, 50.0)
    out = {
        "model": model,
        "samplers": samplers,
        "steps": steps,
        "n": int_field(s.get("n"), "n", 16, 1, MAX_SAMPLES),
        "seed": int_field(s.get("seed"), "seed", 0, 0, 2**31 - 1),
        "spacing": spacing,
        "guidance": guidance,
        "class_label": label,
        "variants": variants,
        "prompt": prompt,
    }
    runs = len(out["samplers"]) * len(out["steps"]) * len(variants)
    if runs > MAX_GRID:
        raise ValueError(f"samplers: the grid holds {runs} runs (samplers x steps x variants), at most {MAX_GRID}")
    return out


def run_sample(studio: Studio, s: dict[str, Any], progress: Progress) -> Outcome:
    kind = "text" if s["prompt"] is not None else sample_models()[s["model"]]["kind"]
    grid = [(sp, k, v) for v in s["variants"] for sp in s["samplers"] for k in s["steps"]]
    files: dict[str, bytes] = {}
    results: list[dict[str, Any]] = []
    for i, (sampler, k, variant) in enumerate(grid):
        expected = sampler_nfe(sampler, k) if kind == "diffusion" else k
        label = f"{sampler} / {k} steps" + ("" if variant == "none" else f" + {variant}")
        progress.unit(i, len(grid), label, expected)
        extra: dict[str, Any] = {}
        if kind == "text":
            res = _sample_text(studio, s, sampler, k)
        elif variant == "none":
            res = sample_zoo(
                s["model"],
                None if sampler == GENERATOR else sampler,
                k,
                s["spacing"],
                s["guidance"],
                s["class_label"],
                s["n"],
                s["seed"],
            )
        else:
            res, extra = _sample_cached(studio, s, sampler, k, variant)
        name = f"sample_{sampler}_{k}.png" if variant == "none" else f"sample_{sampler}_{k}_{variant}.png"
        with tempfile.TemporaryDirectory(prefix="diffzoo-studio-") as d:
            path = Path(d) / name
            save_samples(path, res.samples, res.labels, res.images)  # the PNG `diffzoo sample --out` writes
            files[name] = path.read_bytes()
        cli = ["diffzoo", "sample", s["model"]] + ([] if sampler == GENERATOR else ["--sampler", sampler])
        cli += ["--steps", k, "-n", s["n"], "--seed", s["seed"]]
        if kind == "diffusion":
            cli += ["--spacing", s["spacing"], "--guidance", s["guidance"]]
        if s["class_label"] is not None:
            cli += ["--class-label", s["class_label"]]
        results.append(
            {
                "label": label,
                "file": name,
                "image": name,
                "metrics": {
                    "NFE": int(res.nfe),
                    **extra,
                    "seconds": _num(res.seconds, ".3g"),
                    "ms / image": _num(1000 * res.seconds / s["n"], ".3g"),
                },
                "cli": _cmd([*cli, "--out", name]) if variant == "none" and kind != "text" else None,
                "python": _sample_python(studio, s, kind, sampler, k, variant),
            }
        )
    notes = (
        "Each command writes the same PNG byte for byte (per-sample seeds: seed * 1000003 + i). Cached "
        "variants (diffzoo.accel.cache: Faster Diffusion, DeepCache) have no CLI option: their 'python' "
        "entries reproduce them with the public API."
    )
    return _finish("sample", dict(s), results, files, notes)


def _sample_cached(
    studio: Studio, s: dict[str, Any], sampler: str, k: int, variant: str
) -> tuple[SampleResult, dict[str, Any]]:
    """A Gaussian zoo model sampled as :func:`sample_zoo` does, with its network replaced by a feature
    cache of :mod:`diffzoo.accel.cache` (``variant``: Faster Diffusion or DeepCache, default key steps)."""
    zm = studio.zoo_model(s["model"])
    null = zm.config.get("null_class")
    labels = class_labels(s["class_label"], s["n"], null)
    plain = zm.denoiser()
    ts = get_timesteps(plain.schedule, k, s["spacing"])
    base = cached_denoiser(plain, ts, variant)
    den = guided(base, s["guidance"], null, labels)
    t0 = time.perf_counter()
    x = draw(den, zm.sample_shape, s["n"], sampler, k, s["spacing"], s["seed"], labels)
    seconds = time.perf_counter() - t0
    net = base.net
    extra = {"full / partial calls": f"{net.full_calls} / {net.partial_calls}"}
    return SampleResult(x, labels, net.full_calls + net.partial_calls, seconds=seconds), extra


def _sample_text(studio: Studio, s: dict[str, Any], sampler: str, k: int) -> SampleResult:
    """``n`` images for ``prompt`` from the latent model: ``sampler`` over ``k`` steps with classifier-free
    guidance on the empty prompt, per-sample seeds as :func:`sample_zoo` (``zoo.sampling.draw``), decoded."""
    lm = studio.latent_model()
    size = int(lm.image_size)
    base = lm.denoiser()
    den = cfg_denoiser(base, s["guidance"], lm.null_embedding(1))
    cond = lm.encode_prompt([s["prompt"]] * s["n"])
    t0 = time.perf_counter()
    z = draw(den, lm.latent_shape(1, size, size)[1:], s["n"], sampler, k, s["spacing"], s["seed"], cond)
    with torch.no_grad():
        x = lm.decode(z).float().clamp(-1, 1)
    return SampleResult(x, None, int(den.nfe), seconds=time.perf_counter() - t0)


def _sample_python(studio: Studio, s: dict[str, Any], kind: str, sampler: str, k: int, variant: str) -> str | None:
    if kind == "text":
        return (
            "import torch; from diffzoo.core.guidance import cfg_denoiser; from diffzoo.zoo.latent import "
            f"load_latent_model; from diffzoo.zoo.sampling import draw; lm = load_latent_model("
            f"{studio.edit_model_spec()!r}); size = lm.image_size; den = cfg_denoiser(lm.denoiser(), "
            f"{s['guidance']}, lm.null_embedding(1)); cond = lm.encode_prompt([{s['prompt']!r}] * {s['n']}); "
            f"z = draw(den, lm.latent_shape(1, size, size)[1:], {s['n']}, {sampler!r}, {k}, {s['spacing']!r}, "
            f"{s['seed']}, cond); x = lm.decode(z).float().clamp(-1, 1)"
        )
    return None if variant == "none" else _cached_python(s, sampler, k, variant)


def _cached_python(s: dict[str, Any], sampler: str, k: int, variant: str) -> str:
    return (
        "import torch; from diffzoo import zoo; from diffzoo.accel.cache import cached_denoiser; "
        "from diffzoo.sampling import get_timesteps; "
        "from diffzoo.zoo.sampling import class_labels, draw, guided; "
        f"zm = zoo.load({s['model']!r}); null = zm.config.get('null_class'); "
        f"labels = class_labels({s['class_label']!r}, {s['n']}, null); den = zm.denoiser(); "
        f"base = cached_denoiser(den, get_timesteps(den.schedule, {k}, {s['spacing']!r}), {variant!r}); "
        f"x = draw(guided(base, {s['guidance']}, null, labels), zm.sample_shape, {s['n']}, {sampler!r}, {k}, "
        f"{s['spacing']!r}, {s['seed']}, labels)"
    )


# -------------------------------------------------------------------------------------------------
# What the page shows
# -------------------------------------------------------------------------------------------------


def info(studio: Studio, audit_families: list[dict[str, Any]]) -> dict[str, Any]:
    priors = restore_priors()
    return {
        "edit": {
            "model": studio.edit_model_spec(),
            "methods": [
                {
                    "name": m.name,
                    "default_guidance": m.default_guidance,
                    "default_strength": m.default_strength,
                    "summary": m.summary,
                }
                for m in EDIT_METHODS.values()
            ],
        },
        "restore": {
            "priors": priors,
            "operators": list(RESTORE_OPERATOR_CHOICES),
            "methods": {
                "gaussian": list(POSTERIOR_METHODS),
                "masked": list(MASKED_RESTORE_CHOICES),
                "cs_only": idm_chains(),
            },
        },
        "sample": {
            "models": {**sample_models(), text_model_name(studio): {"kind": "text", "conditional": True}},
            "samplers": {kind: samplers_for(kind) for kind in SAMPLE_KINDS},
            "spacings": list(SPACINGS),
            "variants": {kind: variants_for(kind) for kind in SAMPLE_KINDS},
            "variants_note": VARIANTS_NOTE,
        },
        "audit": {"families": audit_families},
        "examples": [e.info() for e in studio.examples()],
    }
