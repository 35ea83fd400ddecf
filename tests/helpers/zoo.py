"""The model zoo as tests cover it: one model per decoder family, at the smallest input it accepts."""

from __future__ import annotations

from typing import Any

from edgeseg.spec import SIZE_MULTIPLE


def first_model_per_decoder() -> dict[str, str]:
    """decoder -> the first registered model that uses it (registration order: the smallest variant first),
    for every decoder of the zoo (DeepLabV3+, DSPP, MDSPP, HRNetV2, OCR, and any added later)."""
    from edgeseg.models import registry

    registry.list_models()  # loads the zoo
    first: dict[str, str] = {}
    for name, info in registry._REGISTRY.items():  # the registry keeps registration order
        first.setdefault(info.decoder, name)
    return dict(sorted(first.items()))


def smallest_input_size(model: Any, *, largest: int = 1024) -> tuple[int, int]:
    """The smallest square input (a multiple of SIZE_MULTIPLE) a zoo model (in eval mode) runs on: its forward
    pass raises ConfigError below it (e.g. the SPEED pyramids need a stride-16 feature of 8x8: 128x128)."""
    import torch

    from edgeseg.errors import ConfigError

    for side in range(SIZE_MULTIPLE, largest + 1, SIZE_MULTIPLE):
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, side, side))
        except ConfigError:
            continue
        return side, side
    raise AssertionError(f"{type(model).__name__} runs on no square input up to {largest}x{largest}")
