"""The Segmenter loop on the CPU: a numpy fake backend, and ONNX Runtime on a tiny exported model."""

from __future__ import annotations

import importlib.util
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_models import conv_net

from edgeseg.errors import ArtifactError, ConfigError, InputError, UsageError
from edgeseg.manifest import Manifest
from edgeseg.runtime.backend import Backend
from edgeseg.runtime.kernels import numpy_argmax
from edgeseg.runtime.segmenter import Segmenter, choose_backend
from edgeseg.spec import InputSpec, preprocess, resize_mask_nearest

SPEC = InputSpec(32, 64)
RNG = np.random.default_rng(0)


class LinearBackend:
    """A 1x1 convolution in numpy: logits[c] = sum_k W[c, k] * x[k] (a fake Backend)."""

    name = "fake"
    input_name, output_name = "images", "logits"

    def __init__(self, classes: int = 5) -> None:
        self.weights = RNG.standard_normal((classes, 3)).astype(np.float32)
        self.input_shape = SPEC.shape
        self.output_shape = (1, classes, SPEC.height, SPEC.width)
        self.out = np.zeros(self.output_shape, np.float32)
        self.calls = 0
        self.closed = False

    def infer(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        np.einsum("ck,khw->chw", self.weights, x[0], out=self.out[0])
        return self.out

    def reference(self, frame: np.ndarray, order: str = "RGB") -> np.ndarray:
        x = preprocess(frame, SPEC, order)
        return np.argmax(np.einsum("ck,khw->chw", self.weights, x[0]), axis=0).astype(np.uint8)

    def close(self) -> None:
        self.closed = True


def frame(h: int = 48, w: int = 80) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_fake_backend_satisfies_the_protocol() -> None:
    assert isinstance(LinearBackend(), Backend)


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_masks_match_the_reference(order: str) -> None:
    backend = LinearBackend()
    seg = Segmenter(backend, SPEC, frame_order=order)
    for size in [(48, 80), (32, 64), (17, 23)]:
        f = frame(*size)
        mask = seg(f)
        assert mask.shape == (32, 64) and mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, backend.reference(f, order))


def test_output_size_frame_is_nearest_upsampling() -> None:
    backend = LinearBackend()
    seg = Segmenter(backend, SPEC, output_size="frame")
    for size in [(48, 80), (100, 30)]:
        f = frame(*size)
        mask = seg(f)
        assert mask.shape == size
        np.testing.assert_array_equal(mask, resize_mask_nearest(backend.reference(f), *size))


def test_async_api_returns_results_in_submission_order() -> None:
    backend = LinearBackend()
    seg = Segmenter(backend, SPEC)
    frames = [frame() for _ in range(5)]
    expected = [backend.reference(f) for f in frames]
    seg.submit(frames[0])
    seg.submit(frames[1])
    with pytest.raises(UsageError, match="already pending"):
        seg.submit(frames[2])  # double buffering: two in flight at most
    with pytest.raises(UsageError, match="still pending"):
        seg(frames[2])
    got = [seg.result().copy()]
    seg.submit(frames[2])
    got += [seg.result().copy(), seg.result().copy()]
    seg.submit(frames[3])
    seg.submit(frames[4])
    got += [seg.result().copy(), seg.result().copy()]
    for mask, ref in zip(got, expected, strict=True):
        np.testing.assert_array_equal(mask, ref)
    with pytest.raises(UsageError, match="no frame is pending"):
        seg.result()


@pytest.mark.parametrize("bad", [np.zeros((32, 64, 3), np.float32), np.zeros((32, 64), np.uint8),
                                 np.zeros((32, 64, 4), np.uint8), np.zeros((0, 64, 3), np.uint8), [[1, 2, 3]]])
def test_bad_frames_raise_without_disturbing_the_next(bad: object) -> None:
    backend = LinearBackend()
    seg = Segmenter(backend, SPEC)
    seg.submit(frame())
    with pytest.raises(InputError):
        seg.submit(bad)  # type: ignore[arg-type]
    good = frame()
    first = seg.result().copy()
    assert first.shape == (32, 64)
    np.testing.assert_array_equal(seg(good), backend.reference(good))
    assert backend.calls == 2  # the bad frame never reached the backend


def test_options_are_checked_and_close_closes_the_backend() -> None:
    with pytest.raises(ConfigError):
        Segmenter(LinearBackend(), SPEC, frame_order="YUV")
    with pytest.raises(ConfigError):
        Segmenter(LinearBackend(), SPEC, output_size="half")
    with pytest.raises(ConfigError, match="Backend"):
        Segmenter(object(), SPEC)
    backend = LinearBackend()
    with Segmenter(backend, SPEC) as seg:
        seg(frame())
    assert backend.closed
    with pytest.raises(UsageError, match="closed"):
        seg(frame())  # a clear error, not one from a freed buffer
    seg.close()  # idempotent


def test_no_memory_growth_over_200_frames_with_the_fake_backend() -> None:
    seg = Segmenter(LinearBackend(), SPEC)
    f = frame()
    for _ in range(5):
        seg(f)  # warm-up
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(200):
        seg(f)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 16 * 1024, growth


def test_auto_backend_without_tensorrt_is_onnxruntime(tmp_path: Path) -> None:
    manifest = Manifest(model="tiny", num_classes=5, input_spec=SPEC,
                        artifacts={"engine": "model.engine", "onnx": "model.onnx"})
    (tmp_path / "model.engine").write_bytes(b"x")
    if importlib.util.find_spec("tensorrt") is None or not hasattr(__import__("tensorrt"), "Runtime"):
        assert choose_backend("auto", manifest, tmp_path) == "onnxruntime"
    assert choose_backend("torch", manifest, tmp_path) == "torch"
    with pytest.raises(ConfigError, match="unknown backend"):
        choose_backend("nosuch", manifest, tmp_path)


def test_from_artifacts_without_a_model_file(tmp_path: Path, write_build_manifest) -> None:
    manifest = Manifest(model="tiny", num_classes=5, input_spec=SPEC, artifacts={"onnx": "model.onnx"})
    write_build_manifest(tmp_path, manifest, validated="onnx")
    with pytest.raises(ArtifactError, match="has no onnx file"):
        Segmenter.from_artifacts(tmp_path, backend="onnxruntime")
    write_build_manifest(tmp_path, Manifest(model="tiny", num_classes=5, input_spec=SPEC, artifacts={}))
    with pytest.raises(ArtifactError, match="no file the onnxruntime backend can run"):
        Segmenter.from_artifacts(tmp_path, backend="onnxruntime")


def test_numpy_argmax_first_maximum_and_buffers() -> None:
    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 1, 0, 0] = logits[0, 2, 0, 0] = 1.0  # tie: the first wins, as np.argmax
    logits[0, 2, 1, 1] = 5.0
    out, scratch = np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.intp)
    result = numpy_argmax(logits, out=out, scratch=scratch)
    assert result is out
    np.testing.assert_array_equal(out, [[1, 0], [0, 2]])
    np.testing.assert_array_equal(numpy_argmax(logits.astype(np.float16)), out)
    with pytest.raises(InputError):
        numpy_argmax(np.zeros((2, 3, 2, 2), np.float32))


def test_torch_backend_host_path_through_from_artifacts(tmp_path: Path, write_build_manifest) -> None:
    torch = pytest.importorskip("torch")
    model = conv_net(4, hidden=None)
    manifest = Manifest(model="tiny", num_classes=4, input_spec=SPEC)
    write_build_manifest(tmp_path, manifest)
    with pytest.raises(UsageError, match="needs the model's weights"):
        Segmenter.from_artifacts(tmp_path, backend="torch", device="cpu")
    seg = Segmenter.from_artifacts(tmp_path, backend="torch", model=model, device="cpu")
    assert seg.name == "torch" and seg.backend.output_shape == (1, 4, 32, 64)
    f = frame()
    with torch.inference_mode():
        logits = model(torch.from_numpy(preprocess(f, SPEC)))[0].numpy()
    np.testing.assert_array_equal(seg(f), np.argmax(logits, axis=0).astype(np.uint8))
    with pytest.raises(InputError, match="wrong shape"):
        seg.backend.infer(np.zeros((1, 3, 8, 8), np.float32))
