"""Object-Contextual Representations (OCR) head (Yuan et al., HRNet-OCR).

    features -> aux head (1x1, BN, ReLU, 1x1) -> soft object regions (aux logits)
    features -> 3x3 conv to ``mid_channels`` + BN + ReLU -> pixel representations
    SpatialGather: softmax over HW of each region x pixels -> one vector per class (B x C x K x 1)
    SpatialOCR: attention of every pixel over the K object vectors -> object context,
                concat with the pixels -> 1x1 + BN + ReLU + dropout
    classifier (the model's ``head``): 1x1 to the classes

Sub-module names follow HRNet-OCR (``aux_head``, ``conv3x3_ocr``, ``ocr_gather_head``,
``ocr_distri_head.object_context_block.f_pixel`` ...). As there, the value (``f_down``) and
output (``f_up``) projections are 1x1 conv + BN + ReLU. Attention is over K class vectors,
never HW x HW, so memory stays linear in the image size; every reshape uses sizes read at
trace time, so the ONNX graph (opset 17) has static shapes: MatMul + Softmax only.

Deployment sees only ``forward(x) -> logits``; training uses ``forward_with_aux(x)``. Registered as
the decoder ``ocr`` (options ``ocr_mid_channels``, ``ocr_key_channels``, ``dropout``) on any
backbone: its features are merged as HRNetV2 does (``BranchConcat``), and the model is an
``OCRSegmentationModel``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ..spec import check_size
from .base import SegmentationModel
from .hrnetv2_head import BranchConcat
from .registry import register_decoder


def _bn_relu(channels: int) -> nn.Sequential:
    # HRNet-OCR's ModuleHelper.BNReLU: kept nested so state-dict keys read ``f_pixel.1.0.weight``.
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


def _proj(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 1, bias=False), _bn_relu(cout)]


class SpatialGather(nn.Module):
    """Object region representations: for every class k, the softmax(HW)-weighted mean of the pixels."""

    def forward(self, features: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
        b, c, h, w = (int(s) for s in features.shape)
        k = int(region_logits.shape[1])
        regions = F.softmax(region_logits.reshape(b, k, h * w), dim=2)  # B x K x HW
        pixels = features.reshape(b, c, h * w).permute(0, 2, 1)  # B x HW x C
        objects = torch.matmul(regions, pixels)  # B x K x C
        return objects.permute(0, 2, 1).unsqueeze(3)  # B x C x K x 1


class ObjectAttentionBlock(nn.Module):
    """Pixels (query) attend to object vectors (key/value): softmax(q k^T / sqrt(key_channels)) v."""

    def __init__(self, in_channels: int, key_channels: int) -> None:
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(*_proj(in_channels, key_channels), *_proj(key_channels, key_channels))
        self.f_object = nn.Sequential(*_proj(in_channels, key_channels), *_proj(key_channels, key_channels))
        self.f_down = nn.Sequential(*_proj(in_channels, key_channels))
        self.f_up = nn.Sequential(*_proj(key_channels, in_channels))

    def forward(self, pixels: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        b, _, h, w = (int(s) for s in pixels.shape)
        k = int(objects.shape[2])
        kc = self.key_channels
        query = self.f_pixel(pixels).reshape(b, kc, h * w).permute(0, 2, 1)  # B x HW x Kc
        key = self.f_object(objects).reshape(b, kc, k)  # B x Kc x K
        value = self.f_down(objects).reshape(b, kc, k).permute(0, 2, 1)  # B x K x Kc
        attention = F.softmax(torch.matmul(query, key) * (kc**-0.5), dim=-1)  # B x HW x K
        context = torch.matmul(attention, value).permute(0, 2, 1).reshape(b, kc, h, w)
        return self.f_up(context)


class SpatialOCR(nn.Module):
    """Object context for every pixel, concatenated with the pixel -> 1x1 + BN + ReLU + dropout."""

    def __init__(self, in_channels: int, key_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.object_context_block = ObjectAttentionBlock(in_channels, key_channels)
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2 * in_channels, out_channels, 1, bias=False), _bn_relu(out_channels), nn.Dropout2d(dropout)
        )

    def forward(self, pixels: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        context = self.object_context_block(pixels, objects)
        return self.conv_bn_dropout(torch.cat([context, pixels], dim=1))


class OCRDecoder(nn.Module):
    """OCR decoder. ``merge`` turns the backbone's feature list into one map (e.g. HRNet's
    branch concat); ``forward`` returns the OCR-augmented features (``mid_channels``)."""

    def __init__(self, in_channels: int, num_classes: int, *, merge: nn.Module, mid_channels: int = 256,
                 key_channels: int = 128, dropout: float = 0.05) -> None:
        super().__init__()
        for label, value in (("ocr_mid_channels", mid_channels), ("ocr_key_channels", key_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelError(f"{label} must be a positive integer", found=repr(value))
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ModelError("dropout must be a number in [0, 1)", found=repr(dropout))
        self.out_channels = mid_channels
        self.merge = merge
        self.aux_head = nn.Sequential(  # same shape as the HRNetV2 head
            nn.Conv2d(in_channels, in_channels, 1),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, num_classes, 1),
        )
        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, 1, 1),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
        )
        self.ocr_gather_head = SpatialGather()
        self.ocr_distri_head = SpatialOCR(mid_channels, key_channels, mid_channels, dropout)

    def forward_with_aux(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(OCR features, aux logits), both at the resolution of the merged features."""
        merged = self.merge(features)
        aux = self.aux_head(merged)
        pixels = self.conv3x3_ocr(merged)
        objects = self.ocr_gather_head(pixels, aux)
        return self.ocr_distri_head(pixels, objects), aux

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.forward_with_aux(features)[0]


class OCRSegmentationModel(SegmentationModel):
    """SegmentationModel whose decoder is an ``OCRDecoder``.

    ``forward(x)`` returns only the final logits (the export/eval contract);
    ``forward_with_aux(x)`` returns ``(out, aux)`` logits, both at input size, for training
    (HRNet-OCR weights the aux loss by 0.4).
    """

    decoder: OCRDecoder

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        check_size(height, width, what=f"{self.model_name or 'model'} input")
        features, aux = self.decoder.forward_with_aux(self.backbone(x))
        out = self.head(features)
        size = (height, width)
        return (F.interpolate(out, size=size, mode="bilinear", align_corners=False),
                F.interpolate(aux, size=size, mode="bilinear", align_corners=False))


@register_decoder("ocr", model_class=OCRSegmentationModel,
                  description="OCR head (HRNetV2 representation -> object regions -> object-context attention)")
def ocr(backbone: Any, num_classes: int, *, ocr_mid_channels: int = 256, ocr_key_channels: int = 128,
        dropout: float = 0.05) -> OCRDecoder:
    return OCRDecoder(sum(backbone.out_channels), num_classes, merge=BranchConcat(), mid_channels=ocr_mid_channels,
                      key_channels=ocr_key_channels, dropout=dropout)
