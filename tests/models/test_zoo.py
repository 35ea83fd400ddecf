"""Every registered model, generated from the registry: shapes, size errors, ONNX export and parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeseg.errors import ConfigError, InternalError, ModelError
from edgeseg.export.checks import check_graph_for_tensorrt
from edgeseg.export.onnx_export import ExportConfig, export_onnx
from edgeseg.models import create_model, list_models, model_info, register_model
from edgeseg.reference import load_reference
from edgeseg.spec import InputSpec

MODELS = list_models()


def test_the_zoo_is_complete() -> None:
    families = {model_info(name).family for name in MODELS}
    decoders = {model_info(name).decoder for name in MODELS}
    assert len(MODELS) >= 15 and families == {"shufflenetv2", "hrnet"}
    assert decoders >= {"deeplabv3plus", "dspp", "mdspp", "hrnetv2", "ocr"}


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_size_errors(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=19).eval()
    assert isinstance(model.backbone, nn.Module)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 128, 128))
        assert logits.shape == (1, 19, 128, 128) and logits.dtype == torch.float32
        assert torch.isfinite(logits).all()
        with pytest.raises(ConfigError) as info:
            model(torch.randn(1, 3, 100, 130))
    assert "height 100 -> 96 or 128" in str(info.value) and "width 130 -> 128 or 160" in str(info.value)


@pytest.mark.parametrize("name", MODELS)
def test_backbone_features_highest_resolution_first(name: str) -> None:
    model = create_model(name, num_classes=19).eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 128))
    assert isinstance(features, (list, tuple)) and len(features) >= 1
    heights = [f.shape[-2] for f in features]
    assert heights == sorted(heights, reverse=True) and heights[0] < 128


@pytest.mark.parametrize("name", MODELS)
def test_other_class_counts(name: str) -> None:
    model = create_model(name, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 128, 128)).shape == (1, 5, 128, 128)


@pytest.mark.parametrize("name", MODELS)
def test_export_and_onnxruntime_parity(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=19)
    config = ExportConfig(model=name, num_classes=19, input_spec=InputSpec(128, 128), num_reference_samples=2)
    result = export_onnx(model, config, tmp_path)
    assert result.parity.passed and result.parity.num_disagree == 0
    assert result.parity.num_ties < 0.01 * result.parity.num_pixels  # the agreement is measured, not excused
    proto = onnx.load(str(result.onnx_path))
    assert check_graph_for_tensorrt(proto) == []
    ops = {node.op_type for node in proto.graph.node}
    assert not ops & {"Shape", "ConstantOfShape", "NonZero"}
    reference = load_reference(result.reference_path)
    assert reference.labels.shape == (2, 128, 128) and np.isfinite(reference.top2).all()


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ModelError, match="unknown model") as info:
        create_model("shufflenetv2_x1_0_deeplab")
    assert "shufflenetv2_x1_0_deeplabv3plus" in str(info.value)
    with pytest.raises(ModelError, match="did you mean hrnet_w18_small_v1"):  # case does not hide the name
        create_model("HRNet_W18_Small_V1")


def test_duplicate_registration_raises() -> None:
    name = MODELS[0]
    before = model_info(name)
    with pytest.raises(InternalError, match="registered twice"):
        register_model(name, family="x", decoder="y")(lambda num_classes: None)
    assert model_info(name) is before
