"""Training augmentation and evaluation resizing in numpy (no torch).

Geometry: the image is first stretched to the model input size (the same ``stretch``
policy as ``edgeseg.spec.preprocess`` at deployment), then randomly scaled, cropped
back to the input size (padding: black image, ignore mask) and flipped. Colour:
brightness, contrast, saturation and a small hue-like channel gain. Masks are always
resized with nearest neighbour so labels are never blended.

Evaluation (training-time and ``edgeseg eval``): the image goes through
``spec.preprocess``; the mask is resized to the model size with nearest neighbour
(``spec.resize_mask_nearest``, the one nearest resize). Scores are therefore measured at the model resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics import IGNORE_INDEX
from ..spec import resize_bilinear, resize_mask_nearest


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a uint8 HxWx3 image, rounded back to uint8."""
    if image.shape[:2] == (height, width):
        return image
    return np.clip(resize_bilinear(image, height, width) + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class AugmentConfig:
    scale_min: float = 0.75
    scale_max: float = 1.5
    flip: bool = True
    brightness: float = 0.25  # +- fraction
    contrast: float = 0.25
    saturation: float = 0.25
    channel_gain: float = 0.05  # per-channel gain jitter (a cheap hue shift)


def augment(
    image: np.ndarray,
    mask: np.ndarray,
    size: tuple[int, int],
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale + crop to ``size`` + flip + colour jitter: (uint8 HxWx3, uint8 HxW)."""
    height, width = size
    scale = rng.uniform(config.scale_min, config.scale_max)
    sh, sw = max(1, round(height * scale)), max(1, round(width * scale))
    image = resize_image(image, sh, sw)
    mask = resize_mask_nearest(mask, sh, sw)
    if sh < height or sw < width:  # pad to at least the crop size
        ph, pw = max(height - sh, 0), max(width - sw, 0)
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    top = int(rng.integers(0, image.shape[0] - height + 1))
    left = int(rng.integers(0, image.shape[1] - width + 1))
    image = image[top : top + height, left : left + width]
    mask = mask[top : top + height, left : left + width]
    if config.flip and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return jitter_colour(image, rng, config), np.ascontiguousarray(mask)


def jitter_colour(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    pixels = image.astype(np.float32)
    pixels *= 1 + rng.uniform(-config.brightness, config.brightness)
    mean = pixels.mean()
    pixels = (pixels - mean) * (1 + rng.uniform(-config.contrast, config.contrast)) + mean
    gray = pixels.mean(axis=2, keepdims=True)
    pixels = (pixels - gray) * (1 + rng.uniform(-config.saturation, config.saturation)) + gray
    pixels *= 1 + rng.uniform(-config.channel_gain, config.channel_gain, 3).astype(np.float32)
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
