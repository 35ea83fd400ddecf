"""``edgeseg calibrate --calib bag:PATH --topic T`` (and build's --calib/--topic parsing) on a tiny ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.bags import default_stamps, gradient_frames, write_image_bag
from helpers.tiny_onnx import SPEC, save_conv_onnx, write_images

from edgeseg.cli import main

pytest.importorskip("rosbags")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_conv_onnx(tmp_path_factory.mktemp("bagcli") / "tiny" / "model.onnx")


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = gradient_frames(12, SPEC.height, SPEC.width)
    return write_image_bag(tmp_path_factory.mktemp("bags") / "rec.mcap", "mcap", frames, topic="/front/image_raw",
                           compressed="png", extra_image_topics=["/rear/image_raw"])


def test_calibrate_on_a_bag_records_bag_topic_and_stamps(model: Path, bag: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", f"bag:{bag}", "--topic",
                                       "/front/image_raw", "--calib-images", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    ranges = json.loads((out / "ranges.json").read_text())
    picked = [0, 3, 6, 9]  # spread over the 12 messages, not the first four
    stamps = [default_stamps(12)[i] for i in picked]
    assert ranges["num_images"] == 4
    assert ranges["images"] == [f"{i:06d}_{s // 10**9}.{s % 10**9:09d}" for i, s in zip(picked, stamps, strict=True)]
    source = ranges["source"]
    assert (source["bag"], source["topic"], source["storage"]) == (str(bag), "/front/image_raw", "mcap")
    assert source["stamps_ns"] == stamps and source["indices"] == picked and source["messages"] == 12
    assert len(ranges["calibration_sha256"]) == 64
    for name in ("model.int8.onnx", "model.int8.ort.onnx", "calibration.cache"):
        assert (out / name).is_file()
    assert "/front/image_raw" in result.output and "4 of 12 messages" in result.output


def test_the_same_bag_gives_the_same_ranges_and_another_topic_others(model: Path, bag: Path, tmp_path: Path) -> None:
    def run(topic: str, out: Path) -> dict:
        result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", f"bag:{bag}", "--topic",
                                           topic, "--calib-images", "3", "--method", "minmax", "--out", str(out)])
        assert result.exit_code == 0, result.output
        return json.loads((out / "ranges.json").read_text())

    first, again = run("/front/image_raw", tmp_path / "a"), run("/front/image_raw", tmp_path / "b")
    assert first == again
    rear = run("/rear/image_raw", tmp_path / "c")
    assert rear["source"]["topic"] == "/rear/image_raw"


def test_several_topics_without_topic_list_them(model: Path, bag: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", f"bag:{bag}",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "/front/image_raw" in result.output and "/rear/image_raw" in result.output
    assert "--topic" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("case, code, expected", [
    ("unknown-topic", 2, "is not an image topic"),
    ("missing-bag", 2, "does not exist"),  # checked with the options, as build does
    ("topic-with-folder", 2, "--topic is for a bag"),
])
def test_bag_user_errors(model: Path, bag: Path, tmp_path: Path, case: str, code: int, expected: str) -> None:
    write_images(tmp_path / "calib", 2)
    calib, topic = {"unknown-topic": (f"bag:{bag}", "/nope"), "missing-bag": (f"bag:{tmp_path}/nope.mcap", None),
                    "topic-with-folder": (str(tmp_path / "calib"), "/front/image_raw")}[case]
    argv = ["calibrate", "--onnx", str(model), "--calib", calib, "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, argv + (["--topic", topic] if topic else []))
    assert result.exit_code == code, result.output
    assert expected in result.output and "Traceback" not in result.output


def test_a_folder_ranges_file_has_no_bag_source(model: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "calib", 3)
    result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", str(tmp_path / "calib"),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "source" not in json.loads((tmp_path / "o" / "ranges.json").read_text())


def test_build_checks_a_missing_bag_up_front(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "--calib", f"bag:{tmp_path}/nope.mcap", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "bag" in result.output and "does not exist" in result.output
    assert not (tmp_path / "o").exists()
    help_text = CliRunner().invoke(main, ["build", "--help"]).output
    assert "bag:PATH" in help_text and "--topic" in help_text
