from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeseg.errors import ArtifactError, ConfigError, EdgesegError, InputError, UsageError
from edgeseg.manifest import Manifest
from edgeseg.spec import (
    InputSpec,
    check_size,
    nearest_valid_sizes,
    parse_size,
    preprocess,
    resize_bilinear,
)


def test_parse_size_accepts_common_forms() -> None:
    assert parse_size("512x1024") == (512, 1024)
    assert parse_size(" 64 X 96 ") == (64, 96)
    assert parse_size("32,32") == (32, 32)


@pytest.mark.parametrize("text", ["", "512", "axb", "-32x64", "512x1024x3", "0x32", "100x130", "31x32"])
def test_parse_size_rejects_bad_sizes_as_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_size_error_names_nearest_valid_sizes() -> None:
    with pytest.raises(ConfigError) as info:
        check_size(100, 130)
    assert "96 or 128" in str(info.value) and "128 or 160" in str(info.value)


@given(st.text(max_size=20))
@settings(max_examples=300, deadline=None)
def test_parse_size_never_crashes(text: str) -> None:
    try:
        height, width = parse_size(text)
    except UsageError:
        return
    assert height % 32 == 0 and width % 32 == 0 and height > 0 and width > 0


@given(st.integers(min_value=1, max_value=10_000))
def test_nearest_valid_sizes_bracket_the_value(value: int) -> None:
    low, high = nearest_valid_sizes(value)
    assert low % 32 == 0 and high % 32 == 0 and low <= max(value, 32) <= high + 32
    assert low <= high


def test_resize_identity_and_constant() -> None:
    image = np.random.default_rng(0).integers(0, 255, (8, 12, 3)).astype(np.uint8)
    assert np.array_equal(resize_bilinear(image, 8, 12), image.astype(np.float32))
    constant = np.full((7, 9, 3), 42, np.uint8)
    assert np.allclose(resize_bilinear(constant, 32, 64), 42.0)


def test_resize_matches_half_pixel_convention() -> None:
    # 2x upsampling of [0, 10]: half-pixel centres give 0, 2.5, 7.5, 10.
    row = np.array([[[0], [10]]], dtype=np.uint8)
    out = resize_bilinear(row, 1, 4)[0, :, 0]
    assert np.allclose(out, [0.0, 2.5, 7.5, 10.0])


def test_resize_matches_torch_bilinear() -> None:
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(1).integers(0, 255, (37, 53, 3)).astype(np.uint8)
    ours = resize_bilinear(image, 64, 96)
    t = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    # torch's upsampling (no antialias) uses the same half-pixel maths as ours
    ref = torch.nn.functional.interpolate(t, size=(64, 96), mode="bilinear", align_corners=False)
    assert np.abs(ours - ref[0].permute(1, 2, 0).numpy()).max() < 1e-3


def test_preprocess_normalises_and_reorders() -> None:
    spec = InputSpec(32, 32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[..., 0] = 255  # red in RGB
    rgb = preprocess(frame, spec, "RGB")
    assert rgb.shape == (1, 3, 32, 32) and rgb.dtype == np.float32
    assert np.allclose(rgb[0, 0], 1.0) and np.allclose(rgb[0, 2], -1.0)
    bgr = preprocess(frame, spec, "BGR")  # same bytes read as BGR: red is channel 2 for the model
    assert np.allclose(bgr[0, 2], 1.0) and np.allclose(bgr[0, 0], -1.0)


@pytest.mark.parametrize(
    "frame",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), [1, 2, 3]],
)
def test_preprocess_rejects_bad_frames(frame: object) -> None:
    with pytest.raises(InputError):
        preprocess(frame, InputSpec(32, 32))  # type: ignore[arg-type]


def test_input_spec_validation() -> None:
    with pytest.raises(ConfigError):
        InputSpec(32, 32, channel_order="GBR")
    with pytest.raises(ConfigError):
        InputSpec(32, 32, std=(0.0, 1.0, 1.0))
    with pytest.raises(ConfigError):
        InputSpec(33, 32)
    spec = InputSpec(64, 128, channel_order="BGR")
    assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_manifest_round_trip_and_errors() -> None:
    manifest = Manifest("m", 3, InputSpec(64, 64), classes=["a", "b", "c"], precision="int8",
                        artifacts={"onnx": "model.onnx"}, hashes={"onnx": "abc"})
    data = json.loads(json.dumps(manifest.to_dict()))
    assert Manifest.from_dict(data) == manifest
    old = dict(data, format=0)
    with pytest.raises(ArtifactError, match="format"):
        Manifest.from_dict(old)
    with pytest.raises(ArtifactError):
        Manifest.from_dict({k: v for k, v in data.items() if k != "model"})
    with pytest.raises(ArtifactError):
        Manifest.from_dict([1, 2])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["model", "num_classes", "input_spec", "format", "classes", "precision",
                                        "artifacts", "x"]), json_values, max_size=8))
@settings(max_examples=300, deadline=None)
def test_manifest_loader_only_raises_user_errors(data: dict) -> None:
    try:
        Manifest.from_dict(data)
    except EdgesegError:
        pass
