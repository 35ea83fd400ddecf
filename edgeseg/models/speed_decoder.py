"""DSPP, MDSPP and the SPEED decoder (Papa et al., "SPEED", IEEE Access 2022).

Pyramid pooling: per bin b in (2, 4, 6, 8), AvgPool with kernel = stride = (H // b, W // b),
a separable 3x3 conv, and a bilinear resize back. H and W are Python ints in ``forward`` so a
static export bakes the kernels into AveragePool nodes (never AdaptiveAvgPool2d(k > 1), which
does not export when sizes do not divide); floor division can give a b x b' grid, as in the
original. DSPP concatenates the input and the 4 branches; MDSPP pairs bins (2, 6) and (4, 8).

The decoder runs on a stride-32 encoder: 1x1 to 256, then three up-stages (ConvTranspose 3x3
s2, the pyramid on stages 2 and 3, concat with the backbone skip, separable conv) of 128 / 64 /
32 channels. The widths are fixed rather than SPEED's "largest power of 2 <= C/4" rule, which
would leave 8 channels on ShuffleNetV2's thin skips. A feature smaller than a bin raises a
ConfigError naming the minimum input size. Registered as the decoders ``dspp`` and ``mdspp`` (no
options); both require a backbone at output stride 32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError
from ..spec import SIZE_MULTIPLE
from .registry import register_decoder

PYRAMID_BINS = (2, 4, 6, 8)
MDSPP_GROUPS = ((2, 6), (4, 8))


class SeparableConv2d(nn.Sequential):
    """Keras' SeparableConv2D(depth_multiplier=1, 'same'): depthwise 3x3 + pointwise 1x1."""

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)


def _minimum_input(feature_stride: int | None, largest_bin: int) -> str:
    if feature_stride is None:
        return f"a feature map of at least {largest_bin}x{largest_bin}"
    side = feature_stride * largest_bin
    side = -(-side // SIZE_MULTIPLE) * SIZE_MULTIPLE
    return f"an input of at least {side}x{side} (the pooled feature is at stride {feature_stride})"


class _PyramidPooling(nn.Module):
    """Average-pool at each bin, run that bin's branch, resize back: a list of H x W maps."""

    def __init__(self, branches: list[nn.Module], bins: tuple[int, ...], feature_stride: int | None) -> None:
        super().__init__()
        if len(branches) != len(bins) or any(b < 1 for b in bins):
            raise ModelError("pyramid bins must be positive, one branch per bin", found=str(bins))
        self.bins = tuple(bins)
        self.branches = nn.ModuleList(branches)
        self.feature_stride = feature_stride

    def pooled_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        outputs = []
        for bin_size, branch in zip(self.bins, self.branches, strict=True):
            kernel = (height // bin_size, width // bin_size)
            if min(kernel) == 0:
                raise ConfigError(
                    f"the feature map ({height}x{width}) is smaller than the pyramid bin {bin_size}",
                    expected=_minimum_input(self.feature_stride, max(self.bins)),
                    found=f"feature {height}x{width}"
                    + (f" (input about {height * self.feature_stride}x{width * self.feature_stride})"
                       if self.feature_stride else ""),
                    fix="export / build the model at a larger input size (--input-size HxW)",
                )
            pooled = F.avg_pool2d(x, kernel_size=kernel, stride=kernel)
            outputs.append(F.interpolate(branch(pooled), size=(height, width), mode="bilinear",
                                         align_corners=False))
        return outputs


class DSPP(_PyramidPooling):
    """Depthwise separable pyramid pooling: concat[input, branch(bin) for bin in bins]."""

    def __init__(self, in_channels: int, branch_channels: int = 128, *, bins: tuple[int, ...] = PYRAMID_BINS,
                 feature_stride: int | None = None) -> None:
        super().__init__([SeparableConv2d(in_channels, branch_channels, bias=True) for _ in bins], bins,
                         feature_stride)
        self.out_channels = in_channels + branch_channels * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, *self.pooled_branches(x)], dim=1)


class MDSPP(_PyramidPooling):
    """Mixed depthwise separable pyramid pooling: concat[group A, group B, input]."""

    def __init__(self, in_channels: int, filters: int, *, bins: tuple[int, ...] = PYRAMID_BINS,
                 groups: tuple[tuple[int, ...], ...] = MDSPP_GROUPS, feature_stride: int | None = None) -> None:
        if filters % 4:
            raise ModelError("MDSPP filters must be a multiple of 4", found=str(filters))
        grouped = sorted(b for group in groups for b in group)
        if grouped != sorted(bins):
            raise ModelError("MDSPP groups must use every bin exactly once", expected=str(bins), found=str(groups))
        super().__init__([SeparableConv2d(in_channels, filters // 4, bias=False) for _ in bins], bins,
                         feature_stride)
        self.groups = tuple(tuple(group) for group in groups)
        self._group_indices = [[self.bins.index(b) for b in group] for group in self.groups]
        self.group_convs = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                SeparableConv2d(len(group) * (filters // 4), filters // 2, bias=False),
                nn.ReLU(),
            )
            for group in self.groups
        )
        self.out_channels = len(self.groups) * (filters // 2) + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = self.pooled_branches(x)
        grouped = [conv(torch.cat([branches[i] for i in indices], dim=1))
                   for conv, indices in zip(self.group_convs, self._group_indices, strict=True)]
        return torch.cat([*grouped, x], dim=1)


def make_pyramid(kind: str, in_channels: int, filters: int, feature_stride: int) -> DSPP | MDSPP:
    """The up-stage pyramid: both kinds add ``filters`` channels to ``in_channels``."""
    if kind == "dspp":
        return DSPP(in_channels, filters // 4, feature_stride=feature_stride)
    if kind == "mdspp":
        return MDSPP(in_channels, filters, feature_stride=feature_stride)
    raise ModelError("unknown SPEED pyramid", expected="dspp or mdspp", found=repr(kind))


class UpStage(nn.Module):
    """[pyramid ->] ConvTranspose 3x3 s2 -> concat skip -> ReLU -> separable conv -> ReLU."""

    def __init__(self, in_channels: int, up_channels: int, skip_channels: int, out_channels: int,
                 pyramid: nn.Module | None = None) -> None:
        super().__init__()
        self.pyramid = pyramid if pyramid is not None else nn.Identity()
        pyramid_channels = getattr(pyramid, "out_channels", in_channels)
        # padding 1 + output_padding 1: exactly 2x the input size (Keras 'same').
        self.upsample = nn.ConvTranspose2d(pyramid_channels, up_channels, 3, stride=2, padding=1,
                                           output_padding=1, bias=False)
        self.fuse = nn.Sequential(
            nn.ReLU(),
            SeparableConv2d(up_channels + skip_channels, out_channels, bias=False),
            nn.ReLU(),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat((self.upsample(self.pyramid(x)), skip), dim=1))


class SPEEDDecoder(nn.Module):
    """SPEED decoder on features [/4, /8, /16, /32]; returns a ``stage_channels[-1]`` map at /4."""

    def __init__(self, in_channels: list[int], strides: list[int], *, pyramid: str = "mdspp",
                 bottleneck_channels: int = 256, stage_channels: tuple[int, int, int] = (128, 64, 32)) -> None:
        super().__init__()
        if list(strides) != [4, 8, 16, 32]:
            raise ModelError("the SPEED decoder needs backbone features at strides 4, 8, 16, 32 (output stride 32)",
                             found=f"strides {list(strides)}")
        skip4, skip8, skip16, deepest = in_channels
        c16, c8, c4 = stage_channels
        self.pyramid_kind = pyramid
        self.bottleneck = nn.Conv2d(deepest, bottleneck_channels, 1)
        self.up16 = UpStage(bottleneck_channels, c16, skip16, c16)
        self.up8 = UpStage(c16, c8, skip8, c8, make_pyramid(pyramid, c16, c8, feature_stride=16))
        self.up4 = UpStage(c8, c4, skip4, c4, make_pyramid(pyramid, c8, c4, feature_stride=8))
        self.out_channels = c4

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        stride4, stride8, stride16, stride32 = features
        x = self.up16(self.bottleneck(stride32), stride16)
        x = self.up8(x, stride8)
        return self.up4(x, stride4)


_OUTPUT_STRIDE_32 = {"output_stride": 32}
_WHY_32 = "the SPEED decoder upsamples /32 -> /4 with transposed convs"


@register_decoder("dspp", backbone_requires=_OUTPUT_STRIDE_32, requires_reason=_WHY_32,
                  description="SPEED decoder with DSPP pyramids (bins 2/4/6/8), output stride 32")
def dspp(backbone: Any, num_classes: int) -> SPEEDDecoder:
    return SPEEDDecoder(backbone.out_channels, backbone.strides, pyramid="dspp")


@register_decoder("mdspp", backbone_requires=_OUTPUT_STRIDE_32, requires_reason=_WHY_32,
                  description="SPEED decoder with MDSPP pyramids (bins 2/4/6/8, groups 2+6, 4+8), output stride 32")
def mdspp(backbone: Any, num_classes: int) -> SPEEDDecoder:
    return SPEEDDecoder(backbone.out_channels, backbone.strides, pyramid="mdspp")
