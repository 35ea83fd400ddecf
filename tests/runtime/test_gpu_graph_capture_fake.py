"""CudaGraph.capture's failure paths against a fake libcuda and libcudart (no GPU here; issue #23 item 8).

A failed capture leaves an error in the CUDA runtime's per-thread last-error slot (trtexec's endCaptureOnError
reads it with cudaGetLastError). Left there, the next check (TensorRT's own enqueue included) reports it for a
launch that did nothing wrong, and the loop's normal enqueue after the refused capture would fail. capture()
clears it on every path that gives up, and only there.
"""

from __future__ import annotations

import ctypes
import types
from typing import Any

import pytest

from edgeseg.runtime import cuda


class FakeLibcuda:
    """The driver calls capture() makes; statuses chosen per test (0 = CUDA_SUCCESS)."""

    def __init__(self, end: int = 0, instantiate: int = 0) -> None:
        self.end, self.instantiate, self.calls = end, instantiate, []

    def cuStreamBeginCapture_v2(self, handle: Any, mode: Any) -> int:  # noqa: N802 (the driver's name)
        self.calls.append("begin")
        return 0

    def cuStreamEndCapture(self, handle: Any, graph: Any) -> int:  # noqa: N802
        self.calls.append("end")
        if self.end == 0:
            graph._obj.value = 0x6000  # byref(c_void_p): the graph handle written back
        return self.end

    def cuGraphInstantiateWithFlags(self, graph_exec: Any, graph: Any, flags: Any) -> int:  # noqa: N802
        self.calls.append("instantiate")
        if self.instantiate == 0:
            graph_exec._obj.value = 0x7000
        return self.instantiate

    def cuGraphDestroy(self, graph: Any) -> int:  # noqa: N802
        self.calls.append("destroy")
        return 0


class FakeCudart:
    def __init__(self) -> None:
        self.cleared = 0

    def cudaGetLastError(self) -> int:  # noqa: N802 (the runtime's name)
        self.cleared += 1
        return 900  # cudaErrorStreamCaptureInvalidated


@pytest.fixture
def libs(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(**statuses: int) -> types.SimpleNamespace:
        driver, runtime = FakeLibcuda(**statuses), FakeCudart()
        monkeypatch.setattr(cuda, "_libcuda", lambda: driver)
        monkeypatch.setattr(cuda, "_cudart", lambda: runtime)
        return types.SimpleNamespace(driver=driver, runtime=runtime)

    return install


STREAM = types.SimpleNamespace(handle=0x5000)


def test_a_refused_enqueue_clears_the_runtime_error(libs: Any) -> None:
    fake = libs()
    assert cuda.CudaGraph.capture(STREAM, lambda: False) is None
    assert fake.driver.calls == ["begin", "end", "destroy"] and fake.runtime.cleared == 1


def test_an_enqueue_that_raises_clears_the_runtime_error(libs: Any) -> None:
    fake = libs()

    def enqueue() -> None:
        raise RuntimeError("a launch during capture failed")

    assert cuda.CudaGraph.capture(STREAM, enqueue) is None
    assert fake.runtime.cleared == 1


def test_a_failed_end_or_instantiation_clears_the_runtime_error(libs: Any) -> None:
    fake = libs(end=901)  # CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
    assert cuda.CudaGraph.capture(STREAM, lambda: None) is None
    assert fake.runtime.cleared == 1
    fake = libs(instantiate=1)
    assert cuda.CudaGraph.capture(STREAM, lambda: None) is None
    assert fake.driver.calls[-2:] == ["instantiate", "destroy"] and fake.runtime.cleared == 1


def test_a_successful_capture_leaves_the_error_state_alone(libs: Any) -> None:
    fake = libs()
    graph = cuda.CudaGraph.capture(STREAM, lambda: None)
    assert graph is not None and fake.runtime.cleared == 0
    assert isinstance(graph._exec, ctypes.c_void_p) and graph._exec.value == 0x7000


def test_without_libcudart_clearing_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda, "_cudart", lambda: None)
    assert cuda.clear_last_runtime_error() == 0
