"""The folder dataset reader: layouts, splits and every error it must explain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeseg.data.folder import open_folder_dataset
from edgeseg.errors import ConfigError, InputError
from edgeseg.images import save_png


def _make(root: Path, stems: list[str], *, size=(8, 12), labels=3, classes: int | None = 3) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for stem in stems:
        save_png(root / "images" / f"{stem}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        save_png(root / "masks" / f"{stem}.png", rng.integers(0, labels, size, dtype=np.uint8))
    if classes:
        entries = [{"name": f"c{k}", "color": [k, k, k]} for k in range(classes)]
        (root / "classes.json").write_text(json.dumps({"classes": entries}))
    return root


def test_reads_pairs_and_classes(tmp_path):
    ds = open_folder_dataset(_make(tmp_path, ["a", "b"]))
    assert [s.stem for s in ds.samples] == ["a", "b"]
    assert ds.classes == ["c0", "c1", "c2"] and ds.colors[2] == (2, 2, 2)
    image, mask = ds.load(1)
    assert image.shape == (8, 12, 3) and mask.shape == (8, 12) and mask.max() < 3


def test_classes_inferred_without_classes_json(tmp_path):
    ds = open_folder_dataset(_make(tmp_path, ["a"], labels=5, classes=None))
    assert ds.num_classes == int(ds.load(0)[1].max()) + 1


def test_split_subfolders_and_stem_lists(tmp_path):
    _make(tmp_path / "sub" / "train", ["a", "b", "c"])
    _make(tmp_path / "sub" / "val", ["d"])
    assert len(open_folder_dataset(tmp_path / "sub", "train")) == 3
    assert len(open_folder_dataset(tmp_path / "sub", "val")) == 1
    flat = _make(tmp_path / "flat", ["a", "b", "c"])
    (flat / "train.txt").write_text("a\nc\n")
    assert [s.stem for s in open_folder_dataset(flat, "train").samples] == ["a", "c"]
    with pytest.raises(InputError, match="no 'val' split"):
        open_folder_dataset(flat, "val")


def test_missing_masks_are_named_and_counted(tmp_path):
    root = _make(tmp_path, ["a", "b", "c"])
    (root / "masks" / "b.png").unlink()
    (root / "masks" / "c.png").unlink()
    with pytest.raises(InputError) as info:
        open_folder_dataset(root)
    assert "2 of 3 images have no mask" in str(info.value) and "b.png" in str(info.value)
    ds = open_folder_dataset(root, skip_bad=True)
    assert [s.stem for s in ds.samples] == ["a"]
    assert sorted(p.name for p, _ in ds.skipped) == ["b.png", "c.png"]


def test_size_mismatch_is_an_error_even_with_skip(tmp_path):
    root = _make(tmp_path, ["a", "b"])
    save_png(root / "masks" / "b.png", np.zeros((8, 10), np.uint8))
    for skip in (False, True):
        with pytest.raises(InputError, match="differ in size") as info:
            open_folder_dataset(root, skip_bad=skip)
        assert "b (image 8x12, mask 8x10)" in str(info.value)


def test_labels_out_of_range(tmp_path):
    root = _make(tmp_path, ["a", "b"], labels=3)
    bad = np.zeros((8, 12), np.uint8)
    bad[0, 0], bad[1, 1] = 7, 255  # 255 is the ignore label and allowed
    save_png(root / "masks" / "b.png", bad)
    with pytest.raises(InputError, match=r"labels outside 0\.\.2") as info:
        open_folder_dataset(root)
    assert "b.png (labels [7])" in str(info.value)
    ok = np.zeros((8, 12), np.uint8)
    ok[0, 0] = 255
    save_png(root / "masks" / "b.png", ok)
    assert len(open_folder_dataset(root)) == 2


def test_unreadable_files_fail_or_are_skipped_and_listed(tmp_path):
    root = _make(tmp_path, ["a", "b", "c"])
    (root / "images" / "b.png").write_bytes(b"")  # zero bytes
    (root / "masks" / "c.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="2 files cannot be read") as info:
        open_folder_dataset(root)
    assert "b.png" in str(info.value) and "c.png" in str(info.value)
    ds = open_folder_dataset(root, skip_bad=True)
    assert [s.stem for s in ds.samples] == ["a"]
    assert {p.name for p, _ in ds.skipped} == {"b.png", "c.png"}


def test_classes_json_problems(tmp_path):
    root = _make(tmp_path, ["a"])
    with pytest.raises(ConfigError, match="disagrees with classes.json"):
        open_folder_dataset(root, num_classes=4)
    (root / "classes.json").write_text(json.dumps({"classes": [{"name": "x", "color": [300, 0, 0]}]}))
    with pytest.raises(InputError, match="bad color"):
        open_folder_dataset(root)
    (root / "classes.json").write_text(json.dumps({"labels": []}))
    with pytest.raises(InputError, match="no class list"):
        open_folder_dataset(root)


def test_not_a_dataset(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_folder_dataset(tmp_path / "nope")
    with pytest.raises(InputError, match="not a dataset folder"):
        open_folder_dataset(tmp_path)
