"""NaN logits give the same answer on the CPU and GPU paths (issue #23 item 6): a ModelError, not a mask.

numpy.argmax returns the first NaN's index; the former argmax kernel skipped a NaN unless it was in channel 0
(``v > best`` is false for NaN), so the GPU path and the CPU path made different masks from the same logits,
neither saying that the logits were broken. Now the kernel picks the first NaN as numpy does and counts the
pixels in a counter after the mask, and GpuLoop.result raises numpy_argmax's error from that count.

The kernel runs only on a GPU (tests/runtime/test_gpu_runtime.py); here it is emulated statement by statement
(each mirrored C statement is checked to be in kernels.cu), and GpuLoop runs on the fake driver with that
emulation as its argmax kernel.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.engine_folder import write_engine_folder
from helpers.fake_pycuda import FakeCudaContext, NumpyKernels, install_fake_driver, read_device, write_device
from helpers.fake_tensorrt import make_fake_trt
from test_kernels_float import code_only

from edgeseg.engine.manifest import engine_manifest
from edgeseg.errors import ModelError
from edgeseg.runtime import gpu_loop
from edgeseg.runtime.kernels import KERNEL_SOURCE, mask_buffer_bytes, nan_counter_offset, numpy_argmax
from edgeseg.runtime.trt import TensorRTSession
from edgeseg.spec import InputSpec

MIRRORED = (
    "float best = to_float<T>(logits[i]);",
    "int best_c = 0;",
    "bool nan = best != best;",
    "for (int c = 1; c < channels && !nan; ++c) {",
    "if (v != v) { nan = true; best_c = c; }",
    "else if (v > best) { best = v; best_c = c; }",
    "mask[i] = (unsigned char)best_c;",
    "atomicAdd((unsigned int *)(mask + (((size_t)plane + 3) & ~(size_t)3)), 1u);",
)


def test_the_emulation_mirrors_the_kernel_source() -> None:
    code = " ".join(code_only(KERNEL_SOURCE.read_text()).split())
    missing = [line for line in MIRRORED if line not in code]
    assert missing == [], "kernels.cu's argmax changed: update emulate_argmax and MIRRORED"


def emulate_argmax(logits: np.ndarray, out: np.ndarray) -> None:
    """kernels.cu argmax for every pixel (CxHxW logits) into ``out`` (mask_buffer_bytes(H*W) uint8)."""
    channels, plane = logits.shape[0], logits.shape[1] * logits.shape[2]
    flat = logits.reshape(channels, plane).astype(np.float32)  # to_float<T>
    counter = out[nan_counter_offset(plane):][:4].view(np.uint32)
    for i in range(plane):
        best = flat[0, i]  # float best = to_float<T>(logits[i]);
        best_c = 0  # int best_c = 0;
        nan = best != best  # bool nan = best != best;
        c = 1
        while c < channels and not nan:  # for (int c = 1; c < channels && !nan; ++c) {
            v = flat[c, i]
            if v != v:  # if (v != v) { nan = true; best_c = c; }
                nan, best_c = True, c
            elif v > best:  # else if (v > best) { best = v; best_c = c; }
                best, best_c = v, c
            c += 1
        out[i] = best_c  # mask[i] = (unsigned char)best_c;
        if nan:  # atomicAdd(counter, 1u)
            counter[0] += 1


def nan_logits(shape: tuple[int, int, int, int] = (1, 5, 4, 6)) -> np.ndarray:
    logits = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    logits[0, 0, 0, 0] = np.nan  # channel 0: the only NaN the former kernel saw
    logits[0, 3, 1, 2] = np.nan  # a later channel: the former kernel skipped it
    logits[0, 2, 2, 3] = logits[0, shape[1] - 1, 2, 3] = np.nan  # two in one pixel: the first wins
    logits[0, 1, 3, 5] = np.inf  # Inf is a maximum like any other, not an error
    return logits


def test_the_emulated_kernel_picks_what_numpy_picks_and_counts_the_nan_pixels() -> None:
    logits = nan_logits()
    out = np.zeros(mask_buffer_bytes(24), np.uint8)
    emulate_argmax(logits[0], out)
    np.testing.assert_array_equal(out[:24].reshape(4, 6), np.argmax(logits[0], axis=0))
    assert out[nan_counter_offset(24):][:4].view(np.uint32)[0] == 3
    assert nan_counter_offset(24) == 24 and nan_counter_offset(25) == 28 and mask_buffer_bytes(25) == 32


def test_the_cpu_path_refuses_nan_logits_and_keeps_inf() -> None:
    logits = nan_logits()
    with pytest.raises(ModelError, match=r"NaN logits") as raised:
        numpy_argmax(logits)
    assert "3 of 24 pixel(s) with a NaN logit" in str(raised.value)
    for dtype in (np.float16, np.float32):  # the preallocated path too
        with pytest.raises(ModelError, match="NaN logits"):
            numpy_argmax(logits.astype(dtype), out=np.zeros((4, 6), np.uint8), scratch=np.zeros((4, 6), np.intp))
    finite = np.nan_to_num(logits, nan=0.0, posinf=np.inf)
    assert numpy_argmax(finite)[3, 5] == 1  # the Inf pixel


# ---- GpuLoop on the fake driver, the emulated kernel as its argmax ----

SPEC = InputSpec(32, 64)
IO = [{"name": "images", "mode": "INPUT", "shape": [1, 3, 32, 64], "dtype": "float32"},
      {"name": "logits", "mode": "OUTPUT", "shape": [1, 4, 32, 64], "dtype": "float32"}]
LOOP_LOGITS = (1, 4, 32, 64)  # the fake engine's output (helpers.fake_tensorrt.fake_net)


class EmulatedArgmax(NumpyKernels):
    """Preprocess as NumpyKernels; argmax as kernels.cu (emulated) on logits the test sets, not the engine's."""

    logits = nan_logits(LOOP_LOGITS)

    def argmax(self, logits_ptr: int, logits_dtype: Any, channels: int, height: int, width: int,
               mask_ptr: int, stream: Any) -> None:
        plane = height * width
        out = read_device(self.driver.memory, mask_ptr, (mask_buffer_bytes(plane),), np.uint8)
        emulate_argmax(self.logits[0], out)  # adds to the counter already there, as atomicAdd does
        write_device(self.driver.memory, mask_ptr, out)


@pytest.fixture
def loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    trt = make_fake_trt("10.3.0.30")
    context = FakeCudaContext(trt.record["events"])
    driver = install_fake_driver(monkeypatch, context, trt.device_memory)
    monkeypatch.setattr(gpu_loop, "GpuKernels", lambda spec, order="RGB": EmulatedArgmax(driver, spec, order))
    monkeypatch.setattr(EmulatedArgmax, "logits", nan_logits(LOOP_LOGITS))
    manifest = engine_manifest(model="tiny_net", num_classes=4, input_spec=SPEC, precision="fp16",
                               tensorrt_version="10.3.0.30", io_tensors=IO, gpu_name="Fake GPU",
                               compute_capability="8.7", build={})
    session = TensorRTSession(write_engine_folder(tmp_path, b"SERIALIZED-ENGINE", manifest), trt=trt,
                              cuda_context=context, buffers="device")
    loop = gpu_loop.GpuLoop(session, SPEC, buffers="device", cuda_graph=False)
    yield types.SimpleNamespace(loop=loop, driver=driver)
    loop.close()
    session.close()


def test_the_gpu_path_raises_the_cpu_paths_error_for_nan_logits(loop: Any) -> None:
    frame = np.zeros((48, 40, 3), np.uint8)
    with pytest.raises(ModelError) as cpu:
        numpy_argmax(EmulatedArgmax.logits)
    loop.loop.submit(0, frame)
    with pytest.raises(ModelError) as gpu:
        loop.loop.result(0)
    assert str(gpu.value) == str(cpu.value)


def test_the_counter_only_grows_and_each_frame_reports_its_own_nans(loop: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    frame = np.zeros((48, 40, 3), np.uint8)
    loop.loop.submit(1, frame)
    with pytest.raises(ModelError, match="3 of 2048"):
        loop.loop.result(1)
    finite = np.nan_to_num(nan_logits(LOOP_LOGITS), nan=0.0, posinf=np.inf)
    monkeypatch.setattr(EmulatedArgmax, "logits", finite)
    loop.loop.submit(1, frame)  # the counter still holds 3: no reset, the host compares with the last value
    np.testing.assert_array_equal(loop.loop.result(1), numpy_argmax(finite))
    one_nan = finite.copy()
    one_nan[0, 3, 0, 1] = np.nan
    monkeypatch.setattr(EmulatedArgmax, "logits", one_nan)
    loop.loop.submit(1, frame)
    with pytest.raises(ModelError, match="1 of 2048"):
        loop.loop.result(1)
