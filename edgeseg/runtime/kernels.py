"""GPU pre/post-processing kernels and their numpy references (layer 1).

``GpuKernels`` compiles kernels.cu once per process with pycuda's SourceModule (lazy)
and launches: preprocess (uint8 HWC frame -> normalised CHW float32/float16 straight
into the engine's input buffer; the maths of ``edgeseg.spec.preprocess``), argmax
(NCHW logits -> uint8 mask) and a colour overlay. ``numpy_argmax``, ``numpy_overlay``
and ``resize_mask_nearest`` are the host references (and the CPU path's code).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..palette import class_palette
from ..spec import CHANNEL_ORDERS, InputSpec

KERNEL_SOURCE = Path(__file__).with_name("kernels.cu")
BLOCK_2D = (16, 16, 1)
BLOCK_1D = (256, 1, 1)
MAX_CLASSES = 256  # the mask is uint8
MAX_FRAME_SIDE = 32767  # kernels.cu's bilinear_coords: (2 * dst + 1) * src_size must fit an int32


def normalisation(spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """(mean*255, 1/(std*255)) as float32, computed exactly as spec.preprocess does."""
    mean = np.asarray(spec.mean, dtype=np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0)
    return mean.astype(np.float32), inv_std.astype(np.float32)


def numpy_argmax(logits: np.ndarray, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """1xCxHxW (or CxHxW) logits -> HxW uint8 mask; first maximum wins.

    ``out`` (uint8 HxW) and ``scratch`` (intp HxW) let a loop run without allocating.
    """
    array = np.asarray(logits)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise InputError("expected a batch of one", found=str(array.shape))
        array = array[0]
    if array.ndim != 3:
        raise InputError("logits must be 1xCxHxW", found=str(array.shape))
    if array.shape[0] > MAX_CLASSES:
        raise ConfigError(f"at most {MAX_CLASSES} classes fit a uint8 mask", found=str(array.shape[0]))
    if out is None:
        return np.argmax(array, axis=0).astype(np.uint8)
    indices = np.argmax(array, axis=0, out=scratch)
    np.copyto(out, indices, casting="unsafe")
    return out


def nearest_index(dst: int, src: int) -> np.ndarray:
    """Half-pixel nearest source index per destination index (integer maths, as the GPU overlay)."""
    return ((2 * np.arange(dst, dtype=np.int64) + 1) * src) // (2 * dst)


def resize_mask_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    rows, cols = nearest_index(height, mask.shape[0]), nearest_index(width, mask.shape[1])
    return np.ascontiguousarray(mask[rows[:, None], cols[None, :]])


def default_palette(num_classes: int) -> np.ndarray:
    """The class palette of ``edgeseg.palette`` (uint8 Cx3): the same colours as reports and overlays."""
    return class_palette(num_classes)


def numpy_overlay(frame: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """frame * (1 - alpha) + palette[mask] * alpha at frame resolution (mask sampled nearest)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError("overlay alpha must lie in [0, 1]", found=str(alpha))
    h, w = frame.shape[:2]
    labels = np.minimum(resize_mask_nearest(mask, h, w), len(palette) - 1)
    a = np.float32(alpha)
    blended = frame.astype(np.float32) * (np.float32(1.0) - a) + palette[labels].astype(np.float32) * a
    return np.minimum(np.float32(255.0), np.floor(blended + np.float32(0.5))).astype(np.uint8)


_MODULE: Any = None
_MODULE_LOCK = threading.Lock()


def _compiled() -> Any:
    global _MODULE
    with _MODULE_LOCK:
        if _MODULE is None:
            from ..errors import require

            compiler = require("pycuda.compiler", extra="trt", purpose="the GPU kernels")
            # no --use_fast_math: the kernels must match the numpy references bit for bit where possible
            _MODULE = compiler.SourceModule(KERNEL_SOURCE.read_text(), no_extern_c=True, options=["-O3"])
        return _MODULE


def _grid_2d(width: int, height: int) -> tuple[int, int, int]:
    return (width + BLOCK_2D[0] - 1) // BLOCK_2D[0], (height + BLOCK_2D[1] - 1) // BLOCK_2D[1], 1


class GpuKernels:
    """Launchers bound to one input spec; call with a current CUDA context."""

    def __init__(self, spec: InputSpec, frame_order: str = "RGB") -> None:
        if frame_order not in CHANNEL_ORDERS:
            raise ConfigError("unknown frame channel order", expected="RGB or BGR", found=repr(frame_order))
        module = _compiled()
        self.spec = spec
        self.swap = np.int32(frame_order != spec.channel_order)
        mean, inv_std = normalisation(spec)
        self.norm = [np.float32(v) for v in (*mean, *inv_std)]
        self._pre = {np.dtype(np.float32): module.get_function("preprocess_f32"),
                     np.dtype(np.float16): module.get_function("preprocess_f16")}
        self._argmax = {np.dtype(np.float32): module.get_function("argmax_f32"),
                        np.dtype(np.float16): module.get_function("argmax_f16")}
        self._overlay = module.get_function("overlay")

    def preprocess(self, frame_ptr: int, frame_h: int, frame_w: int, pitch: int, dst_ptr: int,
                   dst_dtype: Any, stream: Any) -> None:
        kernel = self._pre.get(np.dtype(dst_dtype))
        if kernel is None:
            raise ConfigError("the engine input must be float32 or float16", found=str(np.dtype(dst_dtype)))
        h, w = self.spec.height, self.spec.width
        if max(frame_h, frame_w, h, w) > MAX_FRAME_SIDE or min(frame_h, frame_w) < 1:
            raise InputError("the GPU preprocessing cannot resize this frame",
                             expected=f"sides from 1 to {MAX_FRAME_SIDE} (frame and model)",
                             found=f"frame {frame_h}x{frame_w}, model {h}x{w}")
        kernel(np.uintp(frame_ptr), np.int32(frame_h), np.int32(frame_w), np.int32(pitch), np.uintp(dst_ptr),
               np.int32(h), np.int32(w), self.swap, *self.norm,
               block=BLOCK_2D, grid=_grid_2d(w, h), stream=stream)

    def argmax(self, logits_ptr: int, logits_dtype: Any, channels: int, height: int, width: int,
               mask_ptr: int, stream: Any) -> None:
        kernel = self._argmax.get(np.dtype(logits_dtype))
        if kernel is None:
            raise ConfigError("the engine output must be float32 or float16", found=str(np.dtype(logits_dtype)))
        if channels > MAX_CLASSES:
            raise ConfigError(f"at most {MAX_CLASSES} classes fit a uint8 mask", found=str(channels))
        plane = height * width
        kernel(np.uintp(logits_ptr), np.int32(channels), np.int32(plane), np.uintp(mask_ptr),
               block=BLOCK_1D, grid=((plane + BLOCK_1D[0] - 1) // BLOCK_1D[0], 1, 1), stream=stream)

    def overlay(self, frame_ptr: int, frame_h: int, frame_w: int, mask_ptr: int, mask_h: int, mask_w: int,
                palette_ptr: int, num_colours: int, alpha: float, out_ptr: int, stream: Any) -> None:
        self._overlay(np.uintp(frame_ptr), np.int32(frame_h), np.int32(frame_w), np.uintp(mask_ptr),
                      np.int32(mask_h), np.int32(mask_w), np.uintp(palette_ptr), np.int32(num_colours),
                      np.float32(alpha), np.uintp(out_ptr), block=BLOCK_2D, grid=_grid_2d(frame_w, frame_h),
                      stream=stream)
