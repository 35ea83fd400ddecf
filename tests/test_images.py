from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgeseg.errors import InputError
from edgeseg.images import list_images, load_image, load_mask, save_png


def write(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_rgb_gray_rgba_and_16bit_become_rgb_uint8(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3)).astype(np.uint8)
    assert np.array_equal(load_image(write(tmp_path / "a.png", rgb)), rgb)
    gray = np.arange(35, dtype=np.uint8).reshape(5, 7)
    out = load_image(write(tmp_path / "g.png", gray))
    assert out.shape == (5, 7, 3) and np.array_equal(out[..., 1], gray)
    rgba = np.dstack([rgb, np.full((5, 7), 7, np.uint8)])
    assert np.array_equal(load_image(write(tmp_path / "x.png", rgba)), rgb)
    deep = (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000)
    Image.fromarray(deep).save(tmp_path / "d.png")
    out16 = load_image(tmp_path / "d.png")
    assert out16.dtype == np.uint8 and out16.shape == (5, 7, 3)
    assert out16[..., 0].max() == round(34000 * 255 / 65535)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00broken"])
def test_bad_files_raise_input_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(InputError, match="bad.jpg"):
        load_image(path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="t.jpg"):
        load_image(path)


def test_masks(tmp_path: Path) -> None:
    labels = np.array([[0, 1], [255, 3]], np.uint8)
    assert np.array_equal(load_mask(write(tmp_path / "m.png", labels)), labels)
    with pytest.raises(InputError, match="colour"):
        load_mask(write(tmp_path / "c.png", np.zeros((2, 2, 3), np.uint8)))


def test_list_images_sorted_recursive(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ["b.png", "a.JPG", "sub/c.bmp", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a.JPG", "b.png", "sub/c.bmp"]
    with pytest.raises(InputError, match="does not exist"):
        list_images(tmp_path / "nope")


def test_save_png_round_trip(tmp_path: Path) -> None:
    mask = np.random.default_rng(0).integers(0, 6, (9, 11)).astype(np.uint8)
    assert np.array_equal(load_mask(save_png(tmp_path / "o.png", mask)), mask)


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_image_loader_never_crashes_on_garbage(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.png"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except InputError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
