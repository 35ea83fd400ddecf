"""Building blocks shared by the decoders (layer 3, torch): conv-BN-ReLU, separable conv, resize.

Module structure decides state-dict key names, so these return plain ``nn.Sequential``s
whose indices are part of every checkpoint's keys: change them only with a key migration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def separable_conv_bn_relu(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=dilation, dilation=dilation, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def conv3x3_bn_relu(in_channels: int, out_channels: int, dilation: int = 1, *,
                    separable: bool = False) -> nn.Sequential:
    if separable:
        return separable_conv_bn_relu(in_channels, out_channels, dilation)
    return conv_bn_relu(in_channels, out_channels, 3, dilation=dilation)


def resize_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of ``x`` to the spatial size of ``reference``.
    Python ints, so a static export bakes the target size into the Resize node."""
    size = (int(reference.shape[-2]), int(reference.shape[-1]))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
