"""numpy augmentation: sizes, label safety, reproducibility."""

from __future__ import annotations

import numpy as np

from edgeseg.data.augment import augment
from edgeseg.spec import resize_mask_nearest


def test_augment_crops_to_size_and_never_invents_labels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (40, 60), dtype=np.uint8)
    for seed in range(10):
        out_image, out_mask = augment(image, mask, (32, 64), np.random.default_rng(seed))
        assert out_image.shape == (32, 64, 3) and out_image.dtype == np.uint8
        assert out_mask.shape == (32, 64)
        assert set(np.unique(out_mask)) <= {0, 1, 2, 3, 255}  # 255 only from padding


def test_augment_is_reproducible_from_the_generator():
    image = np.arange(32 * 64 * 3, dtype=np.uint8).reshape(32, 64, 3)
    mask = (np.arange(32 * 64) % 5).astype(np.uint8).reshape(32, 64)
    a = augment(image, mask, (32, 64), np.random.default_rng(7))
    b = augment(image, mask, (32, 64), np.random.default_rng(7))
    c = augment(image, mask, (32, 64), np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_augment_resizes_masks_nearest():
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    assert np.array_equal(resize_mask_nearest(mask, 4, 4), np.repeat(np.repeat(mask, 2, 0), 2, 1))
    assert np.array_equal(resize_mask_nearest(resize_mask_nearest(mask, 4, 4), 2, 2), mask)
    _, labels = augment(np.zeros((2, 2, 3), np.uint8), mask, (2, 2), np.random.default_rng(0))
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 255}  # never blended: only labels (and padding's ignore)
