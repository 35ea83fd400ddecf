"""GPU pre/post-processing kernels and their numpy references (layer 1).

``GpuKernels`` loads kernels.cu's kernels once per process (pycuda imported lazily)
and launches: preprocess (uint8 HWC frame -> normalised CHW float32/float16 straight
into the engine's input buffer; the maths of ``edgeseg.spec.preprocess``), argmax
(NCHW logits -> uint8 mask) and a colour overlay. ``numpy_argmax``, ``numpy_overlay``
and ``spec.resize_mask_nearest`` are the host references (and the CPU path's code). NaN logits
are one error on both paths (``nan_logits_error``): numpy_argmax checks, and the argmax kernel
counts NaN pixels in a uint32 after the mask, which GpuLoop checks.

Loading: the package ships kernels.cu compiled ahead of time to PTX (kernels_ptx/, built by
scripts/build_kernels.py with NVRTC 12, PTX ISA 7.4/7.8 so that drivers from CUDA 11.4 on can
JIT it) for compute_72 (Xavier), compute_87 (Orin) and compute_90 (H100/H200-class). The PTX of
the highest arch <= the current device's compute capability is loaded with
``pycuda.driver.module_from_buffer``: no nvcc, no header preprocessing, no writable cache dir.
The manifest records the sha256 of the kernels.cu the PTX was built from; the PTX is used only
when that equals the kernels.cu installed beside it (and the PTX its own recorded hash).

When no shipped PTX can be used (a GPU older than 7.2, a stale or incomplete package, a driver
that refuses the PTX), a ``KernelFallbackWarning`` says why and kernels.cu is compiled with
pycuda's SourceModule as before (JetPack and CUDA dev machines have nvcc); if that fails too, an
``ArtifactError`` gives both reasons and names the regeneration script. Falling back instead of
refusing keeps a developer who edits kernels.cu working before regenerating (CI fails until the
PTX is regenerated: tests/runtime/test_kernels_ptx.py) and keeps older GPUs on the nvcc path.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, InputError, ModelError, require
from ..spec import CHANNEL_ORDERS, InputSpec, normalisation, resize_mask_nearest
from . import cuda

KERNEL_SOURCE = Path(__file__).with_name("kernels.cu")
PTX_DIR = Path(__file__).with_name("kernels_ptx")
PTX_MANIFEST = PTX_DIR / "manifest.json"
REGENERATE = "python scripts/build_kernels.py in a source checkout (its --help says which wheels it needs)"
KERNEL_NAMES = ("preprocess_f32", "preprocess_f16", "argmax_f32", "argmax_f16", "overlay")  # extern "C" names
BLOCK_2D = (16, 16, 1)
BLOCK_1D = (256, 1, 1)
MAX_CLASSES = 256  # the mask is uint8
MAX_FRAME_SIDE = 32767  # kernels.cu's bilinear_coords: (2 * dst + 1) * src_size must fit an int32


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
    if np.isnan(np.max(array)):  # one reduction, no array allocated: NaN propagates through max
        raise nan_logits_error(int(np.count_nonzero(np.isnan(array).any(axis=0))), array.shape[1] * array.shape[2])
    if out is None:
        return np.argmax(array, axis=0).astype(np.uint8)
    indices = np.argmax(array, axis=0, out=scratch)
    np.copyto(out, indices, casting="unsafe")
    return out


def nan_logits_error(pixels: int, plane: int) -> ModelError:
    """The one error for NaN logits, raised by the CPU path (numpy_argmax) and the GPU path (the argmax kernel's
    NaN counter, GpuLoop.result) alike: a mask from NaN logits means nothing (numpy and the kernel would pick the
    first NaN's class)."""
    return ModelError("the model produced NaN logits: no mask can be made from them",
                      expected="finite logits", found=f"{pixels} of {plane} pixel(s) with a NaN logit",
                      fix="validate the build (edgeseg validate ...): an FP16/INT8 overflow shows there; "
                          "rebuild at a higher precision or with --fallback auto")


def nan_counter_offset(plane: int) -> int:
    """Where the argmax kernel's uint32 NaN-pixel counter sits in the mask buffer: after the ``plane`` mask
    bytes, rounded up to 4 bytes (kernels.cu ``argmax``)."""
    return (plane + 3) & ~3


def mask_buffer_bytes(plane: int) -> int:
    """Bytes of the buffer the argmax kernel writes: the mask, padding, the NaN counter."""
    return nan_counter_offset(plane) + 4


def check_alpha(alpha: float, name: str = "overlay alpha") -> float:
    """The overlay's blend weight of the class colour, in [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1]", found=str(alpha))
    return alpha


def numpy_overlay(frame: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """frame * (1 - alpha) + palette[mask] * alpha at frame resolution (mask sampled nearest)."""
    check_alpha(alpha)
    h, w = frame.shape[:2]
    labels = np.minimum(resize_mask_nearest(mask, h, w), len(palette) - 1)
    a = np.float32(alpha)
    blended = frame.astype(np.float32) * (np.float32(1.0) - a) + palette[labels].astype(np.float32) * a
    return np.minimum(np.float32(255.0), np.floor(blended + np.float32(0.5))).astype(np.uint8)


class KernelFallbackWarning(RuntimeWarning):
    """The shipped PTX could not be used: kernels.cu is compiled with nvcc (SourceModule) instead."""


class ShippedPtxUnusable(Exception):
    """Why no shipped PTX fits this device or this package (the message is the reason)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _arch_number(capability: str | tuple[int, int]) -> int:
    """(8, 7), "8.7" or "compute_87" -> 87."""
    if isinstance(capability, tuple):
        major, minor = capability
    elif capability.startswith("compute_"):
        number = int(capability.split("_", 1)[1])
        major, minor = divmod(number, 10)
    else:
        major_text, minor_text = capability.split(".")
        major, minor = int(major_text), int(minor_text)
    return int(major) * 10 + int(minor)


def select_arch(capability: str | tuple[int, int], arches: Any) -> str | None:
    """The highest ``compute_XY`` among ``arches`` that is <= the compute capability (``(8, 9)`` or "8.9").

    The driver JIT-compiles PTX for any GPU at least as new as its arch (compute_87 PTX runs on an 8.9 GPU,
    compute_90 PTX on 10.0 and 12.0), never for an older one: None when every arch is newer than the device.
    """
    device = _arch_number(capability)
    fitting = [arch for arch in arches if _arch_number(arch) <= device]
    return max(fitting, key=_arch_number) if fitting else None


def load_ptx_manifest(path: Path = PTX_MANIFEST) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ShippedPtxUnusable(f"the shipped PTX manifest {path} cannot be read ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("ptx"), dict):
        raise ShippedPtxUnusable(f"the shipped PTX manifest {path} has no 'ptx' table")
    return manifest


def shipped_ptx(capability: str | tuple[int, int], folder: Path = PTX_DIR,
                source: Path = KERNEL_SOURCE) -> tuple[str, bytes]:
    """(arch, PTX bytes) of the shipped PTX for this compute capability; ShippedPtxUnusable says why not."""
    manifest = load_ptx_manifest(folder / PTX_MANIFEST.name)
    built_from, current = manifest.get("source_sha256"), _sha256(source.read_bytes())
    if built_from != current:
        raise ShippedPtxUnusable(f"the shipped PTX is stale: built from kernels.cu sha256 {built_from}, "
                                 f"but {source} has sha256 {current}")
    arch = select_arch(capability, manifest["ptx"])
    if arch is None:
        label = ".".join(map(str, capability)) if isinstance(capability, tuple) else capability
        raise ShippedPtxUnusable(f"no shipped PTX fits compute capability {label} "
                                 f"(shipped: {', '.join(sorted(manifest['ptx']))})")
    entry = manifest["ptx"][arch]
    try:
        ptx = (folder / entry["file"]).read_bytes()
    except (OSError, KeyError, TypeError) as exc:
        raise ShippedPtxUnusable(f"the shipped {arch} PTX cannot be read ({exc})") from None
    if _sha256(ptx) != entry.get("sha256"):
        raise ShippedPtxUnusable(f"the shipped {arch} PTX {entry['file']} does not match its manifest hash")
    return arch, ptx


# device -> (module, origin). A module belongs to the context it was loaded in: one per device (each device's
# primary context, runtime.cuda.CudaContext), never one per process that a second GPU would launch from.
_MODULES: dict[Any, tuple[Any, str]] = {}
_ORIGIN: str | None = None
_MODULE_LOCK = threading.Lock()


def kernels_origin() -> str | None:
    """Where the last loaded kernels came from ("shipped PTX compute_87", "kernels.cu via nvcc"), None before."""
    return _ORIGIN


def _source_module(reason: str) -> Any:
    """kernels.cu through nvcc (pycuda's SourceModule), as before the PTX was shipped."""
    compiler = require("pycuda.compiler", extra="trt", purpose="the GPU kernels")
    try:
        # no --use_fast_math: the kernels must match the numpy references bit for bit where possible
        return compiler.SourceModule(KERNEL_SOURCE.read_text(), no_extern_c=True, options=["-O3"])
    except Exception as exc:  # nvcc missing (pytools ExecError, an OSError) or failing (CompileError)
        raise ArtifactError("the GPU kernels cannot be loaded",
                            found=f"{reason}; compiling kernels.cu with nvcc failed too: {type(exc).__name__}: {exc}",
                            fix=f"regenerate the shipped PTX ({REGENERATE}), or install nvcc") from exc


def _load_module(device: Any) -> tuple[Any, str]:
    """(module, origin) for ``device`` (the current context's): the shipped PTX, else kernels.cu via nvcc."""
    driver = cuda.driver()
    capability = tuple(device.compute_capability())
    try:
        arch, ptx = shipped_ptx((int(capability[0]), int(capability[1])))
    except ShippedPtxUnusable as exc:
        reason = str(exc)
    else:
        try:
            # PTX is loaded as a NUL-terminated string; the driver JIT-compiles it for this GPU
            return driver.module_from_buffer(ptx + b"\0"), f"shipped PTX {arch}"
        except getattr(driver, "Error", RuntimeError) as exc:  # e.g. CUDA_ERROR_UNSUPPORTED_PTX_VERSION
            reason = f"the driver refused the shipped {arch} PTX: {exc}"
    warnings.warn(f"{reason}; compiling kernels.cu with nvcc instead (regenerate: {REGENERATE})",
                  KernelFallbackWarning, stacklevel=3)
    return _source_module(reason), "kernels.cu via nvcc"


def _compiled() -> Any:
    """The kernels' module for the current context's device, loaded once per device (context current)."""
    global _ORIGIN
    device = cuda.driver().Context.get_device()  # pycuda Devices compare and hash by their CUdevice
    with _MODULE_LOCK:
        if device not in _MODULES:
            _MODULES[device] = _load_module(device)
            _ORIGIN = _MODULES[device][1]
        return _MODULES[device][0]


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
        # the kernels are extern "C" in kernels.cu: these are the PTX's .entry names (KERNEL_NAMES)
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
        """Mask of the logits into ``mask_ptr``, which must hold ``mask_buffer_bytes(height * width)``: the kernel
        adds each pixel with a NaN logit to the counter after the mask (read it as GpuLoop.result does)."""
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
