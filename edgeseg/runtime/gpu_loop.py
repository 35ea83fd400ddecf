"""The Segmenter's GPU path (layer 1; pycuda lazily): frame -> kernels -> engine -> mask.

Two slots (double buffering), each with its own stream, event, frame/input/logits/mask
buffers and TensorRT execution context. Per frame: the CPU writes the frame once into the
slot's frame buffer (mapped: that is the GPU's copy too; staged: one async upload), then
preprocess kernel -> engine -> argmax kernel -> mask readback are enqueued on the slot's
stream. After a slot has run once (TensorRT's warm-up), the three GPU steps are captured
into a CUDA graph and replayed with one launch; if the driver refuses, the slot keeps
enqueueing normally. Buffers exist from construction (frame buffers from the first frame
of each size), so a steady stream of frames allocates nothing.

Masks are handed out as copies in ordinary (pageable) arrays, one per slot, never as views of pinned
memory: pycuda frees pinned pages only on the thread that owns the CUDA context, so a pinned view
collected on another thread would leak ("could not be cleaned up"). ``close()`` frees the pinned pages
itself, on the closing thread. Use after ``close()``, or after the TensorRT session was closed (its
execution contexts are gone, and a captured graph would launch into freed memory), is a UsageError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError, UsageError
from ..spec import InputSpec
from . import cuda
from .kernels import GpuKernels, mask_buffer_bytes, nan_counter_offset, nan_logits_error


class _Slot:
    def __init__(self, backend: Any, mode: str, info: cuda.DeviceInfo, in_dtype: Any, out_dtype: Any) -> None:
        self.stream = cuda.new_stream()
        self.done = cuda.new_event()
        self.input = cuda.DeviceBuffer(backend.input_shape, in_dtype)  # written by the kernel only
        self.logits = cuda.DeviceBuffer(backend.output_shape, out_dtype)
        height, width = backend.output_shape[2], backend.output_shape[3]
        self.plane = height * width
        # the argmax kernel's output: the mask, then its uint32 NaN-pixel counter (kernels.cu argmax)
        self.mask = cuda.allocate((mask_buffer_bytes(self.plane),), np.uint8, mode, info)
        self.mask.host[:] = 0  # the counter starts at 0 (pinned and device memory come uninitialised)
        self.mask.to_device(self.stream)
        self.nans_seen = 0  # the counter after the previous frame: it only grows, graphs never reset it
        self.out = np.zeros((height, width), np.uint8)  # the caller's copy of the mask: pageable memory
        self.frame: Any = None
        self.execution = backend.execution(self.input.device_ptr, self.logits.device_ptr) \
            if hasattr(backend, "execution") else None
        self.runs = 0
        self.graph: cuda.CudaGraph | None = None
        self.graph_failed = False

    def release(self) -> None:
        """Free the slot (CUDA context current, stream synchronised, graph dropped): the execution context
        first (TensorRT's activation memory, bound to the buffers), then the buffers, the event, the stream."""
        if self.execution is not None:
            self.execution.release()
            self.execution = None
        for buffer in (self.frame, self.input, self.logits, self.mask):
            if buffer is not None:
                buffer.free()
        self.frame = None
        self.done = None  # pycuda destroys events and streams when their last reference goes
        self.stream = None


class GpuLoop:
    def __init__(self, backend: Any, spec: InputSpec, *, frame_order: str = "RGB", buffers: str = "auto",
                 cuda_graph: bool = True) -> None:
        self.backend = backend
        self.context = getattr(backend, "cuda", None) or cuda.CudaContext.get()
        self.spec = spec
        self.mode = cuda.choose_mode(buffers, self.context.info)
        self.use_graph = cuda_graph and hasattr(backend, "execution")
        in_dtype = getattr(backend, "input_dtype", np.float32)
        self.out_dtype = np.dtype(getattr(backend, "output_dtype", np.float32))
        if len(backend.output_shape) != 4 or backend.output_shape[0] != 1:
            raise ArtifactError("the model output must be 1xCxHxW logits", found=str(backend.output_shape))
        self.in_dtype = np.dtype(in_dtype)
        with self.context.active():
            self.kernels = GpuKernels(spec, frame_order)
            self.slots = [_Slot(backend, self.mode, self.context.info, self.in_dtype, self.out_dtype)
                          for _ in range(2)]

    def _frame_buffer(self, slot: _Slot, frame: np.ndarray) -> Any:
        if slot.frame is None or slot.frame.shape != frame.shape:
            if slot.frame is not None:
                slot.frame.free()  # here, on the owning thread with the context current (pinned pages)
            slot.frame = cuda.allocate(frame.shape, np.uint8, self.mode, self.context.info)
            self._drop_graph(slot)  # the graph recorded the old frame buffer's address and size
        return slot.frame

    def _enqueue(self, slot: _Slot, frame_shape: tuple[int, ...]) -> bool:
        h, w = int(frame_shape[0]), int(frame_shape[1])
        self.kernels.preprocess(slot.frame.device_ptr, h, w, w * 3, slot.input.device_ptr, self.in_dtype,
                                slot.stream)
        if slot.execution is not None:
            if not slot.execution.enqueue(slot.stream):
                return False
        else:  # torch reference backend on CUDA: reads/writes the same device buffers
            self.backend.run_device(slot.input, slot.logits, slot.stream)
        _, channels, out_h, out_w = self.backend.output_shape
        self.kernels.argmax(slot.logits.device_ptr, self.out_dtype, channels, out_h, out_w, slot.mask.device_ptr,
                            slot.stream)
        return True

    def _slot(self, index: int) -> _Slot:
        """The slot, or a UsageError when its memory or its execution context is gone."""
        if not self.slots:
            raise UsageError("this GPU loop is closed: its buffers and graphs are freed",
                             fix="create a new Segmenter (Segmenter.from_artifacts(...))")
        slot = self.slots[index]
        # an execution without ``closed`` (a benchmark's stand-in) is released only by this loop
        if slot.execution is not None and getattr(slot.execution, "closed", False):
            raise UsageError("the TensorRT session under this GPU loop was closed: its execution contexts are "
                             "freed, and a captured graph would launch into freed memory",
                             expected="GpuLoop.close() before TensorRTSession.close()",
                             fix="create a new Segmenter (Segmenter.from_artifacts(...))")
        return slot

    def submit(self, index: int, frame: np.ndarray) -> None:
        slot = self._slot(index)
        with self.context.active():
            buffer = self._frame_buffer(slot, frame)
            np.copyto(buffer.host, frame)  # the one CPU write of the frame
            buffer.to_device(slot.stream)
            if slot.graph is not None:
                slot.graph.launch(slot.stream)
            elif not self._enqueue(slot, frame.shape):
                raise ArtifactError("the engine failed to enqueue", fix="rerun with the tensorrt logger verbose")
            slot.runs += 1
            if self.use_graph and slot.graph is None and not slot.graph_failed and slot.runs == 1:
                slot.stream.synchronize()  # warm-up done: capture the same work for the next frames
                slot.graph = cuda.CudaGraph.capture(slot.stream, lambda: self._enqueue(slot, frame.shape))
                slot.graph_failed = slot.graph is None
            slot.mask.to_host(slot.stream)
            slot.done.record(slot.stream)

    def result(self, index: int) -> np.ndarray:
        slot = self._slot(index)
        with self.context.active():
            slot.done.synchronize()
        host = slot.mask.host
        if host.size == 0:
            raise InputError("the mask buffer has no host side")
        offset = nan_counter_offset(slot.plane)
        counter = int(host[offset:offset + 4].view(np.uint32)[0])
        nans, slot.nans_seen = (counter - slot.nans_seen) & 0xFFFFFFFF, counter
        if nans:  # as numpy_argmax on the CPU path: NaN logits make no mask
            raise nan_logits_error(nans, slot.plane)
        np.copyto(slot.out.reshape(-1), host[:slot.plane])  # a copy: no pinned view leaves the loop
        return slot.out

    @property
    def graphs_active(self) -> int:
        return sum(slot.graph is not None for slot in self.slots)

    def _drop_graph(self, slot: _Slot) -> None:
        if slot.graph is not None:
            slot.graph.close()
        slot.graph, slot.graph_failed, slot.runs = None, False, 0

    def close(self) -> None:
        """Free every slot now, with the context current; idempotent. Close this before its backend."""
        if not self.slots:
            return
        with self.context.active():
            for slot in self.slots:
                slot.stream.synchronize()  # frames in flight still read and write the slot's memory
            for slot in self.slots:
                self._drop_graph(slot)  # the graph replays the context's kernels on the slot's buffers
                slot.release()
            self.slots = []
