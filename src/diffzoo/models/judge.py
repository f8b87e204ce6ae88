"""A second, held-out judge of generated 8x8 digits: an MLP classifier (no convolutions).

The distillation benchmark grades students with two feature extractors: the shipped CNN
``digits-classifier`` (the one MMD-DDM fine-tunes against, so it must not be the only judge) and this
MLP, of a different architecture, trained from a different seed (zoo ``digits-judge-mlp``). The
Frechet distance under its penultimate features is the "held-out FD".

``DigitMLPClassifier()(x) -> logits`` for ``x`` of shape ``(B, 1, 8, 8)`` in ``[-1, 1]``;
``.features(x) -> (B, feat_dim)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_tensor
from diffzoo.models.registry import register_arch

Tensor = torch.Tensor


class DigitMLPClassifier(nn.Module):
    """flatten(64) -> hidden -> hidden -> ``feat_dim`` (LayerNorm, GELU) -> 10 logits."""

    def __init__(self, hidden: int = 256, feat_dim: int = 64, num_classes: int = 10, dropout: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, feat_dim),
            nn.GELU(),
        )
        self.head = nn.Linear(feat_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, feat_dim)``."""
        check_tensor(x, "x", ndim=4, floating=True, shape=(None, 1, 8, 8))
        return self.body(x)

    def forward(self, x: Tensor, t: Any = None, cond: Any = None) -> Tensor:
        return self.head(self.features(x))


@register_arch("digit_mlp_classifier")
def build_digit_mlp_classifier(**config: Any) -> DigitMLPClassifier:
    return DigitMLPClassifier(**config)
