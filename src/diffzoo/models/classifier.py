"""A small CNN classifier for 8x8 digits: the held-out judge of generated digits.

``DigitClassifier()(x) -> logits`` for ``x`` of shape ``(B, 1, 8, 8)`` in ``[-1, 1]``;
``.features(x) -> (B, feat_dim)`` is the penultimate representation used by the digits Frechet
distance (the FID recipe of Heusel et al. 2017, Sec. 3.1, with this classifier in place of Inception).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_tensor
from diffzoo.models.registry import register_arch

Tensor = torch.Tensor


class DigitClassifier(nn.Module):
    """conv32-conv64-pool-conv128-global-avg-pool -> ``feat_dim`` features -> 10 logits."""

    def __init__(self, ch: int = 32, feat_dim: int = 128, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, ch, 3, padding=1),
            nn.GroupNorm(8, ch),
            nn.SiLU(),
            nn.Conv2d(ch, 2 * ch, 3, padding=1),
            nn.GroupNorm(8, 2 * ch),
            nn.SiLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * ch, 4 * ch, 3, padding=1),
            nn.GroupNorm(8, 4 * ch),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * ch, feat_dim),
            nn.SiLU(),
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(feat_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, feat_dim)``."""
        check_tensor(x, "x", ndim=4, floating=True, shape=(None, 1, 8, 8))
        return self.body(x)

    def forward(self, x: Tensor, t: Any = None, cond: Any = None) -> Tensor:
        return self.head(self.drop(self.features(x)))


@register_arch("digit_classifier")
def build_digit_classifier(**config: Any) -> DigitClassifier:
    return DigitClassifier(**config)
