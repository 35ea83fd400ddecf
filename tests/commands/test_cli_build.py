"""`edgeseg build` / `edgeseg run` end to end on a tiny model (ONNX Runtime INT8 path).

The builds run with real gates (GATES): the tiny model's CPU INT8 agrees with PyTorch on about 94 % of the
pixels. A gate failure is forced with a reference whose labels are scrambled, so it never depends on how well
INT8 happens to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main

MODEL = "shufflenetv2_x0_5_mdspp"
GATES = ["--min-agreement", "0.9", "--max-miou-drop", "5"]  # what the tiny model's CPU INT8 meets (0.94, 0.02)
GATES_OFF = ["--min-agreement", "0", "--max-miou-drop", "100"]


def scrambled_reference(source: Path, target: Path) -> None:
    """``source``'s reference.npz with every PyTorch label moved to the next class: no candidate can agree."""
    import dataclasses

    from edgeseg.reference import load_reference, save_reference

    reference = load_reference(source)
    labels = ((reference.labels.astype(np.int64) + 1) % reference.num_classes).astype(reference.labels.dtype)
    save_reference(target, dataclasses.replace(reference, labels=labels))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeseg.data.generate import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(SynthConfig(out=root, num=6, height=128, width=128, seed=5))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("build") / "tiny"
    result = CliRunner().invoke(main, ["build", "--model", MODEL, "--input-size", "128x128", "--calib",
                                       str(tiny_data / "images"), "--calib-images", "4", "--val-data", str(tiny_data),
                                       *GATES, "--out", str(out)])
    return out, result


def test_build_writes_every_artifact_and_a_summary(built: tuple[Path, object]) -> None:
    out, result = built
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    for name in ("model.onnx", "reference.npz", "model.int8.onnx", "model.int8.ort.onnx", "calibration.cache",
                 "ranges.json", "manifest.json", "validation.json", "bench.json", "report.md", "report.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == MODEL and manifest["precision"] == "int8" and manifest["backend"] == "onnxruntime"
    assert manifest["validation"]["status"] == "passed" and manifest["accuracy"]["gates_passed"]
    assert manifest["accuracy"]["agreement"] >= 0.9 and "gt_miou_candidate" in manifest["accuracy"]
    assert manifest["hashes"]["onnx_int8_cpu"]
    output = result.output  # type: ignore[attr-defined]
    assert "build passed" in output and "edgeseg run --artifacts" in output and "TensorRT is not installed" in output


def test_second_build_skips_unchanged_steps(built: tuple[Path, object], tiny_data: Path) -> None:
    out, _ = built
    before = (out / "model.int8.onnx").read_bytes()
    result = CliRunner().invoke(main, ["build", "--model", MODEL, "--input-size", "128x128", "--calib",
                                       str(tiny_data / "images"), "--calib-images", "4", "--val-data", str(tiny_data),
                                       *GATES, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "export (cached)" in result.output and "calibrate (cached)" in result.output
    assert (out / "model.int8.onnx").read_bytes() == before


def test_gate_failure_exits_1_without_traceback(built: tuple[Path, object], tiny_data: Path,
                                                tmp_path: Path) -> None:
    built_out, _ = built
    out = tmp_path / "scrambled"  # the Jetson path: a Q/DQ ONNX with the reference.npz beside it
    out.mkdir()
    (out / "model.int8.onnx").write_bytes((built_out / "model.int8.onnx").read_bytes())
    scrambled_reference(built_out / "reference.npz", out / "reference.npz")
    build = ["build", "--onnx", str(out / "model.int8.onnx")]
    result = CliRunner().invoke(main, [*build, *GATES])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "accuracy gate failed" in result.output and "build FAILED" in result.output
    assert "edgeseg run" not in result.output  # the summary never suggests running a failed build
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["validation"]["status"] == "failed" and not manifest["accuracy"]["gates_passed"]
    run = ["run", "--artifacts", str(out), "--source", str(tiny_data / "images"), "--max-frames", "1"]
    refused = CliRunner().invoke(main, run)
    assert refused.exit_code == 1 and "refusing to run an unvalidated model" in refused.output
    assert "--allow-unvalidated" in refused.output and "Traceback" not in refused.output
    allowed = CliRunner().invoke(main, [*run, "--allow-unvalidated"])
    assert allowed.exit_code == 0 and "failed the build's accuracy gates" in allowed.output, allowed.output
    assert manifest["accuracy"]["agreement"] < 0.2  # the scrambled labels, not INT8, failed it
    # the same folder rebuilt with gates it meets is trusted again
    again = CliRunner().invoke(main, [*build, *GATES_OFF])
    assert again.exit_code == 0 and "build passed" in again.output, again.output
    assert json.loads((out / "manifest.json").read_text())["validation"]["status"] == "passed"


def test_run_writes_overlays(built: tuple[Path, object], tiny_data: Path, tmp_path: Path) -> None:
    out, _ = built
    result = CliRunner().invoke(main, ["run", "--artifacts", str(out), "--source", str(tiny_data / "images"),
                                       "--save", str(tmp_path / "ov"), "--max-frames", "3"])
    assert result.exit_code == 0, result.output
    from edgeseg.images import load_image

    overlays = sorted((tmp_path / "ov").glob("*.png"))
    assert len(overlays) == 3 and load_image(overlays[0]).shape == (128, 128, 3)
    assert "FPS" in result.output


@pytest.mark.parametrize(
    "args, code",
    [(["--input-size", "100x100"], 2), (["--model", "no_such_model"], 2), (["--int8", "--precision", "fp32"], 2),
     (["--backend", "tensorrt", "--model", MODEL], 1), (["--precision", "fp16", "--model", MODEL], 2),
     (["--calib-images", "0", "--model", MODEL], 2)],
)
def test_bad_options_are_rejected_before_work(args: list[str], code: int, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", *args, "--out", str(tmp_path / "b")])
    assert result.exit_code == code, result.output
    assert not (tmp_path / "b" / "model.onnx").exists()


def test_build_from_existing_qdq_onnx_needs_no_calibration(built: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = built
    target = tmp_path / "fromqdq"
    target.mkdir()
    for name in ("model.int8.onnx", "reference.npz"):  # what a workstation hands to the Jetson
        (target / name).write_bytes((out / name).read_bytes())
    result = CliRunner().invoke(main, ["build", "--onnx", str(target / "model.int8.onnx"), *GATES])
    assert result.exit_code == 0, result.output
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["artifacts"]["onnx_int8_trt"] == "model.int8.onnx"
    validation = json.loads((target / "validation.json").read_text())
    assert validation["reference_kind"] == "reference.npz" and validation["parity"]["agreement"] >= 0.9
    assert validation["gates"]["passed"] and validation["gates"]["min_agreement"] == 0.9
    assert np.isfinite(json.loads((target / "bench.json").read_text())["runners"][0]["p50_ms"])


def test_robot_check_gives_the_build_verdict(built: tuple[Path, object]) -> None:
    """`edgeseg validate` on the build's candidate and reference.npz: the same numbers and verdict as the build."""
    out, _ = built
    manifest = json.loads((out / "manifest.json").read_text())
    result = CliRunner().invoke(main, ["validate", "--candidate", str(out / "model.int8.ort.onnx"), "--reference",
                                       str(out / "reference.npz"), "--out", str(out / "robot")])
    assert result.exit_code == 0, result.output
    robot = json.loads((out / "robot" / "validation.json").read_text())
    assert robot["parity"]["agreement"] == manifest["accuracy"]["agreement"]
    assert robot["gates"]["passed"] is (manifest["validation"]["status"] == "passed")
    assert robot["ground_truth"]["miou_candidate"] == manifest["accuracy"]["gt_miou_candidate"]
    assert "gates from" in result.output  # the build's gates, not the defaults


def test_reference_holds_validation_frames_with_ground_truth(built: tuple[Path, object]) -> None:
    from edgeseg.reference import load_reference

    out, _ = built
    reference = load_reference(out / "reference.npz")
    assert reference.num_samples == 6 and reference.has_masks and not reference.synthetic
    assert reference.meta["frames"].startswith("validation set") and reference.meta["ground_truth"] is True


def test_second_build_into_a_locked_folder_is_refused(built: tuple[Path, object]) -> None:
    import subprocess
    import sys

    out, _ = built
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from edgeseg.lock import folder_lock\n"
                               f"with folder_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(main, ["build", "--onnx", str(out / "model.onnx"), "--precision", "fp32"])
        assert result.exit_code == 1 and f"pid {holder.pid}" in result.output, result.output
        assert "another edgeseg build is writing" in result.output
        assert holder.poll() is None  # refused while the lock was still held: the build did not wait for it
    finally:
        holder.kill()
        holder.wait()


def test_interrupted_rebuild_leaves_no_manifest(built: tuple[Path, object], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during validation: the old manifest (with the old run's verdict) must not survive."""
    import shutil

    from edgeseg.pipeline import build_steps

    folder = tmp_path / "copy"
    shutil.copytree(built[0], folder)
    assert (folder / "manifest.json").is_file()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(build_steps, "run_validation_step", interrupted)
    result = CliRunner().invoke(main, ["build", "--onnx", str(folder / "model.onnx"), "--precision", "fp32"])
    assert result.exit_code != 0
    assert not (folder / "manifest.json").exists()
    refused = CliRunner().invoke(main, ["run", "--artifacts", str(folder), "--source", str(folder)])
    assert refused.exit_code == 1 and "not a finished build folder" in refused.output


def test_onnx_elsewhere_takes_the_reference_beside_it(built: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = built
    other = tmp_path / "jetson"
    result = CliRunner().invoke(main, ["build", "--onnx", str(out / "model.int8.onnx"), "--out", str(other),
                                       *GATES])
    assert result.exit_code == 0 and "build passed" in result.output, result.output
    assert (other / "reference.npz").read_bytes() == (out / "reference.npz").read_bytes()
    manifest = json.loads((other / "manifest.json").read_text())
    assert manifest["validation"]["status"] == "passed" and manifest["artifacts"]["onnx_int8_trt"]


def test_onnx_without_reference_is_not_validated(built: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = built
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.onnx").write_bytes((out / "model.onnx").read_bytes())
    result = CliRunner().invoke(main, ["build", "--onnx", str(lone / "model.onnx"), "--precision", "fp32"])
    assert result.exit_code == 1 and "build NOT VALIDATED" in result.output, result.output
    assert "Traceback" not in result.output and "edgeseg run" not in result.output
    manifest = json.loads((lone / "manifest.json").read_text())
    assert manifest["validation"]["status"] == "not_run" and "reference.npz" in manifest["validation"]["why"]
    refused = CliRunner().invoke(main, ["run", "--artifacts", str(lone), "--source", str(lone)])
    assert refused.exit_code == 1 and "was not validated against PyTorch" in refused.output


def test_fp32_build_notice_does_not_mention_int8(built: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = built
    result = CliRunner().invoke(main, ["build", "--onnx", str(out / "model.onnx"), "--precision", "fp32",
                                       "--out", str(tmp_path / "fp32"), "--max-miou-drop", "100"])
    assert result.exit_code == 0, result.output
    assert "INT8" not in result.output.split("build passed")[0]
    assert "the FP32 ONNX model runs with ONNX Runtime" in result.output


def test_val_images_without_masks_is_an_error(tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    unlabelled = tmp_path / "val"
    shutil.copytree(tiny_data / "images", unlabelled / "images")
    result = CliRunner().invoke(main, ["build", "--model", MODEL, "--input-size", "64x64",
                                       "--val-data", str(unlabelled), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "have no mask" in result.output and "leave --val-data out" in result.output
    assert not (tmp_path / "b").exists()  # an early failure leaves no empty --out


def test_val_labels_outside_the_classes_are_an_error(tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    from edgeseg.images import load_mask, save_png

    val = tmp_path / "val"
    shutil.copytree(tiny_data, val)
    first = sorted((val / "masks").glob("*.png"))[0]
    mask = load_mask(first)
    mask[0, 0] = 17  # 6 classes in classes.json
    save_png(first, mask)
    result = CliRunner().invoke(main, ["build", "--model", MODEL, "--input-size", "64x64", "--val-data", str(val),
                                       "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "outside the model's 6 classes" in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--threads", "0"], ["--val-images", "0"], ["--min-agreement", "2"]])
def test_bad_numbers_exit_2_before_any_work(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "--model", MODEL, *args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "b").exists()


def test_unwritable_out_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["build", "--model", MODEL, "--out", str(blocker / "b")])
    assert result.exit_code == 1 and "cannot write into --out" in result.output, result.output
    assert "Traceback" not in result.output and "[export]" not in result.output


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--backend", "torch"], 2, "--backend torch runs the PyTorch model and needs its weights"),
    (["--weights", "WEIGHTS"], 2, "--weights is only used with --backend torch"),
    (["--max-frames", "0"], 2, "--max-frames"),
    (["--save", "BLOCKED/ov"], 1, "cannot write into --save"),
])
def test_run_option_errors(built: tuple[Path, object], tmp_path: Path, args: list[str], code: int,
                           message: str) -> None:
    out, _ = built
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    (tmp_path / "BLOCKED").write_text("a file, not a folder")
    args = [str(weights) if a == "WEIGHTS" else a.replace("BLOCKED", str(tmp_path / "BLOCKED")) for a in args]
    result = CliRunner().invoke(main, ["run", "--artifacts", str(out), "--source", str(out), *args])
    assert result.exit_code == code and message in result.output, result.output
    assert "Traceback" not in result.output


def test_run_show_with_headless_opencv_is_refused_up_front(built: tuple[Path, object], tiny_data: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    out, _ = built
    headless = types.SimpleNamespace(__version__="4.10.0", getBuildInformation=lambda: "  GUI:  NONE\n")
    monkeypatch.setitem(__import__("sys").modules, "cv2", headless)
    result = CliRunner().invoke(main, ["run", "--artifacts", str(out), "--source", str(tiny_data / "images"),
                                       "--show"])
    assert result.exit_code == 1 and "headless" in result.output and "--save DIR instead" in result.output
    assert "FPS" not in result.output  # refused before any frame ran


def test_run_says_which_file_and_precision_it_runs(built: tuple[Path, object], tiny_data: Path) -> None:
    out, _ = built
    result = CliRunner().invoke(main, ["run", "--artifacts", str(out), "--source", str(tiny_data / "images"),
                                       "--max-frames", "1"])
    assert result.exit_code == 0, result.output
    assert f"running {out / 'model.int8.ort.onnx'} (int8, onnxruntime; build verdict: passed)" in result.output


def test_fallback_auto_tries_ranked_layers_up_to_the_cap_and_says_what_is_next(built: tuple[Path, object],
                                                                                  tiny_data: Path) -> None:
    out, _ = built
    args = ["build", "--model", MODEL, "--input-size", "128x128", "--calib", str(tiny_data / "images"),
            "--calib-images", "4", "--val-data", str(tiny_data), "--out", str(out), "--fallback", "auto",
            "--fallback-cap", "2", "--min-agreement", "1.0", "--max-miou-drop", "0"]
    result = CliRunner().invoke(main, args)
    found = json.loads((out / "fallback.json").read_text())
    assert not found["trials"][0]["passed"]  # INT8 agrees on about 94 % of the pixels, never all of them
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [len(t["kept"]) for t in found["trials"]] == [0, 1, 2]
    assert found["trials"][2]["kept"] == found["ranking"][:2] and not found["passed"]
    assert "raise --fallback-cap (now 2; the next layers would be " + found["ranking"][2] in result.output
    assert (out / "sensitivity.md").is_file() and found["ranking"][0] in (out / "sensitivity.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["fallback"]["next_layers"] == found["ranking"][2:7]
    assert "INT8 fallback" in (out / "report.md").read_text()


def test_fallback_needs_int8(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "--precision", "fp32", "--fallback", "auto", "--out",
                                       str(tmp_path / "o")])
    assert result.exit_code == 2 and "--fallback auto is about INT8 layers" in result.output
    assert not (tmp_path / "o").exists()


def test_best_on_the_cpu_validates_and_times_both_and_keeps_the_fastest_that_passes(
        built: tuple[Path, object], tiny_data: Path) -> None:
    out, _ = built
    args = ["build", "--model", MODEL, "--input-size", "128x128", "--calib", str(tiny_data / "images"),
            "--calib-images", "4", "--val-data", str(tiny_data), "--precision", "best", "--out", str(out),
            "--backend", "onnxruntime"]  # its two candidates (OpenVINO's: tests/runtime/test_openvino_backend.py)
    result = CliRunner().invoke(main, [*args, *GATES])
    assert result.exit_code == 0, result.output
    selection = json.loads((out / "selection.json").read_text())
    rows = selection["candidates"]
    assert set(rows) == {"model.onnx", "model.int8.ort.onnx"} and all(r["passed"] for r in rows.values())
    assert rows["model.onnx"]["agreement"] >= 0.999 and rows["model.int8.ort.onnx"]["agreement"] >= 0.9
    assert selection["chosen"] == min(rows, key=lambda name: rows[name]["p50_ms"])  # both pass: the faster
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["validation"]["candidate_file"] == selection["chosen"]
    # the precision of the kept file, not the option (issue #24): why is in build.selection, every row in selection.json
    assert manifest["precision"] == ("int8" if "int8" in selection["chosen"] else "fp32")
    assert manifest["build"]["selection"]["asked"] == "best"
    assert f"kept {selection['chosen']}" in result.output
    # a gate INT8 fails (0.94 < 0.99) and FP32 meets: FP32 is kept whichever is faster
    strict = CliRunner().invoke(main, [*args, "--min-agreement", "0.99", "--max-miou-drop", "5"])
    assert strict.exit_code == 0, strict.output
    selection = json.loads((out / "selection.json").read_text())
    rows = selection["candidates"]
    assert rows["model.onnx"]["passed"] and not rows["model.int8.ort.onnx"]["passed"]
    assert selection["chosen"] == "model.onnx" and "kept model.onnx" in strict.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["validation"]["candidate_file"] == "model.onnx" and manifest["validation"]["status"] == "passed"


def test_pick_fastest_skips_candidates_that_fail_the_gates() -> None:
    from edgeseg.pipeline.best import CandidateVerdict, pick_fastest

    def row(name: str, passed: bool, p50_ms: float) -> CandidateVerdict:
        return CandidateVerdict("onnxruntime", name, "fp32", passed=passed, p50_ms=p50_ms)

    rows = {"model.onnx": row("model.onnx", True, 20.0), "model.int8.ort.onnx": row("model.int8.ort.onnx", False, 9.0)}
    assert pick_fastest(rows, default="model.onnx") == "model.onnx"
    rows["model.int8.ort.onnx"].passed = True
    assert pick_fastest(rows, default="model.onnx") == "model.int8.ort.onnx"
    assert pick_fastest({"a": row("a", False, 1.0)}, default="model.onnx") == "model.onnx"
