"""trt_builder's control flow against a fake ``tensorrt`` module (the only execution it gets without a GPU).

The fake (tests/helpers/fake_tensorrt.py, fixture ``fake_trt``) records what the builder asked for, so the
tests check the flags (enum members, as TensorRT's), the workspace, the timing cache round trip, parser error
reporting and the manifest that results.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from helpers.engine_folder import write_engine_folder
from helpers.fake_tensorrt import FakeBuilderConfig, FakeTrtFactory
from helpers.tiny_onnx import conv_model, save_conv_onnx, with_metadata

from edgeseg.engine.config import BuildConfig
from edgeseg.engine.manifest import load_manifest
from edgeseg.engine.trt_builder import build_engine, format_parser_errors, load_timing_cache, save_timing_cache
from edgeseg.errors import ArtifactError, ConfigError
from edgeseg.spec import InputSpec


def tiny_onnx(path: Path, *, metadata: bool = True) -> Path:
    """images 1x3x32x64 -> conv0 -> relu0 -> logits 1x4x32x64 (tiny_net, classes road, car, sky, person)."""
    return save_conv_onnx(path, relu=True, metadata=metadata)


def test_fp16_build_on_tensorrt10(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt("10.3.0.30")
    cache = tmp_path / "timing.cache"
    result = build_engine(tiny_onnx(tmp_path / "model.onnx"), BuildConfig(precision="fp16", workspace_mib=256,
                                                                          timing_cache=cache),
                          trt=fake, gpu=("Orin", "8.7"))
    engine_bytes, manifest = result
    assert engine_bytes == b"SERIALIZED-ENGINE"
    config = fake.record["config"]
    assert config.flags == [fake.BuilderFlag.FP16] and config.pools == {fake.MemoryPoolType.WORKSPACE: 256 << 20}
    assert config.profiling_verbosity == fake.ProfilingVerbosity.DETAILED and fake.record["network_flags"] == 0
    assert cache.read_bytes() == b"+tuned"  # loaded empty, saved back after the build
    assert manifest.model == "tiny_net" and manifest.num_classes == 4 and manifest.classes[0] == "road"
    assert manifest.tensorrt_version == "10.3.0.30" and manifest.compute_capability == "8.7"
    assert manifest.input_spec == InputSpec(32, 64) and manifest.precision == "fp16"
    assert manifest.io_tensors[1] == {"name": "logits", "mode": "OUTPUT", "shape": [1, 4, 32, 64], "dtype": "float32"}
    assert len(manifest.hashes["onnx"]) == 64 and manifest.build["builder_flags"] == ["FP16"]
    assert result.layers is not None and result.layers["layer_precisions"] == {"fp32": 1, "int8": 1}
    assert result.warnings == ["weights are fp32"]
    write_engine_folder(tmp_path / "out", engine_bytes, manifest, layers=result.layers)
    assert load_manifest(tmp_path / "out").hashes["engine"]


def test_explicit_batch_on_tensorrt85_and_existing_timing_cache(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt("8.5.2.2")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    build_engine(tiny_onnx(tmp_path / "m.onnx"), BuildConfig(precision="fp32", timing_cache=cache), trt=fake,
                 gpu=(None, None))
    assert fake.record["network_flags"] == 1 << int(fake.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert fake.record["config"].flags == []
    assert cache.read_bytes() == b"old+tuned"


def test_dla_build_reports_fallback_layers(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt("8.5.2")
    result = build_engine(tiny_onnx(tmp_path / "m.onnx"), BuildConfig(precision="fp16", dla_core=1), trt=fake,
                          gpu=(None, None))
    config = fake.record["config"]
    assert config.default_device_type == fake.DeviceType.DLA and config.DLA_core == 1
    assert fake.BuilderFlag.GPU_FALLBACK in config.flags and result.dla_fallback_layers == ["Resize_0"]
    assert result.manifest.build["dla_fallback_layers"] == ["Resize_0"]
    with pytest.raises(ConfigError, match="DLA core 2 does not exist"):
        build_engine(tmp_path / "m.onnx", BuildConfig(precision="fp16", dla_core=2), trt=fake, gpu=(None, None))
    with pytest.raises(ConfigError, match="GPU fallback is off"):
        build_engine(tmp_path / "m.onnx", BuildConfig(precision="fp16", dla_core=0, gpu_fallback=False),
                     trt=fake, gpu=(None, None))


def test_dla_build_on_tensorrt_11_4_1_records_and_deserialises_on_its_core(tmp_path: Path,
                                                                           fake_trt: FakeTrtFactory) -> None:
    """DLA is back in TensorRT 11.4.1; 11.0 to 11.4.0 refuse it. The build records the core, and the engine is
    inspected on that core (the Runtime's DLA_core set before deserialising), as the robot will run it."""
    onnx = pytest.importorskip("onnx")
    onnx_path = tmp_path / "m.onnx"  # float16 tensors: TensorRT 11 builds it fp16 (strongly typed)
    onnx.save(with_metadata(conv_model(fp16=True), spec=InputSpec(32, 64), num_classes=4), str(onnx_path))
    fake = fake_trt("11.4.1.10")
    result = build_engine(onnx_path, BuildConfig(precision="fp16", dla_core=1), trt=fake, gpu=(None, None))
    assert fake.record["config"].default_device_type == fake.DeviceType.DLA and fake.record["config"].DLA_core == 1
    assert fake.record["deserialised_dla_core"] == 1
    assert result.manifest.build["dla"] is True and result.manifest.build["config"]["dla_core"] == 1
    with pytest.raises(ConfigError, match="came back in 11.4.1"):
        build_engine(onnx_path, BuildConfig(precision="fp16", dla_core=1), trt=fake_trt("11.4.0.5"), gpu=(None, None))
    gpu_only = fake_trt("11.4.1.10")
    build_engine(onnx_path, BuildConfig(precision="fp16"), trt=gpu_only, gpu=(None, None))
    assert gpu_only.record["deserialised_dla_core"] == -1  # a GPU engine: the Runtime's DLA core stays unset


def test_parser_error_names_the_onnx_node(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt(parse_ok=False)
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


def test_failed_build_reports_logged_errors_and_keeps_timing_cache(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt(build_ok=False)
    cache = tmp_path / "t.cache"
    with pytest.raises(ArtifactError) as info:
        build_engine(tiny_onnx(tmp_path / "m.onnx"), BuildConfig(timing_cache=cache), trt=fake, gpu=(None, None))
    assert "out of workspace for tactic 7" in str(info.value)
    assert not cache.exists()


def test_explicit_int8_without_qdq_fails_before_tensorrt_work(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt()
    with pytest.raises(ConfigError, match="Q/DQ"):
        build_engine(tiny_onnx(tmp_path / "m.onnx"), BuildConfig(precision="int8"), trt=fake)
    assert "builder" not in fake.record


def test_missing_input_spec_and_missing_onnx(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    with pytest.raises(ArtifactError, match="no input spec"):
        build_engine(tiny_onnx(tmp_path / "m.onnx", metadata=False), BuildConfig(), trt=fake_trt())
    result = build_engine(tmp_path / "m.onnx", BuildConfig(), input_spec=InputSpec(32, 64), trt=fake_trt(),
                          gpu=(None, None))
    assert result.manifest.model == "m" and result.manifest.num_classes == 4  # from the output shape
    with pytest.raises(ArtifactError, match="not found"):
        build_engine(tmp_path / "absent.onnx", BuildConfig(), trt=fake_trt())


def test_timing_cache_helpers_with_a_fake_config(tmp_path: Path) -> None:
    config = FakeBuilderConfig()
    load_timing_cache(config, None)  # type: ignore[arg-type]
    assert config.timing_cache is not None and config.timing_cache.data == b""
    save_timing_cache(config, None)  # type: ignore[arg-type]
    path = tmp_path / "sub" / "t.cache"
    save_timing_cache(config, path)  # type: ignore[arg-type]
    assert path.read_bytes() == b"+tuned"
    load_timing_cache(config, path)  # type: ignore[arg-type]
    assert config.timing_cache.data == b"+tuned"
