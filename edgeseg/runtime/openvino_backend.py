"""The OpenVINO backend (layer 1: numpy; openvino imported when a backend is made: ``pip install 'edgeseg[openvino]'``).

Runs ``model.onnx`` (FP32, or with a bf16/fp16 inference-precision hint where the device has it) and
``model.int8.ov.onnx`` (TensorRT's Q/DQ placement and scales from the same calibration, with 7-bit weights on a
CPU without VNNI/AMX: quant/qdq_ov.py; ``model.int8.onnx`` itself runs too) on Intel CPUs. Set as for ONNX
Runtime: ``INFERENCE_NUM_THREADS`` (CPU), ``PERFORMANCE_HINT=LATENCY``, one stream. The FP32 run is asked
for explicitly (``INFERENCE_PRECISION_HINT=f32``): OpenVINO's CPU default is bf16 on CPUs with AMX or AVX-512
BF16, which is not what a build validated as FP32. Compiled models are cached in ``CACHE_DIR`` (the build
folder's ``openvino_cache/`` when the folder is writable) so the robot's first frame is not slow.

The device name is passed through (``CPU`` by default; ``GPU`` for Intel iGPUs and ``NPU``): only the CPU has
been run by our tests; GPU and NPU are untested.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, require
from .backend import Candidate, check_input, checked_model_path, static_shape_error

CACHE_DIR_NAME = "openvino_cache"
DEFAULT_DEVICE = "CPU"
INT8_ROLE = "onnx_int8_ov"  # model.int8.ov.onnx, OpenVINO's Q/DQ file (not TensorRT's model.int8.onnx)
# edgeseg's precision word -> OpenVINO's INFERENCE_PRECISION_HINT and the device capability it needs
HINTS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16")}
_NUMPY_TYPES = {"f32": np.float32, "f16": np.float16}


def _openvino() -> Any:
    return require("openvino", extra="openvino", purpose="the openvino backend")


def device_precisions(device: str = DEFAULT_DEVICE, core: Any = None) -> list[str]:
    """The inference precisions (fp32, bf16, fp16) ``device`` offers: its OPTIMIZATION_CAPABILITIES."""
    core = core if core is not None else _openvino().Core()
    try:
        capabilities = {str(c).upper() for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")}
    except Exception:
        return ["fp32"]
    return [word for word, (_, capability) in HINTS.items() if capability in capabilities or word == "fp32"]


def _cache_dir(folder: Path | None, path: Path) -> Path | None:
    """The build folder's openvino_cache/ when it can be written (a read-only robot folder: no cache)."""
    root = Path(folder) if folder is not None else path.parent
    cache = root / CACHE_DIR_NAME
    try:
        cache.mkdir(exist_ok=True)
    except OSError:
        return None
    return cache if os.access(cache, os.W_OK) else None


class OpenVinoBackend:
    """``Backend`` on an OpenVINO compiled model (see edgeseg.runtime.backend)."""

    name = "openvino"

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None, device: str = DEFAULT_DEVICE,
                 inference_precision: str = "fp32", cache_dir: Path | None = None) -> None:
        ov = _openvino()
        self.path = checked_model_path(path, threads)
        if inference_precision not in HINTS:
            raise ConfigError("unknown OpenVINO inference precision", expected=" | ".join(HINTS),
                              found=repr(inference_precision))
        core = ov.Core()
        devices = list(core.available_devices)
        if device.split(".")[0].split(":")[0] not in {d.split(".")[0] for d in devices}:
            raise ConfigError(f"OpenVINO has no {device} device here", expected=" | ".join(devices) or "CPU",
                              found=device, fix="pass one of the devices `edgeseg doctor` lists (CPU by default)")
        if inference_precision not in device_precisions(device, core):
            raise ConfigError(f"OpenVINO's {device} has no {inference_precision} inference here",
                              expected=" | ".join(device_precisions(device, core)), found=inference_precision,
                              fix="bf16 needs AMX or AVX-512 BF16, fp16 a device that lists FP16")
        self.device, self.inference_precision, self.threads = device, inference_precision, threads
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                  "INFERENCE_PRECISION_HINT": HINTS[inference_precision][0]}
        if device.upper().startswith("CPU"):
            config["NUM_STREAMS"] = 1
            if threads is not None:
                config["INFERENCE_NUM_THREADS"] = int(threads)
        self.cache_dir = cache_dir
        if cache_dir is not None:
            core.set_property({"CACHE_DIR": str(cache_dir)})
        try:
            model = core.read_model(str(self.path))
            self._compiled = core.compile_model(model, device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            raise ArtifactError(f"OpenVINO cannot compile {self.path} for {device}",
                                found=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}",
                                fix="the file is corrupt or not an ONNX model: re-export or recalibrate it") from None
        inputs, outputs = self._compiled.inputs, self._compiled.outputs
        if len(inputs) != 1 or len(outputs) < 1:
            raise ArtifactError(f"{self.path.name} must have one input and an output",
                                found=f"{len(inputs)} input(s), {len(outputs)} output(s)")
        self.input_name = inputs[0].get_any_name()
        self.output_name = outputs[0].get_any_name()
        self.input_shape = self._static(inputs[0], "input")
        self.output_shape = self._static(outputs[0], "output")
        self._request = self._compiled.create_infer_request()
        self._input = self._request.get_input_tensor(0)

    def _static(self, port: Any, what: str) -> tuple[int, ...]:
        shape = port.get_partial_shape()
        if shape.is_dynamic:
            raise static_shape_error(self.path, what, str(shape))
        return tuple(int(d) for d in port.get_shape())

    def infer(self, x: np.ndarray) -> np.ndarray:
        """1x3xHxW float32 -> 1xCxHxW float32 logits (a reused buffer; copy to keep it)."""
        check_input(x, self.name, np.float32, self.input_shape)
        self._input.data[...] = x
        self._request.infer()
        return self._request.get_output_tensor(0).data  # type: ignore[no-any-return]

    def close(self) -> None:
        self._request = None
        self._input = None
        self._compiled = None

    def __enter__(self) -> OpenVinoBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def runtime_options(manifest: Any) -> dict[str, Any]:
    """The OpenVINO settings a build validated with (manifest.build['runtime']), when it chose OpenVINO."""
    if manifest is None or getattr(manifest, "backend", None) != "openvino":
        return {}
    recorded = (getattr(manifest, "build", None) or {}).get("runtime") or {}
    return {k: recorded[k] for k in ("device", "inference_precision") if recorded.get(k)}


def open_openvino(path: str | os.PathLike[str], *, threads: int | None = None, manifest: Any = None,
                  folder: Path | None = None, device: str | None = None,
                  inference_precision: str | None = None, **_: Any) -> OpenVinoBackend:
    """The registry's factory: the device and inference precision are the ones given, else those the build
    validated (manifest), else CPU and fp32."""
    recorded = runtime_options(manifest)
    source = Path(path)
    return OpenVinoBackend(source, threads=threads, device=device or recorded.get("device") or DEFAULT_DEVICE,
                           inference_precision=inference_precision or recorded.get("inference_precision") or "fp32",
                           cache_dir=_cache_dir(folder, source))


def best_candidates(device: str = DEFAULT_DEVICE) -> list[Any]:
    """What ``--precision best`` times with OpenVINO on ``device``: model.onnx in FP32 and the INT8 Q/DQ file
    model.int8.ov.onnx (role onnx_int8_ov: TensorRT's placement and scales, 7-bit weights on a CPU without
    VNNI/AMX, quant/qdq_ov.py), each also with a bf16 / fp16 inference-precision hint where the device has it."""
    found = [Candidate("openvino", "onnx", "fp32", {"inference_precision": "fp32", "device": device}),
             Candidate("openvino", INT8_ROLE, "int8", {"inference_precision": "fp32", "device": device})]
    for hint in device_precisions(device):
        if hint != "fp32":
            found += [Candidate("openvino", "onnx", hint, {"inference_precision": hint, "device": device}),
                      Candidate("openvino", INT8_ROLE, f"int8+{hint}",
                                {"inference_precision": hint, "device": device})]
    return found
