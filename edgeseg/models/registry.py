"""The model registry: the single entry point to every architecture (torch-free; Python 3.8).

Models are composed, not hand-wired (segmentation_models.pytorch's encoder/decoder registries,
timm's one build path):

- a backbone module registers its encoders with ``register_backbone`` (a builder taking keyword
  options, its family, where its ImageNet weights come from) and the model names it offers with
  ``register_composed`` (name -> backbone, decoder);
- a decoder module registers its decoder with ``register_decoder`` (a builder taking the built
  backbone, the class count and keyword options; what it needs of the backbone);
- ``create_model(name, **options)`` resolves the name to (backbone, decoder, options) and
  ``compose.build_composed`` builds backbone -> decoder -> 1x1 head, one way for every model.

Adding a backbone is one module (its encoder, ``register_backbone``, ``register_composed``),
listed in ``_zoo.py``; adding a decoder is the same with ``register_decoder``. The older form,
``@register_model`` over a whole-model factory, stays for models that are not composed (tests).
Registration is explicit and a duplicate name is a bug. This module imports no torch: the
builders are only called when a model is built.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InternalError, ModelError, UnknownModelError, close_names

DEFAULT_INPUT_SIZE = (512, 1024)


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a backbone's ImageNet weights come from and what of that file the backbone lacks."""

    source: str  # for error messages: "torchvision's shufflenet_v2_x0_5 weights (...)"
    classifier_prefixes: tuple[str, ...] = ()  # top-level key prefixes of the classifier ("fc.", "conv5.")


@dataclass(frozen=True)
class BackboneEntry:
    """An encoder: ``build(**options)`` -> an nn.Module whose ``forward(x)`` returns a list of features
    (highest resolution first) and whose ``out_channels`` / ``strides`` describe them."""

    name: str
    family: str
    build: Callable[..., Any]
    description: str = ""
    pretrained: PretrainedWeights | None = None
    init: Callable[[Any], None] | None = None  # after init_conv_bn on the whole model (e.g. zero-init blocks)
    options: tuple[str, ...] = ()  # the keyword options of ``build``


@dataclass(frozen=True)
class DecoderEntry:
    """A decoder: ``build(backbone, num_classes, **options)`` -> an nn.Module turning the feature list into
    one map of ``out_channels``; the model adds a 1x1 head to the classes."""

    name: str
    build: Callable[..., Any]
    description: str = ""
    backbone_defaults: Mapping[str, Any] = field(default_factory=dict)  # backbone options unless given
    backbone_requires: Mapping[str, Any] = field(default_factory=dict)  # backbone options it cannot do without
    requires_reason: str = ""  # why, for the error when another value is asked for
    model_class: Any = None  # a SegmentationModel subclass (None: SegmentationModel)
    options: tuple[str, ...] = ()  # the keyword options of ``build``


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # the backbone's family: "shufflenetv2", "hrnet"
    decoder: str  # "deeplabv3plus", "deeplabv3plus_sep", "deeplabv3", "dspp", "mdspp", "hrnetv2", "ocr"
    factory: Callable[..., Any]  # factory(num_classes=..., **options) -> nn.Module
    description: str = ""
    default_input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    backbone: str = ""  # the backbone entry of a composed model ("" for a plain factory)


_REGISTRY: dict[str, ModelInfo] = {}
_BACKBONES: dict[str, BackboneEntry] = {}
_DECODERS: dict[str, DecoderEntry] = {}


def _keyword_options(build: Callable[..., Any], skip: int) -> tuple[str, ...]:
    """The option names of a builder: its parameters after the first ``skip`` positional ones."""
    params = list(inspect.signature(build).parameters.values())[skip:]
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
        raise InternalError(f"{build.__qualname__} must name its options (no *args / **kwargs)")
    return tuple(p.name for p in params)


def register_backbone(name: str, *, family: str, description: str = "", pretrained: PretrainedWeights | None = None,
                      init: Callable[[Any], None] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``build(**options) -> backbone module`` as the backbone ``name``."""

    def wrap(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in _BACKBONES:
            raise InternalError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = BackboneEntry(name, family, build, description, pretrained, init,
                                         _keyword_options(build, 0))
        return build

    return wrap


def register_decoder(name: str, *, description: str = "", backbone_defaults: Mapping[str, Any] | None = None,
                     backbone_requires: Mapping[str, Any] | None = None, requires_reason: str = "",
                     model_class: Any = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``build(backbone, num_classes, **options) -> decoder module`` as the decoder ``name``."""

    def wrap(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in _DECODERS:
            raise InternalError(f"decoder {name!r} is registered twice")
        _DECODERS[name] = DecoderEntry(name, build, description, dict(backbone_defaults or {}),
                                       dict(backbone_requires or {}), requires_reason, model_class,
                                       _keyword_options(build, 2))
        return build

    return wrap


def _add(info: ModelInfo) -> None:
    if info.name in _REGISTRY:
        raise InternalError(f"model {info.name!r} is registered twice")
    _REGISTRY[info.name] = info


def register_composed(name: str, *, backbone: str, decoder: str, description: str = "",
                      default_input_size: tuple[int, int] = DEFAULT_INPUT_SIZE) -> ModelInfo:
    """Register the model ``name`` = the registered ``backbone`` + the registered ``decoder`` + a 1x1 head.
    ``description`` defaults to "<backbone description> + <decoder description>"."""
    for kind, part, known in (("backbone", backbone, _BACKBONES), ("decoder", decoder, _DECODERS)):
        if part not in known:
            raise InternalError(f"model {name!r}: no {kind} {part!r} is registered yet (import its module "
                                f"before composing a model of it)")

    def factory(num_classes: int = 19, **options: Any) -> Any:
        from .compose import build_composed  # torch: only when a model is built

        return build_composed(model_info(name), num_classes, options)

    factory.__name__ = factory.__qualname__ = name
    description = description or f"{_BACKBONES[backbone].description} + {_DECODERS[decoder].description}"
    info = ModelInfo(name, _BACKBONES[backbone].family, decoder, factory, description, default_input_size, backbone)
    _add(info)
    return info


def register_model(name: str, *, family: str, decoder: str, description: str = "",
                   default_input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
                   ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a whole-model ``factory(num_classes: int, **options) -> nn.Module`` under ``name``
    (a model that is not composed from registered parts, e.g. a test model)."""

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        _add(ModelInfo(name, family, decoder, factory, description, default_input_size))
        return factory

    return wrap


def _load_model_files() -> None:
    from . import _zoo  # noqa: F401  (imports every model file, which registers it)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style filter."""
    _load_model_files()
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def list_backbones() -> list[str]:
    _load_model_files()
    return sorted(_BACKBONES)


def list_decoders() -> list[str]:
    _load_model_files()
    return sorted(_DECODERS)


def model_info(name: str) -> ModelInfo:
    _load_model_files()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = close_names(name, _REGISTRY, n=4)
        raise UnknownModelError(
            f"unknown model {name!r}",
            expected="one of the registered models",
            found=name,
            fix=(f"did you mean {', '.join(close)}? " if close else "") + "run `edgeseg models` for the list",
        ) from None


def backbone_entry(name: str) -> BackboneEntry:
    _load_model_files()
    if name not in _BACKBONES:
        raise InternalError(f"no backbone {name!r} is registered (registered: {', '.join(sorted(_BACKBONES))})")
    return _BACKBONES[name]


def decoder_entry(name: str) -> DecoderEntry:
    _load_model_files()
    if name not in _DECODERS:
        raise InternalError(f"no decoder {name!r} is registered (registered: {', '.join(sorted(_DECODERS))})")
    return _DECODERS[name]


def backbone_of(model_name: str) -> BackboneEntry | None:
    """The backbone entry of a registered composed model; None for any other name."""
    _load_model_files()
    info = _REGISTRY.get(model_name)
    return _BACKBONES.get(info.backbone) if info is not None and info.backbone else None


def models_with_backbone(backbone: str) -> list[str]:
    """The registered models built on ``backbone``, in registration order."""
    _load_model_files()
    return [name for name, info in _REGISTRY.items() if info.backbone == backbone]


def create_model(name: str, num_classes: int = 19, **options: Any) -> Any:
    """Build a registered model (random init). Load weights with ``edgeseg.models.load_weights``."""
    info = model_info(name)
    if not isinstance(num_classes, int) or num_classes < 1 or num_classes > 255:
        raise ModelError(
            "num_classes must be an integer from 1 to 255 (masks are uint8, 255 = ignore)",
            found=repr(num_classes),
        )
    try:
        return info.factory(num_classes=num_classes, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ModelError(f"model {name!r} does not take that option", found=str(exc),
                             fix="leave it out (`edgeseg models` lists the models)") from None
        raise
