"""A backbone and a decoder added the way a new one is (#25 item 4): one module that builds them and registers
them, and the model names that compose them. Imported only through ``helpers.zoo.registered_from``, which undoes
its registrations afterwards (the real zoo's tests see the real zoo).

- backbone ``fakenet_s``: three strided conv stages (strides 4, 8, 16), option ``depth_scale``; its "ImageNet
  file" has a ``classifier.`` the backbone lacks.
- decoder ``fakehead``: the deepest feature -> 1x1 to ``mid_channels`` (option) -> BN -> ReLU.
- models ``fakenet_s_fakehead`` (both new), ``fakenet_s_deeplabv3plus`` (the new backbone, a zoo decoder) and
  ``hrnet_w18_small_v1_fakehead`` (a zoo backbone, the new decoder).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeseg.models.registry import PretrainedWeights, register_backbone, register_composed, register_decoder

BACKBONE = "fakenet_s"
DECODER = "fakehead"
MODELS = ("fakenet_s_fakehead", "fakenet_s_deeplabv3plus", "hrnet_w18_small_v1_fakehead")
IMAGENET_SOURCE = "fakenet's ImageNet weights (fakenet_s.pth)"


class FakeNet(nn.Module):
    def __init__(self, depth_scale: int = 1) -> None:
        super().__init__()
        widths = [8 * depth_scale, 16 * depth_scale, 32 * depth_scale]
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=4, padding=1), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(widths[0], widths[1], 3, stride=2, padding=1), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(widths[1], widths[2], 3, stride=2, padding=1), nn.ReLU())
        self.out_channels = widths
        self.strides = [4, 8, 16]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s4 = self.stem(x)
        s8 = self.stage2(s4)
        return [s4, s8, self.stage3(s8)]


class FakeHead(nn.Module):
    def __init__(self, in_channels: int, mid_channels: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels),
                                     nn.ReLU())
        self.out_channels = mid_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.project(features[-1])


@register_backbone(BACKBONE, family="fakenet", description="FakeNet S",
                   pretrained=PretrainedWeights(IMAGENET_SOURCE, ("classifier.",)))
def fakenet_s(*, depth_scale: int = 1) -> FakeNet:
    return FakeNet(depth_scale)


@register_decoder(DECODER, description="fake head (1x1 on the deepest feature)")
def fakehead(backbone: Any, num_classes: int, *, mid_channels: int = 24) -> FakeHead:
    return FakeHead(backbone.out_channels[-1], mid_channels)


register_composed("fakenet_s_fakehead", backbone=BACKBONE, decoder=DECODER, default_input_size=(64, 64))
register_composed("fakenet_s_deeplabv3plus", backbone=BACKBONE, decoder="deeplabv3plus")
register_composed("hrnet_w18_small_v1_fakehead", backbone="hrnet_w18_small_v1", decoder=DECODER)


def imagenet_file(depth_scale: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """A FakeNet "ImageNet" state dict: the backbone's keys plus a classifier."""
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in FakeNet(depth_scale).state_dict().items()}
    width = 32 * depth_scale
    state.update({"classifier.weight": torch.randn(1000, width), "classifier.bias": torch.zeros(1000)})
    return state
