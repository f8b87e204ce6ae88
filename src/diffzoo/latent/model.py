"""A text-conditional latent diffusion model as one object: ``LatentModel``.

Stable Diffusion's structure (Rombach et al. 2022, Sec. 3): an autoencoder ``E/D`` with
``z = s * E(x)`` (``s`` = ``scaling_factor``), a text encoder ``tau(prompt) -> (L, D)`` token embeddings
and a UNet ``eps_theta(z_t, t, tau(prompt))`` trained on a discrete schedule. Every inversion and
editing method in diffzoo talks to the model only through this class, so the same code runs on the
shapes-world TinySD and, unchanged, on the components of a real diffusers ``StableDiffusionPipeline``
(``LatentModel.from_diffusers_pipeline(pipe)``).

A model without a text encoder (``text_encoder=None``) is *unconditional*; methods that need prompts
check :attr:`LatentModel.conditional` and raise. A model without an autoencoder (``vae=None``) works in
pixel space (``encode_image``/``decode`` are the identity up to ``scaling_factor``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser, from_diffusers_unet
from diffzoo.core.errors import check_batch, check_finite, check_tensor
from diffzoo.core.parameterization import canonical_prediction_type
from diffzoo.core.schedules import DiscreteSchedule, from_diffusers_config

Tensor = torch.Tensor
Tokenize = Callable[[list[str]], Tensor]

#: Tolerance on the image range check ([-1, 1] up to round-off of a uint8 -> float conversion).
RANGE_TOL = 1e-3


def _first_param(module: Any) -> Tensor | None:
    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            return p
    return None


@dataclass
class LatentModel:
    """UNet + VAE + text encoder + tokenizer + schedule of a latent text-to-image diffusion model.

    Attributes
    ----------
    unet: a diffusers ``UNet2DConditionModel`` (or any module ``unet(z, t, encoder_hidden_states=..)``
        returning an object with ``.sample``).
    vae: a diffusers ``AutoencoderKL`` (``None``: pixel space).
    text_encoder: e.g. transformers' ``CLIPTextModel`` (``None``: unconditional model).
    tokenize: ``list[str] -> LongTensor (B, L)`` of token ids, padded to ``max_length`` and **not**
        truncated (a too-long prompt must yield ``L > max_length`` or raise ``ValueError``).
    schedule: the discrete training schedule of the UNet.
    scaling_factor: latent scale ``s`` in ``z = s * E(x)`` (SD 1.x: 0.18215).
    max_length: the text encoder's context length (tokens, including BOS/EOS).
    prediction_type: the UNet's target (``epsilon``, ``v_prediction``, ``sample``).
    image_size: when set, ``encode_image`` accepts only ``(H, W) == (image_size, image_size)``.
    """

    unet: Any
    vae: Any
    text_encoder: Any
    tokenize: Tokenize | None
    schedule: DiscreteSchedule
    scaling_factor: float
    max_length: int
    prediction_type: str = "epsilon"
    image_size: int | None = None
    _null_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, DiscreteSchedule):
            raise TypeError(f"schedule: expected a DiscreteSchedule, got {type(self.schedule).__name__}")
        self.prediction_type = canonical_prediction_type(self.prediction_type)
        if not (self.scaling_factor > 0):
            raise ValueError(f"scaling_factor: must be > 0, got {self.scaling_factor}")
        if int(self.max_length) < 1:
            raise ValueError(f"max_length: must be >= 1, got {self.max_length}")
        if (self.text_encoder is None) != (self.tokenize is None):
            raise ValueError("text_encoder, tokenize: give both (conditional model) or neither (unconditional)")

    # ---------------------------------------------------------------------------------------------
    # Properties
    # ---------------------------------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        """True when the model takes prompts (has a text encoder and a cross-attention UNet)."""
        cad = getattr(getattr(self.unet, "config", None), "cross_attention_dim", 1)
        return self.text_encoder is not None and cad is not None

    @property
    def device(self) -> torch.device:
        p = _first_param(self.unet)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the UNet runs in."""
        p = _first_param(self.unet)
        return p.dtype if p is not None else torch.float32

    @property
    def latent_factor(self) -> int:
        """Pixel size / latent size of the autoencoder (1 in pixel space)."""
        if self.vae is None:
            return 1
        blocks = getattr(getattr(self.vae, "config", None), "block_out_channels", None)
        return 2 ** (len(blocks) - 1) if blocks else 1

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (autoencoder factor x UNet down-sampling factor)."""
        blocks = getattr(getattr(self.unet, "config", None), "block_out_channels", None)
        unet_factor = 2 ** (len(blocks) - 1) if blocks else 1
        return self.latent_factor * unet_factor

    def require_conditional(self, what: str) -> None:
        """Raise ``ValueError`` when ``what`` needs prompts but this model is unconditional."""
        if not self.conditional:
            raise ValueError(
                f"model: {what} needs a text-conditional model (text encoder + cross-attention "
                "UNet); this LatentModel is unconditional"
            )

    # ---------------------------------------------------------------------------------------------
    # Text
    # ---------------------------------------------------------------------------------------------
    def token_ids(self, prompts: Sequence[str]) -> Tensor:
        """Token ids ``(B, max_length)``; ``ValueError`` naming the prompt when one is too long."""
        self.require_conditional("encode_prompt")
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts: expected a list of strings")
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts: empty list")
        ids = self.tokenize(prompts)  # type: ignore[misc]
        check_tensor(ids, "tokenize(prompts)", ndim=2, floating=False)
        if ids.shape[0] != len(prompts):
            raise ValueError(f"tokenize(prompts): returned {ids.shape[0]} rows for {len(prompts)} prompts")
        if ids.shape[1] > self.max_length:
            raise ValueError(
                f"prompts: tokenized to {ids.shape[1]} tokens, more than the text encoder's "
                f"max_length={self.max_length}"
            )
        return ids

    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """Text embeddings ``tau(prompts)``: ``(B, L, D)`` last hidden states of the text encoder."""
        ids = self.token_ids(prompts)
        p = _first_param(self.text_encoder)
        ids = ids.to(p.device if p is not None else self.device)
        out = self.text_encoder(ids)
        if hasattr(out, "last_hidden_state"):
            out = out.last_hidden_state
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return check_tensor(out, "text_encoder output", ndim=3, floating=True)

    def null_embedding(self, batch: int = 1) -> Tensor:
        """Embedding of the empty prompt ``""`` repeated ``batch`` times (CFG's null condition)."""
        if batch < 1:
            raise ValueError(f"batch: must be >= 1, got {batch}")
        key = "null"
        if key not in self._null_cache:
            with torch.no_grad():
                self._null_cache[key] = self.encode_prompt([""]).detach()
        e = self._null_cache[key]
        return e.expand(batch, *e.shape[1:]).clone()

    def clear_cache(self) -> None:
        """Forget the cached null embedding (after changing the text encoder's weights)."""
        self._null_cache.clear()

    # ---------------------------------------------------------------------------------------------
    # Images <-> latents
    # ---------------------------------------------------------------------------------------------
    def check_image(self, img: Tensor, arg: str = "image") -> Tensor:
        """Validate an image batch ``(B, 3, H, W)`` in ``[-1, 1]`` of an allowed size (non-empty, finite)."""
        check_tensor(img, arg, ndim=4, floating=True)
        check_finite(check_batch(img, arg), arg)  # NaN would pass the range check below
        channels = (
            getattr(getattr(self.vae, "config", None), "in_channels", 3)
            if self.vae is not None
            else getattr(getattr(self.unet, "config", None), "in_channels", 3)
        )
        if img.shape[1] != channels:
            raise ValueError(f"{arg}: expected {channels} channels (B, {channels}, H, W), got shape {tuple(img.shape)}")
        h, w = img.shape[-2:]
        if self.image_size is not None and (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"{arg}: expected size {self.image_size}x{self.image_size}, got {h}x{w}")
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f"{arg}: height and width must be multiples of {m}, got {h}x{w}")
        lo, hi = float(img.min()), float(img.max())
        if lo < -1 - RANGE_TOL or hi > 1 + RANGE_TOL:
            raise ValueError(
                f"{arg}: pixel values must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}] "
                "(convert [0, 1] images with 2 * x - 1)"
            )
        return img

    def encode_image(self, img: Tensor) -> Tensor:
        """``z = s * mean(E(x))``: the deterministic latent (posterior mean) of an image in ``[-1, 1]``."""
        self.check_image(img)
        if self.vae is None:
            return img * self.scaling_factor
        p = _first_param(self.vae)
        x = img.to(device=p.device, dtype=p.dtype) if p is not None else img
        dist = self.vae.encode(x).latent_dist
        return (dist.mean * self.scaling_factor).to(img.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """``D(z / s)`` clamped to ``[-1, 1]``."""
        check_tensor(latents, "latents", ndim=4, floating=True)
        if self.vae is None:
            return (latents / self.scaling_factor).clamp(-1, 1)
        p = _first_param(self.vae)
        z = latents / self.scaling_factor
        z = z.to(device=p.device, dtype=p.dtype) if p is not None else z
        return self.vae.decode(z).sample.to(latents.dtype).clamp(-1, 1)

    @property
    def latent_channels(self) -> int | None:
        """Channels of the UNet's input (the latent), when its config says."""
        return getattr(getattr(self.unet, "config", None), "in_channels", None)

    def is_latent(self, x: Tensor) -> bool:
        """The one rule that tells a latent from an image: ``True`` when the model has an autoencoder and
        ``x`` (``(B, C, h, w)``) has the latent channel count, which differs from the image's.

        In pixel space (``vae=None``) every input is an image; pass ``is_latent`` explicitly to
        :meth:`to_latent` when the channel counts cannot tell (an autoencoder with 3 latent channels).
        """
        check_tensor(x, "image_or_latent", ndim=4, floating=True)
        c_lat = self.latent_channels
        c_img = getattr(getattr(self.vae, "config", None), "in_channels", 3)
        return self.vae is not None and x.shape[1] == c_lat and c_lat != c_img

    def to_latent(
        self, image_or_latent: Tensor, dtype: torch.dtype | None = None, is_latent: bool | None = None
    ) -> Tensor:
        """The latent ``z_0`` of an image ``(B, 3, H, W)`` in ``[-1, 1]`` (``s * mean(E(x))``, no
        gradient), or a latent given directly (checked, moved to the model's device), in ``dtype``
        (``None``: the input's dtype). ``is_latent=None`` decides by :meth:`is_latent`."""
        x = image_or_latent
        if is_latent is None:
            is_latent = self.is_latent(x)
        check_tensor(x, "image_or_latent", ndim=4, floating=True)
        if not is_latent:
            with torch.no_grad():
                z = self.encode_image(x.to(self.device)).detach()
            return z if dtype is None else z.to(dtype)
        check_finite(check_batch(x, "image_or_latent"), "image_or_latent")
        c_lat = self.latent_channels
        if c_lat is not None and x.shape[1] != c_lat:
            raise ValueError(f"image_or_latent: a latent must have {c_lat} channels, got shape {tuple(x.shape)}")
        m = max(1, self.size_multiple // self.latent_factor)
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(
                f"image_or_latent: latent height and width must be multiples of {m}, got {tuple(x.shape[-2:])}"
            )
        return x.detach().to(device=self.device, dtype=x.dtype if dtype is None else dtype)

    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Shape of the latents of a ``(batch, 3, height, width)`` image."""
        c = getattr(getattr(self.unet, "config", None), "in_channels", 4)
        f = self.latent_factor
        return (batch, c, height // f, width // f)

    # ---------------------------------------------------------------------------------------------
    # The denoiser
    # ---------------------------------------------------------------------------------------------
    def denoiser(self, **kw: Any) -> Denoiser:
        """The UNet as a core :class:`~diffzoo.core.denoiser.Denoiser`; ``cond`` = encoder_hidden_states."""
        return from_diffusers_unet(self.unet, schedule=self.schedule, prediction_type=self.prediction_type, **kw)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> LatentModel:
        """Move (and cast) every module in place; returns ``self``."""
        for m in (self.unet, self.vae, self.text_encoder):
            if isinstance(m, torch.nn.Module):
                m.to(device=device, dtype=dtype)
        self.clear_cache()
        return self

    # ---------------------------------------------------------------------------------------------
    # Construction from diffusers / transformers components
    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_components(
        cls,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        scheduler: Any,
        max_length: int | None = None,
        image_size: int | None = None,
    ) -> LatentModel:
        """Build from diffusers/transformers components (those of a ``StableDiffusionPipeline``).

        ``tokenizer`` is a Hugging Face tokenizer (``CLIPTokenizer``...) or a plain callable
        ``list[str] -> LongTensor``. ``scheduler`` is any diffusers scheduler (or its config) of the
        UNet's training process; its ``prediction_type`` is used.
        """
        schedule = from_diffusers_config(scheduler)
        cfg = getattr(scheduler, "config", scheduler) or {}
        pred = dict(cfg).get("prediction_type", "epsilon")
        scaling = float(getattr(getattr(vae, "config", None), "scaling_factor", 1.0) or 1.0) if vae is not None else 1.0
        if max_length is None:
            max_length = getattr(tokenizer, "model_max_length", None)
            pos = getattr(getattr(text_encoder, "config", None), "max_position_embeddings", None)
            if max_length is None or (pos is not None and max_length > pos):
                max_length = pos
        if text_encoder is not None and max_length is None:
            raise ValueError("max_length: cannot infer the text encoder's context length; pass max_length")
        tokenize = None
        if text_encoder is not None:
            tokenize = tokenizer if _is_plain_callable(tokenizer) else hf_tokenize_fn(tokenizer, int(max_length))
        return cls(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            tokenize=tokenize,
            schedule=schedule,
            scaling_factor=scaling,
            max_length=int(max_length or 1),
            prediction_type=pred,
            image_size=image_size,
        )

    @classmethod
    def from_diffusers_pipeline(cls, pipe: Any, **kw: Any) -> LatentModel:
        """Build from a diffusers ``StableDiffusionPipeline`` (its unet, vae, text_encoder, tokenizer, scheduler)."""
        for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if not hasattr(pipe, name):
                raise TypeError(f"pipe: expected a StableDiffusionPipeline-like object with .{name}")
        return cls.from_components(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, **kw)


def _is_plain_callable(tok: Any) -> bool:
    return callable(tok) and not hasattr(tok, "pad_token_id")


def hf_tokenize_fn(tokenizer: Any, max_length: int) -> Tokenize:
    """A ``tokenize`` function over a Hugging Face tokenizer: pad to ``max_length``, never truncate.

    A prompt with more than ``max_length`` tokens (BOS/EOS included) raises ``ValueError`` naming it,
    instead of being silently cut as ``StableDiffusionPipeline`` does.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def tokenize(prompts: list[str]) -> Tensor:
        rows = []
        for p in prompts:
            ids = list(tokenizer(p, truncation=False).input_ids)
            if len(ids) > max_length:
                raise ValueError(
                    f"prompts: {p[:60]!r} has {len(ids)} tokens, more than the text encoder's max_length={max_length}"
                )
            rows.append(ids + [pad] * (max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    return tokenize


# -------------------------------------------------------------------------------------------------
# A tiny randomly initialised Stable-Diffusion-shaped model, built locally (tests, docs, benchmarks
# of exactness). Nothing is downloaded.
# -------------------------------------------------------------------------------------------------

TINY_WORDS = (
    "a",
    "the",
    "red",
    "blue",
    "green",
    "yellow",
    "circle",
    "square",
    "triangle",
    "on",
    "left",
    "right",
    "top",
    "bottom",
    "of",
    "and",
    "background",
    "small",
    "big",
    "photo",
    "cat",
    "dog",
)


def tiny_clip_tokenizer(directory: str, words: Sequence[str] = TINY_WORDS, max_length: int = 16) -> Any:
    """A real ``CLIPTokenizer`` over a tiny word vocabulary, written to ``directory``.

    Every word is one token: its BPE merges join characters right to left (``e + d</w> -> ed</w>``,
    ``r + ed</w> -> red</w>``), so no two words' merges interfere. Unknown words fall back to characters.
    """

    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    merges: list[str] = []
    letters = sorted(set("".join(words)) | set("abcdefghijklmnopqrstuvwxyz"))
    for c in letters:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for w in words:
        suffix = w[-1] + "</w>"
        for c in reversed(w[:-1]):
            merged = c + suffix
            if merged not in vocab:
                merges.append(f"{c} {suffix}")
                vocab[merged] = len(vocab)
            suffix = merged
    os.makedirs(directory, exist_ok=True)
    vpath, mpath = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
    with open(vpath, "w") as f:
        json.dump(vocab, f)
    with open(mpath, "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(vpath, mpath, model_max_length=max_length)


def tiny_random_components(
    directory: str, seed: int = 0, max_length: int = 16, image_size: int = 16, cross_attention_dim: int = 16
) -> dict[str, Any]:
    """Components of a tiny random ``StableDiffusionPipeline``: unet, vae, text_encoder, tokenizer, scheduler.

    UNet ``block_out_channels=(8, 16)`` with cross-attention, ``AutoencoderKL`` with factor 2,
    one-layer ``CLIPTextModel`` (hidden 16), SD's scaled-linear DDIM scheduler config. ``directory``
    holds the tokenizer files.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer(directory, max_length=max_length)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=image_size,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=cross_attention_dim,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=max_length,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    for m in (unet, vae, text_encoder):
        m.eval().requires_grad_(False)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def tiny_random_latent_model(
    directory: str, seed: int = 0, dtype: torch.dtype = torch.float32, **kw: Any
) -> LatentModel:
    """:func:`tiny_random_components` as a :class:`LatentModel` in ``dtype`` (float64 for exactness tests)."""
    c = tiny_random_components(directory, seed, **kw)
    model = LatentModel.from_components(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"])
    return model.to(dtype=dtype)
