"""The one shape of every segmentation model: encoder (``backbone``) -> decoder -> head.

``backbone(x)`` returns a list of feature maps (highest resolution first); ``decoder``
turns them into one feature map; ``head`` maps it to class logits; the logits are
resized bilinearly (align_corners=False) to the input size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import check_size


class SegmentationModel(nn.Module):
    def __init__(self, backbone: nn.Module, decoder: nn.Module, head: nn.Module, *, num_classes: int,
                 name: str = "") -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.head = head
        self.num_classes = num_classes
        self.model_name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        check_size(height, width, what=f"{self.model_name or 'model'} input")
        features = self.backbone(x)
        logits = self.head(self.decoder(features))
        if tuple(logits.shape[-2:]) != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits


def init_conv_bn(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU), zero biases; BatchNorm weight 1, bias 0.

    Grouped (depthwise) convs: std sqrt(1 / fan_out of one group). torch's fan_out counts every
    output channel, so each depthwise conv shrank its input ~channels-fold and an untrained
    ShuffleNetV2 in eval mode had a stride-32 feature of ~1e-6 (random-weight DeepLabV3 exports
    were all ties). Gain 1, not 2: ShuffleNetV2's depthwise convs feed a BN without ReLU; the
    separable decoders share it, which keeps untrained logits at a few units.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            height, width = module.kernel_size
            fan_out = module.out_channels // module.groups * height * width
            nn.init.normal_(module.weight, 0.0, math.sqrt(1.0 / fan_out))  # the same draws, rescaled
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
