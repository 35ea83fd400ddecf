#!/usr/bin/env python3
"""Plan B of run_on_device.sh (step 3b): the shipped kernels on a GPU through CuPy, when pycuda cannot be built.

    python tests/gpu/cupy_kernels.py --out /tmp/cupy_kernels.json

The lent GPU image has CuPy. This loads the PTX edgeseg ships (edgeseg/runtime/kernels_ptx, chosen and
hash-checked by ``kernels.shipped_ptx`` for this GPU's compute capability, as the robot does) with
``cupy.RawModule`` and checks, against the numpy references the CPU path uses:

- preprocess_f32/_f16 vs ``edgeseg.spec.preprocess`` (a 720x1280 frame and an odd one, RGB and BGR)
- argmax_f32/_f16 vs ``numpy_argmax``, and on NaN logits: numpy's first-NaN choice and the NaN-pixel counter
  after the mask (kernels.nan_counter_offset)
- overlay vs ``numpy_overlay`` (off by at most 1 level)
- preprocess + argmax captured into a CUDA graph on a stream, replayed with new frame and logits contents
  (copied in outside the graph, as GpuLoop does): each replay's outputs vs the references

It checks the kernels and graph replay only: GpuLoop, its buffers and TensorRT need pycuda (steps 3-5). Exit 0
only if every check passed; the JSON lists each check. Unverified until it has run on a GPU with CuPy.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgeseg.palette import class_palette  # noqa: E402  (after the checkout is on the path)
from edgeseg.runtime import kernels  # noqa: E402
from edgeseg.spec import InputSpec, normalisation, preprocess  # noqa: E402

SPEC = InputSpec(512, 1024)
CLASSES = 19


class Gpu:
    """The shipped PTX loaded with CuPy, and launchers with GpuKernels' argument lists."""

    def __init__(self, cp: Any) -> None:
        self.cp = cp
        device = cp.cuda.Device()
        capability = str(device.compute_capability)  # "90"
        self.capability = (int(capability[:-1]), int(capability[-1]))
        self.arch, _ = kernels.shipped_ptx(self.capability)  # raises ShippedPtxUnusable with the reason
        manifest = kernels.load_ptx_manifest()
        self.ptx_file = kernels.PTX_DIR / manifest["ptx"][self.arch]["file"]
        self.module = cp.RawModule(path=str(self.ptx_file))
        self.functions = {name: self.module.get_function(name) for name in kernels.KERNEL_NAMES}

    def preprocess(self, frame: Any, dst: Any, spec: InputSpec, order: str) -> None:
        name = "preprocess_f16" if dst.dtype == np.float16 else "preprocess_f32"
        mean, inv_std = normalisation(spec)
        h, w = frame.shape[:2]
        args = (frame, np.int32(h), np.int32(w), np.int32(w * 3), dst, np.int32(spec.height), np.int32(spec.width),
                np.int32(order != spec.channel_order), *(np.float32(v) for v in (*mean, *inv_std)))
        self.functions[name](kernels._grid_2d(spec.width, spec.height), kernels.BLOCK_2D, args)

    def argmax(self, logits: Any, out: Any) -> None:
        name = "argmax_f16" if logits.dtype == np.float16 else "argmax_f32"
        plane = logits.shape[2] * logits.shape[3]
        grid = ((plane + kernels.BLOCK_1D[0] - 1) // kernels.BLOCK_1D[0], 1, 1)
        self.functions[name](grid, kernels.BLOCK_1D, (logits, np.int32(logits.shape[1]), np.int32(plane), out))

    def overlay(self, frame: Any, mask: Any, palette: Any, alpha: float, out: Any) -> None:
        h, w = frame.shape[:2]
        args = (frame, np.int32(h), np.int32(w), mask, np.int32(mask.shape[0]), np.int32(mask.shape[1]), palette,
                np.int32(len(palette)), np.float32(alpha), out)
        self.functions["overlay"](kernels._grid_2d(w, h), kernels.BLOCK_2D, args)


def mask_and_count(host: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int]:
    plane = height * width
    offset = kernels.nan_counter_offset(plane)
    return host[:plane].reshape(height, width), int(host[offset:offset + 4].view(np.uint32)[0])


def check_preprocess(gpu: Gpu) -> str:
    cp, rng = gpu.cp, np.random.default_rng(1)
    worst = []
    for size in ((720, 1280), (31, 17)):
        frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        for order in ("RGB", "BGR"):
            for dtype, tolerance in ((np.float32, 1e-3), (np.float16, 2e-2)):
                dst = cp.empty(SPEC.shape, dtype)
                gpu.preprocess(cp.asarray(frame), dst, SPEC, order)
                error = float(np.abs(cp.asnumpy(dst).astype(np.float32) - preprocess(frame, SPEC, order)).max())
                assert error <= tolerance, f"{size} {order} {np.dtype(dtype).name}: max error {error} > {tolerance}"
                worst.append(error)
    return f"max error {max(worst):.2e} over 8 cases"


def check_argmax(gpu: Gpu) -> str:
    cp = gpu.cp
    for dtype in (np.float32, np.float16):
        logits = np.random.default_rng(3).standard_normal((1, CLASSES, 64, 96)).astype(dtype)
        out = cp.zeros(kernels.mask_buffer_bytes(64 * 96), np.uint8)
        gpu.argmax(cp.asarray(logits), out)
        mask, nans = mask_and_count(cp.asnumpy(out), 64, 96)
        assert nans == 0 and np.array_equal(mask, kernels.numpy_argmax(logits)), f"{np.dtype(dtype).name} differs"
        logits[0, 0, 0, 0] = logits[0, 5, 1, 2] = logits[0, 2, 2, 3] = logits[0, 9, 2, 3] = np.nan
        out[:] = 0
        gpu.argmax(cp.asarray(logits), out)
        mask, nans = mask_and_count(cp.asnumpy(out), 64, 96)
        assert nans == 3, f"{np.dtype(dtype).name}: NaN counter {nans}, expected 3"
        assert np.array_equal(mask, np.argmax(logits[0], axis=0)), "the first NaN does not win as in numpy"
    return "float32 and float16 equal numpy; NaN: numpy's choice, 3 pixels counted"


def check_overlay(gpu: Gpu) -> str:
    cp, rng = gpu.cp, np.random.default_rng(4)
    frame = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    mask = rng.integers(0, 6, (16, 24), dtype=np.uint8)
    palette = class_palette(5)
    out = cp.zeros_like(cp.asarray(frame))
    gpu.overlay(cp.asarray(frame), cp.asarray(mask), cp.asarray(palette), 0.4, out)
    error = int(np.abs(cp.asnumpy(out).astype(int) - kernels.numpy_overlay(frame, mask, palette, 0.4)).max())
    assert error <= 1, f"overlay off by {error} levels"
    return f"off by at most {error} level(s)"


def check_graph_replay(gpu: Gpu) -> str:
    cp = gpu.cp
    stream = cp.cuda.Stream(non_blocking=True)
    frame = cp.zeros((720, 1280, 3), np.uint8)
    tensor = cp.zeros(SPEC.shape, np.float32)
    logits = cp.zeros((1, CLASSES, SPEC.height, SPEC.width), np.float32)
    out = cp.zeros(kernels.mask_buffer_bytes(SPEC.height * SPEC.width), np.uint8)
    with stream:
        gpu.preprocess(frame, tensor, SPEC, "RGB")  # warm-up outside the capture (module loading)
        gpu.argmax(logits, out)
        stream.synchronize()
        stream.begin_capture()
        gpu.preprocess(frame, tensor, SPEC, "RGB")
        gpu.argmax(logits, out)
        graph = stream.end_capture()
    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        host_frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
        host_logits = rng.standard_normal(logits.shape, dtype=np.float32)
        with stream:
            frame.set(host_frame, stream=stream)
            logits.set(host_logits, stream=stream)
            tensor.fill(np.nan)  # a skipped kernel cannot pass
            out[: SPEC.height * SPEC.width].fill(255)
        graph.launch(stream)
        stream.synchronize()
        error = float(np.abs(cp.asnumpy(tensor) - preprocess(host_frame, SPEC)).max())
        mask, nans = mask_and_count(cp.asnumpy(out), SPEC.height, SPEC.width)
        assert error <= 1e-3, f"replay {seed}: preprocess max error {error}"
        assert nans == 0 and np.array_equal(mask, kernels.numpy_argmax(host_logits)), f"replay {seed}: mask differs"
    return "3 replays with new inputs equal the references"


CHECKS: dict[str, Callable[[Gpu], str]] = {"preprocess": check_preprocess, "argmax": check_argmax,
                                           "overlay": check_overlay, "cuda graph replay": check_graph_replay}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON report of the checks")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"checks": []}
    try:
        import cupy as cp

        gpu = Gpu(cp)
        report.update(cupy=cp.__version__, compute_capability=".".join(map(str, gpu.capability)), arch=gpu.arch,
                      ptx=str(gpu.ptx_file.relative_to(ROOT)))
        print(f"cupy {cp.__version__}; compute capability {report['compute_capability']}; loaded {report['ptx']}")
    except Exception as exc:  # no cupy, no GPU, or no shipped PTX for it: nothing can be checked
        report["error"] = f"{type(exc).__name__}: {exc}"
        print(f"cannot load the shipped kernels with CuPy: {report['error']}")
        gpu = None
    for name, check in CHECKS.items() if gpu is not None else ():
        try:
            detail, ok = check(gpu), True
        except Exception as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
            traceback.print_exc()
        report["checks"].append({"name": name, "ok": ok, "detail": detail})
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    passed = gpu is not None and all(check["ok"] for check in report["checks"])
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
