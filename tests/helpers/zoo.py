"""The model zoo as tests cover it, generated from the registry: every registered model, one model per decoder,
the checks every model must pass (tests/models/test_zoo.py runs them on the zoo; a backbone or decoder added by a
test module, ``registered_from``, gets the same), and the smallest input a model accepts."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from edgeseg.spec import SIZE_MULTIPLE


def zoo_models() -> list[str]:
    """Every registered model, sorted (the zoo tests' parameters)."""
    from edgeseg.models import list_models

    return list_models()


def first_model_per_decoder() -> dict[str, str]:
    """decoder -> the first registered model that uses it (registration order: the smallest variant first),
    for every decoder of the zoo (DeepLabV3+, DSPP, MDSPP, HRNetV2, OCR, and any added later)."""
    from edgeseg.models import registry

    registry.list_models()  # loads the zoo
    first: dict[str, str] = {}
    for name, info in registry._REGISTRY.items():  # the registry keeps registration order
        first.setdefault(info.decoder, name)
    return dict(sorted(first.items()))


@contextlib.contextmanager
def registered_from(module: str) -> Iterator[ModuleType]:
    """Run ``module`` (a model file: it registers backbones, decoders and models at import) on top of the zoo;
    afterwards the registry holds the zoo alone again."""
    from edgeseg.models import registry

    registry.list_models()  # the zoo first: it must not be what is undone
    tables: list[dict[str, Any]] = [registry._REGISTRY, registry._BACKBONES, registry._DECODERS]
    saved = [dict(table) for table in tables]
    sys.modules.pop(module, None)  # run it afresh: its registrations were undone the last time
    try:
        yield importlib.import_module(module)
    finally:
        sys.modules.pop(module, None)
        for table, before in zip(tables, saved, strict=True):
            table.clear()
            table.update(before)


# -- the checks every registered model passes ------------------------------------------------------------
def check_forward_shape_and_size_errors(name: str) -> None:
    import pytest
    import torch

    from edgeseg.errors import ConfigError
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=19).eval()
    assert isinstance(model.backbone, torch.nn.Module)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 128, 128))
        assert logits.shape == (1, 19, 128, 128) and logits.dtype == torch.float32
        assert torch.isfinite(logits).all()
        with pytest.raises(ConfigError) as info:
            model(torch.randn(1, 3, 100, 130))
    assert "height 100 -> 96 or 128" in str(info.value) and "width 130 -> 128 or 160" in str(info.value)


def check_backbone_features_highest_resolution_first(name: str) -> None:
    import torch

    from edgeseg.models import create_model

    model = create_model(name, num_classes=19).eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 128))
    assert isinstance(features, (list, tuple)) and len(features) >= 1
    heights = [f.shape[-2] for f in features]
    assert heights == sorted(heights, reverse=True) and heights[0] < 128
    assert [int(f.shape[1]) for f in features] == list(model.backbone.out_channels)
    assert [128 // h for h in heights] == list(model.backbone.strides)


def check_other_class_counts(name: str) -> None:
    import torch

    from edgeseg.models import create_model

    model = create_model(name, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 128, 128)).shape == (1, 5, 128, 128)


def check_export_and_onnxruntime_parity(name: str, folder: Path) -> None:
    import numpy as np
    import onnx
    import torch

    from edgeseg.export.checks import check_graph_for_tensorrt
    from edgeseg.export.onnx_export import ExportConfig, export_onnx
    from edgeseg.models import create_model
    from edgeseg.reference import load_reference
    from edgeseg.spec import InputSpec

    torch.manual_seed(0)
    model = create_model(name, num_classes=19)
    config = ExportConfig(model=name, num_classes=19, input_spec=InputSpec(128, 128), num_reference_samples=2)
    result = export_onnx(model, config, folder)
    assert result.parity.passed and result.parity.num_disagree == 0
    assert result.parity.num_ties < 0.01 * result.parity.num_pixels  # the agreement is measured, not excused
    proto = onnx.load(str(result.onnx_path))
    assert check_graph_for_tensorrt(proto) == []
    ops = {node.op_type for node in proto.graph.node}
    assert not ops & {"Shape", "ConstantOfShape", "NonZero"}
    reference = load_reference(result.reference_path)
    assert reference.labels.shape == (2, 128, 128) and np.isfinite(reference.top2).all()


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
