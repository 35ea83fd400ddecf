"""Fixtures shared by the CLI tests: a tiny registered model (fast to export, train and build)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.tiny_models import TINY, segmentation_model


@pytest.fixture()
def tiny_model() -> Iterator[str]:
    """Registers helpers.tiny_models.segmentation_model for the CLI (idempotent) and removes it afterwards;
    yields its name."""
    from edgeseg.models import registry

    registry.list_models()  # load the zoo first so the removal below leaves it intact
    added = TINY not in registry._REGISTRY
    if added:
        registry.register_model(TINY, family="test", decoder="none")(segmentation_model)
    yield TINY
    if added:
        registry._REGISTRY.pop(TINY, None)
