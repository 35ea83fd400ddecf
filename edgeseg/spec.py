"""The input spec: the one preprocessing contract (layer 0: stdlib + numpy).

Export, calibration, validation and every runtime backend preprocess frames through
``InputSpec`` and ``preprocess``; the GPU kernels are tested against ``preprocess``.

Contract: a uint8 HxWx3 frame in ``frame_order`` (RGB or BGR) is resized to the model
size with half-pixel bilinear interpolation (no antialiasing, edge clamped: the same
as OpenCV's INTER_LINEAR and the GPU kernel), reordered to the model's channel order,
scaled to [0, 1], normalised with mean/std and laid out as 1x3xHxW float32.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import ArtifactError, ConfigError, InputError, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE_MULTIPLE = 32
CHANNEL_ORDERS = ("RGB", "BGR")
RESIZE_POLICIES = ("stretch",)


def nearest_valid_sizes(value: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The multiples of ``multiple`` just below and above ``value`` (below is >= multiple)."""
    low = max(multiple, (value // multiple) * multiple)
    high = -(-max(value, 1) // multiple) * multiple
    return low, max(high, multiple)


def check_size(height: int, width: int, *, what: str = "input size") -> None:
    """Raise a ConfigError naming the nearest valid sizes unless H and W are multiples of 32."""
    bad = [(n, v) for n, v in (("height", height), ("width", width)) if v <= 0 or v % SIZE_MULTIPLE]
    if not bad:
        return
    suggestions = []
    for name, value in bad:
        low, high = nearest_valid_sizes(value)
        suggestions.append(f"{name} {value} -> {low} or {high}" if low != high else f"{name} -> {low}")
    raise ConfigError(
        f"{what} {height}x{width} is not supported",
        expected=f"height and width positive multiples of {SIZE_MULTIPLE}",
        found=f"{height}x{width}",
        fix="use " + "; ".join(suggestions),
    )


_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX,]\s*(\d+)\s*$")


MAX_SIDE = 8192  # larger sides are typos (32768x32768 would need ~24 GB to export), not camera frames


def parse_size(text: str, *, check: bool = True, option: str = "--input-size") -> tuple[int, int]:
    """Parse ``HxW`` (e.g. ``512x1024``) into (height, width); a UsageError naming ``option`` otherwise."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise UsageError(
            f"cannot read the size {text!r} given to {option}",
            expected="HEIGHTxWIDTH, e.g. 512x1024",
            found=repr(text),
            fix=f"pass {option} 512x1024",
        )
    height, width = int(match.group(1)), int(match.group(2))
    if max(height, width) > MAX_SIDE:
        raise UsageError(f"{option} {height}x{width} is too large", expected=f"each side at most {MAX_SIDE}",
                         found=f"{height}x{width}", fix=f"pass {option} 512x1024 (or the camera's resolution)")
    if check:
        try:
            check_size(height, width)
        except ConfigError as exc:
            fix = exc.fix.replace("use ", f"use {option} with ", 1) if exc.fix else None
            raise UsageError(f"{option}: {exc.problem}", expected=exc.expected, found=exc.found, fix=fix) from None
    return height, width


@dataclass(frozen=True)
class InputSpec:
    """How a camera frame becomes the model's input tensor."""

    height: int
    width: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"  # order the model was trained with
    resize: str = "stretch"
    input_name: str = "images"
    output_name: str = "logits"

    def __post_init__(self) -> None:
        check_size(self.height, self.width)
        if self.channel_order not in CHANNEL_ORDERS:
            raise ConfigError(
                "unknown channel order", expected=" or ".join(CHANNEL_ORDERS), found=repr(self.channel_order)
            )
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError("unknown resize policy", expected=", ".join(RESIZE_POLICIES), found=repr(self.resize))
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError("mean/std must have 3 values each, std > 0", found=f"mean={self.mean} std={self.std}")

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return 1, 3, self.height, self.width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ArtifactError(
                "input spec has fields this edgeseg does not know",
                found=", ".join(sorted(unknown)),
                fix="upgrade edgeseg, or re-export the model with this version",
            )
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ArtifactError("input spec is incomplete", found=str(exc)) from None


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Half-pixel bilinear resize of an HxWxC array to float32 (no antialiasing)."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.astype(np.float32)

    def axis(dst: int, src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
        pos = np.clip(pos, 0.0, src - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, wy = axis(height, src_h)
    x0, x1, wx = axis(width, src_w)
    img = image.astype(np.float32)
    top = img[y0][:, x0] * (1 - wx)[None, :, None] + img[y0][:, x1] * wx[None, :, None]
    bottom = img[y1][:, x0] * (1 - wx)[None, :, None] + img[y1][:, x1] * wx[None, :, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


def nearest_index(dst: int, src: int) -> np.ndarray:
    """Half-pixel nearest source index per destination index (integer maths, as the GPU overlay)."""
    return ((2 * np.arange(dst, dtype=np.int64) + 1) * src) // (2 * dst)


def resize_mask_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a label map (pixel centres), so labels are never blended; the same
    array when it already has that size."""
    if mask.shape[:2] == (height, width):
        return mask
    rows, cols = nearest_index(height, mask.shape[0]), nearest_index(width, mask.shape[1])
    return np.ascontiguousarray(mask[rows[:, None], cols[None, :]])


def check_frame(frame: Any) -> np.ndarray:
    """A uint8 HxWx3 array, or an InputError saying what was wrong."""
    if not isinstance(frame, np.ndarray):
        raise InputError("a frame must be a numpy array", expected="uint8 HxWx3 ndarray", found=type(frame).__name__)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise InputError(
            "frame has the wrong dtype or shape",
            expected="uint8 array of shape HxWx3",
            found=f"{frame.dtype} array of shape {frame.shape}",
            fix="convert grayscale/RGBA frames to 3 channels and scale to uint8 first",
        )
    return frame


def normalisation(spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """(mean*255, 1/(std*255)) as float32: what ``preprocess`` subtracts and multiplies by (the GPU kernels too)."""
    mean = np.asarray(spec.mean, dtype=np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0)
    return mean.astype(np.float32), inv_std.astype(np.float32)


def preprocess(frame: np.ndarray, spec: InputSpec, frame_order: str = "RGB") -> np.ndarray:
    """Reference preprocessing: uint8 HxWx3 frame -> 1x3xHxW float32 model input."""
    check_frame(frame)
    if frame_order not in CHANNEL_ORDERS:
        raise ConfigError("unknown frame channel order", expected="RGB or BGR", found=repr(frame_order))
    resized = resize_bilinear(frame, spec.height, spec.width)
    if frame_order != spec.channel_order:
        resized = resized[:, :, ::-1]
    mean, inv_std = normalisation(spec)
    normalised = (resized - mean) * inv_std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)
