"""The only module that calls TensorRT's builder API (layer 2; never torch).

``build_engine(onnx_path, config)`` -> ``BuildResult`` (unpacks as ``engine_bytes, manifest``).
Every version difference was decided by ``versions.plan_build``; this module applies
the plan by flag name. The ``trt`` module is a parameter (default: a lazy import) so
the control flow runs in CPU tests against a fake module.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArtifactError, ConfigError, require
from ..fileio import atomic_write_bytes, sha256_file
from ..manifest import Manifest
from ..onnx_model import OnnxModelInfo
from ..runtime.cuda import device_info
from ..runtime.trt import dims_list
from ..runtime.trt_logger import LogCapture, capture_log, process_logger
from ..spec import InputSpec
from .calibrator import make_entropy_calibrator
from .config import DLA_DEVICES, BuildConfig
from .inspection import inspect_serialized_engine
from .manifest import engine_manifest
from .onnx_info import model_name, plan_facts, read_onnx_info
from .versions import BuildPlan, plan_build

if TYPE_CHECKING:  # the stubs type-check every TensorRT call below (tests/test_typecheck.py)
    import tensorrt


@dataclass
class BuildResult:
    engine_bytes: bytes
    manifest: Manifest
    layers: dict[str, Any] | None = None
    plan: BuildPlan | None = None
    dla_fallback_layers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:  # engine_bytes, manifest = build_engine(...)
        return iter((self.engine_bytes, self.manifest))


def format_parser_errors(parser: tensorrt.OnnxParser, node_names: list[str]) -> str:
    """One line per parser error naming the ONNX node (by name; by index on older TensorRT)."""
    lines = []
    for index in range(int(parser.num_errors)):
        error = parser.get_error(index)
        node = int(error.node()) if hasattr(error, "node") else -1
        name = ""
        if hasattr(error, "node_name"):
            name = str(error.node_name() or "")
        if not name and 0 <= node < len(node_names):
            name = node_names[node]
        operator = str(error.node_operator()) if hasattr(error, "node_operator") else ""
        where = f"node {node} {name!r}" if node >= 0 else "the model"
        where += f" ({operator})" if operator else ""
        lines.append(f"{where}: {error.desc()}")
    return "\n".join(lines) or "the parser reported failure without details"


def load_timing_cache(trt_config: tensorrt.IBuilderConfig, path: Path | None, log: LogCapture | None = None) -> Any:
    """Create the config's timing cache from ``path`` (empty when absent) and attach it.

    A cache TensorRT rejects (corrupt, or from another TensorRT or GPU: ``set_timing_cache`` returns False with
    ``ignore_mismatch=False``) is replaced by an empty one, and said: in ``log.warnings`` (the build's warnings)
    when given, else as a Python warning. The build then writes a fresh cache over it."""
    data = b""
    if path is not None and Path(path).is_file():
        data = Path(path).read_bytes()
    cache = trt_config.create_timing_cache(data)
    if data:
        if cache is None:
            rejected = "it cannot be read (corrupt or truncated)"
        elif not trt_config.set_timing_cache(cache, ignore_mismatch=False):
            rejected = "it was made by another TensorRT version or on another GPU"
        else:
            return cache
        _say(log, f"the timing cache {path} was rejected: {rejected}; building with an empty one, "
                  "which replaces it after the build")
        cache = trt_config.create_timing_cache(b"")
    if cache is None or not trt_config.set_timing_cache(cache, ignore_mismatch=False):
        _say(log, "TensorRT refused even an empty timing cache: this build tunes every tactic from scratch")
    return cache


def _say(log: LogCapture | None, message: str) -> None:
    """A build warning: into the build's captured warnings (BuildResult.warnings), else a Python warning."""
    if log is not None:
        log.warnings.append(message)
    else:
        warnings.warn(message, stacklevel=3)


def save_timing_cache(trt_config: tensorrt.IBuilderConfig, path: Path | None) -> None:
    if path is None:
        return
    cache = trt_config.get_timing_cache()
    if cache is not None:
        atomic_write_bytes(path, bytes(memoryview(cache.serialize())))


def _flags(enum: Any, names: Iterable[str]) -> int:
    value = 0
    for name in names:
        value |= 1 << int(getattr(enum, name))
    return value


def _gpu_info() -> tuple[str | None, str | None]:
    try:
        info = device_info()
        return info.name, info.compute_capability
    except Exception:  # no pycuda/GPU here: the manifest records unknown
        return None, None


def build_engine(
    onnx_path: str | os.PathLike[str],
    config: BuildConfig,
    *,
    input_spec: InputSpec | None = None,
    calibration_batches: Iterable[np.ndarray] | None = None,
    trt: Any = None,
    gpu: tuple[str | None, str | None] | None = None,
    check_qdq: Callable[..., None] | None = None,
) -> BuildResult:
    """``check_qdq(model, source=...)``: the Q/DQ lint a Q/DQ model must pass before an INT8 build
    (``quant.lint.check_qdq``, handed in: quant/ sits above engine/); it raises ArtifactError."""
    if trt is None:
        trt = require("tensorrt", extra="trt", purpose="building an engine")
    version = str(trt.__version__)
    config.validate(version)
    path = Path(onnx_path)
    info = read_onnx_info(path)
    facts = plan_facts(info)
    plan = plan_build(version, config, facts)
    config.check_dla_quantization(version, has_qdq=facts.has_qdq)
    if check_qdq is not None and facts.has_qdq and config.precision in ("int8", "best"):
        check_qdq(info.proto, source=str(path))
    spec = input_spec or info.input_spec
    if spec is None:
        raise ArtifactError(f"{path} carries no input spec and none was given",
                            expected="metadata_props['input_spec'] written by edgeseg export",
                            fix="export the model with edgeseg export, or pass the input spec")

    # One process-wide logger (TensorRT keeps the first it is given); this build's messages are captured.
    with capture_log(trt, verbose=config.verbose) as log:
        engine_bytes, fallback = _build_serialized(trt, path, info, config, plan, calibration_batches, log)
        layers, io_tensors = inspect_serialized_engine(trt, engine_bytes, version_compatible=config.version_compatible,
                                                       dla_core=config.dla_core if plan.use_dla else None)
    gpu_name, capability = gpu if gpu is not None else _gpu_info()
    manifest = _manifest(path, info, spec, config, plan, version, io_tensors, gpu_name, capability, fallback)
    return BuildResult(engine_bytes, manifest, layers, plan, fallback, list(log.warnings))


def _build_serialized(trt: Any, path: Path, info: OnnxModelInfo, config: BuildConfig, plan: BuildPlan,
                      calibration_batches: Iterable[np.ndarray] | None, log: LogCapture) -> tuple[bytes, list[str]]:
    """(serialised engine, DLA fallback layers): parse, configure by the plan, build, save the timing cache."""
    version = str(trt.__version__)
    logger = process_logger(trt)
    builder: tensorrt.Builder = trt.Builder(logger)
    network_flags = _flags(trt.NetworkDefinitionCreationFlag, plan.network_flags)
    network: tensorrt.INetworkDefinition = builder.create_network(network_flags)
    parser: tensorrt.OnnxParser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        raise ArtifactError(f"TensorRT {version} cannot parse {path}",
                            found=format_parser_errors(parser, info.node_names),
                            fix="check the operator support of this TensorRT (https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md)")

    trt_config: tensorrt.IBuilderConfig = builder.create_builder_config()
    trt_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    trt_config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for name in plan.builder_flags:
        trt_config.set_flag(getattr(trt.BuilderFlag, name))
    if config.builder_optimization_level is not None:
        trt_config.builder_optimization_level = config.builder_optimization_level
    load_timing_cache(trt_config, config.timing_cache, log)
    fallback = _configure_dla(trt, builder, network, trt_config, config) if plan.use_dla else []
    calibrator = None
    if plan.use_calibrator:
        calibrator = _attach_calibrator(trt, trt_config, network, config, calibration_batches, version)

    serialized: tensorrt.IHostMemory | None = builder.build_serialized_network(network, trt_config)
    if calibrator is not None:
        calibrator.close()  # its device buffer now, not at garbage collection (a failed build stops early)
        if calibrator.errors:
            raise calibrator.errors[0]
    if serialized is None:
        raise ArtifactError(f"TensorRT {version} could not build an engine from {path}",
                            found=log.tail(10) or "no error was logged",
                            fix="rerun with --verbose; try a larger --workspace or another precision")
    save_timing_cache(trt_config, config.timing_cache)
    return bytes(memoryview(serialized)), fallback


def _configure_dla(trt: Any, builder: tensorrt.Builder, network: tensorrt.INetworkDefinition,
                   trt_config: tensorrt.IBuilderConfig, config: BuildConfig) -> list[str]:
    cores = int(builder.num_DLA_cores)
    if config.dla_core is None or config.dla_core >= cores:
        raise ConfigError(f"DLA core {config.dla_core} does not exist on this device",
                          expected=f"0..{cores - 1}" if cores else f"a device with DLA cores ({DLA_DEVICES})",
                          found=f"{cores} DLA core(s)", fix="drop --dla-core, or pick an existing core")
    trt_config.default_device_type = trt.DeviceType.DLA
    trt_config.DLA_core = config.dla_core
    fallback = [network.get_layer(i).name for i in range(network.num_layers)
                if not trt_config.can_run_on_DLA(network.get_layer(i))]
    if fallback and not config.gpu_fallback:
        raise ConfigError(f"{len(fallback)} layer(s) cannot run on the DLA and GPU fallback is off",
                          found=", ".join(fallback[:8]), fix="drop --no-gpu-fallback")
    return fallback


def _attach_calibrator(trt: Any, trt_config: tensorrt.IBuilderConfig, network: tensorrt.INetworkDefinition,
                       config: BuildConfig,
                       batches: Iterable[np.ndarray] | None, version: str) -> Any:
    cache = config.calibration_cache
    if batches is None and (cache is None or not Path(cache).is_file()):
        raise ConfigError("implicit INT8 needs calibration images or an existing calibration cache",
                          fix="pass --calib-dir with a folder of images, or --calibration-cache PATH")

    shape = tuple(dims_list(network.get_input(0).shape))
    calibrator = make_entropy_calibrator(trt, batches if batches is not None else [], input_shape=shape,
                                         cache_path=cache, trt_version=version)
    trt_config.int8_calibrator = calibrator
    return calibrator


def _manifest(path: Path, info: OnnxModelInfo, spec: InputSpec, config: BuildConfig, plan: BuildPlan, version: str,
              io_tensors: list[dict[str, Any]], gpu_name: str | None, capability: str | None,
              fallback: list[str]) -> Manifest:
    hashes = {"onnx": sha256_file(path)}
    if config.calibration_cache is not None and Path(config.calibration_cache).is_file():
        hashes["calibration_cache"] = sha256_file(config.calibration_cache)
    num_classes = info.num_classes
    if num_classes is None:
        outputs = [t for t in io_tensors if t["mode"] == "OUTPUT"]
        num_classes = int(outputs[0]["shape"][1]) if outputs and len(outputs[0]["shape"]) > 1 else 0
    build = {**plan.to_dict(), "version_compatible": config.version_compatible, "hardware_compatibility": "none",
             "config": config.to_dict(), "onnx": path.name, "dla_fallback_layers": fallback}
    return engine_manifest(model=model_name(info, path), num_classes=num_classes, input_spec=spec,
                           precision=config.precision, tensorrt_version=version, io_tensors=io_tensors,
                           gpu_name=gpu_name, compute_capability=capability, classes=info.classes,
                           hashes=hashes, build=build)
