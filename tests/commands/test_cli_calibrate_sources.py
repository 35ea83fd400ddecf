"""``edgeseg calibrate --calib`` sources (issue #24): a folder in edgeseg's dataset layout gives its images/ only,
never a mask; a bare bag path is a bag, as --source takes it; a depth (16UC1) topic is refused with a fix that
talks about topics, not files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.bags import gradient_frames, typestore, write_image_bag
from helpers.tiny_onnx import SPEC, save_conv_onnx, write_images

from edgeseg.cli import main
from edgeseg.images import save_png
from edgeseg.quant.calib_data import CalibrationFeed, folder_images


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_conv_onnx(tmp_path_factory.mktemp("calsrc") / "tiny" / "model.onnx")


def calibrate(model: Path, calib: str, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", calib, "--method", "minmax",
                                       "--out", str(out), *extra])
    return result.exit_code, result.output


def write_dataset_folder(root: Path, images: int, masks: int, split: str = "") -> Path:
    base = root / split if split else root
    write_images(base / "images", images)
    for i in range(masks):
        save_png(base / "masks" / f"mask_{i:03d}.png", np.full((8, 8), i % 3, np.uint8))
    return root


def test_a_dataset_folder_calibrates_on_its_images_only(model: Path, tmp_path: Path) -> None:
    root = write_dataset_folder(tmp_path / "ds", 7, 9)  # 16 PNGs, 9 of them masks
    code, output = calibrate(model, str(root), tmp_path / "out", "--calib-images", "16")
    assert code == 0, output
    names = json.loads((tmp_path / "out" / "ranges.json").read_text())["images"]
    assert len(names) == 7 and all(name.startswith("images/") for name in names), names


def test_split_folders_and_plain_folders(tmp_path: Path) -> None:
    root = write_dataset_folder(tmp_path / "splits", 3, 4, "train")
    write_dataset_folder(root, 2, 2, "val")
    names = [p.relative_to(root).as_posix() for p in folder_images(root)]
    assert len(names) == 5 and all(name.startswith(("train/images/", "val/images/")) for name in names), names
    write_images(tmp_path / "plain" / "masks", 2)  # a folder named masks with no images/ beside it is frames
    assert len(folder_images(tmp_path / "plain")) == 2
    feed = CalibrationFeed(root, SPEC, count=10)
    list(feed)
    assert all("/masks/" not in name for name in feed.images.names) and len(feed.images.used) == 5


def test_a_bare_bag_path_is_a_bag(model: Path, tmp_path: Path) -> None:
    pytest.importorskip("rosbags")
    bag = write_image_bag(tmp_path / "rec.mcap", "mcap", gradient_frames(6, SPEC.height, SPEC.width),
                          topic="/front/image_raw")
    code, output = calibrate(model, str(bag), tmp_path / "out", "--calib-images", "3")
    assert code == 0, output
    assert json.loads((tmp_path / "out" / "ranges.json").read_text())["source"]["topic"] == "/front/image_raw"


def write_depth_bag(path: Path, count: int = 3) -> Path:
    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    store = typestore()
    with rosbag2.Writer(path, version=9, storage_plugin=rosbag2.StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/depth/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for i in range(count):
            stamp = 1_700_000_000_000_000_000 + i * 100_000_000
            header = store.types["std_msgs/msg/Header"](
                stamp=store.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                frame_id="depth")
            data = np.full(SPEC.height * SPEC.width, 1000 + i, "<u2").view(np.uint8)
            msg = store.types["sensor_msgs/msg/Image"](header=header, height=SPEC.height, width=SPEC.width,
                                                       encoding="16UC1", is_bigendian=0, step=SPEC.width * 2,
                                                       data=data)
            writer.write(conn, stamp, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def test_a_depth_topic_is_refused_with_a_topic_fix(model: Path, tmp_path: Path) -> None:
    bag = write_depth_bag(tmp_path / "depth")
    code, output = calibrate(model, f"bag:{bag}", tmp_path / "out", "--calib-images", "2")
    assert code == 1, output
    assert "16UC1" in output and "--topic" in output
    assert "jpg/png" not in output and "corrupt files" not in output


def test_build_reference_frames_from_a_dataset_folder_are_images(tmp_path: Path) -> None:
    from edgeseg.pipeline.build import BuildOptions
    from edgeseg.pipeline.build_data import reference_samples

    root = write_dataset_folder(tmp_path / "ds", 3, 5)
    options = BuildOptions(calib=root, val_images=8)
    images, masks, source = reference_samples(options, SPEC, 4, tmp_path / "out", lambda line: None)
    assert len(images) == 3 and masks == [] and all("/masks/" not in p.as_posix() for p in images), images
    assert "3 of 3 images" in source
