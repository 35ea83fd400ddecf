"""Reading images and label masks with clear errors (layer 0; Pillow imported lazily).

Every image becomes a uint8 HxWx3 RGB array: grayscale is replicated to 3 channels,
alpha is dropped, 16-bit images are scaled to 8 bits. Anything that cannot be decoded
raises an ``InputError`` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError, require
from .fileio import atomic_open

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MAX_PIXELS = 100_000_000  # larger images are refused rather than exhausting memory


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float pixel values back to uint8: rounded half to even (numpy's rint), clipped to 0..255. The one rounding
    rule of frames and pictures (the GPU overlay kernel and its numpy twin round half up, as CUDA does)."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def list_images(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """Image files under ``folder``, sorted for determinism."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(
            f"image folder {root} does not exist" if not root.exists() else f"{root} is not a folder",
            expected="a folder of .jpg/.png/.bmp images",
            found=str(root),
        )
    pattern = root.rglob("*") if recursive else root.glob("*")
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _open(path: Path):  # -> PIL.Image.Image
    image_mod = require("PIL.Image", purpose="reading images")
    if not path.is_file():
        raise InputError(f"image {path} not found", expected="an existing image file", found="no such file")
    if path.stat().st_size == 0:
        raise InputError(f"image {path} is empty (0 bytes)", fix="remove or replace the file")
    try:
        image = image_mod.open(path)
        if image.width * image.height > MAX_PIXELS:
            raise InputError(
                f"image {path} is too large to load",
                expected=f"at most {MAX_PIXELS:,} pixels",
                found=f"{image.width}x{image.height}",
                fix="downscale it first",
            )
        image.load()
    except InputError:
        raise
    except Exception as exc:  # Pillow raises many types for bad files
        raise InputError(
            f"cannot decode image {path}",
            found=f"{type(exc).__name__}: {exc}",
            fix="remove the file or replace it with a valid jpg/png/bmp",
        ) from None
    return image


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Load an image file as uint8 HxWx3 RGB."""
    image = _open(Path(path))
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        data = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if data.max(initial=0) > 255 or image.mode.startswith("I;16") else 255.0
        gray = to_uint8(data * (255.0 / peak))
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, P, RGBA, CMYK, ...: alpha dropped, gray replicated
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def load_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Load a single-channel label map (uint8 HxW). RGB colour masks are refused."""
    image = _open(Path(path))
    if image.mode in ("RGB", "RGBA"):
        raise InputError(
            f"mask {path} is a colour image",
            expected="a single-channel PNG whose pixel values are class indices (255 = ignore)",
            found=f"mode {image.mode}",
            fix="convert colour masks to index masks using your palette (classes.json)",
        )
    if image.mode == "P":
        return np.asarray(image, dtype=np.uint8).copy()  # palette indices are the labels
    data = np.asarray(image)
    if data.ndim != 2 or data.max(initial=0) > 255:
        raise InputError(f"mask {path} is not an 8-bit label map", found=f"mode {image.mode}, shape {data.shape}")
    return data.astype(np.uint8)


def save_png(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a uint8 HxW or HxWx3 array as PNG, atomically."""
    image_mod = require("PIL.Image", purpose="writing images")
    image = image_mod.fromarray(np.ascontiguousarray(array))
    with atomic_open(path, "wb") as handle:
        image.save(handle, format="PNG")
    return Path(path)
