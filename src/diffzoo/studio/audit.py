"""The Audit panel: forensic detectors, watermarks and attacks, behind one small protocol.

The panel knows nothing of a family's internals: a family is an :class:`AuditFamily` (a name, its
entries, and ``run(image, entry, options) -> AuditReport``) returned by :func:`families`. Installed now:

* ``detectors`` -- :class:`DireDetectors`: DIRE (Wang et al., *DIRE for Diffusion-Generated Image
  Detection*, ICCV 2023, arXiv 2303.09295) through :func:`diffzoo.forensics.dire.dire_latent` (TinySD)
  and :func:`diffzoo.forensics.dire.dire` (the digits UNet): the detector-free score, mean ``|x - x'_0|``
  after DDIM inversion and reconstruction (generated images reconstruct better: a *lower* score points to
  a generated image), with the DIRE map. No trained DIRE classifier is shipped, so no probability is shown.

* ``protection`` -- :class:`Protection`: the protective perturbations of
  :data:`diffzoo.forensics.protect.PROTECT_METHODS` (Diff-Protect, Xue et al., ICLR 2024, arXiv 2311.12832:
  SDS(+/-), SDST(-), and AdvDM, PhotoGuard, Mist) on the Edit panel's latent model, with the encoder's
  amplification ``(|dz|/|z|) / (|dx|/|x|)`` (:func:`~diffzoo.forensics.protect.latent_change`) and the
  mimicry test: SDEdit (:func:`diffzoo.editing.edit_image`) of the clean and of the protected image, PSNR
  of each to the clean source (lower for the protected one = the protection disturbs the mimicry).

* ``watermarks`` -- :class:`Watermarks`: every entry of :data:`diffzoo.provenance.WATERMARKS` (the real
  libraries: invisible-watermark's dwtDct / dwtDctSvd / rivaGan, blind-watermark; the optional extra
  ``provenance``): embed a message (given, or random from the seed, at most the method's capacity at the
  image's size, 32 bits), decode it, bit accuracy and the binomial p-value, PSNR of the watermarked image.
* ``attacks`` -- :class:`Attacks`: the classical attacks of :data:`diffzoo.provenance.ATTACKS` on an image
  watermarked with the chosen method; bit accuracy before and after (strength: the option, else the
  benchmark's first grid value, :data:`~diffzoo.provenance.CLASSICAL_GRID`).

A laundering detector is not listed yet (:mod:`diffzoo.forensics` exports none); adding a family is one
adapter class here and one line in :func:`families`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

from diffzoo import zoo
from diffzoo.core.errors import check_choice, check_range
from diffzoo.editing import edit_image
from diffzoo.forensics.dire import DIRE_STEPS, dire, dire_latent
from diffzoo.forensics.protect import PROTECT_METHODS, latent_change, protect
from diffzoo.io import image_to_tensor
from diffzoo.metrics import psnr
from diffzoo.provenance import (
    ATTACKS,
    CLASSICAL_GRID,
    WATERMARKS,
    binomial_tail,
    bit_accuracy,
    classical,
    get_watermark,
    parse_bits,
    random_bits,
)
from diffzoo.studio.jobs import Outcome, Progress
from diffzoo.studio.runs import Studio, int_field, png_bytes
from diffzoo.zoo.forensics import DEFAULT_DETECTORS, detector_probs, load_detector, two_stage

Tensor = torch.Tensor

#: The families the Audit panel expects (issue 18), with what each one shows.
EXPECTED = {
    "detectors": "detector scores for an uploaded image (DIRE; laundering detection when forensics exports it)",
    "watermarks": "embed a watermark and detect it (bit accuracy; the watermark libraries are the extra 'provenance')",
    "attacks": "apply an attack to a watermarked image and watch the bit accuracy",
    "protection": "protective perturbations against diffusion mimicry (Diff-Protect)",
}


@dataclass
class AuditReport:
    """What a family returns for one entry: named numbers and optionally an image (``(1, C, H, W)`` in [-1, 1])."""

    metrics: dict[str, float | str] = field(default_factory=dict)
    image: Tensor | None = None
    note: str = ""


class AuditFamily(Protocol):
    """One family of the Audit panel."""

    name: str  # a key of EXPECTED
    title: str

    def entries(self) -> list[str]:
        """The registry's names (detectors, watermarks or attacks)."""
        ...

    def run(self, image: Image.Image, entry: str, options: dict[str, Any]) -> AuditReport:
        """Score / embed / attack the uploaded ``image`` with ``entry``."""
        ...


def zoo_detectors() -> dict[str, dict[str, Any]]:
    """The shipped forensic detectors (zoo kind ``classifier`` with a ``detector`` entry): name -> that entry."""
    out = {}
    for name in zoo.names():
        try:
            cfg = zoo.read_config(zoo.WEIGHTS_DIR / f"{name}.json")
        except (ValueError, OSError):
            continue
        det = cfg.get("detector")
        if isinstance(det, dict) and isinstance(det.get("image_shape"), list) and len(det["image_shape"]) == 3:
            out[name] = det
    return out


class DireDetectors:
    """DIRE scores (see the module docstring) under the studio's latent model and the digits prior, and
    the shipped detectors of :mod:`diffzoo.zoo.forensics` (``P(generated)`` by :func:`detector_probs`; the
    two-stage laundering detector by :func:`two_stage` when both stages are shipped)."""

    name = "detectors"
    title = "DIRE reconstruction error (detector-free score)"
    PRIORS = {"dire_tinysd": "the Edit panel's latent model", "dire_digits": "digits-unet (8x8 grey)"}

    def __init__(self, studio: Studio):
        self.studio = studio

    def entries(self) -> list[str]:
        shipped = zoo_detectors()
        laundering = all(n in shipped for n in DEFAULT_DETECTORS["laundering"])
        singles = [n for n in shipped if n not in DEFAULT_DETECTORS["laundering"]]
        return list(self.PRIORS) + singles + (["laundering"] if laundering else [])

    def _shipped(self, image: Image.Image, entry: str) -> AuditReport:
        if entry == "laundering":
            s1, s2 = (load_detector(n) for n in DEFAULT_DETECTORS["laundering"])
            shape = tuple(s1.config["detector"]["image_shape"])
            x = image_to_tensor(image, shape[0], shape[1:])
            score1, score2, labels = two_stage(s1, s2, x)
            metrics = {"verdict": labels[0], "stage-1 score": f"{float(score1[0]):.3g}"}
            metrics["stage-2 score"] = f"{float(score2[0]):.3g}"
            return AuditReport(metrics, None, "two-stage laundering detector (Mandelli et al., arXiv 2407.10736)")
        zm = load_detector(entry)
        shape = tuple(zm.config["detector"]["image_shape"])
        x = image_to_tensor(image, shape[0], shape[1:])
        prob = float(detector_probs(zm, x)[0])
        auc = (zm.config.get("metrics") or {}).get("auc")
        note = f"shipped detector {entry} ({zm.config['detector'].get('input', '?')} input"
        note += f", held-out AUC {auc:.3g})" if isinstance(auc, int | float) else ")"
        return AuditReport({"P(generated)": f"{prob:.3f}"}, None, note)

    def run(self, image: Image.Image, entry: str, options: dict[str, Any]) -> AuditReport:
        if entry not in self.PRIORS:
            return self._shipped(image, entry)
        steps = int(options.get("steps") or DIRE_STEPS)
        if entry == "dire_tinysd":
            model = self.studio.latent_model()
            size = int(model.image_size)
            x = image_to_tensor(image, 3, (size, size))
            res = dire_latent(model, x, steps)
        else:
            zm = self.studio.zoo_model("digits-unet")
            x = image_to_tensor(image, 1, tuple(zm.sample_shape[1:]))
            null = zm.config.get("null_class")
            res = dire(zm.denoiser(), x, steps, None if null is None else torch.tensor([int(null)]))
        score = float(res.score()[0])
        return AuditReport(
            {
                "mean DIRE": f"{score:.4g}",
                "reconstruction PSNR (dB)": f"{float(psnr(res.recon.float().clamp(-1, 1), x)):.4g}",
                "DDIM steps": steps,
            },
            (res.dire.clamp(0, 1) * 2 - 1).float(),
            f"{self.PRIORS[entry]}; lower = reconstructs better = more likely generated by this model "
            "(no trained DIRE classifier shipped: compare with images of known origin)",
        )


class Protection:
    """Diff-Protect's perturbations (see the module docstring) on the latent model, with the mimicry test."""

    name = "protection"
    title = "Diff-Protect (L-inf 16/255, sign PGD)"
    MIMIC_STEPS = 10

    def __init__(self, studio: Studio):
        self.studio = studio

    def entries(self) -> list[str]:
        return list(PROTECT_METHODS)

    def run(self, image: Image.Image, entry: str, options: dict[str, Any]) -> AuditReport:
        model = self.studio.latent_model()
        size = int(model.image_size)
        x = image_to_tensor(image, 3, (size, size))
        steps, prompt, seed = int(options.get("steps") or 20), str(options.get("prompt") or ""), int(options["seed"])
        res = protect(model, x, entry, steps=steps, prompt=prompt, generator=torch.Generator().manual_seed(seed))
        change = latent_change(model, x, res.image)
        mimic = {}
        for name, img in (("clean", x), ("protected", res.image)):
            out = edit_image("sdedit", model, img, prompt, prompt, num_steps=self.MIMIC_STEPS, seed=seed)
            mimic[name] = float(psnr(out.image.float().clamp(-1, 1), x))
        return AuditReport(
            {
                "L-inf (pixel units)": f"{res.linf:.4g}",
                "|dz|/|z| / |dx|/|x|": f"{change['ratio']:.3g}",
                "PGD steps": steps,
                "seconds": f"{res.seconds:.3g}",
                "SDEdit PSNR clean (dB)": f"{mimic['clean']:.4g}",
                "SDEdit PSNR protected (dB)": f"{mimic['protected']:.4g}",
            },
            res.image.float(),
            f"the protected image; SDEdit at its default strength, {self.MIMIC_STEPS} steps, prompt {prompt!r} "
            "(the official budget runs 100 PGD steps)",
        )


MAX_BITS = 32


def _message(wm: Any, x: Tensor, options: dict[str, Any]) -> Tensor:
    """The message to embed: the ``bits`` option, else random bits (seeded) at the method's capacity (<= 32)."""
    h, w = x.shape[-2:]
    n = wm.fixed_bits or min(wm.capacity(h, w), MAX_BITS)
    if n < 1:
        raise ValueError(f"image: {wm.name} holds no bits at {h}x{w}; use a larger image")
    if options.get("bits"):
        return parse_bits(options["bits"])[None]
    return random_bits(1, n, torch.Generator().manual_seed(int(options["seed"])))


def _embedded(wm: Any, x: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    bits = _message(wm, x, options)
    return wm.embed(x, bits), bits


def _bits_metrics(wm: Any, image: Tensor, bits: Tensor) -> dict[str, str]:
    n = bits.shape[1]
    acc = float(bit_accuracy(wm.decode(image, n), bits)[0])
    return {"bit accuracy": f"{acc:.3f}", "p-value (chance match)": f"{binomial_tail(n, round(acc * n)):.2g}"}


class Watermarks:
    """Embed and decode with the real watermark libraries (:data:`diffzoo.provenance.WATERMARKS`)."""

    name = "watermarks"
    title = "diffzoo.provenance.WATERMARKS"

    def entries(self) -> list[str]:
        return list(WATERMARKS)

    def run(self, image: Image.Image, entry: str, options: dict[str, Any]) -> AuditReport:
        wm = get_watermark(entry)
        x = image_to_tensor(image, 3)
        xw, bits = _embedded(wm, x, options)
        return AuditReport(
            {
                "bits": int(bits.shape[1]),
                **_bits_metrics(wm, xw, bits),
                "PSNR to input (dB)": f"{float(psnr(xw, x)):.4g}",
            },
            xw,
            f"{entry} at {x.shape[-1]}x{x.shape[-2]} (capacity {wm.capacity(*x.shape[-2:])} bits)",
        )


class Attacks:
    """Classical attacks (:data:`diffzoo.provenance.ATTACKS`) on an image watermarked with ``options['watermark']``."""

    name = "attacks"
    title = "diffzoo.provenance.ATTACKS on a watermarked image"

    def entries(self) -> list[str]:
        return list(ATTACKS)

    def run(self, image: Image.Image, entry: str, options: dict[str, Any]) -> AuditReport:
        wm = get_watermark(options.get("watermark") or next(iter(WATERMARKS)))
        x = image_to_tensor(image, 3)
        xw, bits = _embedded(wm, x, options)
        strength = options.get("strength")
        if strength is None:
            strength = CLASSICAL_GRID.get(entry, CLASSICAL_GRID.get(entry.replace("_diff", ""), (1.0,)))[0]
        xa = classical(entry, xw, float(strength), torch.Generator().manual_seed(int(options["seed"])))
        before, after = _bits_metrics(wm, xw, bits), _bits_metrics(wm, xa.clamp(-1, 1), bits)
        return AuditReport(
            {
                "watermark": wm.name,
                "strength": f"{float(strength):g}",
                "bit accuracy before": before["bit accuracy"],
                "bit accuracy after": after["bit accuracy"],
                "PSNR attacked vs watermarked (dB)": f"{float(psnr(xa.clamp(-1, 1), xw)):.4g}",
            },
            xa.clamp(-1, 1),
            f"{entry} at strength {float(strength):g} on a {wm.name}-watermarked image ({bits.shape[1]} bits)",
        )


def families(studio: Studio) -> tuple[AuditFamily, ...]:
    """The installed families (adapters over :mod:`diffzoo.forensics` and :mod:`diffzoo.provenance`)."""
    return (DireDetectors(studio), Watermarks(), Attacks(), Protection(studio))


def installed(studio: Studio) -> dict[str, AuditFamily]:
    return {f.name: f for f in families(studio)}


def describe(studio: Studio) -> list[dict[str, Any]]:
    """Every expected family: installed (with its entries) or not, as the page lists them."""
    have = installed(studio)
    out = []
    for name, what in EXPECTED.items():
        fam = have.get(name)
        missing = f"{name}: not installed (diffzoo.forensics exports no {name} yet)"
        out.append(
            {
                "name": name,
                "what": what if fam is None else f"{fam.title}: {what}",
                "installed": fam is not None,
                "entries": fam.entries() if fam is not None else [],
                "message": "" if fam is not None else missing,
            }
        )
    return out


def check_audit(studio: Studio, settings: dict[str, Any]) -> dict[str, Any]:
    """Validate an Audit request: an uploaded image, an installed family and entries of its registry."""
    up = studio.upload(settings.get("image"))
    family = settings.get("family")
    check_choice(family, list(EXPECTED), "family")
    fam = installed(studio).get(family)
    if fam is None:
        raise ValueError(f"family: {family} is not installed in this diffzoo (diffzoo.forensics has no {family} yet)")
    entries = settings.get("entries")
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise ValueError("entries: tick at least one")
    for e in entries:
        check_choice(e, fam.entries(), "entries")
    prompt = settings.get("prompt") or ""
    if not isinstance(prompt, str) or len(prompt) > 300:
        raise ValueError("prompt: expected a text of at most 300 characters")
    bits = settings.get("bits") or None
    if bits is not None:
        parse_bits(bits)  # a one-line error naming bits
        if len(bits) > MAX_BITS:
            raise ValueError(f"bits: at most {MAX_BITS} bits, got {len(bits)}")
    watermark = settings.get("watermark") or None
    if watermark is not None:
        check_choice(watermark, list(WATERMARKS), "watermark")
    strength = settings.get("strength")
    options = {
        "steps": int_field(settings.get("steps"), "steps", DIRE_STEPS, 1, 200),
        "seed": int_field(settings.get("seed"), "seed", 0, 0, 2**31 - 1),
        "prompt": prompt,
        "bits": bits,
        "watermark": watermark,
        "strength": None if strength in (None, "") else check_range(strength, "strength", -1000.0, 1000.0),
    }
    return {"family": family, "entries": list(dict.fromkeys(entries)), "image": up.id, "options": options}


def run_audit(studio: Studio, s: dict[str, Any], progress: Progress) -> Outcome:
    """Run the ticked entries of one installed family on the upload; one card per entry."""
    fam = installed(studio)[s["family"]]
    image = studio.upload(s["image"]).image
    files: dict[str, bytes] = {}
    results = []
    for i, entry in enumerate(s["entries"]):
        progress.unit(i, len(s["entries"]), f"{s['family']}: {entry}", 2 * s["options"]["steps"])
        rep = fam.run(image, entry, s["options"])
        card: dict[str, Any] = {"label": entry, "metrics": dict(rep.metrics), "note": rep.note}
        if rep.image is not None:
            name = f"audit_{entry}.png"
            files[name] = png_bytes(rep.image.float().clamp(-1, 1))
            card["image"] = card["file"] = name
        results.append(card)
    files["settings.json"] = json.dumps({"panel": "audit", "settings": s}, indent=2).encode()
    return Outcome(results, files, dict(s))
