"""Where CPU INT8 wins and loses: ONNX Runtime's profiler on the FP32 and INT8 models of each family.

    python benchmarks/int8_profile.py                                  # one model per decoder at 512x1024
    python benchmarks/int8_profile.py --models shufflenetv2_x0_5_mdspp --size 256x512

Exports each model (random weights: kernel time does not depend on them), calibrates it on
synthetic frames, then runs model.onnx and model.int8.ort.onnx with ORT's profiler (2 threads,
after warm-up) and sums kernel time per op type. Writes benchmarks/results/int8_profile.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DEFAULT_MODELS = ("shufflenetv2_x0_5_mdspp", "shufflenetv2_x1_0_dspp", "shufflenetv2_x1_0_deeplabv3plus",
                  "hrnet_w18_small_v1")


def profile(path: Path, x: np.ndarray, threads: int, runs: int) -> dict[str, float]:
    """Mean kernel ms per op type over ``runs`` profiled inferences (after 3 unprofiled ones)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(path.parent / f"profile_{path.stem}")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: x})
    start_marker = time.perf_counter()
    for _ in range(runs):
        session.run(None, {name: x})
    wall_ms = (time.perf_counter() - start_marker) * 1000 / runs
    trace = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000.0
    total_runs = runs + 3
    result = {op: round(ms / total_runs, 3) for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])}
    result["(wall per inference)"] = round(wall_ms, 3)
    return result


def measure(name: str, height: int, width: int, work: Path, threads: int, runs: int) -> dict:
    from int8 import export, synthetic_images

    from edgeseg.quant.calibrate import CalibrateConfig, calibrate_model

    folder = work / name
    export(name, height, width, folder)
    calib = synthetic_images(work / "calib", 8, height, width)
    result = calibrate_model(folder / "model.onnx", calib, CalibrateConfig(calib_images=8))
    x = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
    return {"model": name, "size": f"{height}x{width}",
            "fp32": profile(folder / "model.onnx", x, threads, runs),
            "int8": profile(result.ort_int8_path, x, threads, runs)}


def write_markdown(report: dict, path: Path) -> None:
    lines = ["# CPU INT8 profile (ONNX Runtime, per op type)", "",
             f"Conditions: {report['machine']}, {report['threads']} threads, mean kernel ms per inference over "
             f"{report['runs']} profiled runs + 3 warm-up, random weights, load avg at start "
             f"{report['load_average_start']}. Kernel times include the Q/DQ and layout ops INT8 adds.", ""]
    for row in report["models"]:
        fp32, int8 = row["fp32"], row["int8"]
        lines += [f"## {row['model']} at {row['size']}", "",
                  f"Wall per inference: FP32 {fp32['(wall per inference)']} ms, INT8 {int8['(wall per inference)']} "
                  f"ms (ratio {int8['(wall per inference)'] / fp32['(wall per inference)']:.2f}).", "",
                  "| op type | FP32 ms | INT8 ms |", "|---|---|---|"]
        ops = sorted({*fp32, *int8} - {"(wall per inference)"}, key=lambda op: -max(fp32.get(op, 0), int8.get(op, 0)))
        lines += [f"| {op} | {fp32.get(op, '-')} | {int8.get(op, '-')} |" for op in ops[:18]]
        lines.append("")
    lines += ["Regenerate: `python benchmarks/int8_profile.py` (see its docstring).", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8_profile.md")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "threads": args.threads,
              "runs": args.runs, "load_average_start": round(os.getloadavg()[0], 2), "models": []}
    with tempfile.TemporaryDirectory(prefix="edgeseg-profile-") as tmp:
        for name in args.models.split(","):
            print(f"profiling {name} at {args.size}", flush=True)
            report["models"].append(measure(name, height, width, Path(tmp), args.threads, args.runs))
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
