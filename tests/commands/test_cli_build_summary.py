"""What `edgeseg build` says and records (issue #24, items 12, 13, 16): the summary lists only the files this
run wrote and what an explicit --calib opened; --precision best records the precision it kept and why; a CPU
INT8 model slower than FP32 names the --precision best build."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from click.testing import CliRunner
from helpers.tiny_onnx import save_conv_onnx, write_images
from helpers.validated_build import SPEC

from edgeseg.cli import main


def _build(*args: str) -> str:
    result = CliRunner().invoke(main, ["build", *args])
    assert "Traceback" not in result.output, result.output
    return result.output


def _row(output: str, key: str) -> str:
    return next(line.split(key, 1)[1].strip() for line in output.splitlines() if line.strip().startswith(key))


def test_written_lists_only_this_runs_files_and_calib_says_what_it_opened(tmp_path: Path) -> None:
    onnx = save_conv_onnx(tmp_path / "b" / "model.onnx", spec=SPEC)
    write_images(tmp_path / "frames", 3, size=(SPEC.height, SPEC.width))
    args = ["--onnx", str(onnx), "--int8", "--calib", str(tmp_path / "frames"), "--calib-images", "2"]
    first = _build(*args)
    assert f"folder {tmp_path / 'frames'}: 3 images" in _row(first, "calibration")
    assert "ranges.json" in _row(first, "written") and "model.int8.ort.onnx" in _row(first, "written")
    again = _build(*args)
    written = _row(again, "written").split(", ")
    assert "calibrate (cached)" in again
    assert "ranges.json" not in written and "model.int8.ort.onnx" not in written and "model.onnx" not in written
    assert "manifest.json" in written  # the promise is always rewritten from this run's results


def test_precision_best_records_the_kept_precision_and_why(tmp_path: Path) -> None:
    onnx = save_conv_onnx(tmp_path / "b" / "model.onnx", spec=SPEC)
    write_images(tmp_path / "frames", 3, size=(SPEC.height, SPEC.width))
    _build("--onnx", str(onnx), "--precision", "best", "--calib", str(tmp_path / "frames"), "--calib-images", "2")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    selection = manifest["build"]["selection"]
    kept = "int8" if "int8" in selection["chosen"] else "fp32"
    assert manifest["precision"] == kept == selection["precision"] and selection["asked"] == "best"
    assert selection["why"] and selection["details"] == "selection.json"
    assert "candidates" in json.loads((tmp_path / "b" / "selection.json").read_text())
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["precision"] == kept
    assert "kept by --precision best" in (tmp_path / "b" / "report.md").read_text()


def test_int8_slower_than_fp32_names_the_best_build(tmp_path: Path) -> None:
    from edgeseg.commands.build import _int8_slower, _rebuild_command
    from edgeseg.pipeline.bench import BenchResult, Runner, RunnerStats
    from edgeseg.pipeline.build import BuildOptions

    def stats(name: str, precision: str, p50: float) -> RunnerStats:
        return RunnerStats.from_samples(Runner(name, "onnxruntime", precision, lambda x: x), [p50])

    bench = BenchResult([stats("ort-fp32", "fp32", 13.2), stats("ort-int8", "int8", 15.9)], 1, 0, [1, 3, 8, 8])
    result = SimpleNamespace(backend="onnxruntime", manifest=SimpleNamespace(precision="int8"), bench=bench,
                             quantized_input=False)
    assert _int8_slower(result) == "ort-int8 p50 15.9 ms vs ort-fp32 13.2 ms on this machine"
    assert _int8_slower(SimpleNamespace(**{**vars(result), "quantized_input": True})) == ""
    bench.runners[1] = stats("ort-int8", "int8", 9.0)
    assert _int8_slower(result) == ""
    options = BuildOptions(model="m", weights=tmp_path / "w.pt", calib=tmp_path / "frames", calib_images=8,
                           calib_method="entropy", min_agreement=0.98)
    command = _rebuild_command(options, tmp_path / "out", "best")
    assert command == (f"edgeseg build --model m --weights {tmp_path / 'w.pt'} --calib {tmp_path / 'frames'} "
                       f"--calib-images 8 --calib-method entropy --min-agreement 0.98 --precision best "
                       f"--out {tmp_path / 'out'}")


def _failed(tmp_path: Path, backend: str, *, quantized: bool = False, precision: str = "int8") -> str:
    from edgeseg.manifest import CalibrationSummary, Manifest, ValidationVerdict
    from edgeseg.pipeline.build import BuildResult, build_failure
    from edgeseg.pipeline.validate import ValidationResult

    manifest = Manifest(model="m", num_classes=2, input_spec=SPEC, precision=precision, backend=backend,
                        calibration=None if quantized else CalibrationSummary(method="percentile"),
                        validation=ValidationVerdict(status="failed", failures=["argmax agreement 0.9 < 0.99"]))
    validation = ValidationResult(candidate="model.int8.ort.onnx", reference="reference.npz",
                                  reference_kind="reference.npz", input_spec=SPEC, num_classes=2, classes=["a", "b"],
                                  parity={}, ground_truth=None, per_class=[], per_image=[], gates={}, config={})
    result = BuildResult(tmp_path, manifest, backend, tmp_path / "model.int8.ort.onnx", validation, None,
                         quantized_input=quantized)
    error = build_failure(result)
    assert error is not None
    return str(error)


def test_failed_build_suggests_only_what_can_work_here(tmp_path: Path) -> None:
    cpu = _failed(tmp_path, "onnxruntime")
    assert "entropy or minmax; this build used percentile" in cpu and "--calib-method percentile" not in cpu
    assert "fp16" not in cpu.lower() and "--precision best" in cpu and "--fallback auto" in cpu
    assert "--precision fp32 or fp16" in _failed(tmp_path, "tensorrt")
    quantized = _failed(tmp_path, "onnxruntime", quantized=True)
    assert f"edgeseg build --onnx {tmp_path / 'model.onnx'} --int8 --fallback auto" in quantized
    assert "try --fallback auto" not in quantized


def test_calib_of_a_public_dataset_says_which_split_it_opened(tmp_path: Path) -> None:
    from helpers.dataset_layouts import write_cityscapes

    from edgeseg.commands._common import CalibType, resolve_calib
    from edgeseg.pipeline.build_checks import describe_calib

    root = write_cityscapes(tmp_path / "cs", {"train": 3, "val": 1})
    assert describe_calib(resolve_calib(CalibType().convert(f"cityscapes:{root}", None, None), None)) == \
        "cityscapes train: 3 images"
    assert describe_calib(resolve_calib(CalibType().convert(f"cityscapes:{root}:val", None, None), None)) == \
        "cityscapes val: 1 image"


def test_calib_of_a_bag_says_the_topic_and_its_frames(tmp_path: Path) -> None:
    import pytest

    pytest.importorskip("rosbags")
    from helpers.bags import gradient_frames, write_image_bag

    from edgeseg.commands._common import resolve_calib
    from edgeseg.pipeline.build_checks import describe_calib

    bag = write_image_bag(tmp_path / "drive.mcap", "mcap", gradient_frames(4))
    assert describe_calib(resolve_calib(f"bag:{bag}", None)) == f"bag {bag} /cam/image_raw: 4 frames"
