"""TensorRTSession and GpuLoop against a fake tensorrt and a fake pycuda driver (no GPU here).

- Version-compatible engines: the Runtime must allow engine host code before deserialising (TensorRT >= 8.6;
  8.5 has no such attribute), and only for engines whose manifest says version compatible.
- One process-wide TensorRT logger: a second session still reports the errors TensorRT logged for it.
- close(): execution contexts, then the engine, then the runtime; device memory, events and streams freed;
  all with the CUDA context pushed; idempotent. A session driven by a GpuLoop makes no host-path context.
- DLA engines: the Runtime's DLA_core is set to the core the build recorded, before deserialising; a core
  the device lacks is refused with what to do.
- The data path: the fake copies move bytes and the fake engine computes ``fake_net`` from the address bound
  to its input, so ``infer`` and the Segmenter's GPU loop must upload the input, bind input and output to the
  right buffers and set the input shape to return what the numpy reference returns.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.engine_folder import write_engine_folder
from helpers.fake_pycuda import FakeCudaContext, NumpyKernels, install_fake_driver
from helpers.fake_tensorrt import VC_MARKER, fake_net, make_fake_trt

from edgeseg.engine.manifest import engine_manifest
from edgeseg.errors import ArtifactError, UsageError
from edgeseg.runtime import gpu_loop
from edgeseg.runtime.kernels import numpy_argmax
from edgeseg.runtime.segmenter import Segmenter
from edgeseg.runtime.trt import TensorRTSession
from edgeseg.spec import InputSpec, preprocess

IO = [{"name": "images", "mode": "INPUT", "shape": [1, 3, 32, 64], "dtype": "float32"},
      {"name": "logits", "mode": "OUTPUT", "shape": [1, 4, 32, 64], "dtype": "float32"}]
SPEC = InputSpec(32, 64)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A fake tensorrt 10.3, a fake CUDA context and driver, one event list for all of them."""
    trt = make_fake_trt("10.3.0.30")
    events: list[str] = trt.record["events"]
    context = FakeCudaContext(events)
    driver = install_fake_driver(monkeypatch, context, trt.device_memory)
    return types.SimpleNamespace(trt=trt, events=events, context=context, driver=driver)


def engine_folder(folder: Path, *, version_compatible: bool = False, data: bytes | None = None,
                  dla_core: int | None = None) -> Path:
    """model.engine + manifest.json as a build writes them (the engine's hash recorded; for a DLA build, the
    plan's ``dla`` and the config's ``dla_core``)."""
    build: dict[str, Any] = {"version_compatible": version_compatible, "dla": dla_core is not None,
                             "config": {"dla_core": dla_core}}
    manifest = engine_manifest(model="tiny_net", num_classes=4, input_spec=SPEC, precision="fp16",
                               tensorrt_version="10.3.0.30", io_tensors=IO, gpu_name="Fake GPU",
                               compute_capability="8.7", build=build)
    if data is None:
        data = b"SERIALIZED-ENGINE" + (VC_MARKER if version_compatible else b"")
    return write_engine_folder(folder, data, manifest)


def open_session(gpu: types.SimpleNamespace, path: Path) -> TensorRTSession:
    return TensorRTSession(path, trt=gpu.trt, cuda_context=gpu.context, buffers="device")


# -- 1. version-compatible engines ---------------------------------------------------------------------------

def test_version_compatible_engine_deserialises_with_host_code_allowed(tmp_path: Path, gpu: Any) -> None:
    session = open_session(gpu, engine_folder(tmp_path, version_compatible=True))
    assert gpu.trt.record["deserialised"].endswith(VC_MARKER)
    assert session._runtime is not None and session._runtime.engine_host_code_allowed is True
    assert session.input_shape == (1, 3, 32, 64) and session.output_shape == (1, 4, 32, 64)
    session.close()


def test_other_engines_keep_host_code_disallowed(tmp_path: Path, gpu: Any) -> None:
    session = open_session(gpu, engine_folder(tmp_path))
    assert session._runtime is not None and session._runtime.engine_host_code_allowed is False
    session.close()


def test_version_compatible_engine_without_its_manifest_says_so(tmp_path: Path, gpu: Any) -> None:
    engine = engine_folder(tmp_path / "built", version_compatible=True)
    alone = tmp_path / "alone" / "model.engine"
    alone.parent.mkdir()
    alone.write_bytes(engine.read_bytes())
    with pytest.raises(ArtifactError) as info:
        open_session(gpu, alone)
    assert "host code is not allowed" in str(info.value) and "manifest.json" in str(info.value)


def test_an_edited_manifest_beside_the_engine_is_refused_before_deserialisation(tmp_path: Path, gpu: Any) -> None:
    """The session reads manifest.json through the verifying reader: an edit (checksum) is an error, not a
    manifest to trust (before, it was read unverified)."""
    import json

    path = engine_folder(tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["compute_capability"] = "9.0"  # edited after the build
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="changed after the build"):
        open_session(gpu, path)
    assert "deserialised" not in gpu.trt.record


def test_tensorrt_85_runtime_has_no_host_code_attribute() -> None:
    from edgeseg.runtime.trt import allow_engine_host_code
    from edgeseg.runtime.trt_logger import process_logger

    trt = make_fake_trt("8.5.2.2")
    runtime = trt.Runtime(process_logger(trt))
    assert allow_engine_host_code(runtime, True) is False  # guarded: setting it would raise AttributeError
    trt86 = make_fake_trt("8.6.1")
    assert allow_engine_host_code(trt86.Runtime(process_logger(trt86)), True) is True


# -- 2. one logger per process ------------------------------------------------------------------------------

def test_second_session_still_reports_its_tensorrt_errors(tmp_path: Path, gpu: Any) -> None:
    for name in ("first", "second"):
        with pytest.raises(ArtifactError) as info:
            open_session(gpu, engine_folder(tmp_path / name, data=b"not an engine"))
        assert "magic tag does not match" in str(info.value), name
        assert str(info.value).count("magic tag") == 1, name  # only this session's own error
    loggers = gpu.trt.record["loggers"]
    assert len(loggers) == 2 and loggers[0] is loggers[1]


def test_failed_enqueue_reports_the_errors_logged_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt = make_fake_trt("10.3.0.30", execute_ok=False)
    context = FakeCudaContext(trt.record["events"])
    install_fake_driver(monkeypatch, context, trt.device_memory)
    with pytest.raises(ArtifactError, match="magic tag"):  # an earlier failure, logged to the same logger
        TensorRTSession(engine_folder(tmp_path / "bad", data=b"junk"), trt=trt, cuda_context=context)
    session = TensorRTSession(engine_folder(tmp_path / "good"), trt=trt, cuda_context=context, buffers="device")
    with pytest.raises(ArtifactError) as info:
        session.infer(np.zeros((1, 3, 32, 64), np.float32))
    assert "illegal memory access in kernel 3" in str(info.value) and "magic tag" not in str(info.value)
    session.close()


# -- 3. close(): order, context pushed, idempotent, nothing unused made ---------------------------------------

def test_session_close_frees_in_order_with_the_context_pushed(tmp_path: Path, gpu: Any) -> None:
    session = open_session(gpu, engine_folder(tmp_path, version_compatible=True))
    assert session.engine.contexts_created == 0 and gpu.driver.allocations == []  # host path made lazily
    out = session.infer(np.ones((1, 3, 32, 64), np.float32))
    assert out.shape == (1, 4, 32, 64) and session.engine.contexts_created == 1
    assert len(gpu.driver.allocations) == 2
    start = len(gpu.events)
    session.close()
    assert gpu.events[start:] == [
        "push", "context", "device memory", "device memory", "stream", "engine", "runtime", "pop"]
    assert gpu.driver.unpushed == [] and all(a.freed for a in gpu.driver.allocations)
    end = len(gpu.events)
    session.close()  # idempotent: nothing freed twice, no context pushed again
    assert len(gpu.events) == end
    with pytest.raises(UsageError, match="closed"):
        session.infer(np.ones((1, 3, 32, 64), np.float32))


class NoKernels:
    """GpuKernels without pycuda's compiler: the loop's control flow only."""

    def __init__(self, spec: InputSpec, frame_order: str = "RGB") -> None:
        pass

    def preprocess(self, *args: Any) -> None:
        pass

    def argmax(self, *args: Any) -> None:
        pass


def make_loop(gpu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[TensorRTSession, Any]:
    monkeypatch.setattr(gpu_loop, "GpuKernels", NoKernels)
    session = open_session(gpu, engine_folder(tmp_path))
    loop = gpu_loop.GpuLoop(session, SPEC, buffers="device", cuda_graph=False)
    return session, loop


def test_gpu_loop_session_makes_only_the_slots_contexts(tmp_path: Path, gpu: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    session, loop = make_loop(gpu, tmp_path, monkeypatch)
    assert session.engine.contexts_created == 2  # the two slots': no probe, no unused host-path context
    assert len(gpu.driver.allocations) == 6  # input, logits, mask per slot: no host-path buffers
    loop.close()
    session.close()


def test_gpu_loop_then_session_close_frees_everything_in_order(tmp_path: Path, gpu: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    session, loop = make_loop(gpu, tmp_path, monkeypatch)
    frame = np.zeros((48, 80, 3), np.uint8)
    for slot in (0, 1):
        loop.submit(slot, frame)
        mask = loop.result(slot)
    start = len(gpu.events)
    loop.close()
    slot_frees = ["context", *["device memory"] * 4, "event", "stream"]  # frame, input, logits, mask
    assert gpu.events[start:] == ["push", *slot_frees, *slot_frees, "pop"]
    session.close()
    assert gpu.events[start:][len(slot_frees) * 2 + 2:] == ["push", "engine", "runtime", "pop"]
    assert gpu.driver.unpushed == [] and all(a.freed for a in gpu.driver.allocations)
    assert mask.shape == (32, 64)  # a mask handed out stays readable: its pinned pages go with it
    end = len(gpu.events)
    loop.close()
    session.close()
    assert len(gpu.events) == end


def test_session_closed_first_still_frees_contexts_before_the_engine(tmp_path: Path, gpu: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    session, loop = make_loop(gpu, tmp_path, monkeypatch)
    start = len(gpu.events)
    session.close()  # the loop still holds its slots' executions: the session releases them first
    assert gpu.events[start:] == ["push", "context", "context", "engine", "runtime", "pop"]
    with pytest.raises(UsageError, match="closed"):
        loop.slots[0].execution.enqueue(loop.slots[0].stream)
    loop.close()  # frees the buffers; no context is released twice
    assert gpu.events.count("context") == 2 and all(a.freed for a in gpu.driver.allocations)
    assert gpu.driver.unpushed == []


# -- 4. DLA engines -------------------------------------------------------------------------------------------

def test_dla_engine_deserialises_on_the_core_it_was_built_for(tmp_path: Path, gpu: Any) -> None:
    session = open_session(gpu, engine_folder(tmp_path, dla_core=1))
    assert gpu.trt.record["deserialised_dla_core"] == 1
    assert session._runtime is not None and session._runtime.DLA_core == 1
    session.close()


def test_gpu_engine_leaves_the_dla_core_unset(tmp_path: Path, gpu: Any) -> None:
    open_session(gpu, engine_folder(tmp_path)).close()
    assert gpu.trt.record["deserialised_dla_core"] == -1


def test_dla_core_the_device_lacks_is_refused(tmp_path: Path, gpu: Any) -> None:
    with pytest.raises(ArtifactError) as info:
        open_session(gpu, engine_folder(tmp_path, dla_core=2))  # the fake device has cores 0 and 1
    assert "built for DLA core 2" in str(info.value) and "2 DLA core(s)" in str(info.value)
    assert "deserialised" not in gpu.trt.record


# -- 5. the data path: upload, addresses, input shape, readback ------------------------------------------------

def test_infer_returns_what_the_engine_computes_from_the_uploaded_input(tmp_path: Path, gpu: Any) -> None:
    session = open_session(gpu, engine_folder(tmp_path))
    rng = np.random.default_rng(0)
    for _ in range(2):  # the second call reuses the host path: its input must be uploaded again
        x = rng.standard_normal((1, 3, 32, 64)).astype(np.float32)
        np.testing.assert_array_equal(session.infer(x), fake_net(x))
    host = session._host
    assert host is not None
    context = host.execution.context
    assert context.addresses == {"images": host.input.device_ptr, "logits": host.output.device_ptr}
    assert context.input_shapes == {"images": (1, 3, 32, 64)}
    session.close()


class NumpyNet:
    """The CPU Segmenter's backend computing the same function as the fake engine."""

    name = "numpy"
    input_name, output_name = "images", "logits"
    input_shape, output_shape = (1, 3, 32, 64), (1, 4, 32, 64)

    def infer(self, x: np.ndarray) -> np.ndarray:
        return fake_net(x)

    def close(self) -> None:
        pass


def test_segmenter_tensorrt_path_returns_the_numpy_masks(tmp_path: Path, gpu: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_loop, "GpuKernels", lambda spec, order="RGB": NumpyKernels(gpu.driver, spec, order))
    session = open_session(gpu, engine_folder(tmp_path))
    loop = gpu_loop.GpuLoop(session, SPEC, buffers="device", cuda_graph=False)
    on_gpu = Segmenter(session, SPEC, gpu_loop=loop)
    on_cpu = Segmenter(NumpyNet(), SPEC)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((48, 80, 3), (48, 80, 3), (32, 64, 3))]
    masks = [on_gpu(frame).copy() for frame in frames]
    for frame, mask in zip(frames, masks, strict=True):
        expected = numpy_argmax(fake_net(preprocess(frame, SPEC)))
        np.testing.assert_array_equal(mask, expected)
        np.testing.assert_array_equal(on_cpu(frame), expected)
    assert len({m.tobytes() for m in masks}) == 3  # different frames, different masks: nothing stale
    for slot in loop.slots:
        context = slot.execution.context
        assert context.addresses == {"images": slot.input.device_ptr, "logits": slot.logits.device_ptr}
        assert context.input_shapes == {"images": (1, 3, 32, 64)}
    on_gpu.close()
    on_cpu.close()


def test_an_unbound_output_fails_the_enqueue_as_an_illegal_address(tmp_path: Path, gpu: Any) -> None:
    session = open_session(gpu, engine_folder(tmp_path))
    execution = session.execution(gpu.driver.mem_alloc(3 * 32 * 64 * 4), 0xDEAD)
    assert execution.enqueue(types.SimpleNamespace(handle=1)) is False
    session.close()
