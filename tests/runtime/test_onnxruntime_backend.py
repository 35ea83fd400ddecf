"""OnnxRuntimeBackend: the Backend protocol on an ONNX Runtime session, with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers.tiny_models import build_tiny_net
from helpers.tiny_onnx import write_images

from edgeseg.errors import ArtifactError, DependencyError, InputError
from edgeseg.runtime.backend import Backend
from edgeseg.runtime.ort_backend import OnnxRuntimeBackend


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_net(tmp_path_factory.mktemp("ortb") / "model.onnx", height=32, width=64)


def test_implements_backend_and_matches_a_plain_session(model: Path) -> None:
    backend = OnnxRuntimeBackend(model, threads=1)
    assert isinstance(backend, Backend) and backend.name == "onnxruntime"
    assert (backend.input_name, backend.output_name) == ("images", "logits")
    assert backend.input_shape == (1, 3, 32, 64) and backend.output_shape == (1, 3, 32, 64)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = rng.standard_normal((1, 3, 32, 64)).astype(np.float32)
        out = backend.infer(x)
        assert out.dtype == np.float32 and out.shape == backend.output_shape
        np.testing.assert_allclose(out, session.run(None, {"images": x})[0], rtol=1e-5, atol=1e-5)
    backend.close()


def test_output_buffer_is_reused(model: Path) -> None:
    with OnnxRuntimeBackend(model) as backend:
        x = np.ones((1, 3, 32, 64), np.float32)
        first = backend.infer(x)
        kept = first.copy()
        second = backend.infer(-x)
        assert second is first  # no per-frame allocation
        assert not np.array_equal(kept, second)


def test_wrong_input_is_an_input_error(model: Path) -> None:
    backend = OnnxRuntimeBackend(model)
    with pytest.raises(InputError, match="float32 array of shape"):
        backend.infer(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InputError):
        backend.infer(np.zeros((1, 3, 32, 64), np.float64))
    with pytest.raises(InputError):
        backend.infer([[0.0]])  # type: ignore[arg-type]
    non_contiguous = np.zeros((1, 3, 64, 32), np.float32).transpose(0, 1, 3, 2)
    assert backend.infer(non_contiguous).shape == (1, 3, 32, 64)


def test_missing_corrupt_file_and_missing_provider(model: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        OnnxRuntimeBackend(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ArtifactError, match="cannot load"):
        OnnxRuntimeBackend(tmp_path / "bad.onnx")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(DependencyError, match="CUDAExecutionProvider"):
            OnnxRuntimeBackend(model, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(InputError):
        OnnxRuntimeBackend(model, threads=0)


def test_runs_the_cpu_int8_model(model: Path, tmp_path: Path) -> None:
    from edgeseg.quant.calibrate import CalibrateConfig, calibrate_model

    write_images(tmp_path / "images", 3)
    result = calibrate_model(model, tmp_path / "images", CalibrateConfig(calib_images=3, method="minmax"),
                             out_dir=tmp_path)
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 64)).astype(np.float32)
    float_out = OnnxRuntimeBackend(model).infer(x).copy()
    int8_out = OnnxRuntimeBackend(result.ort_int8_path, threads=1).infer(x)
    assert (float_out.argmax(1) == int8_out.argmax(1)).mean() > 0.85
