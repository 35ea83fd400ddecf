"""The one build path of a composed model (layer 3, torch): backbone -> decoder -> 1x1 head.

``registry.create_model(name, **options)`` calls ``build_composed`` for every name registered with
``register_composed``: the options go to the backbone or the decoder by the names their builders
take (a decoder's ``backbone_defaults`` fill the backbone's unless given; its ``backbone_requires``
are fixed), then

    backbone = backbone_entry.build(**backbone_options)
    decoder = decoder_entry.build(backbone, num_classes, **decoder_options)
    head = Conv2d(decoder.out_channels, num_classes, 1)
    model = (decoder_entry.model_class or SegmentationModel)(backbone, decoder, head)
    init_conv_bn(model); backbone_entry.init(model.backbone)

in that order, so the random draws (and the state-dict keys) of every zoo model are those of its
hand-wired factory before #25.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import InternalError, ModelError
from .base import SegmentationModel, init_conv_bn
from .registry import (
    BackboneEntry,
    DecoderEntry,
    ModelInfo,
    backbone_entry,
    decoder_entry,
    model_info,
    models_with_backbone,
)


def split_options(info: ModelInfo, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(backbone options, decoder options) for ``create_model(info.name, **options)``, or a ModelError."""
    backbone, decoder = backbone_entry(info.backbone), decoder_entry(info.decoder)
    shared = sorted(set(backbone.options) & set(decoder.options))
    if shared:
        raise InternalError(f"backbone {backbone.name!r} and decoder {decoder.name!r} both take {shared}")
    takes = backbone.options + decoder.options
    unknown = [key for key in options if key not in takes]
    if unknown:
        raise ModelError(f"model {info.name!r} does not take that option",
                         expected=f"its options: {', '.join(takes)}" if takes else "no options",
                         found=", ".join(f"{key}={options[key]!r}" for key in unknown),
                         fix=f"leave {', '.join(unknown)} out (`edgeseg models` describes each model)")
    backbone_options = {k: v for k, v in decoder.backbone_defaults.items() if k in backbone.options}
    backbone_options.update((k, v) for k, v in options.items() if k in backbone.options)
    for key, needed in decoder.backbone_requires.items():
        if key not in backbone.options:
            continue
        if key in options and options[key] != needed:
            raise _unsupported(info, decoder, key, needed, options[key])
        backbone_options[key] = needed
    return backbone_options, {k: v for k, v in options.items() if k in decoder.options}


def _unsupported(info: ModelInfo, decoder: DecoderEntry, key: str, needed: Any, given: Any) -> ModelError:
    words = key.replace("_", " ")
    others = [name for name in models_with_backbone(info.backbone)
              if key not in decoder_entry(model_info(name).decoder).backbone_requires]
    return ModelError(
        f"{info.name} supports {words} {needed} only",
        expected=f"{key}={needed!r}" + (f" ({decoder.requires_reason})" if decoder.requires_reason else ""),
        found=f"{key}={given!r}",
        fix=f"leave {key} out" + (f", or use {others[0]} for another {words}" if others else ""),
    )


def build_composed(info: ModelInfo, num_classes: int, options: Mapping[str, Any]) -> SegmentationModel:
    """The model ``info`` names, with random init (see the module docstring)."""
    backbone_options, decoder_options = split_options(info, options)
    backbone: BackboneEntry = backbone_entry(info.backbone)
    decoder: DecoderEntry = decoder_entry(info.decoder)
    encoder = backbone.build(**backbone_options)
    neck = decoder.build(encoder, num_classes, **decoder_options)
    head = nn.Conv2d(neck.out_channels, num_classes, 1)
    model_class = decoder.model_class or SegmentationModel
    model = model_class(encoder, neck, head, num_classes=num_classes, name=info.name)
    init_conv_bn(model)
    if backbone.init is not None:
        backbone.init(model.backbone)
    return model
