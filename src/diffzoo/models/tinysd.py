"""TinySD: a Stable-Diffusion-shaped latent text-to-image model for the shapes world, and its classifier.

Built from the same library classes as Stable Diffusion (Rombach et al. 2022, Sec. 3.3), scaled down:

* a diffusers ``AutoencoderKL`` mapping 32x32x3 images to 8x8x4 latents (factor 4);
* a diffusers ``UNet2DConditionModel`` on 8x8x4 latents with cross-attention to the text;
* a transformers ``CLIPTextModel`` (hidden 64, 2 layers) over a word-level tokenizer built from the
  shapes-world caption vocabulary (:class:`ShapesTokenizer`).

:class:`TinySD` holds the three as one ``nn.Module`` (one state dict, one safetensors file in the zoo);
its ``forward(z_t, t, cond)`` is the UNet's epsilon prediction with ``cond`` = text embeddings, so a
generic denoiser wraps it. :func:`diffzoo.zoo.latent.latent_model` turns it into the
:class:`~diffzoo.latent.LatentModel` every inversion/editing method uses (a network never imports an
algorithm); :func:`diffzoo.zoo.latent.load_tinysd` does so for the zoo's ``tinysd``.

:class:`ShapesClassifier` is a small CNN that reads a 32x32 image and predicts, for each cell of the
3x3 grid, "empty" or one (shape, colour) pair, and the background: the attribute metric of issue 3.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from diffzoo.core.errors import check_tensor
from diffzoo.core.schedules import DiscreteSchedule, scaled_linear
from diffzoo.data import shapes
from diffzoo.models.registry import register_arch

Tensor = torch.Tensor

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
#: Context length of the text encoder: the longest caption plus BOS and EOS.
MAX_LENGTH = shapes.MAX_CAPTION_WORDS + 2


class ShapesTokenizer:
    """Word-level tokenizer over a fixed vocabulary: ``[<bos>, w_1, ..., w_n, <eos>, <pad>, ...]``.

    ``""`` encodes to ``[<bos>, <eos>, <pad>...]`` (the null prompt of classifier-free guidance). A word
    outside the vocabulary or a prompt longer than ``max_length - 2`` words raises ``ValueError`` (no
    silent truncation). Callable as ``tokenizer(list_of_prompts) -> LongTensor (B, max_length)``, so it
    is the ``tokenize`` of a :class:`~diffzoo.latent.model.LatentModel`.
    """

    def __init__(self, words: Sequence[str] = shapes.VOCAB, max_length: int = MAX_LENGTH):
        words = list(words)
        if len(set(words)) != len(words) or set(words) & set(SPECIAL_TOKENS):
            raise ValueError("words: must be distinct and must not contain special tokens")
        if max_length < 2:
            raise ValueError(f"max_length: must be >= 2 (BOS and EOS), got {max_length}")
        self.vocab = {w: i for i, w in enumerate(list(SPECIAL_TOKENS) + words)}
        self.words = list(self.vocab)
        self.max_length = int(max_length)
        self.pad_id, self.bos_id, self.eos_id = (self.vocab[t] for t in SPECIAL_TOKENS)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, prompt: str) -> list[int]:
        """Unpadded ids of one prompt (BOS ... EOS)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt: expected a str, got {type(prompt).__name__}")
        words = prompt.lower().replace(",", " ").split()
        unknown = [w for w in words if w not in self.vocab or w in SPECIAL_TOKENS]
        if unknown:
            raise ValueError(f"prompt: unknown word(s) {unknown} in {prompt!r}; the vocabulary is {self.words[3:]}")
        if len(words) + 2 > self.max_length:
            raise ValueError(
                f"prompt: {prompt!r} has {len(words) + 2} tokens (with BOS/EOS), more than max_length={self.max_length}"
            )
        return [self.bos_id] + [self.vocab[w] for w in words] + [self.eos_id]

    def __call__(self, prompts: Sequence[str]) -> Tensor:
        if isinstance(prompts, str):
            raise TypeError("prompts: expected a list of strings, got a single str")
        rows = [self.encode(p) for p in prompts]
        return torch.tensor([r + [self.pad_id] * (self.max_length - len(r)) for r in rows], dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        """The words of ``ids`` without special tokens."""
        return " ".join(self.words[int(i)] for i in ids if self.words[int(i)] not in SPECIAL_TOKENS)


# -------------------------------------------------------------------------------------------------
# Components
# -------------------------------------------------------------------------------------------------

DEFAULT_VAE = dict(block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=8)
DEFAULT_UNET = dict(
    block_out_channels=(48, 96), layers_per_block=1, attention_head_dim=8, norm_num_groups=16, cross_attention_dim=64
)
DEFAULT_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)


def build_vae(
    block_out_channels: Sequence[int] = DEFAULT_VAE["block_out_channels"],
    layers_per_block: int = 1,
    latent_channels: int = 4,
    norm_num_groups: int = 8,
    scaling_factor: float = 1.0,
    image_size: int = shapes.SIZE,
) -> nn.Module:
    """diffusers ``AutoencoderKL``; down-sampling factor ``2 ** (len(block_out_channels) - 1)``."""
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(block_out_channels),
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=image_size,
        scaling_factor=scaling_factor,
    )


def build_unet(
    block_out_channels: Sequence[int] = DEFAULT_UNET["block_out_channels"],
    layers_per_block: int = 1,
    attention_head_dim: int = 8,
    norm_num_groups: int = 16,
    cross_attention_dim: int = 64,
    latent_channels: int = 4,
    sample_size: int = 8,
) -> nn.Module:
    """diffusers ``UNet2DConditionModel``: cross-attention at the latent resolution and in the mid block
    (the text-to-image binding of SD's ``CrossAttn*Block2D``), plain ResNet blocks below."""
    from diffusers import UNet2DConditionModel

    n = len(block_out_channels)
    down = ("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (n - 1)
    up = ("UpBlock2D",) * (n - 1) + ("CrossAttnUpBlock2D",)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
    )


def build_text_encoder(
    vocab_size: int,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    max_length: int = MAX_LENGTH,
    tokenizer: ShapesTokenizer | None = None,
) -> nn.Module:
    """transformers ``CLIPTextModel`` (causal self-attention, as in CLIP) with the shapes vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tokenizer or ShapesTokenizer(max_length=max_length)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        max_position_embeddings=max_length,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    return CLIPTextModel(cfg)


def tinysd_schedule() -> DiscreteSchedule:
    """SD's 1000-step scaled-linear schedule (beta 0.00085 -> 0.012), ``abar`` at the end = ``abar_0``
    (diffusers' ``set_alpha_to_one=False``, as in SD's DDIM config)."""
    sch = scaled_linear(1000)
    sch.final_alpha_cumprod = float(sch.alphas_cumprod[0])
    return sch


def scheduler_config() -> dict[str, Any]:
    """The diffusers scheduler config equivalent to :func:`tinysd_schedule` (for ``from_components``)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        set_alpha_to_one=False,
        clip_sample=False,
        steps_offset=1,
    )


class TinySD(nn.Module):
    """VAE + UNet + text encoder of TinySD in one module (one state dict).

    ``forward(z_t, t, cond)`` is ``unet(z_t, t, encoder_hidden_states=cond).sample`` (epsilon).
    ``scaling_factor`` (a buffer, stored with the weights) is ``s`` in ``z = s * E(x)``, set after VAE
    training to ``1 / std`` of the training latents, as SD does (Rombach et al. 2022, Sec. 4.3.2).
    """

    def __init__(
        self,
        vae: dict | None = None,
        unet: dict | None = None,
        text: dict | None = None,
        max_length: int = MAX_LENGTH,
        extra_words: Sequence[str] = (),
    ):
        super().__init__()
        self.tokenizer = ShapesTokenizer(words=list(shapes.VOCAB) + list(extra_words), max_length=max_length)
        self.config = dict(
            vae={**DEFAULT_VAE, **(vae or {})},
            unet={**DEFAULT_UNET, **(unet or {})},
            text={**DEFAULT_TEXT, **(text or {})},
            max_length=max_length,
        )
        if extra_words:
            self.config["extra_words"] = list(extra_words)
        self.vae = build_vae(**self.config["vae"])
        ucfg = dict(self.config["unet"])
        ucfg.setdefault("latent_channels", self.config["vae"]["latent_channels"])
        ucfg["sample_size"] = shapes.SIZE // 2 ** (len(self.config["vae"]["block_out_channels"]) - 1)
        if ucfg["cross_attention_dim"] != self.config["text"]["hidden_size"]:
            raise ValueError(
                "unet.cross_attention_dim: must equal text.hidden_size "
                f"({ucfg['cross_attention_dim']} != {self.config['text']['hidden_size']})"
            )
        self.unet = build_unet(**ucfg)
        self.text_encoder = build_text_encoder(
            len(self.tokenizer), max_length=max_length, tokenizer=self.tokenizer, **self.config["text"]
        )
        self.register_buffer("scaling_factor", torch.tensor(1.0))

    def forward(self, z: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.unet(z, t, encoder_hidden_states=cond).sample

    def encode_text(self, prompts: Sequence[str]) -> Tensor:
        """``(B, L, D)`` text embeddings (last hidden state)."""
        ids = self.tokenizer(list(prompts)).to(self.scaling_factor.device)
        return self.text_encoder(ids).last_hidden_state

    def encode_latents(self, img: Tensor) -> Tensor:
        """``s * mean(E(x))`` of images in [-1, 1] (the UNet's data)."""
        return self.vae.encode(img).latent_dist.mean * self.scaling_factor

    def load_base(self, base: TinySD) -> None:
        """Copy every weight of ``base`` (a TinySD of the same shapes but possibly a smaller vocabulary and
        context): the text encoder's token and position embeddings keep ``base``'s rows; rows for the extra
        words start at the mean token embedding and extra positions copy ``base``'s last position."""
        own, src = self.state_dict(), base.state_dict()
        for k, v in src.items():
            if k not in own:
                raise ValueError(f"base: tensor {k!r} has no counterpart in this TinySD")
            if own[k].shape == v.shape:
                own[k] = v.clone()
            elif (
                k.endswith(("token_embedding.weight", "position_embedding.weight")) and own[k].shape[1:] == v.shape[1:]
            ):
                n = v.shape[0]
                fill = v.mean(0) if "token" in k else v[-1]
                own[k] = torch.cat([v, fill.expand(own[k].shape[0] - n, -1)])
            elif k.endswith("position_ids"):
                continue
            else:
                raise ValueError(f"base: tensor {k!r} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        self.load_state_dict(own)


@register_arch("tinysd")
def build_tinysd(**config: Any) -> TinySD:
    """Registry builder: ``build("tinysd", vae=..., unet=..., text=..., max_length=...)``."""
    return TinySD(**config)


# -------------------------------------------------------------------------------------------------
# Attribute classifier
# -------------------------------------------------------------------------------------------------


class ShapesClassifier(nn.Module):
    """Small CNN: image (B, 3, 32, 32) in [-1, 1] -> per-cell logits (B, 9, 16) and background (B, 4).

    Each of the 3x3 grid cells gets class 0 (empty) or ``1 + shape * 5 + colour``
    (:func:`diffzoo.data.shapes.cell_class`); so a scene's shapes, colours and positions are all read off.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())

        self.features = nn.Sequential(
            block(3, w),
            block(w, w),
            nn.MaxPool2d(2),  # 16x16
            block(w, 2 * w),
            block(2 * w, 2 * w),
            nn.MaxPool2d(2),  # 8x8
            block(2 * w, 4 * w),
        )
        self.cells = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * w * 64, 256),
            nn.SiLU(),
            nn.Linear(256, shapes.GRID**2 * shapes.NUM_CELL_CLASSES),
        )
        self.background = nn.Linear(4 * w, len(shapes.BACKGROUNDS))
        self.config = dict(width=width)

    def forward(self, img: Tensor) -> dict[str, Tensor]:
        check_tensor(img, "img", ndim=4, floating=True, shape=(None, 3, shapes.SIZE, shapes.SIZE))
        h = self.features(img)
        cells = self.cells(h).view(img.shape[0], shapes.GRID**2, shapes.NUM_CELL_CLASSES)
        return {"cells": cells, "background": self.background(h.mean(dim=(2, 3)))}

    @torch.no_grad()
    def predict(self, img: Tensor) -> dict[str, Tensor]:
        """Arg-max labels in the format of :func:`diffzoo.data.shapes.labels` (``cells``, ``background``)."""
        out = self(img)
        return {"cells": out["cells"].argmax(-1), "background": out["background"].argmax(-1)}


@register_arch("shapes-classifier")
def build_shapes_classifier(**config: Any) -> ShapesClassifier:
    return ShapesClassifier(**config)


def scene_correct(pred: dict[str, Tensor], scenes: Sequence[shapes.Scene], background: bool = True) -> Tensor:
    """Per-sample bool: every grid cell (empty or shape+colour) matches the scene, and (if
    ``background``) the background too. This is the "sample is correct" criterion of issue 3."""
    want = torch.stack([shapes.labels(s)["cells"] for s in scenes])
    ok = (pred["cells"].cpu() == want).all(-1)
    if background:
        bg = torch.tensor([shapes.BACKGROUNDS.index(s.background) for s in scenes])
        ok &= pred["background"].cpu() == bg
    return ok
