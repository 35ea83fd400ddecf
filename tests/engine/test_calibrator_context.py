"""The implicit INT8 calibrator touches device memory only inside the project's CUDA context.

A fake ``pycuda.driver`` (in sys.modules) refuses every allocation, copy and free while no context is
pushed, with pycuda's own message, as the real driver does on a thread without one. The implicit INT8 builds
at the end run ``build_engine`` with it: the fake TensorRT drives ``config.int8_calibrator`` as a real build
does (read the cache; else get_batch_size, get_batch until None, write the cache).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.fake_tensorrt import FakeBuilderConfig, make_fake_trt
from helpers.tiny_onnx import save_conv_onnx

import edgeseg.runtime.cuda as runtime_cuda
from edgeseg.engine.calibrator import make_entropy_calibrator
from edgeseg.engine.config import BuildConfig
from edgeseg.engine.trt_builder import build_engine

SHAPE = (1, 3, 2, 2)


class LogicError(RuntimeError):
    """pycuda.driver.LogicError."""


class FakeDriver(types.ModuleType):
    """The parts of pycuda.driver the calibrator and ``runtime.cuda.CudaContext`` use, with a context stack."""

    def __init__(self) -> None:
        super().__init__("pycuda.driver")
        self.stack: list[Any] = []
        self.allocations: list[FakeAllocation] = []
        self.copies: list[np.ndarray] = []
        self.fail_alloc = False
        self.device_attribute = types.SimpleNamespace(INTEGRATED=1, CAN_MAP_HOST_MEMORY=2)
        self.LogicError = LogicError
        driver = self

        class Context:
            @staticmethod
            def pop() -> None:
                driver.stack.pop()

        class PrimaryContext:
            def push(self) -> None:
                driver.stack.append(self)

        class Device:
            def __init__(self, ordinal: int) -> None:
                self.ordinal = ordinal

            def retain_primary_context(self) -> PrimaryContext:
                return PrimaryContext()

            def compute_capability(self) -> tuple[int, int]:
                return 8, 7

            def name(self) -> str:
                return "Fake Orin"

            def get_attribute(self, attribute: int) -> int:
                return 1

            def total_memory(self) -> int:
                return 8 << 30

        self.Context, self.Device = Context, Device

    def need_context(self, call: str) -> None:
        if not self.stack:
            raise LogicError(f"{call} failed: no currently active context")  # pycuda's wording

    def init(self) -> None:
        pass

    def mem_alloc(self, nbytes: int) -> FakeAllocation:
        self.need_context("cuMemAlloc")
        if self.fail_alloc:
            raise MemoryError("cuMemAlloc failed: out of memory")
        allocation = FakeAllocation(self, nbytes, 0x1000 * (len(self.allocations) + 1))
        self.allocations.append(allocation)
        return allocation

    def memcpy_htod(self, dest: FakeAllocation, src: np.ndarray) -> None:
        self.need_context("cuMemcpyHtoD")
        assert not dest.freed and src.nbytes == dest.nbytes
        self.copies.append(np.array(src))


class FakeAllocation:
    def __init__(self, driver: FakeDriver, nbytes: int, address: int) -> None:
        self.driver, self.nbytes, self.address, self.freed = driver, nbytes, address, False

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        self.driver.need_context("cuMemFree")
        self.freed = True


@pytest.fixture
def pycuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDriver]:
    driver = FakeDriver()
    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setattr(runtime_cuda.CudaContext, "_instances", {})  # no context cached from another test
    monkeypatch.setattr(runtime_cuda, "_set_primary_flags", lambda ordinal, flags: None)  # no libcuda here
    yield driver


def batches(count: int) -> list[np.ndarray]:
    return [np.full(SHAPE, float(i), np.float32) for i in range(count)]


def calibrator(batches: list[np.ndarray]) -> Any:
    return make_entropy_calibrator(make_fake_trt("10.3.0"), batches, input_shape=SHAPE, cache_path=None,
                                   trt_version="10.3.0")


def test_batches_are_copied_inside_the_context_and_the_buffer_freed_at_the_end(pycuda: FakeDriver) -> None:
    made = calibrator(batches(2))  # failed here before: cuMemAlloc without a context
    assert pycuda.stack == []
    first = made.get_batch(["images"])
    assert pycuda.stack == []  # pushed for the copy, popped after it
    second = made.get_batch(["images"])
    assert first == second == [0x1000] and len(pycuda.allocations) == 1  # one buffer, reused
    assert [float(c.flat[0]) for c in pycuda.copies] == [0.0, 1.0]
    assert made.get_batch(["images"]) is None and made.get_batch(["images"]) is None
    assert pycuda.allocations[0].freed and pycuda.stack == [] and made.errors == [] and made.count == 2


def test_a_cache_only_calibrator_allocates_nothing_and_close_is_idempotent(pycuda: FakeDriver) -> None:
    assert calibrator([]).get_batch(["images"]) is None and pycuda.allocations == []
    made = calibrator(batches(3))
    made.get_batch(["images"])
    made.close()
    made.close()
    assert pycuda.allocations[0].freed and pycuda.stack == []


def test_a_device_error_is_kept_for_the_builder_and_the_context_popped(pycuda: FakeDriver) -> None:
    pycuda.fail_alloc = True
    made = calibrator(batches(1))
    assert made.get_batch(["images"]) is None  # nothing raised into TensorRT's C++ frames
    assert isinstance(made.errors[0], MemoryError) and pycuda.stack == []


def test_the_fake_refuses_device_memory_without_a_context(pycuda: FakeDriver) -> None:
    with pytest.raises(LogicError, match="no currently active context"):
        pycuda.mem_alloc(16)


# -- implicit INT8 builds: the calibrator driven as TensorRT drives it -----------------------------------------

MODEL_SHAPE = (1, 3, 32, 64)  # tiny_onnx's input


def implicit_build(tmp_path: Path, batches: list[np.ndarray] | None, **config: Any) -> Any:
    fake = make_fake_trt("10.3.0.30")
    onnx = save_conv_onnx(tmp_path / "model.onnx", relu=True)
    build_config = BuildConfig(precision="int8", int8_mode="implicit",
                               calibration_cache=tmp_path / "calibration.cache", **config)
    result = build_engine(onnx, build_config, calibration_batches=batches, trt=fake, gpu=("Orin", "8.7"))
    return fake, result


def test_implicit_int8_build_calibrates_every_batch_and_writes_the_cache(tmp_path: Path,
                                                                          pycuda: FakeDriver) -> None:
    frames = [np.full(MODEL_SHAPE, float(i), np.float32) for i in range(3)]
    fake, result = implicit_build(tmp_path, frames, builder_optimization_level=5)
    config = fake.record["config"]
    assert fake.BuilderFlag.INT8 in config.flags and config.int8_calibrator is not None
    assert config.builder_optimization_level == 5
    calibration = fake.record["calibration"]
    assert calibration["cache_read"] is None and calibration["batch_size"] == 1 and calibration["batches"] == 3
    assert [float(c.flat[0]) for c in pycuda.copies] == [0.0, 1.0, 2.0]  # every batch uploaded, in order
    assert pycuda.allocations[0].freed and pycuda.stack == []  # freed inside the context after the build
    cache = tmp_path / "calibration.cache"
    assert cache.read_bytes() == calibration["cache_written"]
    assert cache.read_bytes().startswith(b"TRT-100300-EntropyCalibration2\n")
    assert len(result.manifest.hashes["calibration_cache"]) == 64


def test_implicit_build_from_an_existing_cache_uploads_no_batch(tmp_path: Path, pycuda: FakeDriver) -> None:
    implicit_build(tmp_path, [np.zeros(MODEL_SHAPE, np.float32)])
    written = (tmp_path / "calibration.cache").read_bytes()
    copies = len(pycuda.copies)
    fake, _ = implicit_build(tmp_path, None)  # the cache alone
    assert fake.record["calibration"] == {"cache_read": written, "batches": 0}
    assert len(pycuda.copies) == copies and fake.record["config"].builder_optimization_level == 3


def test_a_device_error_inside_the_calibrator_is_raised_by_the_build(tmp_path: Path, pycuda: FakeDriver) -> None:
    pycuda.fail_alloc = True
    with pytest.raises(MemoryError, match="out of memory"):  # kept by the calibrator, re-raised after the build
        implicit_build(tmp_path, [np.zeros(MODEL_SHAPE, np.float32)])
    assert not (tmp_path / "calibration.cache").exists() and pycuda.stack == []


def test_a_batch_of_the_wrong_shape_is_refused_by_the_build(tmp_path: Path, pycuda: FakeDriver) -> None:
    from edgeseg.errors import InputError

    with pytest.raises(InputError, match="calibration batch 0 has the wrong shape"):
        implicit_build(tmp_path, [np.zeros((1, 3, 16, 16), np.float32)])


def test_the_fake_builder_config_takes_no_misspelled_attribute() -> None:
    config = FakeBuilderConfig()
    with pytest.raises(AttributeError):
        config.builder_optimisation_level = 4  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        config.int8_calibrater = object()  # type: ignore[attr-defined]
