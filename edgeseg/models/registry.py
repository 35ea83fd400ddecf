"""The model registry: the single entry point to every architecture.

Model files register a factory with ``@register_model``; users call ``create_model``
and ``list_models``. Registration is explicit and a duplicate name is a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InternalError, ModelError, UnknownModelError, close_names


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # "shufflenetv2" or "hrnet"
    decoder: str  # "deeplabv3plus", "deeplabv3plus_sep", "deeplabv3", "dspp", "mdspp", "hrnetv2", "ocr"
    factory: Callable[..., Any]
    description: str = ""
    default_input_size: tuple[int, int] = (512, 1024)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    family: str,
    decoder: str,
    description: str = "",
    default_input_size: tuple[int, int] = (512, 1024),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``factory(num_classes: int, **options) -> nn.Module`` under ``name``."""

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise InternalError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, family, decoder, factory, description, default_input_size)
        return factory

    return wrap


def _load_model_files() -> None:
    from . import _zoo  # noqa: F401  (imports every model file, which registers it)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style filter."""
    import fnmatch

    _load_model_files()
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


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
            raise ModelError(f"model {name!r} does not take that option", found=str(exc)) from None
        raise
