"""An exact masked-model oracle for a known joint distribution over a tiny vocabulary (test/bench oracle).

For a joint ``P(x)`` over ``K^L`` sequences the Bayes-optimal masked model is
``p(x^i = k | x_unmasked) = sum_{x' consistent, x'^i = k} P(x') / sum_{x' consistent} P(x')``, which is
time-agnostic and consistent (Zheng et al., arXiv 2409.02908, Sec. 3). With it the first-hitting sampler
draws exactly from ``P``, and any sampler's output law can be checked against ``P`` by a chi-square test.
"""

from __future__ import annotations

import itertools

import torch

from diffzoo.core.errors import check_tensor
from diffzoo.discrete.masked import check_tokens


class JointOracle(torch.nn.Module):
    """Masked-model logits from an explicit joint ``probs`` of shape ``(K,) * L``."""

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        check_tensor(probs, "probs", floating=True)
        k = probs.shape[0]
        if any(s != k for s in probs.shape) or probs.ndim < 1:
            raise ValueError(f"probs: expected shape (K,)*L, got {tuple(probs.shape)}")
        self.vocab_size, self.seq_len = int(k), int(probs.ndim)
        states = torch.tensor(list(itertools.product(range(k), repeat=probs.ndim)), dtype=torch.long)
        self.register_buffer("states", states)  # (S, L), row-major = probs.flatten()
        self.register_buffer("joint", (probs / probs.sum()).flatten().to(torch.float64))

    def state_index(self, x: torch.Tensor) -> torch.Tensor:
        """Flat index of each clean sequence of ``x`` (``(B, L)``) into ``probs.flatten()``."""
        check_tokens(x, self.vocab_size, "x", allow_mask=False)
        w = self.vocab_size ** torch.arange(self.seq_len - 1, -1, -1)
        return (x * w).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tokens(x, self.vocab_size, "x")
        consistent = ((x[:, None, :] == self.vocab_size) | (x[:, None, :] == self.states[None])).all(-1)
        w = consistent.to(torch.float64) * self.joint[None]  # (B, S)
        onehot = torch.nn.functional.one_hot(self.states, self.vocab_size).to(torch.float64)  # (S, L, K)
        marg = torch.einsum("bs,slk->blk", w, onehot)
        return torch.log(marg.clamp_min(1e-300)) - torch.log(w.sum(1).clamp_min(1e-300))[:, None, None]
