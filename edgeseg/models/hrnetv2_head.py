"""The HRNetV2 head (Wang et al., "Deep High-Resolution Representation Learning", 2019).

Every backbone feature is upsampled bilinearly (align_corners=False) to the first (highest
resolution) one and concatenated (``BranchConcat``, the HRNetV2 representation), then a 1x1 conv
(bias) -> BN -> ReLU keeps the concatenated width; the model's 1x1 head maps it to the classes at
stride 4 (on HRNet). Registered as the decoder ``hrnetv2`` (no options); the OCR decoder (ocr.py)
merges the features with the same ``BranchConcat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .layers import resize_to
from .registry import register_decoder


class BranchConcat(nn.Module):
    """Upsample branches 1..n bilinearly to branch 0 and concatenate them (HRNetV2 representation)."""

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        first = features[0]
        return torch.cat([first] + [resize_to(f, first) for f in features[1:]], dim=1)


class HRNetV2Decoder(nn.Module):
    """Concat of all branches -> 1x1 conv (bias) -> BN -> ReLU, at the first branch's stride."""

    def __init__(self, in_channels: Sequence[int]) -> None:
        super().__init__()
        channels = sum(in_channels)
        self.out_channels = channels
        self.concat = BranchConcat()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.concat(features))))


@register_decoder("hrnetv2", description="HRNetV2 head (all branches concatenated, 1x1 conv, BN, ReLU)")
def hrnetv2(backbone: Any, num_classes: int) -> HRNetV2Decoder:
    return HRNetV2Decoder(backbone.out_channels)
