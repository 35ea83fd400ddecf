"""DeepLabV3+ decoder (Chen et al., ECCV 2018) for any backbone that returns a feature list.

ASPP (256 ch) on the deepest feature: a 1x1 branch, three atrous 3x3 branches and image
pooling (global average -> 1x1 -> BN -> ReLU -> bilinear back), concatenated, projected by
1x1 256 -> BN -> ReLU -> dropout 0.1. Rates follow the paper: 6/12/18 at output stride 16,
12/24/36 at 8. At output stride 32 (not in the paper) we halve the OS16 rates to 3/6/9, so
each branch covers the same image area as at OS16 and still fits a 16x32 feature (512x1024).

Decoder: the low-level feature (stride 4 by default, 8 optional) is projected 1x1 -> 48 ch
(BN, ReLU); the ASPP output is resized bilinearly (align_corners=False) to its size,
concatenated, then two 3x3 convs of 256 (BN, ReLU). The class head (1x1) is not part of
this module; ``SegmentationModel`` resizes the logits to the input size.

``separable=True`` (off by default; registered as ``shufflenetv2_<width>_deeplabv3plus_sep``)
is the paper's mobile option: the atrous ASPP branches and the two decoder convs become
depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU. With plain convs the two 256-ch
3x3 convs at stride 4 dominate the cost (about 42 of the 46 GMACs of the x0.5 model at
512x1024; 6.6 GMACs separable). DeepLabV3 (``deeplabv3.py``) reuses ``ASPP``.

Registered decoders: ``deeplabv3plus`` (options ``low_level_stride``, ``separable``) and
``deeplabv3plus_sep`` (separable, option ``low_level_stride``); both ask the backbone for output
stride 16 unless the model is given another ``output_stride``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .layers import conv3x3_bn_relu, conv_bn_relu, resize_to
from .registry import register_decoder

ASPP_RATES: dict[int, tuple[int, int, int]] = {32: (3, 6, 9), 16: (6, 12, 18), 8: (12, 24, 36)}
LOW_LEVEL_STRIDES = (4, 8)
DEFAULT_OUTPUT_STRIDE = {"output_stride": 16}  # the backbone option the DeepLab decoders default to


class ImagePooling(nn.Module):
    """Global average -> 1x1 -> BN -> ReLU -> bilinear back. AdaptiveAvgPool2d(1) exports
    as GlobalAveragePool, which is static-shape safe."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.project = conv_bn_relu(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.project(self.pool(x)), x)


class ASPP(nn.Module):
    def __init__(self, in_channels: int, rates: tuple[int, ...], out_channels: int = 256,
                 dropout: float = 0.1, *, separable: bool = False) -> None:
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels)]
            + [conv3x3_bn_relu(in_channels, out_channels, rate, separable=separable) for rate in self.rates]
            + [ImagePooling(in_channels, out_channels)]
        )
        self.project = nn.Sequential(
            conv_bn_relu(out_channels * len(self.branches), out_channels),
            nn.Dropout(dropout),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """Turns [features...] (highest resolution first) into one 256-ch map at the low-level stride.

    ``in_channels`` / ``strides``: the backbone's ``out_channels`` / ``strides``; the deepest
    feature's stride picks the ASPP rates; the low-level feature is the first one at
    ``low_level_stride``.
    """

    def __init__(self, in_channels: list[int], strides: list[int], *, low_level_stride: int = 4,
                 aspp_channels: int = 256, low_level_channels: int = 48, decoder_channels: int = 256,
                 separable: bool = False) -> None:
        super().__init__()
        output_stride = strides[-1]
        if output_stride not in ASPP_RATES:
            raise ModelError("DeepLabV3+ needs a backbone output stride of 32, 16 or 8", found=str(output_stride))
        if low_level_stride not in LOW_LEVEL_STRIDES or low_level_stride not in strides[:-1]:
            raise ModelError(
                "unsupported low_level_stride for DeepLabV3+",
                expected=" or ".join(str(s) for s in LOW_LEVEL_STRIDES if s in strides[:-1]),
                found=repr(low_level_stride),
            )
        self.low_level_index = strides.index(low_level_stride)
        self.output_stride = output_stride
        self.separable = separable
        self.aspp = ASPP(in_channels[-1], ASPP_RATES[output_stride], aspp_channels, separable=separable)
        self.low_level = conv_bn_relu(in_channels[self.low_level_index], low_level_channels)
        self.fuse = nn.Sequential(
            conv3x3_bn_relu(aspp_channels + low_level_channels, decoder_channels, separable=separable),
            conv3x3_bn_relu(decoder_channels, decoder_channels, separable=separable),
        )
        self.out_channels = decoder_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low_level = self.low_level(features[self.low_level_index])
        context = resize_to(self.aspp(features[-1]), low_level)
        return self.fuse(torch.cat((context, low_level), dim=1))


@register_decoder("deeplabv3plus", backbone_defaults=DEFAULT_OUTPUT_STRIDE,
                  description="DeepLabV3+ (ASPP 256, 48-ch stride-4 skip, two 3x3 convs), output stride 16 (32/16/8)")
def deeplabv3plus(backbone: Any, num_classes: int, *, low_level_stride: int = 4,
                  separable: bool = False) -> DeepLabV3PlusDecoder:
    if not isinstance(separable, bool):
        raise ModelError("the separable option takes true or false", found=repr(separable))
    return DeepLabV3PlusDecoder(backbone.out_channels, backbone.strides, low_level_stride=low_level_stride,
                                separable=separable)


@register_decoder("deeplabv3plus_sep", backbone_defaults=DEFAULT_OUTPUT_STRIDE,
                  description="DeepLabV3+ with depthwise-separable atrous ASPP and decoder convs (the paper's mobile "
                              "option), output stride 16 (32/16/8)")
def deeplabv3plus_sep(backbone: Any, num_classes: int, *, low_level_stride: int = 4) -> DeepLabV3PlusDecoder:
    return DeepLabV3PlusDecoder(backbone.out_channels, backbone.strides, low_level_stride=low_level_stride,
                                separable=True)
