"""A small bidirectional transformer over token sequences: the denoiser of masked discrete diffusion.

Time-agnostic by design (Zheng et al., *Masked Diffusion Models are Secretly Time-Agnostic Masked
Models ...*, arXiv 2409.02908, Sec. 3): the optimal masked-diffusion predictor ``p(x_0^i | x_t)``
depends only on which tokens are masked, so the network receives the tokens and no time.

Input: token ids ``(B, L)`` in ``[0, vocab_size]`` where id ``vocab_size`` is ``[MASK]``, or a relaxed
one-hot ``(B, L, vocab_size + 1)`` float tensor (used by straight-through estimators, e.g. LSD).
Output: logits ``(B, L, vocab_size)`` over the clean vocabulary (never ``[MASK]``).
"""

from __future__ import annotations

import torch
from torch import nn

from diffzoo.core.errors import check_tensor
from diffzoo.models.registry import register_arch


class MaskedTransformer(nn.Module):
    """Pre-LayerNorm bidirectional transformer encoder with learned position embeddings.

    Parameters
    ----------
    vocab_size: number of clean tokens ``K``; the mask id is ``K``.
    seq_len: sequence length ``L`` the model is trained for (other lengths are refused).
    d_model, n_layers, n_heads, ff_mult, dropout: the usual transformer sizes.
    codebook_dim, image_shape, patch: for a patch-VQ token model (the shapes world), the buffer
        ``codebook`` ``(K, codebook_dim)`` of patch codes, the image shape ``(C, H, W)`` and patch side it
        decodes to (see :mod:`diffzoo.discrete.tokens`); ``codebook_dim = 0`` (default): pixel levels.
    """

    def __init__(
        self,
        vocab_size: int = 17,
        seq_len: int = 64,
        d_model: int = 64,
        n_layers: int = 4,
        n_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.0,
        codebook_dim: int = 0,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        patch: int = 1,
    ) -> None:
        super().__init__()
        if vocab_size < 1 or seq_len < 1:
            raise ValueError(f"vocab_size/seq_len: expected positive values, got {vocab_size}, {seq_len}")
        self.vocab_size = int(vocab_size)
        self.mask_id = int(vocab_size)
        self.seq_len = int(seq_len)
        self.tok = nn.Embedding(vocab_size + 1, d_model)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, ff_mult * d_model, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        if codebook_dim:
            if image_shape is None or len(image_shape) != 3:
                raise ValueError(f"image_shape: a codebook model needs (C, H, W), got {image_shape}")
            self.register_buffer("codebook", torch.zeros(vocab_size, int(codebook_dim)))
            self.image_shape, self.patch = tuple(int(v) for v in image_shape), int(patch)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Token + position embeddings of ids ``(B, L)`` or relaxed one-hots ``(B, L, K+1)``."""
        if x.is_floating_point():
            check_tensor(x, "x", ndim=3, shape=(None, self.seq_len, self.vocab_size + 1))
            h = x @ self.tok.weight
        else:
            check_tensor(x, "x", ndim=2)
            if x.shape[1] != self.seq_len:
                raise ValueError(f"x: sequence length {x.shape[1]} but the model was trained for {self.seq_len}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) > self.mask_id):
                raise ValueError(
                    f"x: token ids must lie in [0, {self.mask_id}] ({self.mask_id} = [MASK]), "
                    f"got range [{int(x.min())}, {int(x.max())}]"
                )
            h = self.tok(x)
        return h + self.pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, L, K)`` of ``p_theta(x_0^i | x)`` for every position."""
        return self.head(self.norm(self.encoder(self.embed(x))))


@register_arch("masked-transformer")
def build_masked_transformer(**config) -> MaskedTransformer:
    """Registry builder for :class:`MaskedTransformer`."""
    return MaskedTransformer(**config)
