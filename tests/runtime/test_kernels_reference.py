"""Host references of the GPU kernels (numpy_overlay, nearest resize, palette, normalisation)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import ConfigError
from edgeseg.palette import class_palette
from edgeseg.runtime.kernels import (
    KERNEL_SOURCE,
    numpy_overlay,
)
from edgeseg.spec import InputSpec, nearest_index, normalisation, preprocess, resize_mask_nearest


def test_nearest_index_is_half_pixel() -> None:
    np.testing.assert_array_equal(nearest_index(4, 2), [0, 0, 1, 1])
    np.testing.assert_array_equal(nearest_index(2, 4), [1, 3])
    np.testing.assert_array_equal(nearest_index(5, 5), np.arange(5))
    mask = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(resize_mask_nearest(mask, 4, 6), np.repeat(np.repeat(mask, 2, 0), 2, 1))


def test_overlay_blends_palette_colours() -> None:
    frame = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [1, 0]], np.uint8)
    palette = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    out = numpy_overlay(frame, mask, palette, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [50, 50, 50])
    np.testing.assert_array_equal(out[0, 1], [178, 178, 178])  # 100*0.5 + 255*0.5 = 177.5 -> 178
    np.testing.assert_array_equal(numpy_overlay(frame, mask, palette, alpha=0.0), frame)
    with pytest.raises(ConfigError):
        numpy_overlay(frame, mask, palette, alpha=1.5)


def test_overlay_clamps_out_of_palette_classes_and_upsamples() -> None:
    frame = np.zeros((4, 4, 3), np.uint8)
    mask = np.array([[7, 0], [0, 0]], np.uint8)
    palette = class_palette(2)
    out = numpy_overlay(frame, mask, palette, alpha=1.0)
    np.testing.assert_array_equal(out[:2, :2], np.broadcast_to(palette[1], (2, 2, 3)))


def test_palette_is_distinct_and_uint8() -> None:
    palette = class_palette(19)
    assert palette.dtype == np.uint8 and palette.shape == (19, 3)
    assert len({tuple(c) for c in palette}) == 19


def test_normalisation_constants_reproduce_preprocess() -> None:
    spec = InputSpec(32, 32)
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, inv_std = normalisation(spec)
    manual = ((frame.astype(np.float32) - mean) * inv_std).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(manual, preprocess(frame, spec))


def test_kernel_source_is_packaged_and_has_the_entry_points() -> None:
    text = KERNEL_SOURCE.read_text()
    for name in ("preprocess_f32", "preprocess_f16", "argmax_f32", "argmax_f16", "overlay"):
        assert f"__global__ void {name}(" in text
