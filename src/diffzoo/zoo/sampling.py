"""Sampling a zoo model by name: per-sample seeds, classifier-free guidance, Gaussian or masked samplers.

:func:`sample_zoo` is what ``diffzoo sample`` and the demo call; it dispatches on the model's
:attr:`~diffzoo.zoo.ZooModel.kind` (``diffusion``: the samplers of :mod:`diffzoo.sampling`; ``masked``:
those of :mod:`diffzoo.discrete.samplers`; ``latent-diffusion``: text to image from a ``prompt`` with the
Gaussian samplers, in latent space, decoded by the model's VAE; ``generator``: distilled students).
Sample ``i`` of seed ``s`` uses its own generator seeded ``s * 1_000_003 + i`` (batch-invariant: the first 16
of 64 samples equal a run with ``n = 16``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffzoo.accel.cache import cache_latent_model, cached_denoiser
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.random import generators_from_seeds
from diffzoo.discrete.samplers import SAMPLERS as MASKED_SAMPLERS
from diffzoo.discrete.samplers import CallCounter, ancestral_sample, confidence_sample, first_hitting_sample
from diffzoo.discrete.tokens import token_space
from diffzoo.distill.generate import generate
from diffzoo.provenance.bits import user_fingerprint
from diffzoo.sampling import SAMPLERS, STOCHASTIC, get_timesteps, initial_noise, sample
from diffzoo.zoo import load
from diffzoo.zoo.latent import latent_model
from diffzoo.zoo.provenance import load_wouaf

Tensor = torch.Tensor
SEED_STRIDE = 1_000_003
GAUSSIAN_STEPS = 20


@dataclass
class SampleResult:
    samples: Tensor
    labels: Tensor | None
    nfe: int
    images: Tensor | None = None  # masked models: the decoded token images (B, C, H, W) in [-1, 1]
    seconds: float = 0.0  # wall time of the sampling loop
    full_calls: int | None = None  # with a feature cache: full-network calls (the rest ran part of it)
    method: str | None = None  # distilled generators: how they were sampled ("flow generator", ...)


def check_sampler(sampler: str, masked: bool) -> None:
    """Masked models take the discrete samplers, Gaussian ones the continuous samplers."""
    valid = MASKED_SAMPLERS if masked else tuple(SAMPLERS)
    if sampler not in valid:
        kind = "a masked (discrete)" if masked else "a Gaussian"
        raise ValueError(f"sampler: {sampler!r} cannot sample {kind} model; expected one of {sorted(valid)}")


def seeds_for(seed: int, n: int) -> list[int]:
    """Per-sample seeds of a run (sample ``i`` of seed ``s`` always gets the same noise)."""
    return [seed * SEED_STRIDE + i for i in range(n)]


def class_labels(spec: str | None, n: int, num_classes: int | None) -> Tensor | None:
    """``None``; ``"all"`` (0, 1, ..., cycling through the classes) or one integer label for every sample."""
    if spec is None:
        return None
    if num_classes is None:
        raise ValueError("class_label: this model is not class-conditional (no null_class in its config)")
    if spec == "all":
        return torch.arange(n) % num_classes
    try:
        k = int(spec)
    except ValueError:
        raise ValueError(f"class_label: expected an integer or 'all', got {spec!r}") from None
    if not 0 <= k < num_classes:
        raise ValueError(f"class_label: expected a value in [0, {num_classes - 1}], got {k}")
    return torch.full((n,), k, dtype=torch.long)


def guided(den: Denoiser, guidance: float, null_class: int | None, labels: Tensor | None) -> Denoiser:
    """The denoiser with classifier-free guidance ``guidance`` (1 = none) toward ``labels``."""
    if guidance == 1.0:
        return den
    if labels is None or null_class is None:
        raise ValueError("guidance: classifier-free guidance needs a class-conditional model and --class-label")
    return cfg_denoiser(den, guidance, torch.tensor([null_class]))


@torch.no_grad()
def draw(
    den: Denoiser,
    shape: Sequence[int],
    n: int,
    sampler: str,
    steps: int,
    spacing: str = "uniform",
    seed: int = 0,
    cond: Any = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    **kwargs: Any,
) -> Tensor:
    """``n`` samples of ``shape`` from ``den`` with a named sampler, per-sample seeded."""
    ts = get_timesteps(den.schedule, steps, spacing)
    x = initial_noise(den, (n, *shape), ts, generators_from_seeds(seeds_for(seed, n)), dtype)
    gens = (
        generators_from_seeds([s + SEED_STRIDE // 2 for s in seeds_for(seed, n)])
        if sampler in STOCHASTIC or kwargs.get("eta", 0) > 0
        else None
    )
    return sample(sampler, den, x, ts, cond, generator=gens, progress=progress, **kwargs)


@torch.no_grad()
def draw_masked(model: Any, n: int, sampler: str, steps: int | None = None, seed: int = 0) -> tuple[Tensor, int]:
    """``n`` token sequences from a masked model with a discrete sampler, per-sample seeded; returns
    ``(tokens (n, L), NFE)``. ``steps`` (default ``L``): ancestral / confidence steps; for ``fhs`` the
    number of network calls (``ceil(L / steps)`` tokens per call; ``L`` calls = the exact sampler)."""
    check_sampler(sampler, masked=True)
    length = int(model.seq_len)
    steps = length if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    gens = generators_from_seeds(seeds_for(seed, n))
    counter = CallCounter(model)
    if sampler == "fhs":
        x = first_hitting_sample(counter, n, generator=gens, tokens_per_step=math.ceil(length / steps))
    elif sampler == "ancestral":
        x = ancestral_sample(counter, n, steps, generator=gens)
    else:
        x = confidence_sample(counter, n, steps, generator=gens)
    return x, counter.nfe


def sample_masked(
    zm: Any,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float = 1.0,
    class_label: str | None = None,
    n: int = 16,
    seed: int = 0,
    eta: float | None = None,
    shape: Sequence[int] | None = None,
    spacing: str = "uniform",
) -> SampleResult:
    """Sample a loaded masked zoo model (options that only Gaussian models take are refused)."""
    sampler = sampler or "fhs"
    check_sampler(sampler, masked=True)
    if guidance != 1.0:
        raise ValueError("guidance: masked models take no classifier-free guidance (they are unconditional)")
    if class_label is not None:
        raise ValueError("class_label: masked models are unconditional; drop --class-label")
    if eta is not None:
        raise ValueError("eta: only the Gaussian ddim sampler takes eta")
    if shape:
        raise ValueError("shape: the sample shape of a masked model is fixed by its seq_len")
    if spacing != "uniform":
        raise ValueError("spacing: masked samplers use their own time grids; drop --spacing")
    t0 = time.perf_counter()
    x, nfe = draw_masked(zm.model, n, sampler, steps, seed)
    seconds = time.perf_counter() - t0
    return SampleResult(x, None, nfe, images=token_space(zm.model).decode(x), seconds=seconds)


@torch.no_grad()
def sample_generator(
    zm: Any,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float = 1.0,
    class_label: str | None = None,
    n: int = 16,
    seed: int = 0,
    eta: float | None = None,
    shape: Sequence[int] | None = None,
    spacing: str = "uniform",
) -> SampleResult:
    """Sample a distilled generator (kind ``generator``): per-sample seeded noise through
    :func:`diffzoo.distill.generate.generate`; ``steps`` = network calls where the generator allows more
    than one (rectified flows, idempotent maps). Options of the diffusion samplers are refused."""
    for arg, bad in (("sampler", sampler is not None), ("eta", eta is not None), ("spacing", spacing != "uniform")):
        if bad:
            raise ValueError(f"{arg}: {zm.name!r} is a distilled generator (kind generator); it takes no {arg}")
    if guidance != 1.0:
        raise ValueError(f"guidance: {zm.name!r} is a distilled generator; the teacher's guidance is built in")
    if shape:
        raise ValueError(f"shape: the sample shape of the generator {zm.name!r} is fixed")
    labels = class_labels(class_label, n, zm.config.get("null_class"))
    if labels is None and zm.config.get("null_class") is not None:
        labels = torch.arange(n) % int(zm.config["null_class"])  # class-conditional students need labels
    z = torch.stack([torch.randn(zm.sample_shape, generator=g) for g in generators_from_seeds(seeds_for(seed, n))])
    spec = zm.config["generator"]
    t0 = time.perf_counter()
    x = generate(zm.model, z, labels, spec=spec, steps=steps)
    nfe = 1 if spec["type"] == "signal" else int(spec.get("steps", 1) if steps is None else steps)
    return SampleResult(x, labels, nfe, seconds=time.perf_counter() - t0, method=f"{spec['type']} generator")


def fingerprinted_decoder(
    fingerprint: str, scaling_factor: float, name: str = "wouaf", users: str | None = None
) -> Any:
    """``z -> images`` through the zoo's WOUAF decoder ``name`` modulated by ``fingerprint`` (a 0/1 string of
    the decoder's length, or a user name of the registry ``users``); its latent scale must be the model's (the
    same VAE latent space)."""
    dec = load_wouaf(name)
    phi = user_fingerprint(fingerprint, users)
    if phi.numel() != dec.bits:
        raise ValueError(f"fingerprint: {name!r} takes {dec.bits} bits, got {phi.numel()}")
    if abs(dec.scaling_factor - float(scaling_factor)) > 1e-6:
        raise ValueError(f"fingerprint: {name!r} decodes another latent space (scale {dec.scaling_factor:.6g})")
    return lambda z: dec.decode(z, phi[None].expand(z.shape[0], -1).to(z))


def _gaussian_options(sampler: str | None, steps: int | None, eta: float | None) -> tuple[str, int, dict]:
    """Defaults and checks of a Gaussian sampler: ``(sampler, steps, {"eta": eta} or {})``."""
    sampler = sampler or "dpmpp_2m"
    check_sampler(sampler, masked=False)
    if eta is not None and sampler != "ddim":
        raise ValueError("eta: only the ddim sampler takes eta")
    return sampler, GAUSSIAN_STEPS if steps is None else steps, {} if eta is None else {"eta": eta}


@torch.no_grad()
def sample_text(
    zm: Any,
    prompt: str | None,
    sampler: str | None = None,
    steps: int | None = None,
    spacing: str = "uniform",
    guidance: float = 1.0,
    class_label: str | None = None,
    n: int = 16,
    seed: int = 0,
    eta: float | None = None,
    shape: Sequence[int] | None = None,
    progress: bool = False,
    cache: str | None = None,
    cache_keys: str | None = None,
    fingerprint: str | None = None,
    users: str | None = None,
) -> SampleResult:
    """Text to image with a loaded latent-diffusion zoo model (TinySD, or a quantized TinySD entry, simulated
    or int8): ``n`` latents per-sample seeded, a Gaussian sampler with classifier-free guidance against the
    empty prompt, decoded by the VAE. ``samples`` are the images ``(n, 3, H, W)`` in ``[-1, 1]``.

    ``fingerprint``: a 0/1 string; the latents are then decoded by the zoo's WOUAF decoder (``wouaf``)
    modulated by that user fingerprint instead of the model's own VAE decoder."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt: {zm.name!r} is a text-to-image model; give --prompt, e.g. 'a red circle'")
    if class_label is not None:
        raise ValueError(f"class_label: {zm.name!r} is conditioned on text; use --prompt, not --class-label")
    if shape:
        raise ValueError(f"shape: the image size of {zm.name!r} is fixed by its training")
    sampler, steps, kw = _gaussian_options(sampler, steps, eta)
    lm = latent_model(zm.model)
    decode = lm.decode if fingerprint is None else fingerprinted_decoder(fingerprint, lm.scaling_factor, users=users)
    if cache is not None:
        lm = cache_latent_model(lm, get_timesteps(lm.schedule, steps, spacing), cache, cache_keys)
    base = lm.denoiser()
    den = base if guidance == 1.0 else cfg_denoiser(base, guidance, lm.null_embedding(1))
    cond = lm.encode_prompt([prompt] * n)
    before = den.nfe
    t0 = time.perf_counter()
    shape = lm.latent_shape(1, lm.image_size, lm.image_size)[1:]
    z = draw(den, shape, n, sampler, steps, spacing, seed, cond, progress=progress, **kw)
    images = decode(z).clamp(-1, 1)
    full = None if cache is None else int(lm.unet.cache.full_calls)
    return SampleResult(images, None, den.nfe - before, seconds=time.perf_counter() - t0, full_calls=full)


def sample_zoo(
    name: str,
    sampler: str | None = None,
    steps: int | None = None,
    spacing: str = "uniform",
    guidance: float = 1.0,
    class_label: str | None = None,
    n: int = 16,
    seed: int = 0,
    eta: float | None = None,
    shape: Sequence[int] | None = None,
    progress: bool = False,
    cache: str | None = None,
    cache_keys: str | None = None,
    prompt: str | None = None,
    fingerprint: str | None = None,
    users: str | None = None,
) -> SampleResult:
    """Load zoo model ``name`` and draw ``n`` samples (see the module docstring).

    ``sampler`` defaults to ``"dpmpp_2m"`` (Gaussian models) or ``"fhs"`` (masked models); ``steps`` to
    20 (Gaussian) or the sequence length (masked). ``cache``: ``"faster-diffusion"`` or ``"deepcache"``
    (:mod:`diffzoo.accel.cache`; UNet models only) runs the network through a feature cache over the
    sampling grid, key steps ``cache_keys`` (``"paper"``, ``"uniform:K"``, ...; default: the method's).
    ``prompt``: the caption of a text-to-image (``latent-diffusion``) model, refused by the others;
    ``fingerprint``: a WOUAF user fingerprint (0/1 string, or a user name of the registry file ``users``) for
    such a model's decoder (:func:`sample_text`).
    """
    zm = load(name, kinds=("diffusion", "masked", "generator", "latent-diffusion"))
    if cache is None and cache_keys is not None:
        raise ValueError("cache_keys: key steps need a cache method (--cache faster-diffusion|deepcache)")
    if zm.kind == "latent-diffusion":
        return sample_text(
            zm,
            prompt,
            sampler,
            steps,
            spacing,
            guidance,
            class_label,
            n,
            seed,
            eta,
            shape,
            progress,
            cache,
            cache_keys,
            fingerprint,
            users,
        )
    if fingerprint is not None:
        raise ValueError(f"fingerprint: {name!r} is a {zm.kind} model; WOUAF fingerprints need a text-to-image model")
    if prompt is not None:
        raise ValueError(f"prompt: {name!r} is a {zm.kind} model, not a text-to-image one; drop --prompt")
    if cache is not None and zm.kind != "diffusion":
        raise ValueError(f"cache: {name!r} is a {zm.kind} model; feature caches need a Gaussian UNet model")
    if zm.kind == "generator":
        return sample_generator(zm, sampler, steps, guidance, class_label, n, seed, eta, shape, spacing)
    if zm.kind == "masked":
        return sample_masked(zm, sampler, steps, guidance, class_label, n, seed, eta, shape, spacing)
    sampler, steps, kw = _gaussian_options(sampler, steps, eta)
    null = zm.config.get("null_class")
    labels = class_labels(class_label, n, null)
    base = zm.denoiser()
    if cache is not None:  # the cache wraps the plain network; guidance goes on top (it caches [cond; uncond])
        base = cached_denoiser(base, get_timesteps(base.schedule, steps, spacing), cache, cache_keys)
    den = guided(base, guidance, null, labels)
    before = den.nfe
    t0 = time.perf_counter()
    x = draw(
        den,
        tuple(shape) if shape else zm.sample_shape,
        n,
        sampler,
        steps,
        spacing,
        seed,
        labels,
        progress=progress,
        **kw,
    )
    seconds = time.perf_counter() - t0
    full = None if cache is None else int(base.net.full_calls)
    return SampleResult(x, labels, den.nfe - before, seconds=seconds, full_calls=full)
