"""The GPU loop's cost per frame with inference taken out: GPU pre/post-processing vs CPU pre/post + copies.

    python benchmarks/gpu_loop.py --out benchmarks/results/gpu.md     # on a machine with a CUDA GPU and pycuda
    bash tests/gpu/run_on_device.sh                                    # builds pycuda first, runs the gpu tests too

No TensorRT: a fixed logits buffer (1xCxHxW float32, random, uploaded once) stands where the engine's output
would be, so every time below is loop overhead per frame, inference excluded. A 1280x720 uint8 RGB frame
(``--frame-size`` 720x1280, rows x columns) becomes the 1x3x512x1024 float32 model input (``--input-size``).

Paths (each after ``--warmup`` frames; frames cycle through a few random ones):

- ``gpu staged``: the CPU writes the frame into pinned memory, async copy to the device, preprocess kernel,
  argmax kernel, async copy of the uint8 mask back; CUDA events time upload -> mask on the GPU, the wall clock
  the whole frame (host write included). ``+ graph``: the two kernels replayed as one CudaGraph.
- ``gpu mapped (zero copy)``: frame and mask in mapped pinned memory: no copies, the kernels read and write
  host memory (what Jetson's integrated GPU does; on a discrete GPU every byte crosses PCIe).
- ``GpuLoop ...``: edgeseg.runtime.gpu_loop.GpuLoop itself (submit + result), with a stand-in TensorRT
  execution whose enqueue does nothing, so its CUDA graph path runs; ``pipelined`` uses both slots (double
  buffering) and reports the interval between results.
- ``cpu``: edgeseg.spec.preprocess on the CPU, copy of the float tensor to the device (pinned staging), copy of
  the logits back, numpy argmax (edgeseg.runtime.kernels.numpy_argmax): what the loop costs without the
  GPU kernels.

Writes the markdown report (``--out``) and the raw numbers beside it (.json). Needs pycuda and a CUDA GPU:
without them it says so and exits 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeseg.spec import InputSpec, parse_size, preprocess  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu.md"


@dataclass
class Setup:
    spec: InputSpec
    frames: list[np.ndarray]
    logits: np.ndarray  # 1xCxHxW float32, the stand-in for the engine's output
    expected_mask: np.ndarray  # numpy argmax of logits

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(self.frames[0].shape)  # type: ignore[return-value]

    @property
    def mask_shape(self) -> tuple[int, int]:
        return int(self.logits.shape[2]), int(self.logits.shape[3])


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    p50, p90 = np.percentile(array, [50, 90])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "mean": round(float(array.mean()), 4),
            "min": round(float(array.min()), 4), "n": int(array.size)}


def check_pycuda() -> str | None:
    """None when pycuda imports and sees a GPU, else what is wrong."""
    try:
        import pycuda.driver as drv
    except ImportError as exc:
        return (f"pycuda cannot be imported ({type(exc).__name__}: {exc}). Install it where a CUDA driver is "
                "(pip install pycuda: it compiles against the CUDA headers; bash tests/gpu/run_on_device.sh "
                "builds it on a GPU machine)")
    try:
        drv.init()
        count = drv.Device.count()
    except Exception as exc:  # pycuda.driver.Error (no driver, no device)
        return f"pycuda imports but CUDA does not start ({type(exc).__name__}: {exc})"
    if count < 1:
        return "pycuda imports but sees no CUDA device"
    return None


def _nvidia_smi() -> dict[str, str]:
    fields = ("name", "driver_version", "memory.total", "clocks.max.sm", "pcie.link.gen.current",
              "pcie.link.width.current")
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return {}
    return dict(zip(fields, (value.strip() for value in out.split(",")), strict=False))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(ctx: Any) -> dict[str, Any]:
    import pycuda
    import pycuda.driver as drv

    from edgeseg.runtime.kernels import kernels_origin

    version = drv.get_driver_version()  # e.g. 13000: the CUDA API version the driver supports
    smi = _nvidia_smi()
    return {
        "gpu": ctx.info.name,
        "compute_capability": ctx.info.compute_capability,
        "gpu_memory_gib": round(ctx.info.total_memory / 2**30, 1),
        "integrated": ctx.info.integrated,
        "nvidia_driver": smi.get("driver_version", "unknown (nvidia-smi not available)"),
        "cuda_driver_api": f"{version // 1000}.{version % 1000 // 10}",
        "pycuda": getattr(pycuda, "VERSION_TEXT", "?"),
        "pycuda_built_with_cuda": ".".join(str(v) for v in drv.get_version()),
        "pcie": (f"gen {smi['pcie.link.gen.current']} x{smi['pcie.link.width.current']}"
                 if "pcie.link.gen.current" in smi else "unknown"),
        "max_sm_clock": smi.get("clocks.max.sm", "unknown"),
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "load_average_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "kernels": kernels_origin(),
    }


def _verify(setup: Setup, tensor_ptr: int, mask: np.ndarray, frame: np.ndarray) -> dict[str, Any]:
    """The last frame's outputs against the references (spec.preprocess, numpy argmax)."""
    import pycuda.driver as drv

    tensor = np.empty(setup.spec.shape, np.float32)
    drv.memcpy_dtoh(tensor, tensor_ptr)
    error = float(np.abs(tensor - preprocess(frame, setup.spec)).max())
    return {"max_abs_error_vs_spec_preprocess": error, "mask_equals_numpy_argmax": bool(np.array_equal(
        mask, setup.expected_mask))}


def gpu_direct(ctx: Any, setup: Setup, mode: str, use_graph: bool, warmup: int, n: int) -> dict[str, Any]:
    """Frame -> (upload) -> preprocess -> argmax -> (mask download), by hand, one frame at a time."""
    import pycuda.driver as drv

    from edgeseg.runtime import cuda
    from edgeseg.runtime.kernels import GpuKernels

    with ctx.active():
        stream = cuda.new_stream()
        start, end = cuda.new_event(), cuda.new_event()
        kernels = GpuKernels(setup.spec, "RGB")
        frame = cuda.allocate(setup.frame_shape, np.uint8, mode, ctx.info)
        tensor = cuda.DeviceBuffer(setup.spec.shape, np.float32)
        logits = cuda.DeviceBuffer(setup.logits.shape, np.float32)
        drv.memcpy_htod(logits.device_ptr, setup.logits)
        mask = cuda.allocate(setup.mask_shape, np.uint8, mode, ctx.info)
        h, w = setup.frame_shape[:2]
        channels, mask_h, mask_w = setup.logits.shape[1:]

        def enqueue() -> None:
            kernels.preprocess(frame.device_ptr, h, w, w * 3, tensor.device_ptr, np.float32, stream)
            kernels.argmax(logits.device_ptr, np.float32, channels, mask_h, mask_w, mask.device_ptr, stream)

        graph = None
        wall: list[float] = []
        gpu: list[float] = []
        try:
            for i in range(warmup + n):
                src = setup.frames[i % len(setup.frames)]
                t0 = time.perf_counter()
                np.copyto(frame.host, src)  # the CPU's one write of the frame (mapped: the GPU's copy too)
                start.record(stream)
                frame.to_device(stream)
                if graph is not None:
                    graph.launch(stream)
                else:
                    enqueue()
                mask.to_host(stream)
                end.record(stream)
                end.synchronize()
                t1 = time.perf_counter()
                if i >= warmup:
                    wall.append((t1 - t0) * 1e3)
                    gpu.append(end.time_since(start))
                if use_graph and graph is None:  # after the first frame, as GpuLoop does
                    graph = cuda.CudaGraph.capture(stream, enqueue)
                    if graph is None:
                        raise RuntimeError("CudaGraph.capture returned None: the driver refused the capture")
            checks = _verify(setup, tensor.device_ptr, np.array(mask.host), src)
        finally:
            stream.synchronize()
            if graph is not None:
                graph.close()
            for buffer in (frame, tensor, logits, mask):
                buffer.free()
    return {"wall_ms": percentiles(wall), "gpu_ms": percentiles(gpu), "checks": checks}


class _FixedLogitsExecution:
    """Stands in for a TensorRT execution context: the logits were written once; enqueue adds no work."""

    def __init__(self, logits_ptr: int, logits: np.ndarray) -> None:
        import pycuda.driver as drv

        drv.memcpy_htod(logits_ptr, logits)

    def enqueue(self, stream: Any) -> bool:
        return True

    def release(self) -> None:
        pass


class FixedLogitsBackend:
    """What GpuLoop reads of a TensorRT backend, with inference replaced by fixed logits."""

    def __init__(self, ctx: Any, spec: InputSpec, logits: np.ndarray) -> None:
        self.cuda, self.logits = ctx, logits
        self.input_shape, self.output_shape = spec.shape, tuple(logits.shape)
        self.input_dtype = self.output_dtype = np.float32

    def execution(self, input_ptr: int, logits_ptr: int) -> _FixedLogitsExecution:
        return _FixedLogitsExecution(logits_ptr, self.logits)


def gpu_loop(ctx: Any, setup: Setup, buffers: str, use_graph: bool, pipelined: bool, warmup: int,
             n: int) -> dict[str, Any]:
    """edgeseg's GpuLoop, submit + result per frame (pipelined: two slots in flight, interval between results)."""
    from edgeseg.runtime.gpu_loop import GpuLoop

    loop = GpuLoop(FixedLogitsBackend(ctx, setup.spec, setup.logits), setup.spec, frame_order="RGB",
                   buffers=buffers, cuda_graph=use_graph)
    wall: list[float] = []
    try:
        total = warmup + n
        if pipelined:
            loop.submit(0, setup.frames[0])
            previous = time.perf_counter()
            for i in range(1, total + 1):
                if i < total:
                    loop.submit(i % 2, setup.frames[i % len(setup.frames)])
                mask = loop.result((i - 1) % 2)
                now = time.perf_counter()
                if i > warmup:
                    wall.append((now - previous) * 1e3)
                previous = now
            last = setup.frames[(total - 1) % len(setup.frames)]
            slot = loop.slots[(total - 1) % 2]
        else:
            for i in range(total):
                src = setup.frames[i % len(setup.frames)]
                t0 = time.perf_counter()
                loop.submit(0, src)
                mask = loop.result(0)
                t1 = time.perf_counter()
                if i >= warmup:
                    wall.append((t1 - t0) * 1e3)
            last, slot = src, loop.slots[0]
        with ctx.active():
            checks = _verify(setup, slot.input.device_ptr, np.array(mask), last)
        checks["cuda_graphs_active"] = loop.graphs_active
        if use_graph and loop.graphs_active == 0:
            raise RuntimeError("GpuLoop ran without CUDA graphs: capture failed in every slot")
    finally:
        loop.close()
    return {"wall_ms": percentiles(wall), "checks": checks}


def cpu_path(ctx: Any, setup: Setup, warmup: int, n: int) -> dict[str, Any]:
    """spec.preprocess on the CPU + upload of the float tensor + download of the logits + numpy argmax."""
    import pycuda.driver as drv

    from edgeseg.runtime import cuda
    from edgeseg.runtime.kernels import numpy_argmax

    parts: dict[str, list[float]] = {"preprocess (CPU)": [], "copies (tensor up, logits down)": [],
                                     "argmax (CPU)": [], "total": []}
    with ctx.active():
        stream = cuda.new_stream()
        tensor = cuda.StagedBuffer(setup.spec.shape, np.float32)
        logits = cuda.StagedBuffer(setup.logits.shape, np.float32)
        drv.memcpy_htod(logits.device_ptr, setup.logits)
        out = np.empty(setup.mask_shape, np.uint8)
        scratch = np.empty(setup.mask_shape, np.intp)
        try:
            for i in range(warmup + n):
                src = setup.frames[i % len(setup.frames)]
                t0 = time.perf_counter()
                x = preprocess(src, setup.spec)
                t1 = time.perf_counter()
                np.copyto(tensor.host, x)
                tensor.to_device(stream)
                logits.to_host(stream)  # where inference would be: the logits come back for the CPU argmax
                stream.synchronize()
                t2 = time.perf_counter()
                numpy_argmax(logits.host, out, scratch)
                t3 = time.perf_counter()
                if i >= warmup:
                    for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                        parts[key].append(value * 1e3)
            checks = {"mask_equals_numpy_argmax": bool(np.array_equal(out, setup.expected_mask))}
        finally:
            stream.synchronize()
            tensor.free()
            logits.free()
    return {"wall_ms": percentiles(parts["total"]), "parts_ms": {k: percentiles(v) for k, v in parts.items()},
            "checks": checks}


def _fmt(stats: dict[str, float] | None, key: str) -> str:
    return f"{stats[key]:.3f}" if stats and key in stats else "-"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    m, c = report["machine"], report["conditions"]
    lines = [
        "# GPU loop overhead per frame, inference excluded",
        "",
        f"Measured {report['date']} by `{report['command']}` (benchmarks/gpu_loop.py; its docstring says what each "
        "path does). Written by the script: nothing here is edited by hand.",
        "",
        f"Machine: {m['gpu']} (compute capability {m['compute_capability']}, {m['gpu_memory_gib']} GiB, "
        f"PCIe {m['pcie']}), NVIDIA driver {m['nvidia_driver']} (CUDA {m['cuda_driver_api']}), pycuda "
        f"{m['pycuda']} built with CUDA {m['pycuda_built_with_cuda']}, kernels from {m['kernels']}; CPU "
        f"{m['cpu']} ({m['cpu_cores']} cores, load average {m['load_average_start']} at start), Python "
        f"{m['python']}, numpy {m['numpy']}.",
        "",
        f"Conditions: {c['frame']} uint8 RGB frames -> {c['input']} float32 model input; logits {c['logits']} "
        f"float32 fixed in device memory in place of TensorRT, so inference costs nothing here. Per path: "
        f"{c['warmup']} warm-up frames, then {c['frames']} timed (CPU path: {c['cpu_frames']}), one frame at a "
        "time unless 'pipelined'. Wall: perf_counter around the whole frame, the CPU's write of the frame "
        "included; GPU: CUDA events from the upload to the mask's download.",
        "",
        "| path | wall p50 ms | wall p90 ms | GPU p50 ms | GPU p90 ms | checks |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["paths"].items():
        if "error" in row:
            lines.append(f"| {name} | failed | | | | {row['error']} |")
            continue
        checks = row.get("checks", {})
        notes = []
        if "max_abs_error_vs_spec_preprocess" in checks:
            notes.append(f"max err vs spec.preprocess {checks['max_abs_error_vs_spec_preprocess']:.2g}")
        if "mask_equals_numpy_argmax" in checks:
            notes.append("mask == numpy argmax" if checks["mask_equals_numpy_argmax"] else "MASK DIFFERS")
        if "cuda_graphs_active" in checks:
            notes.append(f"{checks['cuda_graphs_active']} graph(s)")
        lines.append(f"| {name} | {_fmt(row['wall_ms'], 'p50')} | {_fmt(row['wall_ms'], 'p90')} | "
                     f"{_fmt(row.get('gpu_ms'), 'p50')} | {_fmt(row.get('gpu_ms'), 'p90')} | {'; '.join(notes)} |")
    cpu = report["paths"].get("cpu: spec.preprocess + copies + numpy argmax", {})
    if "parts_ms" in cpu:
        lines += ["", "CPU path, per part:", "", "| part | p50 ms | p90 ms |", "|---|---|---|"]
        lines += [f"| {part} | {_fmt(stats, 'p50')} | {_fmt(stats, 'p90')} |"
                  for part, stats in cpu["parts_ms"].items()]
    summary = report.get("summary")
    if summary:
        lines += ["", summary]
    lines += ["", "Regenerate on a GPU machine: `bash tests/gpu/run_on_device.sh` (or `python benchmarks/gpu_loop.py "
              "--out benchmarks/results/gpu.md` where pycuda is installed).", ""]
    path.write_text("\n".join(lines))


def _summary(paths: dict[str, Any]) -> str | None:
    def p50(name: str) -> float | None:
        row = paths.get(name, {})
        return row.get("wall_ms", {}).get("p50") if "error" not in row else None

    gpu = p50("GpuLoop staged + graph")
    cpu = p50("cpu: spec.preprocess + copies + numpy argmax")
    if gpu is None or cpu is None:
        return None
    return (f"Loop overhead per frame (p50 wall, inference excluded): GpuLoop with CUDA graph {gpu:.3f} ms vs "
            f"CPU preprocessing + copies + CPU argmax {cpu:.3f} ms ({cpu / gpu:.1f} times as long).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frame-size", default="720x1280", help="camera frame, ROWSxCOLUMNS (720x1280 = 1280x720)")
    parser.add_argument("--input-size", default="512x1024", help="model input HxW")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--frames", type=int, default=300, help="timed frames per GPU path")
    parser.add_argument("--cpu-frames", type=int, default=30, help="timed frames for the CPU path")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report; the .json goes beside it")
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the CUDA graph is captured after the first frame)")

    problem = check_pycuda()
    if problem:
        print(f"benchmarks/gpu_loop.py: {problem}", file=sys.stderr)
        return 1

    from edgeseg.runtime.cuda import CudaContext
    from edgeseg.runtime.kernels import GpuKernels

    frame_h, frame_w = parse_size(args.frame_size, check=False, option="--frame-size")
    spec = InputSpec(*parse_size(args.input_size, option="--input-size"))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (frame_h, frame_w, 3), dtype=np.uint8) for _ in range(4)]
    logits = rng.standard_normal((1, args.classes, spec.height, spec.width), dtype=np.float32)
    setup = Setup(spec, frames, logits, np.argmax(logits[0], axis=0).astype(np.uint8))

    ctx = CudaContext.get()
    with ctx.active():
        GpuKernels(spec)  # load the kernels once (PTX JIT) before any timing
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/gpu_loop.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(ctx),
        "conditions": {"frame": f"{frame_w}x{frame_h}", "input": "x".join(map(str, spec.shape)),
                       "logits": "x".join(map(str, logits.shape)), "warmup": args.warmup, "frames": args.frames,
                       "cpu_frames": args.cpu_frames},
        "paths": {},
    }
    mapped_ok = ctx.info.can_map_host_memory
    runs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("gpu staged", lambda: gpu_direct(ctx, setup, "device", False, args.warmup, args.frames)),
        ("gpu staged + graph", lambda: gpu_direct(ctx, setup, "device", True, args.warmup, args.frames)),
        ("GpuLoop staged + graph", lambda: gpu_loop(ctx, setup, "device", True, False, args.warmup, args.frames)),
        ("GpuLoop staged, no graph", lambda: gpu_loop(ctx, setup, "device", False, False, args.warmup,
                                                      args.frames)),
        ("GpuLoop staged + graph, pipelined (2 slots)",
         lambda: gpu_loop(ctx, setup, "device", True, True, args.warmup, args.frames)),
    ]
    if mapped_ok:
        runs += [
            ("gpu mapped (zero copy)", lambda: gpu_direct(ctx, setup, "mapped", False, args.warmup, args.frames)),
            ("GpuLoop mapped (zero copy) + graph",
             lambda: gpu_loop(ctx, setup, "mapped", True, False, args.warmup, args.frames)),
        ]
    runs.append(("cpu: spec.preprocess + copies + numpy argmax",
                 lambda: cpu_path(ctx, setup, args.warmup, args.cpu_frames)))
    failures = 0
    for name, run in runs:
        print(f"{name} ...", flush=True)
        try:
            row = run()
        except Exception as exc:
            traceback.print_exc()
            row = {"error": f"{type(exc).__name__}: {exc}".replace("|", "/").replace("\n", " ")[:300]}
            failures += 1
        report["paths"][name] = row
        print(f"  {json.dumps(row)}", flush=True)
    report["summary"] = _summary(report["paths"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    bad_checks = [name for name, row in report["paths"].items()
                  if row.get("checks", {}).get("mask_equals_numpy_argmax") is False]
    if bad_checks:
        print(f"masks differ from numpy's argmax in: {', '.join(bad_checks)}", file=sys.stderr)
    return 1 if failures or bad_checks else 0


if __name__ == "__main__":
    sys.exit(main())
