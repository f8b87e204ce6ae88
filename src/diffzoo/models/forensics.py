"""Small binary detectors of the forensics family (a network only; the algorithms are in
:mod:`diffzoo.forensics`): the DIRE / raw-pixel classifier and the laundering patch classifier.

``ForensicCNN(in_ch, width, depth)(x) -> logits (B,)`` (positive = generated / synthetic / laundered),
for any input size: convolution blocks with stride-2 down-sampling, global average pooling and a linear
head -- the small-scale stand-in for the paper detectors' ResNet-50 (DIRE) and EfficientNet-B4
(laundering).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_tensor
from diffzoo.models.registry import register_arch

Tensor = torch.Tensor


class ForensicCNN(nn.Module):
    """conv(width)-[conv(2^k width, stride 2)]xdepth-GAP-linear -> one logit per image."""

    def __init__(self, in_ch: int = 1, width: int = 16, depth: int = 2, groups: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, width, 3, padding=1), nn.GroupNorm(groups, width), nn.SiLU()]
        ch = width
        for _ in range(depth):
            layers += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), nn.GroupNorm(groups, 2 * ch), nn.SiLU()]
            ch *= 2
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(ch, 1)
        self.in_ch = in_ch

    def forward(self, x: Tensor, t: Any = None, cond: Any = None) -> Tensor:
        check_tensor(x, "x", ndim=4, floating=True, shape=(None, self.in_ch, None, None))
        return self.head(self.body(x)).squeeze(-1)


@register_arch("forensic_cnn")
def build_forensic_cnn(**config: Any) -> ForensicCNN:
    return ForensicCNN(**config)
