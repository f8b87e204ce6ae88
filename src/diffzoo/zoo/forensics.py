"""Forensic data sets built from zoo generators, and the shipped forensic detectors.

This is where the algorithms of :mod:`diffzoo.forensics` meet the zoo: the training recipes
(:mod:`diffzoo.recipes.forensics`), ``diffzoo detect`` and ``diffzoo bench forensics`` all build their
real / generated / laundered images and their detector inputs here, so the three always agree.

* Digits (8x8): real = scikit-learn digits (``train`` split for detector training, the held-out ``test``
  split for evaluation); generated = samples of a zoo model named by a *generator spec*
  ``"model/sampler+steps"`` (``digits-unet/ddim50``, ``digits-unet/ddpm100``, ``masked-digits/fhs``, ...).
  With ``same_format=True`` generated pixels are rounded to the 17 levels of the real data, so both
  classes share one format (a raw-pixel detector cannot then separate them by quantisation alone).
* Shapes (32x32 RGB): real = procedural renders; generated = TinySD samples of the same captions;
  laundered = TinySD VAE round trip or SDEdit img2img at a strength. All of them are stored as 8-bit
  (rounded to 255 levels) -- one format for every class.
"""

from __future__ import annotations

import logging
import re

import torch

from diffzoo.core.errors import check_int, check_range
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.random import generators_from_seeds, randn
from diffzoo.data import digits, shapes, simple_shapes
from diffzoo.editing.anchored import anchored_latent, start_index
from diffzoo.forensics.detection import random_patches, top_m_mean
from diffzoo.forensics.dire import DIRE_STEPS, dire, dire_latent
from diffzoo.forensics.hallucination import LAST_K, sample_with_x0
from diffzoo.latent.model import LatentModel
from diffzoo.sampling import ddim, get_timesteps
from diffzoo.zoo import ZooModel, load
from diffzoo.zoo.latent import load_tinysd as load_tinysd_model
from diffzoo.zoo.sampling import sample_zoo

log = logging.getLogger(__name__)
Tensor = torch.Tensor

#: The DIRE reconstruction model of each image domain (the generator the detectors are trained against).
DIRE_MODEL = {"digits": "digits-unet", "shapes": "tinysd"}
#: The training generator of the shipped digits detectors.
TRAIN_GENERATOR = "digits-unet/ddim50"
#: The training generator of the shipped shapes detectors (TinySD, DDIM 25 steps, CFG 5).
SHAPES_GENERATOR = "tinysd/ddim25"
_SPEC = re.compile(r"^([A-Za-z0-9_.-]+)/([a-z_0-9+]+?)(\d+)?$")


def quantize8(x: Tensor) -> Tensor:
    """Round images in ``[-1, 1]`` to 8-bit levels (what a PNG stores)."""
    return (((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1).to(torch.float32)


def same_format_digits(x: Tensor) -> Tensor:
    """Round continuous digits to the 17 pixel levels of the real data."""
    return digits.levels_to_images(digits.images_to_levels(x.clamp(-1, 1))).view_as(x).to(torch.float32)


def parse_generator(spec: str) -> tuple[str, str, int | None]:
    """``"digits-unet/ddim50"`` -> ``("digits-unet", "ddim", 50)``; ``"masked-digits/fhs"`` -> (.., "fhs", None)."""
    m = _SPEC.match(spec or "")
    if not m:
        raise ValueError(f"generator: expected 'zoo-model/sampler<steps>' such as 'digits-unet/ddim50', got {spec!r}")
    return m.group(1), m.group(2), int(m.group(3)) if m.group(3) else None


def generated_digits(spec: str, n: int, seed: int, guidance: float = 2.0, same_format: bool = True) -> Tensor:
    """``n`` digits from a generator spec, clamped to ``[-1, 1]`` (and rounded to 17 levels if
    ``same_format``); class labels cycle through 0..9. Specs: ``digits-unet/ddim50`` (a diffusion model and
    sampler), ``masked-digits/fhs``, ``slimflow-distill-guided/gen1`` (a distilled student, 1 call)."""
    name, sampler, steps = parse_generator(spec)
    kind = load(name).kind
    if kind == "masked":  # unconditional: no labels, no guidance
        res = sample_zoo(name, sampler, steps, n=n, seed=seed)
    elif kind == "generator":  # a distilled student: "name/gen<network calls>", the teacher's guidance built in
        if sampler != "gen":
            raise ValueError(f"generator: distilled students are named 'model/gen<calls>', got {spec!r}")
        res = sample_zoo(name, steps=steps, class_label="all", n=n, seed=seed)
    else:
        res = sample_zoo(name, sampler, steps, guidance=guidance, class_label="all", n=n, seed=seed)
    x = (res.images if res.images is not None else res.samples).to(torch.float32).clamp(-1, 1)
    return same_format_digits(x) if same_format else x


def real_digits(split: str) -> Tensor:
    return digits.load(split).images.to(torch.float32)


def digits_dire(images: Tensor, model: str = DIRE_MODEL["digits"], num_steps: int = DIRE_STEPS) -> Tensor:
    """DIRE maps of digits under the zoo's digits UNet, unconditional (its null class)."""
    zm = load(model, kinds=("diffusion",))
    null = zm.null_class
    cond = None if null is None else torch.full((images.shape[0],), int(null))
    return dire(zm.denoiser(), images, num_steps, cond).dire


def detector_input(images: Tensor, kind: str, domain: str, tinysd: LatentModel | None = None) -> Tensor:
    """What a detector sees: the image itself (``pixels``) or its DIRE map (``dire``)."""
    if kind == "pixels":
        return images
    if kind != "dire":
        raise ValueError(f"input: expected 'dire' or 'pixels', got {kind!r}")
    if domain == "digits":
        return digits_dire(images)
    if tinysd is None:
        raise ValueError("tinysd: the shapes DIRE needs the TinySD latent model")
    return quantize8(dire_latent(tinysd, images).dire - 1)  # stored like an image: DIRE in [0, 2] -> [-1, 1]


# -------------------------------------------------------------------------------------------------
# shapes: renders, TinySD samples, laundering
# -------------------------------------------------------------------------------------------------


def real_shapes(n: int, seed: int) -> tuple[Tensor, list[str]]:
    """``n`` procedural renders (8-bit) and their captions."""
    scenes = shapes.random_scenes(n, seed)
    return quantize8(shapes.render_batch(scenes)), [shapes.caption(s) for s in scenes]


@torch.no_grad()
def tinysd_samples(
    model: LatentModel, captions: list[str], seed: int, num_steps: int = 25, guidance: float = 5.0, batch: int = 64
) -> Tensor:
    """TinySD text-to-image samples of ``captions`` (DDIM eta 0 on SD's leading grid, ``num_steps``, CFG
    ``guidance``; per-sample seeds ``seed + i``), 8-bit."""
    den = cfg_denoiser(model.denoiser(), guidance, model.null_embedding(1))
    ts = get_timesteps(model.schedule, num_steps, "leading", steps_offset=1)
    out = []
    for i in range(0, len(captions), batch):
        caps = list(captions[i : i + batch])
        x = randn(
            model.latent_shape(len(caps), shapes.SIZE, shapes.SIZE),
            generators_from_seeds(range(seed + i, seed + i + len(caps))),
        )
        out.append(model.decode(ddim(den, x, ts, model.encode_prompt(caps))))
    return quantize8(torch.cat(out))


@torch.no_grad()
def launder(
    model: LatentModel,
    images: Tensor,
    captions: list[str] | None = None,
    strength: float = 0.0,
    seed: int = 0,
    num_steps: int = 25,
    guidance: float = 5.0,
    batch: int = 64,
) -> Tensor:
    """Laundering (Mandelli et al. 2024, arXiv 2407.10736): the autoencoder round trip ``D(E(x))`` at
    ``strength = 0``; otherwise SDEdit img2img with each image's caption (the anchored start
    :func:`~diffzoo.editing.anchored.anchored_latent` at the img2img start index of SD's leading grid,
    then DDIM with CFG ``guidance``; per-sample seeds ``seed + i``); 8-bit output. Also the mimicry
    attack of the Diff-Protect evaluation."""
    check_range(strength, "strength", 0.0, 1.0)
    caps = list(captions) if captions is not None else [""] * images.shape[0]
    if len(caps) != images.shape[0]:
        raise ValueError(f"captions: expected {images.shape[0]} captions (one per image), got {len(caps)}")
    grid = get_timesteps(model.schedule, num_steps, "leading", steps_offset=1)
    i0 = start_index(num_steps, strength)
    out = []
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch]
        z = model.encode_image(x)
        if strength > 0 and i0 < num_steps:
            noise = randn(z.shape, generators_from_seeds(range(seed + i, seed + i + x.shape[0])), z.dtype)
            z = anchored_latent(model.schedule, z, grid[i0], noise)
            den = cfg_denoiser(model.denoiser(), guidance, model.null_embedding(x.shape[0]))
            z = ddim(den, z, grid[i0:], model.encode_prompt(caps[i : i + batch]))
        out.append(model.decode(z))
    return quantize8(torch.cat(out))


@torch.no_grad()
def shapes_hallucinations(
    den, n: int, num_steps: int, generator: torch.Generator, batch: int = 256
) -> dict[str, Tensor]:
    """``n`` SIMPLE SHAPES samples of a pixel DDPM by ``num_steps`` ancestral steps, with the last
    :data:`LAST_K` x0 predictions and the ground truth of the shapes detector: ``samples``, ``x0s`` ``(K, n,
    ...)``, ``hallucinated`` (a strip with a repeated or wrong shape, :func:`simple_shapes.is_hallucination`)
    and ``empty`` (no shape found at all)."""
    n = check_int(n, "n", 1)
    batch = check_int(batch, "batch", 1)
    xs, x0s = [], []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        x, k = sample_with_x0(
            den,
            torch.randn((b, 1, simple_shapes.SIZE, simple_shapes.SIZE), generator=generator),
            num_steps,
            LAST_K,
            generator=generator,
        )
        xs.append(x.clamp(-1, 1))
        x0s.append(k)
    x = torch.cat(xs)
    strips = simple_shapes.read_strips(x)
    return {
        "samples": x,
        "x0s": torch.cat(x0s, 1),
        "hallucinated": simple_shapes.is_hallucination(x),
        "empty": torch.tensor([not any(s) for s in strips], dtype=torch.bool),
    }


def generated_shapes(spec: str, n: int, seed: int, model: LatentModel | None = None) -> Tensor:
    """``n`` 8-bit shapes images of a generator spec: ``tinysd/ddim<steps>`` (TinySD, CFG 5, captions of
    fresh scenes), ``tinysd-cfg2/ddim<steps>`` (CFG 2) or ``masked-shapes/fhs`` (the masked model)."""
    name, sampler, steps = parse_generator(spec)
    if name in ("tinysd", "tinysd-cfg2"):
        if sampler != "ddim":
            raise ValueError(f"generator: TinySD generators sample with ddim<steps>, got {spec!r}")
        _, caps = real_shapes(n, seed + 1)
        model = model if model is not None else load_tinysd_model()
        return tinysd_samples(model, caps, seed, steps or 25, 2.0 if name == "tinysd-cfg2" else 5.0)
    res = sample_zoo(name, sampler, steps, n=n, seed=seed)
    x = res.images if res.images is not None else res.samples
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, shapes.SIZE, shapes.SIZE):
        raise ValueError(f"generator: {name!r} does not make {shapes.SIZE}x{shapes.SIZE} RGB shapes images")
    return quantize8(x.to(torch.float32))


def load_detector(name: str) -> ZooModel:
    """A shipped forensic detector (kind ``classifier`` with a ``detector`` entry in its JSON)."""
    zm = load(name, kinds=("classifier",))
    if not zm.config.get("detector"):
        raise ValueError(f"detector: zoo model {name!r} is not a forensic detector (no 'detector' entry)")
    return zm


__all__ = [
    "DEFAULT_DETECTORS",
    "DIRE_MODEL",
    "check_detector_images",
    "detector_probs",
    "patch_scores",
    "two_stage",
    "SHAPES_GENERATOR",
    "TRAIN_GENERATOR",
    "detector_input",
    "digits_dire",
    "generated_digits",
    "generated_shapes",
    "launder",
    "load_detector",
    "parse_generator",
    "quantize8",
    "real_digits",
    "real_shapes",
    "same_format_digits",
    "shapes_hallucinations",
    "tinysd_samples",
]


# -------------------------------------------------------------------------------------------------
# applying the shipped detectors (diffzoo detect, the bench)
# -------------------------------------------------------------------------------------------------

#: Default zoo detectors of ``diffzoo detect --detector``.
DEFAULT_DETECTORS = {"dire": "dire-digits", "laundering": ("laundering-stage1", "laundering-stage2")}


def check_detector_images(images: Tensor, zm: ZooModel, arg: str = "image") -> Tensor:
    """``ValueError`` naming ``arg`` when the images do not have the detector's channels and size."""
    want = tuple(zm.config["detector"]["image_shape"])
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise ValueError(
            f"{arg}: detector {zm.name!r} takes {want[0]}-channel {want[1]}x{want[2]} images, "
            f"got shape {tuple(images.shape[1:])}"
        )
    return images


@torch.no_grad()
def detector_probs(zm: ZooModel, images: Tensor, tinysd: LatentModel | None = None) -> Tensor:
    """Probability of "generated" (DIRE / pixel detectors) for each image."""
    det = zm.config["detector"]
    check_detector_images(images, zm)
    if det["domain"] == "shapes" and det["input"] == "dire" and tinysd is None:
        tinysd = load_tinysd_model()
    x = detector_input(quantize8(images) if det["domain"] == "shapes" else images, det["input"], det["domain"], tinysd)
    return torch.sigmoid(zm.model.eval()(x))


@torch.no_grad()
def patch_scores(zm: ZooModel, images: Tensor, seed: int = 21) -> Tensor:
    """Image scores of a laundering patch detector: the mean of the top-M of its random-patch logits."""
    det = zm.config["detector"]
    check_detector_images(images, zm)
    p = random_patches(images, int(det["patches"]), int(det["patch"]), torch.Generator().manual_seed(seed))
    logits = zm.model.eval()(p.flatten(0, 1)).view(images.shape[0], -1)
    return top_m_mean(logits, int(det["top_m"]))


@torch.no_grad()
def two_stage(stage1: ZooModel, stage2: ZooModel, images: Tensor) -> tuple[Tensor, Tensor, list[str]]:
    """The laundering detector: stage-1 score (> 0: synthetic), stage-2 score on the flagged images
    (> 0: fully synthetic, else laundered; ``nan`` where stage 1 said real) and the labels."""
    s1 = patch_scores(stage1, images)
    s2 = torch.full_like(s1, float("nan"))
    flagged = s1 > 0
    if bool(flagged.any()):
        s2[flagged] = patch_scores(stage2, images[flagged])
    labels = [
        "real" if not f else ("synthetic" if v > 0 else "laundered") for f, v in zip(flagged.tolist(), s2.tolist())
    ]
    return s1, s2, labels
