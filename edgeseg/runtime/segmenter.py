"""The camera loop: ``mask = seg(frame)`` (layer 1; numpy, backends imported lazily).

    seg = Segmenter.from_artifacts("engines/NAME")        # backend="auto"
    mask = seg(frame)                                      # uint8 HxWx3 -> uint8 mask
    seg.submit(frame); ...; mask = seg.result()            # asynchronous, double buffered

Backends: ``tensorrt`` (GPU; GpuLoop: GPU preprocessing kernel, engine, GPU argmax, two
buffer sets on two streams, CUDA graph after warm-up), ``onnxruntime`` (CPU; the embedded
default without TensorRT), ``torch`` (reference; GPU loop on CUDA, host loop otherwise).
Every buffer is allocated at construction or on the first frame of a new size: a steady
stream of frames allocates nothing.

Masks returned are views of the Segmenter's own buffers, valid until that buffer is reused
(the next ``seg(frame)``; for ``submit``/``result``, two results later): ``.copy()`` one to
keep it. Thread safety: a Segmenter is not thread safe. Use one per thread, or guard all
calls with one lock; GPU work is done with the CUDA context pushed on the calling thread.
"""

from __future__ import annotations

import importlib.util
import os
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, UsageError
from ..io import read_json
from ..spec import CHANNEL_ORDERS, InputSpec, Manifest, check_frame, preprocess
from .backend import Backend
from .kernels import nearest_index, numpy_argmax

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "torch")
OUTPUT_SIZES = ("model", "frame")
DEPTH = 2  # double buffering: at most two frames in flight


def tensorrt_available() -> bool:
    """TensorRT's runtime importable (not just its type stubs) and a CUDA GPU visible to pycuda."""
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None:
        return False
    try:
        import tensorrt

        if not hasattr(tensorrt, "Runtime"):
            return False
        from .cuda import driver

        cuda = driver()
        cuda.init()
        return int(cuda.Device.count()) > 0
    except Exception:
        return False


def choose_backend(requested: str, manifest: Manifest, folder: Path) -> str:
    if requested not in BACKEND_CHOICES:
        raise ConfigError("unknown backend", expected=" | ".join(BACKEND_CHOICES), found=repr(requested))
    if requested != "auto":
        return requested
    engine = manifest.artifacts.get("engine")
    if engine and (folder / engine).is_file() and tensorrt_available():
        return "tensorrt"
    return "onnxruntime"


def artifact_path(manifest: Manifest, folder: Path, roles: tuple[str, ...]) -> Path:
    """The first role the manifest names whose file exists."""
    for role in roles:
        name = manifest.artifacts.get(role)
        if name and (folder / name).is_file():
            return folder / name
    raise ArtifactError(f"{folder} has no {' or '.join(roles)} artifact",
                        expected=f"manifest.json artifacts naming one of: {', '.join(roles)}",
                        found=", ".join(f"{k}={v}" for k, v in manifest.artifacts.items()) or "no artifacts",
                        fix="build the folder: edgeseg build ...")


class Segmenter:
    def __init__(self, backend: Any, spec: InputSpec, *, frame_order: str = "RGB", output_size: str = "model",
                 gpu_loop: Any = None) -> None:
        if frame_order not in CHANNEL_ORDERS:
            raise ConfigError("unknown frame channel order", expected="RGB or BGR", found=repr(frame_order))
        if output_size not in OUTPUT_SIZES:
            raise ConfigError("unknown output size", expected="model | frame", found=repr(output_size))
        if not isinstance(backend, Backend):
            raise ConfigError("the backend does not implement edgeseg.runtime.Backend",
                              found=type(backend).__name__)
        self.backend, self.spec = backend, spec
        self.frame_order, self.output_size = frame_order, output_size
        self._gpu = gpu_loop
        self._input = np.zeros(spec.shape, np.float32)  # CPU path: preprocessed frame lands here
        shape = (spec.height, spec.width)
        self._masks = [np.zeros(shape, np.uint8) for _ in range(DEPTH)]
        self._scratch = np.zeros(shape, np.intp)
        self._frame_masks: list[np.ndarray] = []
        self._frame_index = np.zeros((0, 0), np.intp)
        self._pending: deque[int] = deque()
        self._frame_shapes: dict[int, tuple[int, int]] = {}
        self._next_slot = 0

    @property
    def name(self) -> str:
        return str(self.backend.name)

    @classmethod
    def from_artifacts(cls, folder: str | os.PathLike[str], backend: str = "auto", *, frame_order: str = "RGB",
                       output_size: str = "model", threads: int | None = None, buffers: str = "auto",
                       cuda_graph: bool = True, model: Any = None, device: str | None = None) -> Segmenter:
        """A Segmenter on the build folder ``engines/NAME`` (its manifest.json picks files and sizes)."""
        root = Path(folder)
        manifest = Manifest.from_dict(read_json(root / "manifest.json", what="manifest"), source=str(root))
        spec = manifest.input_spec
        chosen = choose_backend(backend, manifest, root)
        gpu_loop = None
        if chosen == "tensorrt":
            from .gpu_loop import GpuLoop
            from .trt import TensorRTSession

            session = TensorRTSession(artifact_path(manifest, root, ("engine",)), manifest=manifest,
                                      buffers=buffers)
            instance: Any = session
            gpu_loop = GpuLoop(session, spec, frame_order=frame_order, buffers=buffers, cuda_graph=cuda_graph)
        elif chosen == "onnxruntime":
            path = artifact_path(manifest, root, ("onnx_int8_cpu", "onnx"))
            from .onnxruntime import OnnxRuntimeBackend

            instance = OnnxRuntimeBackend(path, threads=threads)
        else:
            instance, gpu_loop = cls._torch(manifest, root, model, device, spec, frame_order, buffers)
        return cls(instance, spec, frame_order=frame_order, output_size=output_size, gpu_loop=gpu_loop)

    @staticmethod
    def _torch(manifest: Manifest, root: Path, model: Any, device: str | None, spec: InputSpec,
               frame_order: str, buffers: str) -> tuple[Any, Any]:
        from .torch_backend import TorchBackend

        torch = importlib.import_module("torch")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if model is not None:
            backend = TorchBackend(model, spec.shape, device=device)
        else:
            weights = artifact_path(manifest, root, ("weights", "checkpoint"))
            backend = TorchBackend.from_checkpoint(weights, manifest.model, manifest.num_classes, spec.shape,
                                                   device=device)
        if not device.startswith("cuda"):
            return backend, None
        from .gpu_loop import GpuLoop

        return backend, GpuLoop(backend, spec, frame_order=frame_order, buffers=buffers, cuda_graph=False)

    # -- synchronous API ------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self._pending:
            raise UsageError("frames submitted with submit() are still pending", fix="collect them with result()")
        self.submit(frame)
        return self.result()

    # -- asynchronous API -----------------------------------------------------------------
    def submit(self, frame: np.ndarray) -> None:
        """Start one frame; at most two may be pending. A bad frame raises InputError and queues nothing."""
        if len(self._pending) >= DEPTH:
            raise UsageError(f"{DEPTH} frames are already pending", fix="call result() before submitting more")
        check_frame(frame)
        slot = self._next_slot
        if self._gpu is not None:
            self._gpu.submit(slot, frame)
        else:
            np.copyto(self._input, preprocess(frame, self.spec, self.frame_order))
            logits = self.backend.infer(self._input)
            numpy_argmax(logits, out=self._masks[slot], scratch=self._scratch)
        self._pending.append(slot)
        self._next_slot = (slot + 1) % DEPTH
        self._frame_shapes[slot] = (int(frame.shape[0]), int(frame.shape[1]))

    def result(self) -> np.ndarray:
        """The mask of the oldest pending frame (waits for the GPU when needed)."""
        if not self._pending:
            raise UsageError("no frame is pending", fix="call submit(frame) first")
        slot = self._pending.popleft()
        mask = self._gpu.result(slot) if self._gpu is not None else self._masks[slot]
        if self.output_size == "model":
            return mask
        return self._to_frame_size(slot, mask, self._frame_shapes[slot])

    def _to_frame_size(self, slot: int, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Nearest upsampling into a preallocated buffer (reallocated only when the frame size changes)."""
        if not self._frame_masks or self._frame_masks[0].shape != shape or self._frame_index.shape != shape:
            rows = nearest_index(shape[0], mask.shape[0])
            cols = nearest_index(shape[1], mask.shape[1])
            self._frame_index = (rows[:, None] * mask.shape[1] + cols[None, :]).astype(np.intp)
            self._frame_masks = [np.zeros(shape, np.uint8) for _ in range(DEPTH)]
        out = self._frame_masks[slot]
        np.take(mask.reshape(-1), self._frame_index, out=out)
        return out

    def close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()
        self.backend.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
