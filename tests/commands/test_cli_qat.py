"""`edgeseg qat` and `edgeseg build --int8 --weights qat.pt` end to end on a small zoo model at 128x128.

One float checkpoint (random weights, seeded), calibrated by `edgeseg build`; QAT fine-tunes it for a few steps
with learned scales; the build from qat.pt skips calibration and validates against the QAT model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main

MODEL = "shufflenetv2_x0_5_mdspp"
GATES_OFF = ["--min-agreement", "0", "--max-miou-drop", "100"]  # random weights: the verdict is not the point here

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from edgeseg.data.generate import SynthConfig, write_synthetic_dataset
    from edgeseg.data.synth_objects import CLASSES
    from edgeseg.models import create_model
    from edgeseg.models.checkpoint import save_checkpoint
    from edgeseg.spec import InputSpec

    root = tmp_path_factory.mktemp("qat")
    data = root / "data"
    write_synthetic_dataset(SynthConfig(out=data, num=6, height=128, width=128, seed=5))
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=len(CLASSES)).eval()
    weights = save_checkpoint(root / "float.pt", model, model_name=MODEL, classes=[c for c, _ in CLASSES],
                              input_spec=InputSpec(128, 128))
    calibrated = root / "calibrated"
    result = CliRunner().invoke(main, ["build", "--weights", str(weights), "--calib", str(data / "images"),
                                       "--calib-images", "4", "--val-data", str(data), *GATES_OFF,
                                       "--out", str(calibrated)])
    assert result.exit_code == 0, result.output
    qat = root / "qat"
    result = CliRunner().invoke(main, ["qat", "--weights", str(weights), "--ranges", str(calibrated),
                                       "--data", str(data), "--val-data", str(data), "--epochs", "1",
                                       "--batch-size", "2", "--max-steps-per-epoch", "3", "--lr", "1e-3",
                                       "--learn-scales", "--distill", "1", "--threads", "1", "--out", str(qat)])
    assert result.exit_code == 0, result.output
    (root / "qat.out").write_text(result.output)
    return {"root": root, "data": data, "weights": weights, "calibrated": calibrated, "qat": qat}


def test_qat_writes_the_int8_files_and_a_summary(folders: dict[str, Path]) -> None:
    qat, output = folders["qat"], (folders["root"] / "qat.out").read_text()
    for name in ("qat.pt", "model.onnx", "model.int8.onnx", "model.int8.ort.onnx", "model.int8.ov.onnx",
                 "ranges.json", "qat.json"):
        assert (qat / name).is_file(), name
    for row in ("float", "PTQ (calibrated)", "QAT (1 epochs)", "ONNX Runtime vs QAT", "edgeseg build --int8 --weights"):
        assert row in output, row
    summary = json.loads((qat / "qat.json").read_text())
    assert summary["parity"]["ops_checked"] > 100 and summary["parity"]["ops_off"] == []  # the drift check
    assert summary["parity"]["writer_fp32_regions"]["argmax_agreement"] >= 0.99
    assert [h["epoch"] for h in summary["history"]] == [0, 1]


def test_qat_moves_weights_and_learned_scales_into_the_file(folders: dict[str, Path]) -> None:
    import onnx

    from edgeseg.training.qat_checkpoint import load_qat_checkpoint

    checkpoint = load_qat_checkpoint(folders["qat"] / "qat.pt")
    written = onnx.load(str(folders["qat"] / "model.int8.onnx"))
    calibrated = onnx.load(str(folders["calibrated"] / "model.int8.onnx"))
    scales = {i.name: float(onnx.numpy_helper.to_array(i)) for i in written.graph.initializer
              if i.name in checkpoint.scales}
    before = {i.name: float(onnx.numpy_helper.to_array(i)) for i in calibrated.graph.initializer
              if i.name in checkpoint.scales}
    assert set(scales) == set(checkpoint.scales) == set(before)  # same placement, every pair named alike
    # float16 scales in the file (FP16 regions): the trained values, rounded to float16
    assert all(abs(scales[k] - v) <= 1e-3 * abs(v) for k, v in checkpoint.scales.items())
    moved = sum(abs(checkpoint.scales[k] - before[k]) > 1e-3 * before[k] for k in before)
    assert moved > 0, "LSQ moved no activation scale"
    float_before = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(
        str(folders["calibrated"] / "model.onnx")).graph.initializer}
    float_after = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load_from_string(
        checkpoint.float_onnx).graph.initializer}
    assert any(not np.array_equal(float_before[k], float_after[k]) for k in float_before)
    assert checkpoint.metrics.images == 6 and 0.0 <= checkpoint.metrics.qat_agreement <= 1.0


def test_build_from_a_qat_checkpoint_skips_calibration(folders: dict[str, Path], tmp_path: Path) -> None:
    from edgeseg.reference import load_reference

    out = tmp_path / "engine"
    result = CliRunner().invoke(main, ["build", "--int8", "--weights", str(folders["qat"] / "qat.pt"),
                                       "--val-data", str(folders["data"]), *GATES_OFF, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "agreement vs the QAT model" in result.output and "--precision best" not in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    calibration = manifest["calibration"]
    assert calibration["method"] == "qat" and calibration["images"] == 0
    assert calibration["qat"]["reference"] == "qat" and calibration["qat"]["epochs"] == 1
    assert "calibrate" not in json.loads((out / "steps.json").read_text())
    reference = load_reference(out / "reference.npz")
    assert reference.meta["reference_model"] == "qat" and "float_checkpoint_miou" in reference.meta
    report = (out / "report.md").read_text()
    assert "Quantization-aware training" in report and "QAT model's verdict" in report
    assert "against the float checkpoint" in report


@pytest.mark.parametrize("extra", [["--calib", "IMAGES"], ["--precision", "fp32"], ["--fallback", "auto"],
                                   ["--input-size", "64x64"]])
def test_build_refuses_options_a_qat_checkpoint_cannot_take(folders: dict[str, Path], tmp_path: Path,
                                                            extra: list[str]) -> None:
    extra = [str(folders["data"] / "images") if word == "IMAGES" else word for word in extra]
    result = CliRunner().invoke(main, ["build", "--weights", str(folders["qat"] / "qat.pt"), *extra,
                                       "--out", str(tmp_path / "refused")])
    assert result.exit_code == 2, result.output
    assert "QAT checkpoint" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "refused").exists()


def test_qat_refuses_a_qat_checkpoint_and_foreign_ranges(folders: dict[str, Path], tmp_path: Path) -> None:
    base = ["--data", str(folders["data"]), "--out", str(tmp_path / "q")]
    result = CliRunner().invoke(main, ["qat", "--weights", str(folders["qat"] / "qat.pt"), "--ranges",
                                       str(folders["calibrated"]), *base])
    assert result.exit_code == 1 and "already a QAT checkpoint" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["qat", "--weights", str(folders["weights"]), "--ranges", str(empty), *base])
    assert result.exit_code == 1 and "no ranges file" in result.output and "edgeseg build --int8" in result.output
    result = CliRunner().invoke(main, ["qat", "--weights", str(folders["weights"]), "--ranges",
                                       str(folders["calibrated"]), "--trt-version", "ten", *base])
    assert result.exit_code == 2 and "TensorRT version" in result.output
    assert not (tmp_path / "q").exists()
