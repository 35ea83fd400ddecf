"""export_onnx on small models: artifacts, metadata, parity, and every way it must refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from helpers.tiny_models import tiny_backbone
from torch import nn

from edgeseg.errors import AccuracyError, ArtifactError, ConfigError, ModelError
from edgeseg.export.onnx_export import ExportConfig, export_onnx
from edgeseg.fileio import sha256_file
from edgeseg.images import save_png
from edgeseg.models.base import SegmentationModel
from edgeseg.onnx_model import read_onnx_metadata
from edgeseg.reference import load_reference
from edgeseg.spec import InputSpec, preprocess, resize_bilinear


class Fuse(nn.Module):
    """Upsample the deep feature (stride 32, 16 channels) to the shallow one (stride 4, 8 channels);
    ``size_from_tensor`` leaves Shape ops in the trace."""

    def __init__(self, *, size_from_tensor: bool = False, pool: nn.Module | None = None) -> None:
        super().__init__()
        self.proj = nn.Conv2d(16, 8, 1)
        self.size_from_tensor = size_from_tensor
        self.pool = pool

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low, deep = features
        if self.pool is not None:
            deep = deep + F.interpolate(self.pool(deep), size=(int(deep.shape[-2]), int(deep.shape[-1])),
                                        mode="bilinear", align_corners=False)
        size = low.shape[-2:] if self.size_from_tensor else (int(low.shape[-2]), int(low.shape[-1]))
        return low + F.interpolate(self.proj(deep), size=size, mode="bilinear", align_corners=False)


class Cheat(nn.Module):
    """Behaves differently while being exported: ONNX cannot match PyTorch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5 if torch.onnx.is_in_onnx_export() else x


def tiny(num_classes: int = 3, **fuse_options: object) -> SegmentationModel:
    torch.manual_seed(0)
    return SegmentationModel(tiny_backbone(two_scales=True), Fuse(**fuse_options),  # type: ignore[arg-type]
                             nn.Conv2d(8, num_classes, 1), num_classes=num_classes, name="tiny").eval()


def config(**overrides: object) -> ExportConfig:
    values: dict[str, object] = {"model": "tiny", "num_classes": 3, "input_spec": InputSpec(64, 96),
                                 "num_reference_samples": 2}
    values.update(overrides)
    return ExportConfig(**values)  # type: ignore[arg-type]


def test_export_writes_checked_artifacts(tmp_path: Path) -> None:
    model = tiny()
    result = export_onnx(model, config(classes=["road", "car", "sky"]), tmp_path)
    assert result.onnx_path == tmp_path / "model.onnx" and result.reference_path == tmp_path / "reference.npz"
    assert result.parity.passed and result.parity.argmax_agreement == 1.0
    assert result.max_abs_diff <= result.parity.tolerance
    assert set(result.timings) == {"reference", "export", "simplify", "check", "parity", "write"}

    proto = onnx.load(str(result.onnx_path))
    graph_input, graph_output = proto.graph.input[0], proto.graph.output[0]
    assert graph_input.name == "images" and graph_output.name == "logits"
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [1, 3, 64, 96]
    assert [d.dim_value for d in graph_output.type.tensor_type.shape.dim] == [1, 3, 64, 96]
    meta = read_onnx_metadata(proto)
    assert meta["model"] == "tiny" and meta["num_classes"] == 3 and meta["classes"] == ["road", "car", "sky"]
    assert InputSpec.from_dict(meta["input_spec"]) == InputSpec(64, 96)
    assert not any(key.startswith("onnxsim.") for key in meta)

    reference = load_reference(result.reference_path)
    assert reference.frames.shape == (2, 64, 96, 3) and reference.frames.dtype == np.uint8
    assert reference.meta["onnx_sha256"] == sha256_file(result.onnx_path) == result.onnx_sha256
    inputs = np.concatenate([reference.inputs(i) for i in range(reference.num_samples)])
    np.testing.assert_array_equal(inputs[:1], preprocess(reference.frames[0], InputSpec(64, 96)))
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    np.testing.assert_array_equal(reference.labels, expected.argmax(axis=1))
    np.testing.assert_allclose(reference.top2[:, 0], expected.max(axis=1), rtol=2e-3, atol=2e-3)
    assert reference.meta["ground_truth"] is False and reference.masks is None
    assert not list(tmp_path.glob(".*.tmp"))


def test_batch_export_runs_parity_over_uneven_sample_counts(tmp_path: Path) -> None:
    result = export_onnx(tiny(), config(batch=2, num_reference_samples=3), tmp_path)
    proto = onnx.load(str(result.onnx_path))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 64, 96]
    assert load_reference(result.reference_path).num_samples == 3
    assert result.parity.num_pixels == 3 * 64 * 96


def test_reference_frames_from_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8) for _ in range(2)]
    paths = [save_png(tmp_path / f"img{i}.png", image) for i, image in enumerate(images)]
    result = export_onnx(tiny(), config(sample_images=paths), tmp_path / "out")
    reference = load_reference(result.reference_path)
    for image, frame in zip(images, reference.frames, strict=True):
        np.testing.assert_array_equal(frame, np.clip(np.rint(resize_bilinear(image, 64, 96)), 0, 255))


def test_nan_weights_stop_the_export_before_anything_is_written(tmp_path: Path) -> None:
    model = tiny()
    with torch.no_grad():
        model.state_dict()["head.weight"][0, 0] = float("nan")  # state_dict tensors share storage
    with pytest.raises(ModelError, match="head.weight"):
        export_onnx(model, config(), tmp_path)
    assert not any(tmp_path.iterdir())


def test_adaptive_pooling_larger_than_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"adaptive_avg_pool2d\(output_size=2\)"):
        export_onnx(tiny(pool=nn.AdaptiveAvgPool2d(2)), config(), tmp_path)
    assert not any(tmp_path.iterdir())


def test_global_pooling_is_fine(tmp_path: Path) -> None:
    result = export_onnx(tiny(pool=nn.AdaptiveAvgPool2d(1)), config(), tmp_path)
    ops = {node.op_type for node in onnx.load(str(result.onnx_path)).graph.node}
    assert "GlobalAveragePool" in ops and "AveragePool" not in ops


def test_parity_failure_is_an_accuracy_error_and_writes_nothing(tmp_path: Path) -> None:
    model = tiny()
    model.head = nn.Sequential(model.head, Cheat())
    with pytest.raises(AccuracyError, match="parity check failed") as info:
        export_onnx(model, config(), tmp_path)
    assert "max |diff| 0.5" in str(info.value)
    assert not any(tmp_path.iterdir())


def test_unsimplified_graph_with_shape_ops_is_rejected_and_simplification_fixes_it(tmp_path: Path) -> None:
    model = tiny(size_from_tensor=True)
    with pytest.raises(ArtifactError, match="Shape node") as info:
        export_onnx(model, config(simplify=False), tmp_path / "raw")
    assert "drop --no-simplify" in str(info.value)
    result = export_onnx(model, config(), tmp_path / "simplified")
    assert "Shape" not in {node.op_type for node in onnx.load(str(result.onnx_path)).graph.node}


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="opset"):
        config(opset=11)
    with pytest.raises(ConfigError, match="class names"):
        config(classes=["a"])
    with pytest.raises(ConfigError, match="batch"):
        config(batch=0)


def test_model_and_config_must_agree_on_classes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        export_onnx(tiny(num_classes=4), config(), tmp_path)


def test_simplifier_failure_is_reported_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxsim

    def broken(model: onnx.ModelProto, *args: object, **kwargs: object) -> tuple[onnx.ModelProto, bool]:
        raise RuntimeError("constant folding blew up")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    with pytest.raises(ArtifactError, match="simplifying the exported ONNX graph failed") as info:
        export_onnx(tiny(), config(), tmp_path)
    assert "constant folding blew up" in str(info.value) and "--no-simplify" in str(info.value)
    assert not any(tmp_path.iterdir())
    # The explicit way out, for graphs that are static as traced (here: convolutions only).
    plain = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1)).eval()
    result = export_onnx(plain, config(simplify=False), tmp_path)
    assert result.notices == ["graph not simplified (--no-simplify)"] and not result.to_dict()["simplified"]
