"""GpuLoop's lifetime against a fake tensorrt and a fake pycuda driver (no GPU here).

- Use after close (issue #23 item 5): after ``TensorRTSession.close()`` freed the execution contexts, a captured
  CUDA graph still names their activation memory; replaying it would launch into freed memory. After
  ``GpuLoop.close()`` the slots are gone (an IndexError before). Both are a UsageError, and nothing is launched.
- Pinned memory (item 7): pycuda frees a pinned allocation only on the thread that owns the CUDA context. The
  loop frees its pinned pages itself on close, and hands masks out as copies, so a mask collected on another
  thread frees nothing pinned (before: a view of the pinned mask buffer leaked there, "could not be cleaned up").
"""

from __future__ import annotations

import gc
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.engine_folder import write_engine_folder
from helpers.fake_pycuda import FakeCudaContext, NumpyKernels, install_pinned_fake_driver
from helpers.fake_tensorrt import fake_net, make_fake_trt

from edgeseg.engine.manifest import engine_manifest
from edgeseg.errors import UsageError
from edgeseg.runtime import cuda, gpu_loop
from edgeseg.runtime.cuda import DeviceInfo
from edgeseg.runtime.kernels import numpy_argmax
from edgeseg.runtime.trt import TensorRTSession
from edgeseg.spec import InputSpec, preprocess

IO = [{"name": "images", "mode": "INPUT", "shape": [1, 3, 32, 64], "dtype": "float32"},
      {"name": "logits", "mode": "OUTPUT", "shape": [1, 4, 32, 64], "dtype": "float32"}]
SPEC = InputSpec(32, 64)
INTEGRATED = DeviceInfo(ordinal=0, name="Fake Orin", compute_capability="8.7", integrated=True,
                        can_map_host_memory=True, total_memory=1 << 30)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    trt = make_fake_trt("10.3.0.30")
    context = FakeCudaContext(trt.record["events"], INTEGRATED)
    driver = install_pinned_fake_driver(monkeypatch, context, trt.device_memory)
    monkeypatch.setattr(gpu_loop, "GpuKernels", lambda spec, order="RGB": NumpyKernels(driver, spec, order))
    return types.SimpleNamespace(trt=trt, context=context, driver=driver)


def open_loop(gpu: Any, folder: Path, buffers: str, cuda_graph: bool = False) -> tuple[TensorRTSession, Any]:
    manifest = engine_manifest(model="tiny_net", num_classes=4, input_spec=SPEC, precision="fp16",
                               tensorrt_version="10.3.0.30", io_tensors=IO, gpu_name="Fake Orin",
                               compute_capability="8.7", build={})
    path = write_engine_folder(folder, b"SERIALIZED-ENGINE", manifest)
    session = TensorRTSession(path, trt=gpu.trt, cuda_context=gpu.context, buffers=buffers)
    return session, gpu_loop.GpuLoop(session, SPEC, buffers=buffers, cuda_graph=cuda_graph)


class FakeGraph:
    """A CudaGraph that records its launches (capture goes through libcuda's ctypes API, absent here)."""

    def __init__(self) -> None:
        self.launches, self.closed = 0, False

    def launch(self, stream: Any) -> None:
        assert not self.closed, "a closed graph was launched"
        self.launches += 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def graphs(monkeypatch: pytest.MonkeyPatch) -> list[FakeGraph]:
    made: list[FakeGraph] = []

    def capture(stream: Any, enqueue: Any) -> FakeGraph:
        made.append(FakeGraph())
        return made[-1]

    monkeypatch.setattr(cuda.CudaGraph, "capture", staticmethod(capture))
    return made


FRAME = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)


def test_a_captured_graph_is_not_replayed_after_the_session_closed(tmp_path: Path, gpu: Any,
                                                                  graphs: list[FakeGraph]) -> None:
    session, loop = open_loop(gpu, tmp_path, "device", cuda_graph=True)
    for _ in range(2):  # the first frame captures, the second replays
        loop.submit(0, FRAME)
        loop.result(0)
    assert len(graphs) == 1 and graphs[0].launches == 1
    session.close()  # frees the slots' execution contexts (the order the docs ask for is the reverse)
    with pytest.raises(UsageError, match="session under this GPU loop was closed") as raised:
        loop.submit(0, FRAME)
    assert "GpuLoop.close() before TensorRTSession.close()" in str(raised.value)
    assert graphs[0].launches == 1  # nothing launched into the freed activation memory
    with pytest.raises(UsageError, match="session under this GPU loop was closed"):
        loop.submit(1, FRAME)  # the slot that never captured: its enqueue would fail the same way
    loop.close()


def test_use_after_gpu_loop_close_is_a_usage_error(tmp_path: Path, gpu: Any) -> None:
    session, loop = open_loop(gpu, tmp_path, "device")
    loop.submit(0, FRAME)
    loop.close()
    for call in (lambda: loop.submit(0, FRAME), lambda: loop.result(0), lambda: loop.submit(1, FRAME)):
        with pytest.raises(UsageError, match="GPU loop is closed"):
            call()
    loop.close()  # still idempotent
    session.close()


@pytest.mark.parametrize("buffers", ["device", "mapped"])
def test_close_frees_the_pinned_pages_on_the_owning_thread(tmp_path: Path, gpu: Any, buffers: str) -> None:
    session, loop = open_loop(gpu, tmp_path, buffers)
    loop.submit(0, FRAME)
    mask = loop.result(0)
    np.testing.assert_array_equal(mask, numpy_argmax(fake_net(preprocess(FRAME, SPEC))))
    assert gpu.driver.pinned, "the loop allocated no pinned memory: the test checks nothing"
    loop.close()
    session.close()
    assert all(allocation.freed for allocation in gpu.driver.pinned)
    assert gpu.driver.leaked == [] and "pinned memory" not in gpu.driver.unpushed  # freed with the context pushed
    np.testing.assert_array_equal(mask, numpy_argmax(fake_net(preprocess(FRAME, SPEC))))  # still readable


def test_a_mask_collected_on_another_thread_leaks_nothing(tmp_path: Path, gpu: Any) -> None:
    session, loop = open_loop(gpu, tmp_path, "device")
    loop.submit(1, FRAME)
    handed = [loop.result(1)]  # the caller's only reference, about to move to a worker thread
    loop.close()
    session.close()

    def consume() -> None:  # a ROS callback or a writer thread that drops the last reference
        assert handed.pop().shape == SPEC.size
        gc.collect()

    worker = threading.Thread(target=consume)
    worker.start()
    worker.join()
    gc.collect()
    assert gpu.driver.leaked == []
    assert all(allocation.freed for allocation in gpu.driver.pinned)
