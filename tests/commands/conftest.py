"""Fixtures shared by the CLI tests: a tiny registered model (fast to export, train and build)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

TINY = "_tiny_test_model"


def _tiny_factory(num_classes: int = 19):  # -> SegmentationModel
    import torch
    from torch import nn

    from edgeseg.models.base import SegmentationModel

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.BatchNorm2d(8), nn.ReLU())

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [self.stem(x)]

    class First(nn.Module):
        def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
            return features[0]

    torch.manual_seed(0)
    return SegmentationModel(Backbone(), First(), nn.Conv2d(8, num_classes, 1), num_classes=num_classes, name=TINY)


@pytest.fixture()
def tiny_model() -> Iterator[str]:
    """Registers a tiny model for the CLI (idempotent) and removes it afterwards; yields its name."""
    from edgeseg.models import registry

    registry.list_models()  # load the zoo first so the removal below leaves it intact
    added = TINY not in registry._REGISTRY
    if added:
        registry.register_model(TINY, family="test", decoder="none")(_tiny_factory)
    yield TINY
    if added:
        registry._REGISTRY.pop(TINY, None)
