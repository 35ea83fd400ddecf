"""ShuffleNetV2 segmentation models: 4 widths x 5 decoders = 20 registered names.

``shufflenetv2_{x0_5,x1_0,x1_5,x2_0}_{deeplabv3plus,deeplabv3plus_sep,deeplabv3,dspp,mdspp}``.
All are ``SegmentationModel(backbone=ShuffleNetV2Backbone, decoder, head=1x1 classifier)``, so
``model.backbone`` loads torchvision ImageNet weights (minus conv5/fc) strictly.

- ``deeplabv3plus``: options ``output_stride`` (16 default; 32, 16 or 8),
  ``low_level_stride`` (4 default, or 8) and ``separable`` (False default).
- ``deeplabv3plus_sep``: the same with depthwise-separable atrous and decoder convs (the
  paper's mobile option, about 10x fewer decoder MACs); options ``output_stride``,
  ``low_level_stride``.
- ``deeplabv3``: ASPP on the deepest feature, no decoder (``deeplabv3.py``); option
  ``output_stride`` (16 default; 32, 16 or 8).
- ``dspp`` / ``mdspp``: the SPEED decoder; output stride 32 only (it upsamples from /32
  with three stride-2 transposed convs).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import ModelError
from .base import SegmentationModel, init_conv_bn
from .deeplabv3 import DeepLabV3Decoder
from .deeplabv3plus import DeepLabV3PlusDecoder
from .registry import register_model
from .shufflenetv2 import WIDTH_CHANNELS, ShuffleNetV2Backbone
from .speed_decoder import SPEEDDecoder

DECODERS = ("deeplabv3plus", "deeplabv3plus_sep", "deeplabv3", "dspp", "mdspp")
DEFAULT_INPUT_SIZE = (512, 1024)


def model_name(width: str, decoder: str) -> str:
    return f"shufflenetv2_{width}_{decoder}"


def build_deeplabv3plus(width: str, num_classes: int, *, output_stride: int = 16, low_level_stride: int = 4,
                        separable: bool = False) -> SegmentationModel:
    if not isinstance(separable, bool):
        raise ModelError("the separable option takes true or false", found=repr(separable))
    backbone = ShuffleNetV2Backbone(width, output_stride)
    decoder = DeepLabV3PlusDecoder(backbone.out_channels, backbone.strides, low_level_stride=low_level_stride,
                                   separable=separable)
    head = nn.Conv2d(decoder.out_channels, num_classes, 1)
    model = SegmentationModel(backbone, decoder, head, num_classes=num_classes,
                              name=model_name(width, "deeplabv3plus_sep" if separable else "deeplabv3plus"))
    init_conv_bn(model)
    return model


def build_deeplabv3(width: str, num_classes: int, *, output_stride: int = 16) -> SegmentationModel:
    backbone = ShuffleNetV2Backbone(width, output_stride)
    decoder = DeepLabV3Decoder(backbone.out_channels, backbone.strides)
    head = nn.Conv2d(decoder.out_channels, num_classes, 1)
    model = SegmentationModel(backbone, decoder, head, num_classes=num_classes, name=model_name(width, "deeplabv3"))
    init_conv_bn(model)
    return model


def build_speed(width: str, pyramid: str, num_classes: int, *, output_stride: int = 32) -> SegmentationModel:
    if output_stride != 32:
        raise ModelError(
            f"{model_name(width, pyramid)} supports output stride 32 only",
            expected="output_stride=32 (the SPEED decoder upsamples /32 -> /4 with transposed convs)",
            found=f"output_stride={output_stride!r}",
            fix=f"leave output_stride out, or use {model_name(width, 'deeplabv3plus')} for output stride 16 or 8",
        )
    backbone = ShuffleNetV2Backbone(width, 32)
    decoder = SPEEDDecoder(backbone.out_channels, backbone.strides, pyramid=pyramid)
    head = nn.Conv2d(decoder.out_channels, num_classes, 1)
    model = SegmentationModel(backbone, decoder, head, num_classes=num_classes, name=model_name(width, pyramid))
    init_conv_bn(model)
    return model


def _deeplabv3plus_factory(width: str) -> Callable[..., SegmentationModel]:
    def factory(num_classes: int = 19, *, output_stride: int = 16, low_level_stride: int = 4,
                separable: bool = False) -> SegmentationModel:
        return build_deeplabv3plus(width, num_classes, output_stride=output_stride,
                                   low_level_stride=low_level_stride, separable=separable)

    return factory


def _deeplabv3plus_sep_factory(width: str) -> Callable[..., SegmentationModel]:
    def factory(num_classes: int = 19, *, output_stride: int = 16, low_level_stride: int = 4) -> SegmentationModel:
        return build_deeplabv3plus(width, num_classes, output_stride=output_stride,
                                   low_level_stride=low_level_stride, separable=True)

    return factory


def _deeplabv3_factory(width: str) -> Callable[..., SegmentationModel]:
    def factory(num_classes: int = 19, *, output_stride: int = 16) -> SegmentationModel:
        return build_deeplabv3(width, num_classes, output_stride=output_stride)

    return factory


def _speed_factory(width: str, pyramid: str) -> Callable[..., SegmentationModel]:
    def factory(num_classes: int = 19, *, output_stride: int = 32) -> SegmentationModel:
        return build_speed(width, pyramid, num_classes, output_stride=output_stride)

    return factory


_DESCRIPTIONS = {
    "deeplabv3plus": "DeepLabV3+ (ASPP 256, 48-ch stride-4 skip, two 3x3 convs), output stride 16 (32/16/8)",
    "deeplabv3plus_sep": "DeepLabV3+ with depthwise-separable atrous ASPP and decoder convs (the paper's mobile "
                         "option), output stride 16 (32/16/8)",
    "deeplabv3": "DeepLabV3 (ASPP 256 on the deepest feature, no decoder, logits resized from /16), "
                 "output stride 16 (32/16/8)",
    "dspp": "SPEED decoder with DSPP pyramids (bins 2/4/6/8), output stride 32",
    "mdspp": "SPEED decoder with MDSPP pyramids (bins 2/4/6/8, groups 2+6, 4+8), output stride 32",
}


_DEEPLAB_FACTORIES: dict[str, Callable[[str], Callable[..., SegmentationModel]]] = {
    "deeplabv3plus": _deeplabv3plus_factory,
    "deeplabv3plus_sep": _deeplabv3plus_sep_factory,
    "deeplabv3": _deeplabv3_factory,
}


def _register_all() -> None:
    for width in WIDTH_CHANNELS:
        pretty = width.replace("_", ".")
        for decoder in DECODERS:
            factory = (_DEEPLAB_FACTORIES[decoder](width) if decoder in _DEEPLAB_FACTORIES
                       else _speed_factory(width, decoder))
            factory.__name__ = factory.__qualname__ = model_name(width, decoder)
            register_model(
                model_name(width, decoder),
                family="shufflenetv2",
                decoder=decoder,
                description=f"ShuffleNetV2 {pretty} + {_DESCRIPTIONS[decoder]}",
                default_input_size=DEFAULT_INPUT_SIZE,
            )(factory)


_register_all()
