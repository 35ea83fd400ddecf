"""GPU checks (marker ``gpu``: skipped without CUDA + pycuda): buffers, kernels vs numpy, the GPU loop.

Self-contained: they need torch (CUDA build) only for the torch-backend loop tests.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
from helpers.tiny_models import conv_net
from helpers.torch_precision import exact_float32

from edgeseg.errors import ModelError
from edgeseg.runtime.kernels import mask_buffer_bytes, nan_counter_offset, numpy_argmax, numpy_overlay
from edgeseg.spec import InputSpec, preprocess

pytestmark = pytest.mark.gpu
SIZES = [(32, 64), (48, 80), (31, 17), (240, 320), (721, 1279)]


@pytest.fixture(scope="module")
def ctx():  # type: ignore[no-untyped-def]
    from edgeseg.runtime.cuda import CudaContext

    return CudaContext.get()


@pytest.mark.parametrize("kind", ["mapped", "device"])
def test_buffers_round_trip(ctx, kind: str) -> None:  # type: ignore[no-untyped-def]
    from edgeseg.runtime import cuda

    if kind == "mapped" and not ctx.info.can_map_host_memory:
        pytest.skip("this GPU cannot map host memory")
    with ctx.active():
        stream = cuda.new_stream()
        src = cuda.allocate((3, 5, 7), np.float32, kind, ctx.info)
        dst = cuda.allocate((3, 5, 7), np.float32, kind, ctx.info)
        src.host[...] = np.arange(105, dtype=np.float32).reshape(3, 5, 7)
        src.to_device(stream)
        cuda.driver().memcpy_dtod_async(dst.device_ptr, src.device_ptr, src.nbytes, stream)
        dst.to_host(stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.host, src.host)
        iface = dst.__cuda_array_interface__
        assert iface["shape"] == (3, 5, 7) and iface["typestr"] == "<f4" and iface["data"][0] == dst.device_ptr


def _run_preprocess(ctx, frame: np.ndarray, spec: InputSpec, order: str, dtype: type) -> np.ndarray:  # type: ignore[no-untyped-def]
    from edgeseg.runtime import cuda
    from edgeseg.runtime.kernels import GpuKernels

    with ctx.active():
        stream = cuda.new_stream()
        kernels = GpuKernels(spec, order)
        src = cuda.allocate(frame.shape, np.uint8, "device", ctx.info)
        out = cuda.allocate(spec.shape, dtype, "device", ctx.info)
        np.copyto(src.host, frame)
        src.to_device(stream)
        kernels.preprocess(src.device_ptr, frame.shape[0], frame.shape[1], frame.shape[1] * 3, out.device_ptr,
                           dtype, stream)
        out.to_host(stream)
        stream.synchronize()
        return np.array(out.host, dtype=np.float32)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("order", ["RGB", "BGR"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_preprocess_kernel_matches_spec_preprocess(ctx, size: tuple[int, int], order: str, dtype: type) -> None:  # type: ignore[no-untyped-def]
    spec = InputSpec(64, 96)
    frame = np.random.default_rng(size[0]).integers(0, 256, (*size, 3), dtype=np.uint8)
    got = _run_preprocess(ctx, frame, spec, order, dtype)
    expected = preprocess(frame, spec, order)
    tolerance = 1e-3 if dtype is np.float32 else 2e-2  # fp16 keeps ~3 significant digits of values up to ~2.6
    assert np.abs(got - expected).max() <= tolerance


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(1, 19, 64, 96), (1, 2, 31, 17), (1, 256, 8, 8)])
def test_argmax_kernel_matches_numpy(ctx, dtype: type, shape: tuple[int, ...]) -> None:  # type: ignore[no-untyped-def]

    logits = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    mask, nans = _run_argmax(ctx, logits)
    np.testing.assert_array_equal(mask, numpy_argmax(logits))
    assert nans == 0


def _run_argmax(ctx, logits: np.ndarray) -> tuple[np.ndarray, int]:  # type: ignore[no-untyped-def]
    """(mask, NaN-pixel count) from the argmax kernel, its buffer laid out as GpuLoop's (mask, then counter)."""
    from edgeseg.runtime import cuda
    from edgeseg.runtime.kernels import GpuKernels

    _, channels, height, width = logits.shape
    plane = height * width
    with ctx.active():
        stream = cuda.new_stream()
        kernels = GpuKernels(InputSpec(32, 32))
        src = cuda.allocate(logits.shape, logits.dtype, "device", ctx.info)
        out = cuda.allocate((mask_buffer_bytes(plane),), np.uint8, "device", ctx.info)
        np.copyto(src.host, logits)
        out.host[:] = 0
        src.to_device(stream)
        out.to_device(stream)
        kernels.argmax(src.device_ptr, logits.dtype, channels, height, width, out.device_ptr, stream)
        out.to_host(stream)
        stream.synchronize()
        offset = nan_counter_offset(plane)
        return out.host[:plane].reshape(height, width).copy(), int(out.host[offset:offset + 4].view(np.uint32)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_argmax_kernel_picks_the_first_nan_as_numpy_and_counts_the_pixels(ctx, dtype: type) -> None:  # type: ignore[no-untyped-def]
    logits = np.random.default_rng(7).standard_normal((1, 5, 3, 4)).astype(dtype)
    logits[0, 0, 0, 0] = np.nan  # channel 0: the old kernel got this one right
    logits[0, 3, 1, 2] = np.nan  # a later channel: the old kernel skipped it
    logits[0, 2, 2, 3] = logits[0, 4, 2, 3] = np.nan  # two: the first wins
    mask, nans = _run_argmax(ctx, logits)
    assert nans == 3
    assert (mask[0, 0], mask[1, 2], mask[2, 3]) == (0, 3, 2)  # numpy.argmax's answer
    with pytest.raises(ModelError, match="NaN"):
        numpy_argmax(logits)  # the CPU path refuses: so does GpuLoop.result on this count


@pytest.mark.parametrize("size", [(48, 80), (31, 17)])
def test_overlay_kernel_matches_numpy(ctx, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    from edgeseg.palette import class_palette
    from edgeseg.runtime import cuda
    from edgeseg.runtime.kernels import GpuKernels

    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    mask = rng.integers(0, 6, (16, 24), dtype=np.uint8)
    palette = class_palette(5)
    with ctx.active():
        stream = cuda.new_stream()
        kernels = GpuKernels(InputSpec(32, 32))
        bufs = [cuda.allocate(a.shape, np.uint8, "device", ctx.info) for a in (frame, mask, palette, frame)]
        for buf, array in zip(bufs[:3], (frame, mask, palette), strict=True):
            np.copyto(buf.host, array)
            buf.to_device(stream)
        kernels.overlay(bufs[0].device_ptr, size[0], size[1], bufs[1].device_ptr, 16, 24, bufs[2].device_ptr, 5,
                        0.4, bufs[3].device_ptr, stream)
        bufs[3].to_host(stream)
        stream.synchronize()
        expected = numpy_overlay(frame, mask, palette, 0.4)
        assert np.abs(bufs[3].host.astype(int) - expected.astype(int)).max() <= 1


def _tiny_model():  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    return conv_net(5, hidden=6)


def _torch_gpu_segmenter(model, spec: InputSpec, order: str = "RGB"):  # type: ignore[no-untyped-def]
    from edgeseg.runtime.gpu_loop import GpuLoop
    from edgeseg.runtime.segmenter import Segmenter
    from edgeseg.runtime.torch_backend import TorchBackend

    backend = TorchBackend(model, spec.shape, device="cuda")
    return Segmenter(backend, spec, frame_order=order, gpu_loop=GpuLoop(backend, spec, frame_order=order,
                                                                         cuda_graph=False))


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """Exact float32 convolutions on the GPU (helpers/torch_precision.py): TF32 would decide near-ties."""
    with exact_float32():
        yield


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_torch_gpu_loop_matches_cpu_pytorch(order: str, no_tf32: None) -> None:
    import copy

    import torch

    model = _tiny_model()
    spec = InputSpec(64, 96)
    cpu_model = copy.deepcopy(model)
    seg = _torch_gpu_segmenter(model, spec, order)
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in SIZES[:4]]
    for frame in frames:
        seg.submit(frame)
        mask = seg.result().copy()
        with torch.inference_mode():
            logits = cpu_model(torch.from_numpy(preprocess(frame, spec, order)))[0].numpy()
        top2 = np.sort(logits, axis=0)[-2:]
        decided = (top2[1] - top2[0]) > 1e-3  # GPU vs CPU float differences may flip near-ties only
        np.testing.assert_array_equal(mask[decided], np.argmax(logits, axis=0)[decided])
    seg.close()


def test_ten_thousand_frames_without_memory_growth() -> None:
    import torch

    seg = _torch_gpu_segmenter(_tiny_model(), InputSpec(32, 64))
    frame = np.random.default_rng(6).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    for _ in range(20):
        seg(frame)
    torch.cuda.synchronize()
    gpu_before = torch.cuda.memory_allocated()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(10_000):
        seg.submit(frame)
        if i % 2:
            seg.result()
            seg.result()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 256 * 1024, growth
    assert torch.cuda.memory_allocated() <= gpu_before + (1 << 20)
