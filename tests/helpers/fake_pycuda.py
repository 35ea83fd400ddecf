"""A fake ``pycuda.driver`` and CUDA context: what ``edgeseg.runtime.cuda`` calls, with every free recorded.

``FakeCudaContext(events)`` has the ``info``/``active()`` of ``runtime.cuda.CudaContext`` and appends
"push"/"pop" to ``events``; ``FakeDriver(context)`` (install it with ``install_fake_driver``) appends
"device memory", "stream" and "event" when those are freed, and lists in ``driver.unpushed`` every free
that happened with no context pushed. Share ``events`` with a fake tensorrt's ``record["events"]`` to see
the TensorRT frees in the same sequence.

Device memory is real bytes: ``driver.memory`` maps each live allocation's address to a bytearray, the async
copies move bytes between it and host arrays (a copy to or from an address that is not a live allocation fails,
as an illegal address does on a GPU), and a free removes it. Pass a fake tensorrt's ``device_memory`` as
``memory`` so its engines read and write the same bytes; ``NumpyKernels`` are the preprocess/argmax kernels
computed with the numpy reference on that memory.
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
        del self.driver.memory[self.address]
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
    def __init__(self, context: FakeCudaContext, memory: dict[int, bytearray] | None = None) -> None:
        self.context = context
        self.memory: dict[int, bytearray] = memory if memory is not None else {}
        self.addresses = itertools.count(0x100000, 0x100000)
        self.allocations: list[FakeAllocation] = []
        self.unpushed: list[str] = []

    def note(self, what: str) -> None:
        self.context.events.append(what)
        if self.context.depth == 0:
            self.unpushed.append(what)

    def mem_alloc(self, nbytes: int) -> FakeAllocation:
        allocation = FakeAllocation(self, nbytes)
        self.memory[allocation.address] = bytearray(nbytes)
        self.allocations.append(allocation)
        return allocation

    def pagelocked_empty(self, shape: tuple[int, ...], dtype: Any, mem_flags: Any = None) -> np.ndarray:
        return np.zeros(shape, dtype)

    def Stream(self) -> FakeStream:  # noqa: N802 (pycuda's name)
        return FakeStream(self)

    def Event(self) -> FakeEvent:  # noqa: N802 (pycuda's name)
        return FakeEvent(self)

    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: FakeStream) -> None:
        data = np.ascontiguousarray(src).tobytes()
        device = device_bytes(self.memory, dst, len(data))
        device[: len(data)] = data

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: FakeStream) -> None:
        device = device_bytes(self.memory, src, dst.nbytes)
        np.copyto(dst, np.frombuffer(device, dst.dtype, count=dst.size).reshape(dst.shape))

    def read(self, address: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A copy of what the allocation at ``address`` holds, as an array."""
        return read_device(self.memory, address, shape, dtype)


def device_bytes(memory: dict[int, bytearray], address: int, nbytes: int) -> bytearray:
    """The live allocation at ``address`` (a pointer into the middle of one is not modelled)."""
    device = memory.get(int(address))
    assert device is not None, f"no device allocation at {int(address):#x} (freed, or never allocated)"
    assert nbytes <= len(device), f"{nbytes} bytes do not fit the {len(device)}-byte allocation at {address:#x}"
    return device


def read_device(memory: dict[int, bytearray], address: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    device = device_bytes(memory, address, count * dtype.itemsize)
    return np.frombuffer(device, dtype, count=count).reshape(shape).copy()


def write_device(memory: dict[int, bytearray], address: int, array: np.ndarray) -> None:
    data = np.ascontiguousarray(array).tobytes()
    device_bytes(memory, address, len(data))[: len(data)] = data


class NumpyKernels:
    """GpuKernels' preprocess and argmax computed by the numpy reference on the fake driver's memory, so the
    GpuLoop's data path (which buffer each step reads and writes) is checked without a GPU."""

    def __init__(self, driver: FakeDriver, spec: Any, frame_order: str = "RGB") -> None:
        self.driver, self.spec, self.frame_order = driver, spec, frame_order

    def preprocess(self, frame_ptr: int, frame_h: int, frame_w: int, pitch: int, dst_ptr: int,
                   dst_dtype: Any, stream: Any) -> None:
        from edgeseg.spec import preprocess

        frame = read_device(self.driver.memory, frame_ptr, (frame_h, pitch // 3, 3), np.uint8)[:, :frame_w]
        x = preprocess(np.ascontiguousarray(frame), self.spec, self.frame_order)
        write_device(self.driver.memory, dst_ptr, x.astype(dst_dtype))

    def argmax(self, logits_ptr: int, logits_dtype: Any, channels: int, height: int, width: int,
               mask_ptr: int, stream: Any) -> None:
        from edgeseg.runtime.kernels import numpy_argmax

        logits = read_device(self.driver.memory, logits_ptr, (1, channels, height, width), logits_dtype)
        write_device(self.driver.memory, mask_ptr, numpy_argmax(logits))


def install_fake_driver(monkeypatch: pytest.MonkeyPatch, context: FakeCudaContext,
                        memory: dict[int, bytearray] | None = None) -> FakeDriver:
    """Make ``edgeseg.runtime.cuda.driver()`` return a FakeDriver for this test (on ``memory``: pass a fake
    tensorrt's ``device_memory`` so its engines see the driver's bytes)."""
    from edgeseg.runtime import cuda

    fake = FakeDriver(context, memory)
    monkeypatch.setattr(cuda, "driver", lambda: fake)
    return fake


class FakeHostAllocation(bytearray):
    """pycuda's HostAllocation, the ``base`` of a pinned array: freed by ``free()`` or when collected. As in
    pycuda, only the thread that owns the CUDA context can free it (scoped_context_activation refuses an
    out-of-thread context): freed from another thread, the pages leak and ``driver.leaked`` records
    "could not be cleaned up". Mapped (DEVICEMAP) pages are also device memory at ``get_device_pointer()``."""

    def __init__(self, driver: PinnedFakeDriver, nbytes: int) -> None:
        super().__init__(nbytes)
        import threading

        self.driver, self.owner = driver, threading.get_ident()
        self.address = next(driver.addresses)
        self.record = PinnedRecord(nbytes)  # what the driver keeps: not the allocation (that would keep it alive)
        driver.pinned.append(self.record)

    @property
    def freed(self) -> bool:
        return self.record.freed

    def get_device_pointer(self) -> int:
        """Mapped pages: the device sees these same bytes (registered here, so only mapped ones are device memory;
        the registration keeps the allocation alive until ``free()``, as a mapping does)."""
        self.driver.memory[self.address] = self
        return self.address

    def free(self) -> None:
        import threading

        assert not self.freed, "pinned memory freed twice"  # pycuda raises on a second free
        self.record.freed = True
        self.driver.memory.pop(self.address, None)
        if threading.get_ident() != self.owner:
            self.driver.leaked.append("pinned memory could not be cleaned up (out-of-thread context)")
        else:
            self.driver.note("pinned memory")

    def __del__(self) -> None:
        if not self.freed:
            self.free()


class PinnedRecord:
    """One pinned allocation as the driver sees it: its size and whether it was freed."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes, self.freed = nbytes, False


class PinnedFakeDriver(FakeDriver):
    """FakeDriver whose ``pagelocked_empty`` arrays sit on FakeHostAllocations; ``pinned`` lists their records in
    allocation order, ``leaked`` the frees that happened on a thread that does not own the context."""

    def __init__(self, context: FakeCudaContext, memory: dict[int, bytearray] | None = None) -> None:
        super().__init__(context, memory)
        self.pinned: list[PinnedRecord] = []
        self.leaked: list[str] = []

    def pagelocked_empty(self, shape: tuple[int, ...], dtype: Any, mem_flags: Any = None) -> np.ndarray:
        dtype = np.dtype(dtype)
        allocation = FakeHostAllocation(self, max(int(np.prod(shape)) * dtype.itemsize, 1))
        return np.ndarray(tuple(shape), dtype, buffer=allocation)

    # pycuda.driver.host_alloc_flags, for MappedBuffer
    host_alloc_flags = type("host_alloc_flags", (), {"DEVICEMAP": 2})


def install_pinned_fake_driver(monkeypatch: pytest.MonkeyPatch, context: FakeCudaContext,
                               memory: dict[int, bytearray] | None = None) -> PinnedFakeDriver:
    """install_fake_driver with pinned host memory that knows its owning thread (PinnedFakeDriver)."""
    from edgeseg.runtime import cuda

    fake = PinnedFakeDriver(context, memory)
    monkeypatch.setattr(cuda, "driver", lambda: fake)
    return fake
