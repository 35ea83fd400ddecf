"""HRNetV2-W18-Small v1/v2 backbones (HRNet-Semantic-Segmentation configs) and their models.

The backbone keeps four parallel branches (strides 4, 8, 16, 32) and fuses them by
summation after every module. Module and state-dict names follow the official
HighResolutionNet and timm's ``hrnet_w18_small`` / ``hrnet_w18_small_v2`` (``conv1``,
``bn1``, ``layer1.0.conv1``, ``transition1.1.0.0``, ``stage2.0.branches.0.0.conv1``,
``stage2.0.fuse_layers.1.0.0`` ...), so ImageNet backbone weights load strictly once the
classification-only keys are dropped (``backbone_state_dict``).

One deliberate difference from timm: a lower-resolution input is upsampled *bilinearly*
(align_corners=False) inside the fuse layers, as in the segmentation code the small
models were trained with; timm's classifier uses nearest. No parameters are involved.

Registered (the end of this file): the backbones ``hrnet_w18_small_v1`` / ``_v2`` (no options;
ImageNet weights from timm) and the models ``hrnet_w18_small_v1``, ``hrnet_w18_small_v2``
(+ the ``hrnetv2`` decoder, hrnetv2_head.py) and ``hrnet_w18_small_v2_ocr`` (+ ``ocr``, ocr.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ..errors import ModelError
from . import hrnetv2_head, ocr  # noqa: F401  (register the decoders composed below)
from .layers import resize_to
from .registry import PretrainedWeights, register_backbone, register_composed


# --------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class StageConfig:
    num_modules: int
    block: str  # "basic" or "bottleneck"
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]

    @property
    def num_branches(self) -> int:
        return len(self.num_channels)


@dataclass(frozen=True)
class HRNetConfig:
    name: str
    stage1: StageConfig  # the single-branch ``layer1``
    stage2: StageConfig
    stage3: StageConfig
    stage4: StageConfig
    stem_channels: int = 64


W18_SMALL_V1 = HRNetConfig(
    name="w18_small_v1",
    stage1=StageConfig(1, "bottleneck", (1,), (32,)),
    stage2=StageConfig(1, "basic", (2, 2), (16, 32)),
    stage3=StageConfig(1, "basic", (2, 2, 2), (16, 32, 64)),
    stage4=StageConfig(1, "basic", (2, 2, 2, 2), (16, 32, 64, 128)),
)
W18_SMALL_V2 = HRNetConfig(
    name="w18_small_v2",
    stage1=StageConfig(1, "bottleneck", (2,), (64,)),
    stage2=StageConfig(1, "basic", (2, 2), (18, 36)),
    stage3=StageConfig(3, "basic", (2, 2, 2), (18, 36, 72)),
    stage4=StageConfig(2, "basic", (2, 2, 2, 2), (18, 36, 72, 144)),
)
HRNET_CONFIGS: dict[str, HRNetConfig] = {c.name: c for c in (W18_SMALL_V1, W18_SMALL_V2)}

# Top-level modules of the timm/official classifier that the segmentation backbone lacks.
CLASSIFICATION_ONLY = ("incre_modules", "downsamp_modules", "final_layer", "classifier")
# edgeseg HRNet config -> timm model name (tests/golden/hrnet_make_keys.py records their keys).
TIMM_NAMES = {"w18_small_v1": "hrnet_w18_small", "w18_small_v2": "hrnet_w18_small_v2"}


# --------------------------------------------------------------------------- blocks
def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _make_blocks(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, count: int) -> nn.Sequential:
    """``count`` residual blocks; the first gets a 1x1 conv + BN shortcut when channels change."""
    downsample = None
    if inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, 1, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, count)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- modules
class HighResolutionModule(nn.Module):
    """Parallel branches of residual blocks, then every output sums every input (fuse = SUM)."""

    def __init__(self, in_channels: Sequence[int], stage: StageConfig) -> None:
        super().__init__()
        block = _BLOCKS[stage.block]
        self.out_channels = [c * block.expansion for c in stage.num_channels]
        self.branches = nn.ModuleList(
            _make_blocks(block, cin, planes, count)
            for cin, planes, count in zip(in_channels, stage.num_channels, stage.num_blocks, strict=True)
        )
        channels = self.out_channels
        self.fuse_layers = nn.ModuleList()
        for i in range(len(channels)):
            row = nn.ModuleList()
            for j in range(len(channels)):
                if j > i:  # lower resolution: 1x1 + BN here, bilinear upsampling in forward
                    row.append(_conv_bn(channels[j], channels[i], 1, relu=False))
                elif j == i:
                    row.append(nn.Identity())
                else:  # higher resolution: (i - j) stride-2 3x3 convs, ReLU on all but the last
                    steps = [_conv_bn(channels[j], channels[j], 3, 2) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if len(xs) == 1:
            return xs
        fused = []
        for i, row in enumerate(self.fuse_layers):
            total = xs[i]
            for j, layer in enumerate(cast(nn.ModuleList, row)):
                if j == i:
                    continue
                y = layer(xs[j])
                total = total + (resize_to(y, xs[i]) if j > i else y)
            fused.append(self.relu(total))
        return fused


class _Stage(nn.Sequential):
    """A chain of HighResolutionModules passing a list of branch tensors."""

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:  # type: ignore[override]
        for module in self:
            xs = module(xs)
        return xs


def _make_transition(previous: Sequence[int], current: Sequence[int]) -> nn.ModuleList:
    """Existing branches: 3x3 conv only if the width changes. New branches: a chain of
    stride-2 3x3 convs from the lowest-resolution previous branch."""
    layers = nn.ModuleList()
    for i, cout in enumerate(current):
        if i < len(previous):
            layers.append(_conv_bn(previous[i], cout, 3) if previous[i] != cout else nn.Identity())
        else:
            steps = [_conv_bn(previous[-1], previous[-1], 3, 2) for _ in range(i - len(previous))]
            steps.append(_conv_bn(previous[-1], cout, 3, 2))
            layers.append(nn.Sequential(*steps))
    return layers


class HRNetBackbone(nn.Module):
    """HRNet encoder: ``forward(x)`` -> [stride 4, 8, 16, 32] features, highest resolution first."""

    def __init__(self, config: HRNetConfig) -> None:
        super().__init__()
        self.config = config
        stem = config.stem_channels
        self.conv1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)

        s1 = config.stage1
        block1 = _BLOCKS[s1.block]
        self.layer1 = _make_blocks(block1, stem, s1.num_channels[0], s1.num_blocks[0])
        channels = [s1.num_channels[0] * block1.expansion]

        self.transition1, self.stage2, channels = self._stage(channels, config.stage2)
        self.transition2, self.stage3, channels = self._stage(channels, config.stage3)
        self.transition3, self.stage4, channels = self._stage(channels, config.stage4)
        self.out_channels: list[int] = channels
        self.strides = [4, 8, 16, 32][: len(channels)]

    @staticmethod
    def _stage(previous: list[int], stage: StageConfig) -> tuple[nn.ModuleList, _Stage, list[int]]:
        width = [c * _BLOCKS[stage.block].expansion for c in stage.num_channels]
        transition = _make_transition(previous, width)
        modules = []
        for _ in range(stage.num_modules):
            module = HighResolutionModule(width, stage)
            width = module.out_channels
            modules.append(module)
        return transition, _Stage(*modules), width

    @staticmethod
    def _branch_inputs(transition: nn.ModuleList, ys: list[torch.Tensor]) -> list[torch.Tensor]:
        # a new branch starts from the lowest-resolution output of the previous stage
        return [layer(ys[i] if i < len(ys) else ys[-1]) for i, layer in enumerate(transition)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        ys = self.stage2(self._branch_inputs(self.transition1, ys))
        ys = self.stage3(self._branch_inputs(self.transition2, ys))
        return self.stage4(self._branch_inputs(self.transition3, ys))


def backbone_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the classification-only parts of an official/timm ImageNet HRNet checkpoint
    (and a leading ``module.`` from DataParallel) so ``HRNetBackbone.load_state_dict``
    can load the rest with ``strict=True``."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.split(".", 1)[0] not in CLASSIFICATION_ONLY:
            out[key] = value
    return out


def zero_init_residuals(backbone: nn.Module) -> None:
    """The backbone entry's init, after ``init_conv_bn`` on the whole model (Kaiming fan_out convs, BN =
    identity, zero conv biases, as timm's HRNet): the last BN of every residual block starts at zero (each
    block starts as the identity). With plain identity BNs the fused sums compound and an untrained model's
    logits reach 1e4-1e5, which breaks absolute-tolerance checks and INT8 calibration of random models.
    """
    for m in backbone.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


def hrnet_config(name: str) -> HRNetConfig:
    if name not in HRNET_CONFIGS:
        raise ModelError("unknown HRNet configuration", expected=", ".join(HRNET_CONFIGS), found=name)
    return HRNET_CONFIGS[name]


# --------------------------------------------------------------------------- registry
def _register(config: HRNetConfig) -> None:
    def build() -> HRNetBackbone:
        return HRNetBackbone(config)

    name = f"hrnet_{config.name}"
    build.__name__ = build.__qualname__ = name
    source = f"timm's {TIMM_NAMES[config.name]} weights"
    pretty = "HRNetV2-W18-Small-" + config.name.rsplit("_", 1)[1]
    register_backbone(name, family="hrnet", description=pretty, init=zero_init_residuals,
                      pretrained=PretrainedWeights(source, tuple(f"{p}." for p in CLASSIFICATION_ONLY)))(build)


for _config in HRNET_CONFIGS.values():
    _register(_config)
register_composed("hrnet_w18_small_v1", backbone="hrnet_w18_small_v1", decoder="hrnetv2",
                  description="HRNetV2-W18-Small-v1 + HRNetV2 head (paper: 1.5M params, 70.3 mIoU Cityscapes val)")
register_composed("hrnet_w18_small_v2", backbone="hrnet_w18_small_v2", decoder="hrnetv2",
                  description="HRNetV2-W18-Small-v2 + HRNetV2 head (paper: 3.9M params, 76.2 mIoU Cityscapes val)")
register_composed("hrnet_w18_small_v2_ocr", backbone="hrnet_w18_small_v2", decoder="ocr",
                  description="HRNetV2-W18-Small-v2 + OCR head (256 mid / 128 key channels)")
