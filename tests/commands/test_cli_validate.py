"""`edgeseg validate` end to end through click's CliRunner, on a real exported zoo model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.images import save_png
from edgeseg.reference import load_reference, save_reference, synthetic_frames

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript")

MODEL = "shufflenetv2_x0_5_deeplabv3plus"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A checkpoint (random weights, fixed seed) and its export: model.onnx + reference.npz."""
    from edgeseg.models import create_model, save_checkpoint
    from edgeseg.spec import InputSpec

    root = tmp_path_factory.mktemp("cli_validate")
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=4).eval()
    weights = save_checkpoint(root / "model.pt", model, model_name=MODEL, classes=["a", "b", "c", "d"],
                              input_spec=InputSpec(64, 64))
    result = CliRunner().invoke(main, ["export", "--weights", str(weights), "--out", str(root / "build")])
    assert result.exit_code == 0, result.output
    return weights, root / "build"


def test_validate_with_reference_passes(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, build = exported
    result = CliRunner().invoke(main, ["validate", "--candidate", str(build / "model.onnx"), "--reference",
                                       str(build / "reference.npz"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "validation passed" in result.output and "argmax agreement" in result.output
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["gates"]["passed"] and saved["parity"]["agreement"] >= 0.99
    assert saved["classes"] == ["a", "b", "c", "d"]


def test_validate_gate_failure_exits_1_with_numbers(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, build = exported
    ref = load_reference(build / "reference.npz")
    ref.labels = ((ref.labels.astype(np.int64) + 1) % ref.num_classes).astype(np.uint8)  # argmax disagrees
    bad = save_reference(tmp_path / "reference.npz", ref)
    result = CliRunner().invoke(main, ["validate", "--candidate", str(build / "model.onnx"), "--reference",
                                       str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "failed the accuracy gates" in result.output and "--min-agreement 0.99" in result.output
    assert "Traceback" not in result.output
    assert json.loads((tmp_path / "out" / "validation.json").read_text())["gates"]["passed"] is False
    assert list((tmp_path / "out" / "validation_overlays").glob("worst_*.png"))


def test_validate_with_pytorch_weights_and_ground_truth(exported: tuple[Path, Path], tmp_path: Path) -> None:
    weights, build = exported
    rng = np.random.default_rng(0)
    for i, frame in enumerate(synthetic_frames(2, 48, 80, seed=2)):
        save_png(tmp_path / "data" / "images" / f"f{i}.png", frame)
        save_png(tmp_path / "data" / "masks" / f"f{i}.png", rng.integers(0, 4, (48, 80)).astype(np.uint8))
    result = CliRunner().invoke(main, ["validate", "--candidate", str(build / "model.onnx"), "--weights",
                                       str(weights), "--data", str(tmp_path / "data"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["reference_kind"] == "pytorch" and saved["ground_truth"]["images"] == 2
    assert abs(saved["ground_truth"]["miou_drop_points"]) <= 0.5
    assert "ground truth (2 images)" in result.output


@pytest.mark.parametrize("args, message", [
    (["--reference", "R", "--weights", "W"], "two different references"),
    ([], "no reference"),
    (["--model", MODEL, "--reference", "R"], "--model needs --weights"),
])
def test_validate_usage_errors_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "--candidate", str(tmp_path / "m.onnx"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_validate_bad_threshold_and_missing_candidate(exported: tuple[Path, Path]) -> None:
    _, build = exported
    ref = str(build / "reference.npz")
    result = CliRunner().invoke(main, ["validate", "--candidate", str(build / "model.onnx"), "--reference", ref,
                                       "--min-agreement", "1.5"])
    assert result.exit_code == 2 and "--min-agreement" in result.output and "1.5" in result.output
    result = CliRunner().invoke(main, ["validate", "--candidate", str(build / "nope.onnx"), "--reference", ref])
    assert result.exit_code == 1 and "not found" in result.output and "Traceback" not in result.output
