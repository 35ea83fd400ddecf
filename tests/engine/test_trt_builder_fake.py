"""trt_builder's control flow against a fake ``tensorrt`` module (the only execution it gets without a GPU).

The fake records what the builder asked for, so the tests check the flags, the workspace,
the timing cache round trip, parser error reporting and the manifest that results.
"""

from __future__ import annotations

import json
import types
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.engine.config import BuildConfig
from edgeseg.engine.manifest import load_manifest, write_engine
from edgeseg.engine.trt_builder import build_engine, format_parser_errors, load_timing_cache, save_timing_cache
from edgeseg.errors import ArtifactError, ConfigError
from edgeseg.spec import InputSpec


class Severity(Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+tuned"


class FakeConfig:
    def __init__(self) -> None:
        self.flags: list[str] = []
        self.pools: dict[str, int] = {}
        self.timing_cache: FakeCache | None = None
        self.profiling_verbosity: Any = None
        self.int8_calibrator: Any = None
        self.default_device_type: Any = None
        self.DLA_core: int | None = None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pools[pool] = size

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)

    def create_timing_cache(self, data: bytes) -> FakeCache:
        return FakeCache(bytes(data))

    def set_timing_cache(self, cache: FakeCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> FakeCache | None:
        return self.timing_cache

    def can_run_on_DLA(self, layer: Named) -> bool:
        return layer.name != "Resize_0"


class FakeEngine:
    io = [("images", "INPUT", [1, 3, 32, 64], "FLOAT"), ("logits", "OUTPUT", [1, 4, 32, 64], "FLOAT")]
    num_io_tensors = 2

    def get_tensor_name(self, index: int) -> str:
        return self.io[index][0]

    def _find(self, name: str) -> tuple[str, str, list[int], str]:
        return next(t for t in self.io if t[0] == name)

    def get_tensor_mode(self, name: str) -> Named:
        return Named(self._find(name)[1])

    def get_tensor_shape(self, name: str) -> list[int]:
        return self._find(name)[2]

    def get_tensor_dtype(self, name: str) -> Named:
        return Named(self._find(name)[3])

    def create_engine_inspector(self) -> Any:
        info = {"Layers": [{"Name": "conv", "Outputs": [{"Format/Datatype": "Int8 NC/32HW32"}]},
                           {"Name": "resize", "Outputs": [{"Format/Datatype": "Row major linear FP32"}]}],
                "I/O Tensors": ["images", "logits"]}
        return types.SimpleNamespace(get_engine_information=lambda fmt: json.dumps(info))


class ParserError:
    def __init__(self, node: int, desc: str) -> None:
        self._node, self._desc = node, desc

    def node(self) -> int:
        return self._node

    def desc(self) -> str:
        return self._desc


def make_fake_trt(version: str = "10.3.0.30", *, parse_ok: bool = True, build_ok: bool = True,
                  dla_cores: int = 2) -> types.SimpleNamespace:
    record: dict[str, Any] = {}

    class ILogger:
        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity  # type: ignore[attr-defined]

    class Network:
        num_layers = 2

        def __init__(self, flags: int) -> None:
            self.flags = flags

        def get_layer(self, i: int) -> Named:
            return Named(["Conv_0", "Resize_0"][i])

        def get_input(self, i: int) -> Any:
            return types.SimpleNamespace(shape=[1, 3, 32, 64])

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger: Any) -> None:
            self.logger = logger
            record["builder"] = self

        def create_network(self, flags: int) -> Network:
            record["network_flags"] = flags
            return Network(flags)

        def create_builder_config(self) -> FakeConfig:
            record["config"] = FakeConfig()
            return record["config"]

        def build_serialized_network(self, network: Network, config: FakeConfig) -> bytes | None:
            if not build_ok:
                self.logger.log(Severity.ERROR, "out of workspace for tactic 7")
                return None
            self.logger.log(Severity.WARNING, "weights are fp32")
            return b"SERIALIZED-ENGINE"

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.errors = [] if parse_ok else [ParserError(1, "unsupported operator GridSample")]
            self.num_errors = len(self.errors)

        def parse_from_file(self, path: str) -> bool:
            record["parsed"] = path
            return parse_ok

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine:
            record["deserialised"] = data
            return FakeEngine()

    enum = types.SimpleNamespace
    return types.SimpleNamespace(
        __version__=version, ILogger=ILogger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime,
        NetworkDefinitionCreationFlag=enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=1),
        BuilderFlag=enum(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK", VERSION_COMPATIBLE="VC"),
        MemoryPoolType=enum(WORKSPACE="WORKSPACE"), ProfilingVerbosity=enum(DETAILED="DETAILED"),
        DeviceType=enum(DLA="DLA", GPU="GPU"), LayerInformationFormat=enum(JSON="JSON"), record=record,
    )


def tiny_onnx(path: Path, *, metadata: bool = True) -> Path:
    weight = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["conv"], name="conv0"),
         helper.make_node("Relu", ["conv"], ["logits"], name="relu0")],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 32, 64])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata:
        helper.set_model_props(model, {"input_spec": json.dumps(InputSpec(32, 64).to_dict()), "model": "tiny_net",
                                       "classes": json.dumps(["road", "car", "sky", "person"])})
    onnx.save(model, str(path))
    return path


def test_fp16_build_on_tensorrt10(tmp_path: Path) -> None:
    fake = make_fake_trt("10.3.0.30")
    cache = tmp_path / "timing.cache"
    result = build_engine(tiny_onnx(tmp_path / "model.onnx"), BuildConfig(precision="fp16", workspace_mib=256,
                                                                          timing_cache=cache),
                          trt=fake, gpu=("Orin", "8.7"))
    engine_bytes, manifest = result
    assert engine_bytes == b"SERIALIZED-ENGINE"
    config = fake.record["config"]
    assert config.flags == ["FP16"] and config.pools == {"WORKSPACE": 256 << 20}
    assert config.profiling_verbosity == "DETAILED" and fake.record["network_flags"] == 0
    assert cache.read_bytes() == b"+tuned"  # loaded empty, saved back after the build
    assert manifest.model == "tiny_net" and manifest.num_classes == 4 and manifest.classes[0] == "road"
    assert manifest.tensorrt_version == "10.3.0.30" and manifest.compute_capability == "8.7"
    assert manifest.input_spec == InputSpec(32, 64) and manifest.precision == "fp16"
    assert manifest.io_tensors[1] == {"name": "logits", "mode": "OUTPUT", "shape": [1, 4, 32, 64], "dtype": "float32"}
    assert len(manifest.hashes["onnx"]) == 64 and manifest.build["builder_flags"] == ["FP16"]
    assert result.layers is not None and result.layers["layer_precisions"] == {"fp32": 1, "int8": 1}
    assert result.warnings == ["weights are fp32"]
    write_engine(tmp_path / "out", engine_bytes, manifest, layers=result.layers)
    assert load_manifest(tmp_path / "out").hashes["engine"]


def test_explicit_batch_on_tensorrt85_and_existing_timing_cache(tmp_path: Path) -> None:
    fake = make_fake_trt("8.5.2.2")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    build_engine(tiny_onnx(tmp_path / "m.onnx"), BuildConfig(precision="fp32", timing_cache=cache), trt=fake,
                 gpu=(None, None))
    assert fake.record["network_flags"] == 1 << 0  # EXPLICIT_BATCH
    assert fake.record["config"].flags == []
    assert cache.read_bytes() == b"old+tuned"


def test_dla_build_reports_fallback_layers(tmp_path: Path) -> None:
    fake = make_fake_trt("8.5.2")
    result = build_engine(tiny_onnx(tmp_path / "m.onnx"), BuildConfig(precision="fp16", dla_core=1), trt=fake,
                          gpu=(None, None))
    config = fake.record["config"]
    assert config.default_device_type == "DLA" and config.DLA_core == 1
    assert "GPU_FALLBACK" in config.flags and result.dla_fallback_layers == ["Resize_0"]
    assert result.manifest.build["dla_fallback_layers"] == ["Resize_0"]
    with pytest.raises(ConfigError, match="DLA core 2 does not exist"):
        build_engine(tmp_path / "m.onnx", BuildConfig(precision="fp16", dla_core=2), trt=fake, gpu=(None, None))
    with pytest.raises(ConfigError, match="GPU fallback is off"):
        build_engine(tmp_path / "m.onnx", BuildConfig(precision="fp16", dla_core=0, gpu_fallback=False),
                     trt=fake, gpu=(None, None))


def test_parser_error_names_the_onnx_node(tmp_path: Path) -> None:
    fake = make_fake_trt(parse_ok=False)
    with pytest.raises(ArtifactError) as info:
        build_engine(tiny_onnx(tmp_path / "m.onnx"), BuildConfig(), trt=fake, gpu=(None, None))
    assert "node 1 'relu0'" in str(info.value) and "GridSample" in str(info.value)


def test_format_parser_errors_prefers_node_name_api() -> None:
    error = types.SimpleNamespace(node=lambda: 0, node_name=lambda: "Conv_7", node_operator=lambda: "Conv",
                                  desc=lambda: "bad weights")
    parser = types.SimpleNamespace(num_errors=1, get_error=lambda i: error)
    assert format_parser_errors(parser, ["x"]) == "node 0 'Conv_7' (Conv): bad weights"  # type: ignore[arg-type]
    empty = types.SimpleNamespace(num_errors=0, get_error=None)
    assert "without details" in format_parser_errors(empty, [])  # type: ignore[arg-type]


def test_failed_build_reports_logged_errors_and_keeps_timing_cache(tmp_path: Path) -> None:
    fake = make_fake_trt(build_ok=False)
    cache = tmp_path / "t.cache"
    with pytest.raises(ArtifactError) as info:
        build_engine(tiny_onnx(tmp_path / "m.onnx"), BuildConfig(timing_cache=cache), trt=fake, gpu=(None, None))
    assert "out of workspace for tactic 7" in str(info.value)
    assert not cache.exists()


def test_explicit_int8_without_qdq_fails_before_tensorrt_work(tmp_path: Path) -> None:
    fake = make_fake_trt()
    with pytest.raises(ConfigError, match="Q/DQ"):
        build_engine(tiny_onnx(tmp_path / "m.onnx"), BuildConfig(precision="int8"), trt=fake)
    assert "builder" not in fake.record


def test_missing_input_spec_and_missing_onnx(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no input spec"):
        build_engine(tiny_onnx(tmp_path / "m.onnx", metadata=False), BuildConfig(), trt=make_fake_trt())
    result = build_engine(tmp_path / "m.onnx", BuildConfig(), input_spec=InputSpec(32, 64), trt=make_fake_trt(),
                          gpu=(None, None))
    assert result.manifest.model == "m" and result.manifest.num_classes == 4  # from the output shape
    with pytest.raises(ArtifactError, match="not found"):
        build_engine(tmp_path / "absent.onnx", BuildConfig(), trt=make_fake_trt())


def test_timing_cache_helpers_with_a_fake_config(tmp_path: Path) -> None:
    config = FakeConfig()
    load_timing_cache(config, None)  # type: ignore[arg-type]
    assert config.timing_cache is not None and config.timing_cache.data == b""
    save_timing_cache(config, None)  # type: ignore[arg-type]
    path = tmp_path / "sub" / "t.cache"
    save_timing_cache(config, path)  # type: ignore[arg-type]
    assert path.read_bytes() == b"+tuned"
    load_timing_cache(config, path)  # type: ignore[arg-type]
    assert config.timing_cache.data == b"+tuned"
