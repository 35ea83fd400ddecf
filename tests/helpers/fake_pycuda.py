"""A fake ``pycuda.driver`` and CUDA context: what ``edgeseg.runtime.cuda`` calls, with every free recorded.

``FakeCudaContext(events)`` has the ``info``/``active()`` of ``runtime.cuda.CudaContext`` and appends
"push"/"pop" to ``events``; ``FakeDriver(context)`` (install it with ``install_fake_driver``) appends
"device memory", "stream" and "event" when those are freed, and lists in ``driver.unpushed`` every free
that happened with no context pushed. Share ``events`` with a fake tensorrt's ``record["events"]`` to see
the TensorRT frees in the same sequence.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from edgeseg.runtime.cuda import DeviceInfo

DISCRETE = DeviceInfo(ordinal=0, name="Fake GPU", compute_capability="8.7", integrated=False,
                      can_map_host_memory=True, total_memory=1 << 30)


class FakeCudaContext:
    def __init__(self, events: list[str], info: DeviceInfo = DISCRETE) -> None:
        self.events, self.info, self.depth = events, info, 0

    @contextlib.contextmanager
    def active(self) -> Iterator[FakeCudaContext]:
        self.depth += 1
        self.events.append("push")
        try:
            yield self
        finally:
            self.depth -= 1
            self.events.append("pop")


class FakeAllocation:
    """pycuda's DeviceAllocation: ``int()`` is the address; ``free()`` once (a second free is a bug)."""

    def __init__(self, driver: FakeDriver, nbytes: int) -> None:
        self.driver, self.nbytes, self.freed = driver, nbytes, False
        self.address = next(driver.addresses)

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        assert not self.freed, "device memory freed twice"
        self.freed = True
        self.driver.note("device memory")


class FakeStream:
    def __init__(self, driver: FakeDriver) -> None:
        self.driver, self.handle, self.synchronized = driver, next(driver.addresses), 0

    def synchronize(self) -> None:
        self.synchronized += 1

    def __del__(self) -> None:
        self.driver.note("stream")


class FakeEvent:
    def __init__(self, driver: FakeDriver) -> None:
        self.driver = driver

    def record(self, stream: FakeStream) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def __del__(self) -> None:
        self.driver.note("event")


class FakeDriver:
    def __init__(self, context: FakeCudaContext) -> None:
        self.context = context
        self.addresses = itertools.count(0x1000, 0x1000)
        self.allocations: list[FakeAllocation] = []
        self.unpushed: list[str] = []

    def note(self, what: str) -> None:
        self.context.events.append(what)
        if self.context.depth == 0:
            self.unpushed.append(what)

    def mem_alloc(self, nbytes: int) -> FakeAllocation:
        self.allocations.append(FakeAllocation(self, nbytes))
        return self.allocations[-1]

    def pagelocked_empty(self, shape: tuple[int, ...], dtype: Any, mem_flags: Any = None) -> np.ndarray:
        return np.zeros(shape, dtype)

    def Stream(self) -> FakeStream:  # noqa: N802 (pycuda's name)
        return FakeStream(self)

    def Event(self) -> FakeEvent:  # noqa: N802 (pycuda's name)
        return FakeEvent(self)

    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: FakeStream) -> None:
        pass

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: FakeStream) -> None:
        pass


def install_fake_driver(monkeypatch: pytest.MonkeyPatch, context: FakeCudaContext) -> FakeDriver:
    """Make ``edgeseg.runtime.cuda.driver()`` return a FakeDriver for this test."""
    from edgeseg.runtime import cuda

    fake = FakeDriver(context)
    monkeypatch.setattr(cuda, "driver", lambda: fake)
    return fake
