"""Calibration image sampling, preprocessing and bad-input handling."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_onnx import write_images

from edgeseg.errors import ConfigError, InputError
from edgeseg.images import load_image
from edgeseg.quant.calib_data import CalibrationFeed, rank_images
from edgeseg.spec import InputSpec, preprocess

SPEC = InputSpec(32, 64)


def test_ranking_is_seeded_and_independent_of_listing_order(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 9)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # same contents, created in another order
    first = [p.relative_to(tmp_path / "a") for p in rank_images(tmp_path / "a", seed=3)]
    second = [p.relative_to(tmp_path / "b") for p in rank_images(tmp_path / "b", seed=3)]
    other_seed = [p.relative_to(tmp_path / "a") for p in rank_images(tmp_path / "a", seed=4)]
    assert first == second
    assert sorted(first) == sorted(other_seed) and first != other_seed


def test_feed_yields_reference_preprocessed_batches(tmp_path: Path) -> None:
    write_images(tmp_path, 6)
    feed = CalibrationFeed(tmp_path, SPEC, count=4, batch_size=2, seed=0)
    batches = list(feed)
    assert len(batches) == 2 and feed.num_batches == 2
    assert all(set(b) == {"images"} and b["images"].shape == (2, 3, 32, 64) for b in batches)
    assert batches[0]["images"].dtype == np.float32
    expected = preprocess(load_image(feed.images.used[1]), SPEC)
    np.testing.assert_array_equal(batches[0]["images"][1:2], expected)
    assert feed.images.used == rank_images(tmp_path, 0)[:4]
    with pytest.raises(RuntimeError):
        list(feed)


def test_bad_files_are_skipped_by_name_and_replaced(tmp_path: Path) -> None:
    write_images(tmp_path, 5)
    (tmp_path / "broken.jpg").write_text("not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("notes")
    feed = CalibrationFeed(tmp_path, SPEC, count=5, seed=1)
    assert len(list(feed)) == 5
    skipped = dict(feed.images.skipped)
    assert set(skipped) == {"broken.jpg", "empty.png"}
    assert "empty" in skipped["empty.png"] and "decode" in skipped["broken.jpg"]
    assert feed.images.ignored == ["readme.txt"]
    assert all(p.suffix in (".png", ".jpg") and p.name.startswith("img_") for p in feed.images.used)


def test_fewer_images_than_requested_uses_what_is_there(tmp_path: Path) -> None:
    write_images(tmp_path, 3)
    feed = CalibrationFeed(tmp_path, SPEC, count=100)
    assert len(list(feed)) == 3 and feed.images.requested == 100


def test_missing_or_empty_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        CalibrationFeed(tmp_path / "nope", SPEC)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "labels.txt").write_text("x")
    with pytest.raises(InputError, match="too few images") as info:
        CalibrationFeed(tmp_path / "empty", SPEC)
    assert "1 other file" in str(info.value)


def test_only_corrupt_images_is_an_input_error_naming_them(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "b.jpg").write_bytes(b"")
    feed = CalibrationFeed(tmp_path, SPEC, count=2)
    with pytest.raises(InputError, match="no usable calibration image") as info:
        list(feed)
    assert "a.png" in str(info.value) and "b.jpg" in str(info.value)


def test_batch_larger_than_the_images_is_refused(tmp_path: Path) -> None:
    write_images(tmp_path, 2)
    with pytest.raises(InputError, match="too few images"):
        CalibrationFeed(tmp_path, SPEC, count=8, batch_size=4)
    with pytest.raises(ConfigError):
        CalibrationFeed(tmp_path, SPEC, count=2, batch_size=3)
    with pytest.raises(ConfigError):
        CalibrationFeed(tmp_path, SPEC, count=0)


def test_grayscale_rgba_and_16bit_images_are_used(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.full((20, 30), 100, np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.full((20, 30, 4), 50, np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(tmp_path / "deep.png")
    feed = CalibrationFeed(tmp_path, SPEC, count=3)
    batches = list(feed)
    assert len(batches) == 3 and not feed.images.skipped
