"""A fake ``tensorrt`` module: the only way the builder's control flow runs without a GPU.

It has what ``edgeseg.engine`` and ``edgeseg.runtime.trt`` call (Builder, OnnxParser, Runtime, ILogger,
IInt8EntropyCalibrator2, the builder config, the engine's name-based I/O API and its inspector) and
records what the builder asked for in ``fake.record``. The flags are enum members like the real
bindings' (``trt.BuilderFlag.INT8``, ``trt.MemoryPoolType.WORKSPACE``...): same member names and values
as tensorrt 10 (tensorrt_bindings/tensorrt.pyi), ``int()`` gives the value, and a member equals only
itself, never its name or its value, as with pybind11 enums. The fixture is ``fake_trt``
(tests/conftest.py).

Like TensorRT, a fake keeps the first logger any Builder, OnnxParser or Runtime is given and sends every
later message there (NVIDIA/TensorRT#1475); ``record["loggers"]`` lists every logger it was handed. A
version-compatible build (BuilderFlag.VERSION_COMPATIBLE) serialises with ``VC_MARKER``; the Runtime
(``engine_host_code_allowed`` from 8.6 on; 8.5's Runtime has no such attribute, as in TensorRT 8.5)
refuses such bytes unless host code is allowed; it has ``dla_cores`` DLA cores and records the ``DLA_core``
it deserialised with (-1: unset, as TensorRT's) in ``record["deserialised_dla_core"]``. Engines keep their
runtime and contexts their engine alive (pybind11 keep_alive, as the real bindings), and each appends
``"context"``, ``"engine"`` or ``"runtime"`` to ``record["events"]`` when freed, so tests can check the order
of frees.

Engines compute: ``execute_async_v3`` reads the input from the address bound to "images" in
``fake.device_memory`` (address -> bytearray; share it with the fake pycuda driver), writes ``fake_net(input)``
to the address bound to "logits", and logs an illegal address (returning False) when either is not a live
allocation. The builder drives ``config.int8_calibrator`` as TensorRT's implicit INT8 build does (see
``calibrate_like_tensorrt``).
"""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Callable
from typing import Any

import numpy as np


class TrtEnum(enum.Enum):
    """A pybind11 enum: ``int(member)`` is its value, ``member.name`` its name, equal only to itself."""

    def __int__(self) -> int:
        return int(self.value)


class BuilderFlag(TrtEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 4
    DISABLE_TIMING_CACHE = 5
    TF32 = 6
    SPARSE_WEIGHTS = 7
    SAFETY_SCOPE = 8
    OBEY_PRECISION_CONSTRAINTS = 9
    PREFER_PRECISION_CONSTRAINTS = 10
    DIRECT_IO = 11
    REJECT_EMPTY_ALGORITHMS = 12
    VERSION_COMPATIBLE = 13
    EXCLUDE_LEAN_RUNTIME = 14
    FP8 = 15
    ERROR_ON_TIMING_CACHE_MISS = 16
    BF16 = 17


class NetworkDefinitionCreationFlag(TrtEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class MemoryPoolType(TrtEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4
    TACTIC_SHARED_MEMORY = 5


class ProfilingVerbosity(TrtEnum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


class DeviceType(TrtEnum):
    GPU = 0
    DLA = 1


class LayerInformationFormat(TrtEnum):
    ONELINE = 0
    JSON = 1


class TensorIOMode(TrtEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(TrtEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


class Severity(TrtEnum):  # trt.ILogger.Severity
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        pass


class Layer:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeTimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+tuned"


class FakeBuilderConfig:
    """IBuilderConfig: keeps what it was given (``flags`` in ``set_flag`` order, ``pools`` by pool type).
    ``__slots__``: like a pybind11 object, it takes no attribute the real one lacks (a misspelling fails)."""

    __slots__ = ("flags", "pools", "timing_cache", "profiling_verbosity", "int8_calibrator", "default_device_type",
                 "DLA_core", "builder_optimization_level")

    def __init__(self) -> None:
        self.builder_optimization_level = 3  # TensorRT's default
        self.flags: list[BuilderFlag] = []
        self.pools: dict[MemoryPoolType, int] = {}
        self.timing_cache: FakeTimingCache | None = None
        self.profiling_verbosity: ProfilingVerbosity | None = None
        self.int8_calibrator: Any = None
        self.default_device_type: DeviceType | None = None
        self.DLA_core: int | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.pools[pool] = pool_size

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.append(flag)

    def create_timing_cache(self, serialized_timing_cache: bytes) -> FakeTimingCache:
        return FakeTimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> FakeTimingCache | None:
        return self.timing_cache

    def can_run_on_DLA(self, layer: Layer) -> bool:  # noqa: N802 (TensorRT's name)
        return layer.name != "Resize_0"


VC_MARKER = b"+LEAN-RUNTIME"  # what a fake version-compatible engine ends with (the embedded host code)


def fake_net(x: np.ndarray) -> np.ndarray:
    """What every fake engine computes, 1x3xHxW -> 1x4xHxW: the three input channels, then 0.25 minus their
    mean (so the argmax depends on every input channel)."""
    x = np.asarray(x, np.float32)
    return np.concatenate([x, np.float32(0.25) - x.mean(axis=1, keepdims=True)], axis=1).astype(np.float32)


class FakeContext:
    """IExecutionContext: keeps its engine alive; appends "context" to the events when freed."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.enqueued = 0
        engine.contexts_created += 1

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.input_shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> list[int]:
        return self.engine.get_tensor_shape(name)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.enqueued += 1
        logger = self.engine.runtime.logger
        if not self.engine.execute_ok:
            logger.log(Severity.ERROR, "illegal memory access in kernel 3")
            return False
        (name_in, _, shape_in, _), (name_out, _, shape_out, _) = self.engine.io
        memory = self.engine.memory
        source, target = self.addresses.get(name_in), self.addresses.get(name_out)
        if source not in memory or target not in memory:
            logger.log(Severity.ERROR, f"illegal address: {name_in} at {source}, {name_out} at {target}")
            return False
        count_in, count_out = int(np.prod(shape_in)), int(np.prod(shape_out))
        x = np.frombuffer(memory[source], np.float32, count=count_in).reshape(shape_in)
        memory[target][: count_out * 4] = fake_net(x).tobytes()
        return True

    def __del__(self) -> None:
        self.engine.events.append("context")


class FakeEngine:
    """ICudaEngine of a 1x3x32x64 -> 1x4x32x64 float net, with a DETAILED inspector (one INT8, one FP32 layer)."""

    io = [("images", TensorIOMode.INPUT, [1, 3, 32, 64], DataType.FLOAT),
          ("logits", TensorIOMode.OUTPUT, [1, 4, 32, 64], DataType.FLOAT)]
    num_io_tensors = 2

    def __init__(self, runtime: Any = None, events: list[str] | None = None, execute_ok: bool = True,
                 memory: dict[int, bytearray] | None = None) -> None:
        self.runtime = runtime  # keep_alive: the runtime outlives its engines
        self.events: list[str] = events if events is not None else []
        self.execute_ok = execute_ok
        self.memory: dict[int, bytearray] = memory if memory is not None else {}
        self.contexts_created = 0

    def create_execution_context(self, strategy: Any = None) -> FakeContext:
        return FakeContext(self)

    def __del__(self) -> None:
        self.events.append("engine")

    def get_tensor_name(self, index: int) -> str:
        return self.io[index][0]

    def _find(self, name: str) -> tuple[str, TensorIOMode, list[int], DataType]:
        return next(t for t in self.io if t[0] == name)

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._find(name)[1]

    def get_tensor_shape(self, name: str) -> list[int]:
        return self._find(name)[2]

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._find(name)[3]

    def create_engine_inspector(self) -> Any:
        info = {"Layers": [{"Name": "conv", "Outputs": [{"Format/Datatype": "Int8 NC/32HW32"}]},
                           {"Name": "resize", "Outputs": [{"Format/Datatype": "Row major linear FP32"}]}],
                "I/O Tensors": ["images", "logits"]}

        def get_engine_information(fmt: LayerInformationFormat) -> str:
            assert isinstance(fmt, LayerInformationFormat), fmt
            return json.dumps(info)

        return types.SimpleNamespace(get_engine_information=get_engine_information)


class ParserError:
    def __init__(self, node: int, desc: str) -> None:
        self._node, self._desc = node, desc

    def node(self) -> int:
        return self._node

    def desc(self) -> str:
        return self._desc


FakeTrtFactory = Callable[..., types.ModuleType]  # the fixture's type: make_fake_trt


def _has_host_code_flag(version: str) -> bool:
    major, _, rest = version.partition(".")
    return (int(major), int(rest.partition(".")[0] or 0)) >= (8, 6)


def make_fake_trt(version: str = "10.3.0.30", *, parse_ok: bool = True, build_ok: bool = True,
                  dla_cores: int = 2, execute_ok: bool = True) -> types.ModuleType:
    """A fresh fake ``tensorrt`` of ``version``. The parser fails on node 1 (GridSample) unless ``parse_ok``;
    the build logs an error and returns None unless ``build_ok``; engines' ``execute_async_v3`` returns
    ``execute_ok``; the network's layers are Conv_0 and Resize_0 (which cannot run on the DLA).
    ``fake.record``: builder, network_flags, config, parsed, deserialised (+ deserialised_dla_core), loggers,
    events."""
    record: dict[str, Any] = {"loggers": [], "events": []}
    device_memory: dict[int, bytearray] = {}  # address -> bytes, shared with the fake pycuda driver
    kept: list[Any] = []  # TensorRT's one logger pointer

    def adopt(logger: Any) -> Any:
        record["loggers"].append(logger)
        if not kept:
            kept.append(logger)
        return kept[0]

    class Network:
        num_layers = 2
        explicit_quantization = False  # set by the parser for a Q/DQ model; else INT8 needs a calibrator

        def __init__(self, flags: int) -> None:
            self.flags = flags

        def get_layer(self, index: int) -> Layer:
            return Layer(["Conv_0", "Resize_0"][index])

        def get_input(self, index: int) -> Any:
            return types.SimpleNamespace(shape=[1, 3, 32, 64])

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger: Any) -> None:
            self.logger = adopt(logger)
            record["builder"] = self

        def create_network(self, flags: int) -> Network:
            assert isinstance(flags, int), flags  # a bit mask: 1 << int(NetworkDefinitionCreationFlag.X)
            record["network_flags"] = flags
            return Network(flags)

        def create_builder_config(self) -> FakeBuilderConfig:
            record["config"] = FakeBuilderConfig()
            return record["config"]

        def build_serialized_network(self, network: Network, config: FakeBuilderConfig) -> bytes | None:
            if not build_ok:
                self.logger.log(Severity.ERROR, "out of workspace for tactic 7")
                return None
            if BuilderFlag.INT8 in config.flags and not network.explicit_quantization:
                if not calibrate_like_tensorrt(config.int8_calibrator, version, self.logger, record):
                    return None
            self.logger.log(Severity.WARNING, "weights are fp32")
            lean = BuilderFlag.VERSION_COMPATIBLE in config.flags
            return b"SERIALIZED-ENGINE" + (VC_MARKER if lean else b"")

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            adopt(logger)
            self.network = network
            self.errors = [] if parse_ok else [ParserError(1, "unsupported operator GridSample")]
            self.num_errors = len(self.errors)

        def parse_from_file(self, model: str) -> bool:
            record["parsed"] = model
            with open(model, "rb") as file:  # an op type is stored as plain bytes in the protobuf
                self.network.explicit_quantization = b"QuantizeLinear" in file.read()
            return parse_ok

        def get_error(self, index: int) -> ParserError:
            return self.errors[index]

    class Runtime:  # TensorRT 8.5: no engine_host_code_allowed, and no attribute can be added (pybind11)
        __slots__ = ("__weakref__", "logger", "DLA_core")
        num_DLA_cores = dla_cores

        def __init__(self, logger: Any) -> None:
            self.logger = adopt(logger)
            self.DLA_core = -1

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
            record["deserialised"] = data
            record["deserialised_dla_core"] = self.DLA_core
            if not data.startswith(b"SERIALIZED-ENGINE"):
                self.logger.log(Severity.ERROR, "Serialization assertion failed: magic tag does not match")
                return None
            if data.endswith(VC_MARKER) and not getattr(self, "engine_host_code_allowed", False):
                self.logger.log(Severity.ERROR, "the engine contains host code, but engine host code is not "
                                "allowed (set IRuntime::setEngineHostCodeAllowed)")
                return None
            return FakeEngine(self, record["events"], execute_ok, device_memory)

        def __del__(self) -> None:
            record["events"].append("runtime")

    class RuntimeWithHostCode(Runtime):  # TensorRT >= 8.6
        __slots__ = ("engine_host_code_allowed",)

        def __init__(self, logger: Any) -> None:
            super().__init__(logger)
            self.engine_host_code_allowed = False

    fake = types.ModuleType("tensorrt", f"a fake tensorrt {version} (tests/helpers/fake_tensorrt.py)")
    members = {
        "__version__": version, "ILogger": ILogger, "IInt8EntropyCalibrator2": IInt8EntropyCalibrator2,
        "Builder": Builder, "OnnxParser": OnnxParser,
        "Runtime": RuntimeWithHostCode if _has_host_code_flag(version) else Runtime,
        "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag, "BuilderFlag": BuilderFlag,
        "MemoryPoolType": MemoryPoolType, "ProfilingVerbosity": ProfilingVerbosity, "DeviceType": DeviceType,
        "LayerInformationFormat": LayerInformationFormat, "TensorIOMode": TensorIOMode, "DataType": DataType,
        "record": record, "device_memory": device_memory,
    }
    for key, value in members.items():
        setattr(fake, key, value)
    return fake


def cache_version_number(version: str) -> int:
    """The number in a calibration cache's header: major*1000+minor*100+patch on 8.x, major*10000+... from 10."""
    major, minor, patch = (int(part) for part in (version.split(".") + ["0", "0"])[:3])
    return (major * 10000 if major >= 10 else major * 1000) + minor * 100 + patch


def calibrate_like_tensorrt(calibrator: Any, version: str, logger: Any, record: dict[str, Any]) -> bool:
    """What an implicit INT8 build does with ``config.int8_calibrator``: a cache from
    ``read_calibration_cache`` is used as is; otherwise ``get_batch_size``, then ``get_batch(["images"])`` until
    it returns None, then ``write_calibration_cache`` with the scales. False (an error logged) with no calibrator
    and no batches. ``record["calibration"]``: what happened."""
    if calibrator is None:
        logger.log(Severity.ERROR, "INT8 requested but no calibrator and no dynamic ranges were set")
        return False
    cache = calibrator.read_calibration_cache()
    if cache:
        record["calibration"] = {"cache_read": bytes(cache), "batches": 0}
        return True
    batch_size = int(calibrator.get_batch_size())
    batches = 0
    while (pointers := calibrator.get_batch(["images"])) is not None:
        assert len(pointers) == 1 and all(isinstance(p, int) for p in pointers), pointers
        batches += 1
        assert batches < 10_000, "get_batch never returned None"
    record["calibration"] = {"cache_read": None, "batch_size": batch_size, "batches": batches}
    if batches == 0:
        logger.log(Severity.ERROR, "Calibration failure occurred with no scaling factors detected")
        return False
    written = f"TRT-{cache_version_number(version)}-EntropyCalibration2\nimages: 3c010a14\nlogits: 3d8c0a2b\n"
    calibrator.write_calibration_cache(written.encode())
    record["calibration"]["cache_written"] = written.encode()
    return True
