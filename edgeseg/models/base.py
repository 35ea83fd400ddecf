"""The one shape of every segmentation model: encoder (``backbone``) -> decoder -> head.

``backbone(x)`` returns a list of feature maps (highest resolution first); ``decoder``
turns them into one feature map; ``head`` maps it to class logits; the logits are
resized bilinearly (align_corners=False) to the input size.
"""

from __future__ import annotations

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
    """Kaiming-normal convs (fan_out, ReLU), zero biases; BatchNorm weight 1, bias 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
