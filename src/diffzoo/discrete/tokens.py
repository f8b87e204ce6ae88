"""Token spaces: how a masked model's tokens map to images, and back (codebook, decoder, quantiser).

A discrete model over images needs three things besides the network, the same three a VQ model
(MaskGIT) has and the ones posterior samplers such as APS (arXiv 2510.02291) use: a codebook
``E`` (``K x d``), a decoder from token embeddings to pixels, and a quantiser from embeddings back to
tokens (nearest code). :class:`TokenSpace` holds them for two kinds of model:

* **pixel levels** (digits): one token per pixel, ``E_k`` the grey value of level ``k``
  (``d = 1``; :func:`levels_space`);
* **patch VQ** (the shapes world): one token per ``p x p`` RGB patch, ``E_k`` a patch of ``3 p^2``
  values learned by k-means over rendered scenes (:func:`kmeans`); the decoder tiles the patches.

In both cases the decoder is *linear* in the embeddings and a pure re-arrangement of coordinates
(each pixel belongs to exactly one token coordinate), so a per-pixel quantity (a gradient, the
diagonal of ``A^T A``) maps to token coordinates with :meth:`TokenSpace.image_to_embed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffzoo.core.errors import check_tensor
from diffzoo.discrete.masked import check_tokens

Tensor = torch.Tensor


@dataclass(frozen=True)
class TokenSpace:
    """Codebook ``(K, d)`` (float64), image shape ``(C, H, W)`` and patch side ``p`` (``d = C p^2``).

    Tokens are laid out row-major over the ``(H/p, W/p)`` patch grid (``L = H W / p^2``).
    """

    codebook: Tensor
    image_shape: tuple[int, int, int]
    patch: int = 1

    def __post_init__(self) -> None:
        c, h, w = self.image_shape
        p = self.patch
        if p < 1 or h % p or w % p:
            raise ValueError(f"patch: {p} must divide the image size {h}x{w}")
        check_tensor(self.codebook, "codebook", ndim=2, floating=True)
        if self.codebook.shape[1] != c * p * p:
            raise ValueError(f"codebook: code dimension {self.codebook.shape[1]} != C*p*p = {c * p * p}")
        object.__setattr__(self, "codebook", self.codebook.detach().to(torch.float64))

    @property
    def vocab_size(self) -> int:
        return int(self.codebook.shape[0])

    @property
    def seq_len(self) -> int:
        _, h, w = self.image_shape
        return (h // self.patch) * (w // self.patch)

    @property
    def dim(self) -> int:
        return int(self.codebook.shape[1])

    def image_to_embed(self, img: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> per-token vectors ``(B, L, d)`` (patchify; a permutation)."""
        c, h, w = self.image_shape
        p = self.patch
        check_tensor(img, "img", shape=(None, c, h, w))
        b = img.shape[0]
        x = img.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, self.seq_len, self.dim)

    def embed_to_image(self, e: Tensor) -> Tensor:
        """Per-token vectors ``(B, L, d)`` -> images ``(B, C, H, W)`` (the decoder; the inverse permutation)."""
        c, h, w = self.image_shape
        p = self.patch
        check_tensor(e, "e", shape=(None, self.seq_len, self.dim))
        b = e.shape[0]
        x = e.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, h, w)

    def check(self, x: Tensor, arg: str = "x", allow_mask: bool = False) -> Tensor:
        """Integer ids ``(B, L)`` in ``[0, K-1]`` (``[0, K]`` with ``allow_mask``; ``K`` = [MASK])."""

        check_tensor(x, arg, ndim=2, floating=False)
        if x.shape[1] != self.seq_len:
            raise ValueError(f"{arg}: sequence length {x.shape[1]} but this token space has {self.seq_len}")
        return check_tokens(x, self.vocab_size, arg, allow_mask=allow_mask)

    def embed(self, x: Tensor) -> Tensor:
        """Codes ``E[x]`` ``(B, L, d)`` of clean token ids."""
        self.check(x)
        return self.codebook.to(x.device)[x]

    def decode(self, x: Tensor) -> Tensor:
        """Clean token ids ``(B, L)`` -> images ``(B, C, H, W)`` (float64; a [MASK] is an error)."""
        return self.embed_to_image(self.embed(x))

    def quantize(self, e: Tensor) -> Tensor:
        """Nearest code of each vector ``(B, L, d)`` -> token ids ``(B, L)`` (:func:`nearest_code`)."""
        return nearest_code(e, self.codebook.to(e.device))

    def encode(self, img: Tensor) -> Tensor:
        """Images -> nearest-code token ids (the tokenizer)."""
        return self.quantize(self.image_to_embed(img.to(torch.float64)))

    def expected_embed(self, probs: Tensor) -> Tensor:
        """``sum_k p_ik E_k`` for predictive probabilities ``(B, L, K)``."""
        return probs.to(torch.float64) @ self.codebook.to(probs.device)

    def fully_observed(self, pixel_mask: Tensor) -> Tensor:
        """Tokens all of whose pixels are observed, from a pixel mask ``(C, H, W)`` or ``(H, W)``: ``(L,)`` bool."""
        c, h, w = self.image_shape
        m = pixel_mask.to(torch.float64)
        if m.dim() == 2:
            m = m.expand(c, h, w)
        return self.image_to_embed(m.reshape(1, c, h, w))[0].min(-1).values > 0.5


def levels_space(vocab_size: int, image_shape: tuple[int, int, int]) -> TokenSpace:
    """One token per pixel with ``K`` evenly spaced grey levels ``E_k = 2k/(K-1) - 1`` in ``[-1, 1]``."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size: expected >= 2, got {vocab_size}")
    return TokenSpace(torch.linspace(-1.0, 1.0, vocab_size, dtype=torch.float64)[:, None], tuple(image_shape), 1)


def token_space(model) -> TokenSpace:
    """The token space of a masked model: its own ``codebook`` buffer (patch VQ models), else pixel levels
    on a square single-channel image (digits: 17 levels on 8x8)."""
    cb = getattr(model, "codebook", None)
    if isinstance(cb, Tensor) and cb.numel():
        return TokenSpace(cb, tuple(int(v) for v in model.image_shape), int(model.patch))
    vocab, length = int(model.vocab_size), int(model.seq_len)
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"model: cannot infer an image layout for sequence length {length}")
    return levels_space(vocab, (1, side, side))


def kmeans(
    data: Tensor, k: int, iters: int = 25, generator: torch.Generator | None = None, chunk: int = 65536
) -> Tensor:
    """Lloyd's k-means with k-means++ seeding on ``data (N, d)``: the codebook ``(k, d)`` (float32).

    Empty clusters are re-seeded at the points farthest from their code. Deterministic given ``generator``.
    """
    check_tensor(data, "data", ndim=2, floating=True)
    n = data.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1..{n} (the number of points), got {k}")
    x = data.to(torch.float32)
    first = int(torch.randint(n, (1,), generator=generator))
    centers = [x[first]]
    d2 = (x - x[first]).pow(2).sum(1)
    for _ in range(1, k):  # k-means++
        idx = int(
            torch.multinomial(d2 / d2.sum() if float(d2.sum()) > 0 else torch.ones_like(d2), 1, generator=generator)
        )
        centers.append(x[idx])
        d2 = torch.minimum(d2, (x - x[idx]).pow(2).sum(1))
    c = torch.stack(centers)
    for _ in range(iters):
        assign, dist = _assign(x, c, chunk)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        c = torch.where(empty[:, None], c, sums / counts.clamp_min(1)[:, None])
        if bool(empty.any()):
            far = dist.argsort(descending=True)[: int(empty.sum())]
            c[empty] = x[far]
    return c


def nearest_code(e: Tensor, codebook: Tensor) -> Tensor:
    """``argmin_k ||e_i - E_k||^2`` computed as ``argmin_k (||E_k||^2 - 2 e_i . E_k)``: one float64 matmul,
    without a ``(..., K, d)`` difference tensor (~100x faster at 256 codes of dimension 48)."""
    cb = codebook.to(torch.float64)
    return ((cb * cb).sum(-1) - 2 * e.to(torch.float64) @ cb.T).argmin(-1)


def _assign(x: Tensor, c: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    out, dist = [], []
    cn = c.pow(2).sum(1)
    for i in range(0, x.shape[0], chunk):
        xi = x[i : i + chunk]
        d2 = xi.pow(2).sum(1, keepdim=True) - 2 * xi @ c.T + cn
        v, a = d2.min(1)
        out.append(a)
        dist.append(v)
    return torch.cat(out), torch.cat(dist)
