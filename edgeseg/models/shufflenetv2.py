"""ShuffleNetV2 encoder for segmentation (Ma et al., ECCV 2018).

The state dict matches torchvision's ``shufflenet_v2_x*`` key for key and shape, minus
``conv5`` and ``fc`` (the classifier parts), so ImageNet weights load with ``strict=True``:
``conv1`` (conv 3x3 s2, BN, ReLU), ``maxpool``, ``stage2..4`` (units; the first unit of a
stage has ``branch1``, every unit has ``branch2`` with the torchvision indices).

Output stride 16 / 8 by dilation: the first unit of stage4 (and of stage3 for OS 8) keeps
its ``branch1`` but runs at stride 1, and its depthwise convs plus the rest of the stage
use dilation 2 (stage4 at OS 16, stage3 at OS 8) or 4 (stage4 at OS 8). Layers and names
are unchanged, so the same ImageNet weights load at every output stride.

``forward`` returns [stride-4 (after maxpool), stage2, stage3, stage4] features.

Registered (the end of this file): the backbones ``shufflenetv2_{x0_5,x1_0,x1_5,x2_0}`` (option
``output_stride``: 32, 16 or 8; each decoder picks its default), and for each width the models
``shufflenetv2_<width>_{deeplabv3plus,deeplabv3plus_sep,deeplabv3,dspp,mdspp}`` (20 names): this
backbone + that registered decoder + a 1x1 classifier, so ``model.backbone`` loads torchvision's
ImageNet weights (minus conv5/fc) strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from . import deeplabv3, deeplabv3plus, speed_decoder  # noqa: F401  (register the decoders composed below)
from .registry import PretrainedWeights, register_backbone, register_composed

# stages_out_channels of torchvision (conv1, stage2, stage3, stage4; conv5 dropped).
WIDTH_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "x0_5": (24, 48, 96, 192),
    "x1_0": (24, 116, 232, 464),
    "x1_5": (24, 176, 352, 704),
    "x2_0": (24, 244, 488, 976),
}
STAGE_REPEATS = (4, 8, 4)
OUTPUT_STRIDES = (32, 16, 8)


def channel_shuffle(x: torch.Tensor, channels: int, groups: int = 2) -> torch.Tensor:
    """Interleave ``groups`` channel groups. ``channels`` is passed explicitly (not read from
    ``x``) so the exported Reshape carries constant channel counts."""
    batch, height, width = x.shape[0], x.shape[2], x.shape[3]
    x = x.reshape(batch, groups, channels // groups, height, width)
    x = x.transpose(1, 2)
    return x.reshape(batch, channels, height, width)


def _depthwise(channels: int, stride: int, dilation: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=dilation, dilation=dilation,
                     groups=channels, bias=False)


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class ShuffleUnit(nn.Module):
    """One ShuffleNetV2 unit.

    ``first=True``: the stage's entry unit, with ``branch1`` on the whole input and
    ``branch2`` on the whole input, concatenated (stride 2, or stride 1 when dilated).
    ``first=False``: channel split; ``branch2`` on the second half. Both end with a shuffle.
    """

    def __init__(self, in_channels: int, out_channels: int, *, first: bool, stride: int = 1,
                 dilation: int = 1) -> None:
        super().__init__()
        if out_channels % 2:
            raise ModelError("a ShuffleNetV2 unit needs an even number of output channels",
                             found=str(out_channels))
        if not first and (stride != 1 or in_channels != out_channels):
            raise ModelError("a split (non-entry) ShuffleNetV2 unit keeps stride 1 and its channel count",
                             found=f"stride {stride}, {in_channels} -> {out_channels} channels")
        half = out_channels // 2
        self.first = first
        self.out_channels = out_channels
        if first:
            self.branch1 = nn.Sequential(
                _depthwise(in_channels, stride, dilation),
                nn.BatchNorm2d(in_channels),
                _pointwise(in_channels, half),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            _pointwise(in_channels if first else half, half),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            _depthwise(half, stride, dilation),
            nn.BatchNorm2d(half),
            _pointwise(half, half),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )
        self._half = half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        else:
            # Slicing with constant bounds rather than chunk(): a plain Slice in ONNX.
            kept, processed = x[:, : self._half], x[:, self._half :]
            out = torch.cat((kept, self.branch2(processed)), dim=1)
        return channel_shuffle(out, self.out_channels)


class ShuffleNetV2Backbone(nn.Module):
    """ShuffleNetV2 encoder. ``out_channels`` and ``strides`` describe the 4 returned features."""

    def __init__(self, width: str = "x1_0", output_stride: int = 32) -> None:
        super().__init__()
        if width not in WIDTH_CHANNELS:
            raise ModelError(f"unknown ShuffleNetV2 width {width!r}", expected=", ".join(WIDTH_CHANNELS),
                             found=repr(width))
        if output_stride not in OUTPUT_STRIDES:
            raise ModelError("unsupported ShuffleNetV2 output stride",
                             expected=" or ".join(map(str, OUTPUT_STRIDES)), found=repr(output_stride))
        self.width = width
        self.output_stride = output_stride
        stem, *stage_channels = WIDTH_CHANNELS[width]

        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        strides = [4]
        current_stride, dilation, in_channels = 4, 1, stem
        self.stage2: nn.Sequential
        self.stage3: nn.Sequential
        self.stage4: nn.Sequential
        for index, (repeats, out_channels) in enumerate(zip(STAGE_REPEATS, stage_channels, strict=True), start=2):
            if current_stride < output_stride:
                stride = 2
                current_stride *= 2
            else:  # reached the output stride: keep resolution, widen the receptive field instead
                stride = 1
                dilation *= 2
            units = [ShuffleUnit(in_channels, out_channels, first=True, stride=stride, dilation=dilation)]
            units += [ShuffleUnit(out_channels, out_channels, first=False, dilation=dilation)
                      for _ in range(repeats - 1)]
            setattr(self, f"stage{index}", nn.Sequential(*units))
            strides.append(current_stride)
            in_channels = out_channels

        self.out_channels: list[int] = [stem, *stage_channels]
        self.strides: list[int] = strides

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stride4 = self.maxpool(self.conv1(x))
        stride8 = self.stage2(stride4)
        stride16 = self.stage3(stride8)
        deepest = self.stage4(stride16)
        return [stride4, stride8, stride16, deepest]


# --------------------------------------------------------------------------- registry
DECODERS = ("deeplabv3plus", "deeplabv3plus_sep", "deeplabv3", "dspp", "mdspp")  # registration order per width
CLASSIFIER_PREFIXES = ("conv5.", "fc.")  # torchvision's classifier: not in the segmentation backbone


def _register(width: str) -> None:
    def build(*, output_stride: int = 32) -> ShuffleNetV2Backbone:
        return ShuffleNetV2Backbone(width, output_stride)

    name = f"shufflenetv2_{width}"
    build.__name__ = build.__qualname__ = name
    source = f"torchvision's shufflenet_v2_{width} weights (ShuffleNet_V2_{width.upper()}_Weights.IMAGENET1K_V1)"
    register_backbone(name, family="shufflenetv2", description=f"ShuffleNetV2 {width.replace('_', '.')}",
                      pretrained=PretrainedWeights(source, CLASSIFIER_PREFIXES))(build)
    for decoder in DECODERS:
        register_composed(f"{name}_{decoder}", backbone=name, decoder=decoder)


for _width in WIDTH_CHANNELS:
    _register(_width)
