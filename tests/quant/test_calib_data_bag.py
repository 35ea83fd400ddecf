"""CalibrationFeed on a ROS bag: batches of evenly spread frames, provenance with stamps, skips reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.bags import default_stamps, gradient_frames, write_image_bag
from helpers.tiny_onnx import SPEC

from edgeseg.errors import InputError, UsageError
from edgeseg.quant.calib_data import BagCalibSource, CalibrationFeed, calib_source, write_bag_frames

pytest.importorskip("rosbags")


def test_calib_source_parsing(tmp_path: Path) -> None:
    assert calib_source(f"bag:{tmp_path}/a.mcap", "/cam") == BagCalibSource(tmp_path / "a.mcap", "/cam")
    assert calib_source(Path(f"bag:{tmp_path}/a.bag")) == BagCalibSource(tmp_path / "a.bag", None)
    assert calib_source(tmp_path) == tmp_path  # a folder stays what it was
    with pytest.raises(UsageError, match="--topic is for a bag"):
        calib_source(tmp_path, "/cam")
    assert str(BagCalibSource(Path("r.bag"), "/cam")) == "bag:r.bag (topic /cam)"


@pytest.mark.parametrize("storage,name", [("ros1", "rec.bag"), ("sqlite3", "rec.db3")])
def test_feed_batches_bag_frames_with_provenance(tmp_path: Path, storage: str, name: str) -> None:
    bag = write_image_bag(tmp_path / name, storage, gradient_frames(10, 20, 30), topic="/cam")
    feed = CalibrationFeed(BagCalibSource(bag, None), SPEC, count=4, batch_size=2)
    assert feed.num_batches == 2
    batches = list(feed)
    assert [b[SPEC.input_name].shape for b in batches] == [(2, 3, SPEC.height, SPEC.width)] * 2
    assert all(np.isfinite(b[SPEC.input_name]).all() for b in batches)
    images = feed.images
    assert images.names == ["000000_1700000000.000000000", "000002_1700000000.200000000",
                            "000005_1700000000.500000000", "000007_1700000000.700000000"]
    assert images.bag is not None and images.bag["topic"] == "/cam" and images.bag["storage"] == storage
    assert images.bag["stamps_ns"] == [default_stamps(10)[i] for i in (0, 2, 5, 7)]
    assert len(images.sha256()) == 64 and len(images.digests) == 4


def test_bag_identity_hash_depends_on_the_pixels(tmp_path: Path) -> None:
    def digest(seed: int) -> str:
        bag = write_image_bag(tmp_path / f"r{seed}.mcap", "mcap", gradient_frames(3, seed=seed))
        feed = CalibrationFeed(BagCalibSource(bag), SPEC, count=3)
        list(feed)
        return feed.images.sha256()

    assert digest(0) != digest(1)


def test_leftover_frames_that_cannot_fill_a_batch_are_not_recorded(tmp_path: Path) -> None:
    frames = gradient_frames(3, 16, 16)
    bag = write_image_bag(tmp_path / "r.mcap", "mcap", [frames[0], frames[0], frames[1], frames[2]])
    feed = CalibrationFeed(BagCalibSource(bag), SPEC, count=4, batch_size=2)
    list(feed)  # message 1 repeats message 0: three frames, one full batch
    assert len(feed.images.used) == 2 and feed.images.bag is not None
    assert feed.images.bag["indices"] == [0, 2] and len(feed.images.bag["stamps_ns"]) == 2
    assert feed.images.bag["skipped_duplicates"] == 1 and len(feed.images.digests) == 2


def test_too_short_a_bag_is_an_input_error(tmp_path: Path) -> None:
    bag = write_image_bag(tmp_path / "r.mcap", "mcap", gradient_frames(1))
    with pytest.raises(InputError, match="too few frames on /cam/image_raw"):
        CalibrationFeed(BagCalibSource(bag), SPEC, count=4, batch_size=2)


def test_write_bag_frames_replaces_another_sample(tmp_path: Path) -> None:
    bag = write_image_bag(tmp_path / "r.mcap", "mcap", gradient_frames(6, 8, 8))
    folder = tmp_path / "frames"
    write_bag_frames(BagCalibSource(bag), folder, 3)
    assert sorted(p.name[:6] for p in folder.iterdir()) == ["000000", "000002", "000004"]
    write_bag_frames(BagCalibSource(bag), folder, 2)
    assert sorted(p.name[:6] for p in folder.iterdir()) == ["000000", "000003"]
