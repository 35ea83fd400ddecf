"""CudaGraph on a real GPU, without TensorRT (marker ``gpu``: skipped without CUDA + pycuda).

The GPU loop captures preprocess -> engine -> argmax into a CUDA graph after the first frame
(edgeseg/runtime/gpu_loop.py); the other gpu tests run the loop with ``cuda_graph=False``, so
``CudaGraph`` had never run. Here the engine is replaced by a fixed logits buffer in device memory:
the preprocess and argmax kernels are captured on a stream, the graph is replayed with new frame and
logits contents (uploaded outside the graph, as GpuLoop does), and each replay's outputs are compared
with ``edgeseg.spec.preprocess`` and numpy's argmax of the same logits.

Run on a GPU machine: ``bash tests/gpu/run_on_device.sh`` (builds pycuda, runs every gpu test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from edgeseg.runtime.kernels import mask_buffer_bytes, nan_counter_offset
from edgeseg.spec import InputSpec, preprocess

pytestmark = pytest.mark.gpu

FRAME_HW = (720, 1280)  # a 1280x720 camera frame
SPEC = InputSpec(512, 1024)
CLASSES = 19
TOLERANCE = 1e-4  # float32; the kernel follows spec.preprocess's operation order (kernels.cu)


@pytest.fixture(scope="module")
def ctx():  # type: ignore[no-untyped-def]
    from edgeseg.runtime.cuda import CudaContext

    return CudaContext.get()


class _Pipeline:
    """Device buffers for one frame: frame (uint8 HWC), input tensor (1x3xHxW), logits (1xCxHxW), mask (HxW)."""

    def __init__(self, ctx: Any, frame_mode: str, order: str) -> None:
        from edgeseg.runtime import cuda
        from edgeseg.runtime.kernels import GpuKernels

        self.cuda, self.order = cuda, order
        self.stream = cuda.new_stream()
        self.kernels = GpuKernels(SPEC, order)
        self.frame = cuda.allocate((*FRAME_HW, 3), np.uint8, frame_mode, ctx.info)
        self.tensor = cuda.allocate(SPEC.shape, np.float32, "device", ctx.info)  # staged: readable for the test
        self.logits = cuda.allocate((1, CLASSES, SPEC.height, SPEC.width), np.float32, "device", ctx.info)
        # the argmax kernel's buffer: the mask, then its NaN counter (kernels.mask_buffer_bytes)
        self.mask = cuda.allocate((mask_buffer_bytes(SPEC.height * SPEC.width),), np.uint8, "device", ctx.info)

    def enqueue(self) -> None:
        """The work GpuLoop captures, less the engine: preprocess kernel, then argmax kernel, on the stream."""
        h, w = FRAME_HW
        self.kernels.preprocess(self.frame.device_ptr, h, w, w * 3, self.tensor.device_ptr, np.float32, self.stream)
        self.kernels.argmax(self.logits.device_ptr, np.float32, CLASSES, SPEC.height, SPEC.width,
                            self.mask.device_ptr, self.stream)

    def load(self, frame: np.ndarray, logits: np.ndarray) -> None:
        """New inputs (uploaded outside the graph), outputs poisoned so that a skipped kernel cannot pass."""
        np.copyto(self.frame.host, frame)
        self.frame.to_device(self.stream)  # a no-op for mapped memory: the kernel reads the host pages
        np.copyto(self.logits.host, logits)
        self.logits.to_device(self.stream)
        driver = self.cuda.driver()
        driver.memset_d8_async(self.tensor.device_ptr, 0xFF, self.tensor.nbytes, self.stream)  # float32 NaN
        driver.memset_d8_async(self.mask.device_ptr, 0xFF, self.mask.nbytes, self.stream)  # class 255 >= CLASSES

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        self.tensor.to_host(self.stream)
        self.mask.to_host(self.stream)
        self.stream.synchronize()
        plane = SPEC.height * SPEC.width
        counter = self.mask.host[nan_counter_offset(plane):][:4].view(np.uint32)[0]
        assert counter == 0xFFFFFFFF, "the argmax kernel counted NaN logits in finite data"  # as load() poisoned it
        return np.array(self.tensor.host), self.mask.host[:plane].reshape(SPEC.size).copy()

    def free(self) -> None:
        self.stream.synchronize()
        for buffer in (self.frame, self.tensor, self.logits, self.mask):
            buffer.free()


@pytest.fixture
def pipeline(ctx, request: pytest.FixtureRequest) -> Iterator[_Pipeline]:  # type: ignore[no-untyped-def]
    frame_mode, order = request.param
    if frame_mode == "mapped" and not ctx.info.can_map_host_memory:
        pytest.skip("this GPU cannot map host memory")
    with ctx.active():
        pipe = _Pipeline(ctx, frame_mode, order)
        try:
            yield pipe
        finally:
            pipe.free()


def _inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)
    logits = rng.standard_normal((1, CLASSES, SPEC.height, SPEC.width), dtype=np.float32)
    return frame, logits


def _capture(stream: Any, enqueue: Callable[[], None]) -> Any:
    """CudaGraph.capture, keeping the exception that capture() swallows so that a failure says why."""
    from edgeseg.runtime.cuda import CudaGraph

    raised: list[BaseException] = []

    def recording() -> None:
        try:
            enqueue()
        except BaseException as exc:
            raised.append(exc)
            raise

    graph = CudaGraph.capture(stream, recording)
    assert graph is not None, ("CudaGraph.capture returned None (the driver refused the capture or instantiation)"
                               + (f"; enqueue raised {type(raised[0]).__name__}: {raised[0]}" if raised else ""))
    return graph


def _check(tensor: np.ndarray, mask: np.ndarray, frame: np.ndarray, logits: np.ndarray, order: str,
           what: str) -> None:
    expected = preprocess(frame, SPEC, order)
    assert tensor.shape == expected.shape
    assert np.isfinite(tensor).all(), f"{what}: the preprocess kernel left poisoned (NaN) values"
    error = float(np.abs(tensor - expected).max())
    assert error <= TOLERANCE, f"{what}: max |GPU - spec.preprocess| = {error:.3g} > {TOLERANCE}"
    reference = np.argmax(logits[0], axis=0).astype(np.uint8)
    wrong = int((mask != reference).sum())
    assert wrong == 0, f"{what}: {wrong} of {mask.size} mask pixels differ from numpy's argmax"


@pytest.mark.parametrize("pipeline", [("device", "RGB"), ("mapped", "BGR")], indirect=True,
                         ids=["staged-frame-RGB", "mapped-frame-BGR"])
def test_captured_preprocess_and_argmax_replay_with_new_inputs(pipeline: _Pipeline) -> None:
    order = pipeline.order
    warm_frame, warm_logits = _inputs(0)
    pipeline.load(warm_frame, warm_logits)
    pipeline.enqueue()  # first launches outside the capture (module loading, as GpuLoop's warm-up frame)
    _check(*pipeline.read(), warm_frame, warm_logits, order, "warm-up launch")

    graph = _capture(pipeline.stream, pipeline.enqueue)
    try:
        outputs = []
        for replay, seed in enumerate((1, 2), start=1):
            frame, logits = _inputs(seed)
            pipeline.load(frame, logits)
            graph.launch(pipeline.stream)
            tensor, mask = pipeline.read()
            _check(tensor, mask, frame, logits, order, f"graph replay {replay}")
            outputs.append((tensor, mask))
        assert not np.array_equal(outputs[0][0], outputs[1][0])  # the replays did see different frames

        # the same inputs enqueued without the graph: the replay is the same work, bit for bit
        pipeline.load(frame, logits)
        pipeline.enqueue()
        direct_tensor, direct_mask = pipeline.read()
        np.testing.assert_array_equal(outputs[1][0], direct_tensor)
        np.testing.assert_array_equal(outputs[1][1], direct_mask)
    finally:
        pipeline.stream.synchronize()
        graph.close()
    graph.close()  # idempotent


@pytest.mark.parametrize("pipeline", [("device", "RGB")], indirect=True, ids=["staged-frame-RGB"])
def test_a_failed_capture_returns_none_and_leaves_the_stream_usable(pipeline: _Pipeline) -> None:
    from edgeseg.runtime.cuda import CudaGraph

    frame, logits = _inputs(3)
    pipeline.load(frame, logits)
    pipeline.enqueue()  # warm-up
    pipeline.read()

    def failing() -> None:
        pipeline.enqueue()
        raise RuntimeError("the engine refused to enqueue")

    assert CudaGraph.capture(pipeline.stream, failing) is None
    assert CudaGraph.capture(pipeline.stream, lambda: False) is None  # enqueue() reporting failure
    pipeline.load(frame, logits)  # the stream is out of capture mode: ordinary work runs again
    pipeline.enqueue()
    _check(*pipeline.read(), frame, logits, "RGB", "launch after failed captures")
