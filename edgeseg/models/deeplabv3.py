"""DeepLabV3 decoder (Chen et al., "Rethinking Atrous Convolution", 2017): ASPP, no decoder.

The ASPP of ``deeplabv3plus.py`` (256 ch: 1x1, three atrous 3x3 at the output stride's
rates, image pooling; concatenated and projected 1x1 -> BN -> ReLU -> dropout) runs on the
deepest feature and is the whole decoder: the 1x1 class head works at the output stride
and ``SegmentationModel`` resizes the logits to the input (x16 at the default OS 16).
Cheaper than DeepLabV3+ (no stride-4 convs) and coarser at object borders. Registered as the
decoder ``deeplabv3`` (no options; output stride 16 unless the model is given another).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .deeplabv3plus import ASPP, ASPP_RATES, DEFAULT_OUTPUT_STRIDE
from .registry import register_decoder


class DeepLabV3Decoder(nn.Module):
    """[features...] (highest resolution first) -> one ``aspp_channels`` map at the deepest feature's stride."""

    def __init__(self, in_channels: list[int], strides: list[int], *, aspp_channels: int = 256) -> None:
        super().__init__()
        output_stride = strides[-1]
        if output_stride not in ASPP_RATES:
            raise ModelError("DeepLabV3 needs a backbone output stride of 32, 16 or 8", found=str(output_stride))
        self.output_stride = output_stride
        self.aspp = ASPP(in_channels[-1], ASPP_RATES[output_stride], aspp_channels)
        self.out_channels = aspp_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.aspp(features[-1])


@register_decoder("deeplabv3", backbone_defaults=DEFAULT_OUTPUT_STRIDE,
                  description="DeepLabV3 (ASPP 256 on the deepest feature, no decoder, logits resized from /16), "
                              "output stride 16 (32/16/8)")
def deeplabv3(backbone: Any, num_classes: int) -> DeepLabV3Decoder:
    return DeepLabV3Decoder(backbone.out_channels, backbone.strides)
