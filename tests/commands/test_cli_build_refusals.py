"""A refused `edgeseg build` never costs the robot its folder: the passing manifest.json survives, byte for
byte, every build refused for an option, a dependency, an input or a name (issue #24, item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.blocked_imports import run_without
from helpers.tiny_onnx import save_conv_onnx, write_images
from helpers.validated_build import SPEC, validated_build

from edgeseg.cli import main


@pytest.fixture()
def robot_folder(tmp_path: Path) -> Path:
    """A build folder whose manifest passed, with a float and a Q/DQ ONNX carrying export metadata."""
    folder = validated_build(tmp_path / "engine")
    save_conv_onnx(folder / "model.onnx", spec=SPEC)
    save_conv_onnx(folder / "model.int8.onnx", spec=SPEC, qdq=True)
    return folder


def _refused(folder: Path, args: list[str], exit_code: int, *needles: str) -> str:
    before = (folder / "manifest.json").read_bytes()
    listing = sorted(p.name for p in folder.iterdir())
    result = CliRunner().invoke(main, ["build", *args])
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert (folder / "manifest.json").read_bytes() == before  # the robot still runs this folder
    assert sorted(p.name for p in folder.iterdir()) == listing  # nothing rendered, copied or removed
    return result.output


def test_bad_option_keeps_the_manifest(robot_folder: Path) -> None:
    _refused(robot_folder, ["--onnx", str(robot_folder / "model.onnx"), "--precision", "fp32",
                            "--fallback", "auto"], 2, "--fallback auto is about INT8 layers")


def test_fp16_on_the_cpu_is_a_bad_option_and_keeps_the_manifest(robot_folder: Path) -> None:
    _refused(robot_folder, ["--onnx", str(robot_folder / "model.onnx"), "--precision", "fp16"], 2,
             "--precision fp16 needs TensorRT")


def test_quantized_onnx_with_fallback_auto_keeps_the_manifest(robot_folder: Path) -> None:
    output = _refused(robot_folder, ["--onnx", str(robot_folder / "model.int8.onnx"), "--fallback", "auto"], 2,
                      "model.int8.onnx is already quantized", "model.onnx")
    assert "--fallback auto re-quantizes the float model" in output


def test_unknown_model_keeps_the_manifest_and_renders_nothing(robot_folder: Path) -> None:
    _refused(robot_folder, ["--model", "shufflenetv2_x0_5_mdsp", "--out", str(robot_folder)], 2,
             "unknown model", "shufflenetv2_x0_5_mdspp")


def test_val_without_masks_keeps_the_manifest(robot_folder: Path, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    write_images(frames / "images", 2)
    _refused(robot_folder, ["--model", "shufflenetv2_x0_5_mdspp", "--input-size", "64x64", "--val-data", str(frames),
                            "--out", str(robot_folder)], 1, "--val-data needs labelled images")


def test_empty_calib_folder_keeps_the_manifest(robot_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _refused(robot_folder, ["--onnx", str(robot_folder / "model.onnx"), "--calib", str(tmp_path / "empty")], 1,
             "no images in --calib")


def test_bag_with_several_topics_and_no_topic_keeps_the_manifest(robot_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("rosbags")
    from helpers.bags import gradient_frames, write_image_bag

    bag = write_image_bag(tmp_path / "drive.mcap", "mcap", gradient_frames(3), extra_image_topics=["/cam2"])
    _refused(robot_folder, ["--onnx", str(robot_folder / "model.onnx"), "--calib", f"bag:{bag}"], 2,
             "several image topics", "--topic")


def test_missing_onnx_on_the_robot_keeps_the_manifest(robot_folder: Path) -> None:
    before = (robot_folder / "manifest.json").read_bytes()
    done = run_without(f"""
        from click.testing import CliRunner
        from edgeseg.cli import main
        result = CliRunner().invoke(main, ["build", "--onnx", {str(robot_folder / "model.int8.onnx")!r}])
        print("EXIT", result.exit_code)
        print(result.output)
        """, ["onnx", "torch"])
    assert "EXIT 1" in done.stdout, done.stdout + done.stderr
    assert "onnx is needed" in done.stdout and "Traceback" not in done.stdout
    assert (robot_folder / "manifest.json").read_bytes() == before
    assert json.loads(before)["validation"]["status"] == "passed"
