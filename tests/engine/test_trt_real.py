"""What the fakes stand in for, on real TensorRT and a real GPU (marked ``trt`` and ``gpu``: skipped without them,
run on the device machine): the builder and the session on a one-conv ONNX, checked against ONNX Runtime, and an
implicit INT8 build driving the real calibrator. These are the checks the fake-based tests cannot make."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_onnx import SPEC, save_conv_onnx

pytestmark = [pytest.mark.trt, pytest.mark.gpu]


def onnxruntime_logits(onnx: Path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"images": x})[0])


def build(tmp_path: Path, **config: object) -> Path:
    from helpers.engine_folder import write_engine_folder

    from edgeseg.engine.config import BuildConfig
    from edgeseg.engine.trt_builder import build_engine

    onnx = save_conv_onnx(tmp_path / "model.onnx", kernel=3, relu=True)
    calibration = [np.random.default_rng(i).standard_normal(SPEC.shape).astype(np.float32) for i in range(4)]
    result = build_engine(onnx, BuildConfig(**config),  # type: ignore[arg-type]
                          calibration_batches=calibration if config.get("int8_mode") == "implicit" else None)
    return write_engine_folder(tmp_path / "engine", result.engine_bytes, result.manifest, layers=result.layers)


def test_fp32_engine_matches_onnxruntime(tmp_path: Path) -> None:
    from edgeseg.runtime.trt import TensorRTSession

    engine = build(tmp_path, precision="fp32")
    x = np.random.default_rng(0).standard_normal(SPEC.shape).astype(np.float32)
    with TensorRTSession(engine, buffers="device") as session:
        first = session.infer(x)
        np.testing.assert_allclose(first, onnxruntime_logits(tmp_path / "model.onnx", x), atol=1e-3, rtol=1e-3)
        y = -x  # a second input through the same buffers: uploaded again, not the first result
        np.testing.assert_allclose(session.infer(y), onnxruntime_logits(tmp_path / "model.onnx", y), atol=1e-3,
                                   rtol=1e-3)


def test_implicit_int8_build_writes_a_cache_tensorrt_reads_back(tmp_path: Path) -> None:
    import tensorrt

    from edgeseg.engine.versions import TrtVersion
    from edgeseg.trt_cache_format import read_calibration_cache

    if not TrtVersion.parse(tensorrt.__version__).has_calibrator:
        pytest.skip(f"TensorRT {tensorrt.__version__} has no calibrators")  # 11+: implicit INT8 is gone
    cache = tmp_path / "calibration.cache"
    build(tmp_path, precision="int8", int8_mode="implicit", calibration_cache=cache)
    assert read_calibration_cache(cache).scales  # TensorRT's own cache, in the format the project reads
    build(tmp_path / "again", precision="int8", int8_mode="implicit", calibration_cache=cache)  # from the cache
