"""``edgeseg calibrate --calib KIND:ROOT[:split]``: a dataset's images (masks unread) as calibration frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.dataset_layouts import write_cityscapes, write_voc
from helpers.tiny_onnx import save_conv_onnx

from edgeseg.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_conv_onnx(tmp_path_factory.mktemp("dscli") / "tiny" / "model.onnx")


def calibrate(model: Path, calib: str, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", calib, "--calib-images", "3",
                                       "--method", "minmax", "--out", str(out), *extra])
    return result.exit_code, result.output


def test_cityscapes_images_of_the_named_split_are_sampled(model: Path, tmp_path: Path) -> None:
    root = write_cityscapes(tmp_path / "cs", {"train": 4, "val": 2})
    code, output = calibrate(model, f"cityscapes:{root}", tmp_path / "train")
    assert code == 0, output
    ranges = json.loads((tmp_path / "train" / "ranges.json").read_text())
    assert ranges["num_images"] == 3  # train by default: 4 images there, 2 in val
    assert all(name.startswith("leftImg8bit/train/") for name in ranges["images"])

    code, output = calibrate(model, f"cityscapes:{root}:val", tmp_path / "val")
    assert code == 0, output
    ranges = json.loads((tmp_path / "val" / "ranges.json").read_text())
    assert ranges["num_images"] == 2 and all(n.startswith("leftImg8bit/val/") for n in ranges["images"])
    assert "2 used of 3 requested" in output


def test_voc_split_list_and_option_errors(model: Path, tmp_path: Path) -> None:
    root = write_voc(tmp_path / "voc", {"train": 3, "val": 2})
    code, output = calibrate(model, f"voc:{root}:train", tmp_path / "voc-out")
    assert code == 0, output
    assert json.loads((tmp_path / "voc-out" / "ranges.json").read_text())["num_images"] == 3
    code, output = calibrate(model, f"voc:{root}", tmp_path / "topic", "--topic", "/cam")
    assert code == 2 and "--topic is for a bag" in output
    code, output = calibrate(model, f"citiscapes:{root}", tmp_path / "typo")
    assert code == 2 and "cityscapes" in output  # the nearest kind is suggested
    code, output = calibrate(model, f"cityscapes:{tmp_path / 'missing'}", tmp_path / "missing-out")
    assert code == 2 and "does not exist" in output
