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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, UsageError
from ..fileio import sha256_file
from ..manifest import MANIFEST_FILE, Manifest, check_validated, read_manifest, verified_artifact
from ..palette import stored_colours
from ..spec import CHANNEL_ORDERS, InputSpec, check_frame, nearest_index, preprocess
from .backend import Backend, backend_info, choose_for_folder, open_backend
from .gpu_loop import GpuLoop
from .kernels import numpy_argmax
from .torch_backend import TorchBackend

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
    """The backend that runs ``folder``: the registry's choice (runtime/backend.py): ``requested``, or for "auto"
    the backend the build chose when it is available here, else the best-ranked available one (TensorRT on a GPU
    with an engine, then ONNX Runtime, then OpenVINO)."""
    return choose_for_folder(requested, manifest.artifacts, folder, built_with=manifest.backend,
                             validated_role=manifest.validated_role)


def artifact_role(manifest: Manifest, backend: str, folder: Path) -> str:
    """The file ``backend`` runs: the one the build validated when the backend can run it, else the best the
    manifest names (the validation check then says why it is not trusted). Never silently another precision:
    a named file that is missing is an error, not a fallback."""
    roles = backend_info(backend).roles
    validated = manifest.validated_role
    if validated in roles:
        return str(validated)
    for role in roles:
        if role in manifest.artifacts:
            return role
    raise ArtifactError(f"{folder} has no file the {backend} backend can run",
                        expected=f"{MANIFEST_FILE} artifacts naming one of: {', '.join(roles)}",
                        found=", ".join(f"{k}={v}" for k, v in manifest.artifacts.items()) or "no artifacts",
                        fix="build the folder for this backend: edgeseg build ... --backend " + backend)


def _check_weights_hash(manifest: Manifest, weights: Path) -> None:
    recorded = manifest.hashes.get("weights")
    if not weights.is_file():
        raise UsageError(f"--weights {weights} does not exist", fix="pass the checkpoint the folder was built from")
    actual = sha256_file(weights) if recorded else None
    if recorded and actual != recorded:
        raise ArtifactError(f"{weights} is not the checkpoint this folder was built from (SHA-256 differs)",
                            expected=str(recorded)[:16] + "...", found=str(actual)[:16] + "...",
                            fix="pass the --weights file given to edgeseg build")


def _check_backend_shapes(backend: Any, manifest: Manifest, path: Path) -> None:
    """The file's input and output shapes must be the manifest's (an edited size or class count fails here)."""
    expected_in = tuple(manifest.input_spec.shape)
    found_in = tuple(getattr(backend, "input_shape", expected_in))
    found_out = tuple(getattr(backend, "output_shape", ()) or ())
    problems = []
    if found_in != expected_in:
        problems.append(f"input {found_in} vs manifest {expected_in}")
    if len(found_out) == 4 and found_out[1] != manifest.num_classes:
        problems.append(f"{found_out[1]} output classes vs manifest num_classes {manifest.num_classes}")
    if problems:
        backend.close()
        raise ArtifactError(f"{path.name} does not match its manifest", found="; ".join(problems),
                            fix="rebuild the folder: edgeseg build ... --force")


class Segmenter:
    model_file: str = ""  # the file it runs (from_artifacts)
    precision: str = ""
    warning: str | None = None  # why the file is not trusted, when allow_unvalidated let it run
    validation_status: str = ""
    num_classes: int = 0
    class_colors: Sequence[Sequence[int]] = ()  # the build's class colours (manifest), () : the palette's

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
        self._closed = False

    @property
    def name(self) -> str:
        return str(self.backend.name)

    @classmethod
    def from_artifacts(cls, folder: str | os.PathLike[str], backend: str = "auto", *, frame_order: str = "RGB",
                       output_size: str = "model", threads: int | None = None, buffers: str = "auto",
                       cuda_graph: bool = True, model: Any = None, weights: str | os.PathLike[str] | None = None,
                       device: str | None = None, allow_unvalidated: bool = False,
                       backend_options: dict[str, Any] | None = None) -> Segmenter:
        """A Segmenter on the build folder ``engines/NAME``.

        Its manifest.json (checksum verified) picks the file and sizes; the file's SHA-256 must match the
        manifest, and the build's accuracy gates must have passed for that file unless ``allow_unvalidated``
        (then ``self.warning`` says why it is not trusted). ``backend="torch"`` runs the PyTorch reference:
        pass ``model`` (an nn.Module) or ``weights`` (the checkpoint the folder was built from). ``device``: the
        torch device, or OpenVINO's (CPU, GPU, NPU; default: the build's). ``backend_options``: passed to the
        backend's factory (runtime/backend.py).
        """
        root = Path(folder)
        manifest = read_manifest(root)
        spec = manifest.input_spec
        chosen = choose_backend(backend, manifest, root)
        gpu_loop, warning = None, None
        if chosen == "torch":
            instance, gpu_loop, source = cls._torch(manifest, model, weights, device, spec, frame_order, buffers)
            precision = "fp32 (PyTorch reference)"
        else:
            role = artifact_role(manifest, chosen, root)
            path = verified_artifact(root, manifest, role)
            warning = check_validated(manifest, role, allow_unvalidated=allow_unvalidated, folder=root)
            source, precision = str(path), manifest.precision_of(role)
            info = backend_info(chosen)
            options: dict[str, Any] = dict(backend_options or {})
            if info.gpu_loop:
                options.setdefault("buffers", buffers)
            if device is not None and chosen == "openvino":
                options.setdefault("device", device)
            instance = open_backend(chosen, path, threads=threads, manifest=manifest, folder=root, **options)
            _check_backend_shapes(instance, manifest, path)  # before a GPU loop allocates for it
            hint = getattr(instance, "inference_precision", "fp32")
            if hint != "fp32":  # OpenVINO's bf16/fp16 inference of the file
                precision = f"{precision}, {hint} inference"
            if info.gpu_loop:
                from .gpu_loop import GpuLoop

                gpu_loop = GpuLoop(instance, spec, frame_order=frame_order, buffers=buffers, cuda_graph=cuda_graph)
        segmenter = cls(instance, spec, frame_order=frame_order, output_size=output_size, gpu_loop=gpu_loop)
        segmenter.model_file, segmenter.precision, segmenter.warning = source, precision, warning
        segmenter.validation_status = manifest.validation_status if chosen != "torch" else "reference"
        segmenter.num_classes = manifest.num_classes
        segmenter.class_colors = stored_colours(manifest.class_colors, manifest.num_classes)
        return segmenter

    @staticmethod
    def _torch(manifest: Manifest, model: Any, weights: str | os.PathLike[str] | None, device: str | None,
               spec: InputSpec, frame_order: str, buffers: str) -> tuple[Any, Any, str]:
        torch = importlib.import_module("torch")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if model is not None:
            backend, source = TorchBackend(model, spec.shape, device=device), type(model).__name__
        elif weights is not None:
            _check_weights_hash(manifest, Path(weights))
            backend = TorchBackend.from_checkpoint(weights, manifest.model, manifest.num_classes, spec.shape,
                                                   device=device)
            source = str(weights)
        else:
            raise UsageError("the torch backend needs the model's weights (build folders hold no PyTorch files)",
                             fix="pass --weights CHECKPOINT (the file the folder was built from), or use "
                                 "--backend onnxruntime")
        if not device.startswith("cuda"):
            return backend, None, source

        return backend, GpuLoop(backend, spec, frame_order=frame_order, buffers=buffers, cuda_graph=False), source

    # -- synchronous API ------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self._pending:
            raise UsageError("frames submitted with submit() are still pending", fix="collect them with result()")
        self.submit(frame)
        return self.result()

    # -- asynchronous API -----------------------------------------------------------------
    def submit(self, frame: np.ndarray) -> None:
        """Start one frame; at most two may be pending. A bad frame raises InputError and queues nothing."""
        if self._closed:  # its buffers (GPU slots, backend session) are freed: fail here, not deep inside them
            raise UsageError("this Segmenter is closed", fix="create a new one (Segmenter.from_artifacts(...))")
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
        """Free the GPU loop, then the backend; idempotent. Frames still pending are dropped."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        if self._gpu is not None:
            self._gpu.close()
        self.backend.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
