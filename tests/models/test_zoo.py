"""Every registered model, generated from the registry: shapes, size errors, ONNX export and parity.

The checks live in helpers/zoo.py so a backbone or decoder registered by a test (test_registry.py) passes the
same ones; the parameters are ``zoo_models()``, the registry's names."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.zoo import (
    check_backbone_features_highest_resolution_first,
    check_export_and_onnxruntime_parity,
    check_forward_shape_and_size_errors,
    check_other_class_counts,
    zoo_models,
)

from edgeseg.errors import InternalError, ModelError
from edgeseg.models import create_model, model_info, register_model

MODELS = zoo_models()


def test_the_zoo_is_complete() -> None:
    families = {model_info(name).family for name in MODELS}
    decoders = {model_info(name).decoder for name in MODELS}
    assert len(MODELS) >= 23 and families >= {"shufflenetv2", "hrnet"}
    assert decoders >= {"deeplabv3plus", "deeplabv3plus_sep", "deeplabv3", "dspp", "mdspp", "hrnetv2", "ocr"}


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_size_errors(name: str) -> None:
    check_forward_shape_and_size_errors(name)


@pytest.mark.parametrize("name", MODELS)
def test_backbone_features_highest_resolution_first(name: str) -> None:
    check_backbone_features_highest_resolution_first(name)


@pytest.mark.parametrize("name", MODELS)
def test_other_class_counts(name: str) -> None:
    check_other_class_counts(name)


@pytest.mark.parametrize("name", MODELS)
def test_export_and_onnxruntime_parity(name: str, tmp_path: Path) -> None:
    check_export_and_onnxruntime_parity(name, tmp_path)


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
