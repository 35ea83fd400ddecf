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
                                       str(weights), "--val-data", str(tmp_path / "data"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["reference_kind"] == "pytorch" and saved["ground_truth"]["images"] == 2
    assert abs(saved["ground_truth"]["miou_drop_points"]) <= 0.5
    assert "ground truth (2 images)" in result.output


@pytest.mark.parametrize("args, message", [
    (["--reference", "R", "--weights", "W"], "two different references"),
    ([], "no reference"),
    (["--model", MODEL, "--reference", "R"], "--model needs --weights"),
    (["--reference", "R", "--val-data", "."], "--val-data is for a PyTorch reference"),
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


@pytest.mark.parametrize("name, content, kind", [
    ("ranges.json", b'{"method": "percentile"}', "a JSON file"),
    ("model.onnx", b"\x08\x07\x12\x07pytorch", "a model file (.onnx)"),
    ("frames.npy", b"\x93NUMPY\x01\x00v\x00", "a single NumPy array"),
])
def test_a_wrong_kind_of_reference_file_says_so(exported: tuple[Path, Path], tmp_path: Path, name: str,
                                                content: bytes, kind: str) -> None:
    _, build = exported
    (tmp_path / name).write_bytes(content)
    result = CliRunner().invoke(main, ["validate", "--candidate", str(build / "model.onnx"), "--reference",
                                       str(tmp_path / name), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{tmp_path / name} is not a reference.npz" in result.output and kind in result.output
    assert "pickled" not in result.output and "corrupt" not in result.output


def test_read_only_folder_still_prints_the_verdict(exported: tuple[Path, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from edgeseg.pipeline import validate as validate_module

    def read_only(out: Path, *args: object) -> list[Path]:  # what a read-only robot folder does (even for root)
        raise OSError(errno.EROFS, "Read-only file system", str(out / "validation_overlays"))

    monkeypatch.setattr(validate_module, "write_overlays", read_only)
    _, build = exported
    result = CliRunner().invoke(main, ["validate", "--candidate", str(build / "model.onnx"), "--reference",
                                       str(build / "reference.npz")])
    assert result.exit_code == 0, result.output
    assert "validation passed" in result.output and "not written" in result.output
    assert "pass --out DIR" in result.output and "Traceback" not in result.output


def test_failed_int8_validation_names_what_can_work(exported: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    _, build = exported
    folder = tmp_path / "engine"
    folder.mkdir()
    for name in ("model.onnx", "reference.npz"):
        shutil.copyfile(build / name, folder / name)
    shutil.copyfile(build / "model.onnx", folder / "model.int8.ort.onnx")  # stands in for the CPU INT8 model
    (folder / "ranges.json").write_text(json.dumps({"method": "percentile"}))
    ref = load_reference(folder / "reference.npz")
    ref.labels = ((ref.labels.astype(np.int64) + 1) % ref.num_classes).astype(np.uint8)  # argmax disagrees
    save_reference(folder / "reference.npz", ref)
    result = CliRunner().invoke(main, ["validate", "--candidate", str(folder / "model.int8.ort.onnx"),
                                       "--reference", str(folder / "reference.npz")])
    assert result.exit_code == 1, result.output
    assert "entropy or minmax; this one used percentile" in result.output
    assert "--method percentile" not in result.output and "FP16" not in result.output
    assert "FP32 on the CPU" in result.output
    assert f"next:\n  edgeseg build --onnx {folder / 'model.onnx'} --int8 --fallback auto" in result.output
