"""Dataset specs and the public-dataset adapters on tiny trees in each real on-disk layout.

The fixtures (helpers.dataset_layouts) write masks as vertical bands of known raw ids, so every mapping
is checked pixel by pixel against the dataset's official table.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.dataset_layouts import (
    BANDS,
    HEIGHT,
    MAPPED,
    WIDTH,
    WRITERS,
    bands,
    write_ade20k,
    write_camvid,
    write_cityscapes,
    write_voc,
)

from edgeseg.data.datasets import (
    DatasetSpec,
    dataset_classes,
    dataset_image_paths,
    default_split,
    open_dataset,
    parse_dataset_spec,
    summary,
)
from edgeseg.data.folder import open_folder_dataset
from edgeseg.data.labels import ADE20K_CLASSES, CITYSCAPES_CLASSES, cityscapes_lut
from edgeseg.errors import ConfigError, InputError, UsageError
from edgeseg.metrics import IGNORE_INDEX
from edgeseg.palette import CITYSCAPES, class_palette, stored_colours, voc_colours

COUNTS = {"cityscapes": 19, "camvid": 11, "voc": 21, "ade20k": 150}


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    for kind, writer in WRITERS.items():
        writer(root / kind)
    return {kind: root / kind for kind in WRITERS}


# -- the spec parser --------------------------------------------------------------------------------------
def test_a_plain_path_is_the_folder_format(tmp_path: Path) -> None:
    assert parse_dataset_spec(str(tmp_path)) == DatasetSpec("folder", tmp_path)
    assert parse_dataset_spec(tmp_path) == DatasetSpec("folder", tmp_path)
    assert parse_dataset_spec("C:/data/set").kind == "folder"  # a Windows drive, not a dataset kind
    colon = tmp_path / "run:2"
    colon.mkdir()
    assert parse_dataset_spec(str(colon)) == DatasetSpec("folder", colon)  # an existing folder wins


@pytest.mark.parametrize("text, kind, root, split", [
    ("cityscapes:/data/cs", "cityscapes", "/data/cs", None),
    ("cityscapes:/data/cs:val", "cityscapes", "/data/cs", "val"),
    ("CamVid:/d/camvid:test", "camvid", "/d/camvid", "test"),
    ("voc:VOCdevkit", "voc", "VOCdevkit", None),
    ("ade20k:/d/ADEChallengeData2016:training", "ade20k", "/d/ADEChallengeData2016", "training"),
    ("folder:/d/set:val", "folder", "/d/set", "val"),
    ("cityscapes:/data/my:dir/x", "cityscapes", "/data/my:dir/x", None),  # "dir/x" is no split name
])
def test_kind_root_and_split(text: str, kind: str, root: str, split: str | None) -> None:
    spec = parse_dataset_spec(text)
    assert (spec.kind, spec.root, spec.split) == (kind, Path(root), split)
    assert parse_dataset_spec(str(spec)) == spec  # printed as it is typed


def test_an_unknown_kind_is_a_usage_error_with_the_nearest_one() -> None:
    with pytest.raises(UsageError) as info:
        parse_dataset_spec("citiscapes:/data/cs")
    assert "did you mean cityscapes:/data/cs" in info.value.format()
    assert "cityscapes, camvid, voc, ade20k" in info.value.format()
    with pytest.raises(UsageError, match="names no dataset folder"):
        parse_dataset_spec("voc:")


def test_default_split(tmp_path: Path) -> None:
    assert default_split(parse_dataset_spec("cityscapes:/x"), "train") == "train"
    assert default_split(parse_dataset_spec("cityscapes:/x:test"), "train") == "test"
    assert default_split(DatasetSpec("folder", tmp_path), "val") is None  # a folder without splits: all of it
    (tmp_path / "val.txt").write_text("a\n")
    assert default_split(DatasetSpec("folder", tmp_path), "val") == "val"


# -- the mapping, pixel by pixel ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(WRITERS))
def test_masks_load_in_train_ids_pixel_by_pixel(trees: dict[str, Path], kind: str) -> None:
    dataset = open_dataset(parse_dataset_spec(f"{kind}:{trees[kind]}:train"))
    assert dataset.num_classes == COUNTS[kind] and len(dataset) == 2
    image, mask = dataset.load(0)
    assert image.shape == (HEIGHT, WIDTH, 3) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, bands(MAPPED[kind]))
    from PIL import Image

    raw = np.asarray(Image.open(dataset.samples[0].mask))
    np.testing.assert_array_equal(raw, bands(BANDS[kind]))  # the file holds raw ids: the mapping is the adapter's


def test_the_cityscapes_table() -> None:
    table = cityscapes_lut()
    assert table[7] == 0 and table[26] == 13 and table[33] == 18 and table[0] == IGNORE_INDEX
    ignored = [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 255]
    assert all(table[i] == IGNORE_INDEX for i in ignored)
    kept = sorted(i for i in range(34) if table[i] != IGNORE_INDEX)
    assert [int(table[i]) for i in kept] == list(range(19))  # 19 classes, in trainId order
    assert CITYSCAPES_CLASSES[13] == "car" and CITYSCAPES_CLASSES[18] == "bicycle"


def test_names_and_colours_come_from_the_dataset(trees: dict[str, Path]) -> None:
    cs = open_dataset(parse_dataset_spec(f"cityscapes:{trees['cityscapes']}"), verify=False)
    assert cs.classes == list(CITYSCAPES_CLASSES) and cs.colors == list(CITYSCAPES)
    voc = open_dataset(parse_dataset_spec(f"voc:{trees['voc']}"), verify=False)
    assert voc.classes[15] == "person" and voc.colors[15] == (192, 128, 128) and voc.colors[0] == (0, 0, 0)
    camvid = open_dataset(parse_dataset_spec(f"camvid:{trees['camvid']}"), verify=False)
    assert camvid.classes[:3] == ["Sky", "Building", "Pole"] and camvid.colors[4] == (60, 40, 222)
    ade = open_dataset(parse_dataset_spec(f"ade20k:{trees['ade20k']}"), verify=False)
    assert ade.classes[0] == "wall" and ade.classes[149] == "flag" and len(set(ADE20K_CLASSES)) == 150
    assert ade.colors[0] == (120, 120, 120) and len(ade.colors) == 150  # color150.mat, the official colours
    # the one palette owner takes the dataset's colours as it takes classes.json's
    assert [tuple(c) for c in class_palette(19, cs.colors)] == list(CITYSCAPES)
    assert dataset_classes(parse_dataset_spec(f"voc:{trees['voc']}")) == (voc.classes, voc.colors)
    assert voc_colours(3) == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]


def test_stored_colours_are_cosmetic() -> None:
    assert stored_colours([[1, 2, 3], [4, 5, 6]], 2) == [[1, 2, 3], [4, 5, 6]]
    for bad in (None, [[1, 2, 3]], [[1, 2, 300], [0, 0, 0]], "x", [[1, 2], [3, 4]]):
        assert stored_colours(bad, 2) == []


# -- splits ------------------------------------------------------------------------------------------------
def test_project_split_names_map_to_the_datasets_own(trees: dict[str, Path]) -> None:
    ade = trees["ade20k"]
    assert open_dataset(parse_dataset_spec(f"ade20k:{ade}"), "train", verify=False).name == "ade20k training"
    assert open_dataset(parse_dataset_spec(f"ade20k:{ade}:validation"), verify=False).name == "ade20k validation"
    assert open_dataset(parse_dataset_spec(f"ade20k:{ade / 'ADEChallengeData2016'}:val"), verify=False).name \
        == "ade20k validation"  # ROOT may be the folder itself or the one holding it
    assert open_dataset(parse_dataset_spec(f"cityscapes:{trees['cityscapes']}:validation"),
                        verify=False).name == "cityscapes val"
    voc = open_dataset(parse_dataset_spec(f"voc:{trees['voc'] / 'VOCdevkit'}"), "train", verify=False)
    assert voc.name == "voc train" and [s.stem for s in voc.samples] == ["2007_000000", "2007_000001"]
    assert summary(voc) == "voc train: 2 pairs"


def test_image_paths_need_no_masks(trees: dict[str, Path], tmp_path: Path) -> None:
    cs = trees["cityscapes"]
    shutil.copytree(cs / "leftImg8bit", tmp_path / "cs" / "leftImg8bit")  # images only: a calibration set
    paths = dataset_image_paths(parse_dataset_spec(f"cityscapes:{tmp_path / 'cs'}"))
    assert [p.name for p in paths] == ["aachen_000000_000000_leftImg8bit.png", "aachen_000000_000001_leftImg8bit.png"]
    assert len(dataset_image_paths(f"camvid:{trees['camvid']}:test")) == 1
    assert len(dataset_image_paths(parse_dataset_spec(f"ade20k:{trees['ade20k']}"), "val")) == 2
    frames = tmp_path / "frames" / "cam0"
    frames.mkdir(parents=True)
    shutil.copy(paths[0], frames / "a.png")
    assert dataset_image_paths(str(tmp_path / "frames")) == [frames / "a.png"]  # a plain folder of frames


def test_the_folder_format_is_unchanged(tmp_path: Path) -> None:
    from edgeseg.data.generate import SynthConfig, write_synthetic_dataset

    write_synthetic_dataset(SynthConfig(out=tmp_path, num=2, height=64, width=64, seed=0))
    via_spec = open_dataset(parse_dataset_spec(str(tmp_path)))
    direct = open_folder_dataset(tmp_path)
    assert via_spec.samples == direct.samples and via_spec.classes == direct.classes
    assert via_spec.colors == direct.colors and via_spec.label_map is None
    np.testing.assert_array_equal(via_spec.load(1)[1], direct.load(1)[1])
    assert [p.name for p in dataset_image_paths(str(tmp_path))] == [s.image.name for s in direct.samples]


# -- layout errors -----------------------------------------------------------------------------------------
def _error(spec: str, **kwargs: object) -> str:
    with pytest.raises(InputError) as info:
        open_dataset(parse_dataset_spec(spec), **kwargs)  # type: ignore[arg-type]
    return info.value.format()


def test_a_missing_folder_names_what_was_looked_for_and_the_nearest(tmp_path: Path) -> None:
    root = write_cityscapes(tmp_path / "cs")
    (root / "gtFine").rename(root / "gtfine")
    text = _error(f"cityscapes:{root}")
    assert f"{root / 'gtFine'} not found" in text  # what was looked for
    assert "holds gtfine, leftImg8bit" in text  # what is there
    assert f"did you mean {root / 'gtfine'}" in text  # the nearest match
    assert "_gtFine_labelIds.png" in text  # the layout expected
    assert "does not exist" in _error(f"cityscapes:{tmp_path / 'nope'}")


def test_a_wrong_split_lists_the_splits_with_their_pair_counts(trees: dict[str, Path]) -> None:
    text = _error(f"camvid:{trees['camvid']}:tset")
    assert "no 'tset' split" in text and "did you mean 'test'" in text
    assert "test (1 pair), train (2 pairs), val (2 pairs)" in text
    text = _error(f"ade20k:{trees['ade20k']}:test")
    assert "training (2 pairs), validation (2 pairs)" in text and "train (= training)" in text
    text = _error(f"voc:{trees['voc']}:vall")
    assert "did you mean 'val'" in text


def test_the_camvid_layout_is_named(tmp_path: Path) -> None:
    root = write_camvid(tmp_path / "camvid", {"train": 1})
    text = _error(f"camvid:{root}:val")
    assert "SegNet" in text and "<split>annot" in text


def test_missing_masks_stop_unless_skipped(tmp_path: Path) -> None:
    root = write_voc(tmp_path)
    (root / "SegmentationClass" / "2007_000000.png").unlink()
    assert "1 of 2 train images have no mask" in _error(f"voc:{tmp_path}:train")
    dataset = open_dataset(parse_dataset_spec(f"voc:{tmp_path}:train"), skip_bad=True)
    assert len(dataset) == 1 and dataset.skipped[0][1] == "missing mask"
    assert summary(dataset) == "voc train: 1 pair (1 skipped)"


def test_a_raw_id_outside_the_table_is_named(tmp_path: Path) -> None:
    root = write_ade20k(tmp_path)
    from PIL import Image

    bad = root / "annotations" / "validation" / "ADE_val_00000002.png"
    Image.fromarray(bands((0, 200))).save(bad)
    text = _error(f"ade20k:{tmp_path}")
    assert "ADE_val_00000002.png" in text and "outside 0..149" in text and "ADE20K" in text


def test_a_class_count_other_than_the_datasets_is_a_config_error(trees: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as info:
        open_dataset(parse_dataset_spec(f"cityscapes:{trees['cityscapes']}"), num_classes=6,
                     classes_hint="pass --weights of another model")
    text = info.value.format()
    assert "19 (cityscapes)" in text and "found:    6" in text and "pass --weights of another model" in text
