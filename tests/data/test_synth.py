"""The synthetic scene generator: determinism, class coverage, exact masks, file layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.data.folder import open_folder_dataset
from edgeseg.data.generate import SynthConfig, write_synthetic_dataset
from edgeseg.data.synth import CLASSES, render_scene
from edgeseg.errors import ConfigError


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    write_synthetic_dataset(SynthConfig(out=tmp_path / "a", num=4, height=64, width=128, seed=3, workers=1))
    write_synthetic_dataset(SynthConfig(out=tmp_path / "b", num=4, height=64, width=128, seed=3, workers=2))
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 2 * 4 + 2  # images, masks, classes.json, synth.json
    assert a == b


def test_image_depends_on_seed_and_index_only(tmp_path):
    write_synthetic_dataset(SynthConfig(out=tmp_path / "full", num=3, height=64, width=128, seed=3))
    write_synthetic_dataset(SynthConfig(out=tmp_path / "tail", num=1, height=64, width=128, seed=3, start=2))
    write_synthetic_dataset(SynthConfig(out=tmp_path / "other", num=3, height=64, width=128, seed=4))
    full, tail, other = (_files(tmp_path / n) for n in ("full", "tail", "other"))
    assert tail["images/0003_000002.jpg"] == full["images/0003_000002.jpg"]
    assert full["images/0003_000000.jpg"] != full["images/0003_000001.jpg"]
    assert all(
        k.replace("0003_", "0004_") not in other or other[k.replace("0003_", "0004_")] != v
        for k, v in full.items()
        if k.startswith(("images/", "masks/"))
    )


def test_render_is_exactly_repeatable():
    image_a, mask_a = render_scene(11, 5, 64, 128)
    image_b, mask_b = render_scene(11, 5, 64, 128)
    assert np.array_equal(image_a, image_b) and np.array_equal(mask_a, mask_b)
    assert image_a.dtype == np.uint8 and image_a.shape == (64, 128, 3) and mask_a.shape == (64, 128)


def test_every_class_appears_over_twenty_scenes():
    counts = np.zeros(len(CLASSES), np.int64)
    for index in range(20):
        counts += np.bincount(render_scene(0, index, 64, 128)[1].ravel(), minlength=len(CLASSES))[: len(CLASSES)]
    assert (counts > 0).all(), dict(zip([n for n, _ in CLASSES], counts.tolist(), strict=True))
    assert counts.sum() == 20 * 64 * 128  # every pixel has a real class, no ignore


def test_scenes_vary_and_classes_overlap_in_colour():
    """Not trivially separable: a class's mean colour varies a lot between scenes."""
    means = []
    for index in range(12):
        image, mask = render_scene(1, index, 64, 128)
        means.append(image[mask == 0].mean(axis=0))  # floor colour
    assert np.std(np.array(means), axis=0).max() > 20


def test_written_set_is_a_valid_folder_dataset(tmp_path):
    write_synthetic_dataset(SynthConfig(out=tmp_path, num=2, height=64, width=96, seed=0, image_format="png"))
    ds = open_folder_dataset(tmp_path)
    assert ds.classes == [n for n, _ in CLASSES]
    assert json.loads((tmp_path / "synth.json").read_text())["seed"] == 0
    image, mask = ds.load(0)
    assert image.shape == (64, 96, 3) and mask.max() < len(CLASSES)


@pytest.mark.parametrize("changes", [{"num": 0}, {"workers": 0}, {"image_format": "gif"}, {"height": 16}])
def test_bad_options(tmp_path, changes):
    values = {"out": tmp_path, "num": 1, "height": 64, "width": 64, **changes}
    with pytest.raises(ConfigError):
        write_synthetic_dataset(SynthConfig(**values))


@pytest.mark.parametrize("height, width", [(192, 384), (512, 1024)])
def test_far_poles_stay_at_least_three_pixels_wide(height, width):
    # A pole 25 m away is sub-pixel by perspective alone; the renderer widens it so its label is visible.
    from edgeseg.data.synth_objects import POLE, _Camera, _Canvas, _draw_pole

    camera = _Camera(height, width, focal=0.45 * width, cx=width / 2, horizon=0.4 * height, cam_h=1.0)
    for seed in range(10):
        canvas = _Canvas(np.zeros((height, width, 3), np.float32), np.zeros((height, width), np.uint8))
        _draw_pole(np.random.default_rng(seed), camera, canvas, 0.0, 25.0)
        rows = np.flatnonzero((canvas.labels == POLE).any(axis=1))
        assert rows.size, "the pole was not drawn"
        foot = canvas.labels[rows.max()]  # the shaft's lowest row (signs hang near the top)
        assert (foot == POLE).sum() >= 3
