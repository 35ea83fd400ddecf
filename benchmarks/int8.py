"""CPU INT8 benchmark: PyTorch eager FP32 vs ONNX Runtime FP32 vs ONNX Runtime INT8.

    python benchmarks/int8.py                      # target model at 512x1024 + every model at 256x512
    python benchmarks/int8.py --models none        # target model only
    python benchmarks/int8.py --calib DIR          # calibrate on real images instead of synthetic ones

Latencies are measured side by side: the backends take turns, one inference each, for
every iteration, with the same thread count, so load from other processes hits all of
them alike; the ratios are the numbers to read. Random weights (latency does not depend
on them). Writes benchmarks/results/int8.json and int8.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = "shufflenetv2_x1_0_deeplabv3plus"
TARGETS = {"int8_vs_torch": 0.45, "int8_vs_ort_fp32": 0.5, "calibration_s": 120.0}  # DeepLabV3+ (issue 13)


def synthetic_images(folder: Path, count: int, height: int, width: int, seed: int = 0) -> Path:
    """Street-like synthetic frames (gradients, blocks, noise) as JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        sky = np.stack([yy * 0 + 120 + i % 60, yy * 0 + 160, yy * 0 + 220], -1)
        road = np.stack([xx * 0 + 90, xx * 0 + 90, xx * 0 + 95 + i % 20], -1)
        image = np.where((yy < height * (0.35 + 0.1 * rng.random()))[..., None], sky, road).astype(np.float64)
        for _ in range(6):  # boxes: cars, buildings
            y0, x0 = rng.integers(0, height - 40), rng.integers(0, width - 60)
            image[y0:y0 + rng.integers(20, 120), x0:x0 + rng.integers(30, 200)] = rng.integers(0, 255, 3)
        image += rng.normal(0, 12, image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"frame_{i:04d}.jpg", quality=90)
    return folder


def peer_quantize_static(folder: Path, calib: Path, count: int, height: int, width: int) -> Path:
    """The peer: ONNX Runtime's own quantize_static (QDQ, per-channel, its defaults: MinMax, uint8
    activations) with its own calibration pass over the same images, preprocessed like edgeseg's."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    from edgeseg.onnx_model import input_spec_of, load_onnx
    from edgeseg.quant.calib_data import CalibrationFeed

    class Reader:  # onnxruntime's CalibrationDataReader protocol
        def __init__(self, batches: list) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    spec = input_spec_of(load_onnx(folder / "model.onnx"))
    feed = CalibrationFeed(calib, spec, count=count, batch_size=1, seed=0)
    out = folder / "peer_quantize_static.onnx"
    quantize_static(str(folder / "model.onnx"), str(out), Reader(list(feed)), quant_format=QuantFormat.QDQ,
                    per_channel=True)
    return out


SETTLE_S = 0.05  # idle gap before each timed call: spinning ORT/OpenMP workers of the previous one back off


def side_by_side(runners: dict[str, Callable[[], object]], iterations: int, warmup: int) -> dict[str, dict]:
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(iterations):
        for name, run in runners.items():
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_ms": round(statistics.median(t) * 1e3, 2), "min_ms": round(min(t) * 1e3, 2),
                   "iterations": len(t)} for name, t in times.items()}


def export(name: str, height: int, width: int, out: Path):  # -> torch module
    import torch

    from edgeseg.export.onnx_export import ExportConfig, export_onnx
    from edgeseg.models import create_model
    from edgeseg.spec import InputSpec

    torch.manual_seed(0)  # random weights, but the same ones in every run and whatever ran before
    model = create_model(name, num_classes=19).eval()
    export_onnx(model, ExportConfig(model=name, num_classes=19, input_spec=InputSpec(height, width),
                                    num_reference_samples=1), out)
    return model


def measure_model(name: str, height: int, width: int, calib: Path, work: Path, *, threads: int, iterations: int,
                  warmup: int, calib_images: int, method: str, variants: bool, with_torch: bool = True) -> dict:
    import torch

    from edgeseg.quant.calibrate import CalibrateConfig, calibrate_model
    from edgeseg.quant.qdq_ort import OrtInt8Options, quantize_for_onnxruntime
    from edgeseg.quant.ranges import load_ranges
    from edgeseg.runtime.ort_backend import OnnxRuntimeBackend

    folder = work / name
    model = export(name, height, width, folder)
    start = time.perf_counter()
    result = calibrate_model(folder / "model.onnx", calib, CalibrateConfig(method=method, calib_images=calib_images))
    calibration_s = round(time.perf_counter() - start, 1)

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # random weights produce denormals that slow eager PyTorch 5-30x
    x = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
    tx = torch.from_numpy(x)
    fp32 = OnnxRuntimeBackend(folder / "model.onnx", threads=threads)
    int8 = OnnxRuntimeBackend(result.ort_int8_path, threads=threads)

    def torch_run() -> object:
        with torch.inference_mode():
            return model(tx)

    peer = OnnxRuntimeBackend(peer_quantize_static(folder, calib, calib_images, height, width), threads=threads)
    runners: dict[str, Callable[[], object]] = {
        "pytorch_fp32": torch_run, "ort_fp32": lambda: fp32.infer(x), "ort_int8": lambda: int8.infer(x),
        "ort_quantize_static": lambda: peer.infer(x)}
    if not with_torch:
        del runners["pytorch_fp32"]
    if variants:  # the levers, from the same ranges
        ranges = load_ranges(result.ranges_path)
        for label, options in {
            "ort_int8_s8s8": OrtInt8Options(activation_type="int8"),
            "ort_int8_per_tensor": OrtInt8Options(per_channel=False),
            "ort_int8_full_range": OrtInt8Options(reduce_range=False),
            "ort_int8_qoperator": OrtInt8Options(quant_format="qoperator"),
            "ort_int8_conv_only": OrtInt8Options(op_types=("Conv",)),
        }.items():
            path = quantize_for_onnxruntime(folder / "model.onnx", ranges, folder / f"{label}.onnx", options)
            backend = OnnxRuntimeBackend(path, threads=threads)
            runners[label] = (lambda b: (lambda: b.infer(x)))(backend)
        runners["ort_trt_qdq_model"] = (lambda b: (lambda: b.infer(x)))(
            OnnxRuntimeBackend(result.trt_int8_path, threads=threads))
    timings = side_by_side(runners, iterations, warmup)
    reference = fp32.infer(x).copy()
    agreement = float((int8.infer(x).argmax(1) == reference.argmax(1)).mean())
    ort_ms, int8_ms, peer_ms = (timings[k]["median_ms"] for k in ("ort_fp32", "ort_int8", "ort_quantize_static"))
    torch_ms = timings["pytorch_fp32"]["median_ms"] if with_torch else None
    return {
        "model": name, "size": f"{height}x{width}", "timings": timings,
        "int8_vs_torch": round(int8_ms / torch_ms, 3) if torch_ms else None,
        "int8_vs_ort_fp32": round(int8_ms / ort_ms, 3),
        "int8_vs_quantize_static": round(int8_ms / peer_ms, 3),
        "quantize_static_vs_ort_fp32": round(peer_ms / ort_ms, 3),
        "calibration_s": calibration_s, "calibration_images": len(result.images.used),
        "calibration_steps_s": result.seconds, "calibrated_tensors": result.num_tensors,
        "argmax_agreement_int8_vs_fp32_random_input": round(agreement, 4),
    }


def write_markdown(report: dict, path: Path) -> None:
    lines = ["# CPU INT8 benchmark (ONNX Runtime)", "", f"Conditions: {report['conditions']}", ""]
    target = report["target"]
    lines += [f"## {target['model']} at {target['size']}", "",
              "| backend | median ms | min ms |", "|---|---|---|"]
    for name, t in target["timings"].items():
        lines.append(f"| {name} | {t['median_ms']} | {t['min_ms']} |")
    lines += ["", f"- INT8 / PyTorch eager: **{target['int8_vs_torch']}** (target <= {TARGETS['int8_vs_torch']})",
              f"- INT8 / ORT quantize_static: **{target['int8_vs_quantize_static']}** (target < 1)",
              f"- INT8 / ORT FP32: **{target['int8_vs_ort_fp32']}** (target <= {TARGETS['int8_vs_ort_fp32']})",
              f"- calibration ({target['calibration_images']} images, {report['method']}): "
              f"**{target['calibration_s']} s** (target <= {TARGETS['calibration_s']:.0f} s); steps "
              f"{target['calibration_steps_s']}", ""]
    if report.get("models"):
        lines += [f"## All registered models at {report['models_size']}", "",
                  "ORT INT8 = edgeseg's model.int8.ort.onnx; quantize_static = ONNX Runtime's own (the peer). "
                  "Targets: INT8 faster than quantize_static; INT8/ORT FP32 <= 0.85 (SPEED decoders), <= 0.5 "
                  "(DeepLabV3+, HRNet); where INT8 loses, `--precision best` keeps FP32.", "",
                  "| model | ORT FP32 ms | quantize_static ms | ORT INT8 ms | INT8/FP32 | quantize_static/FP32 | "
                  "INT8/quantize_static |",
                  "|---|---|---|---|---|---|---|"]
        for row in report["models"]:
            if "error" in row:
                error = " ".join(row["error"].split()).replace("|", "/")  # one table cell
                lines.append(f"| {row['model']} | error: {error} | | | | |")
                continue
            t = row["timings"]
            mark = " *" if row.get("remeasured") else ""
            lines.append(f"| {row['model']}{mark} | {t['ort_fp32']['median_ms']} | "
                         f"{t['ort_quantize_static']['median_ms']} | {t['ort_int8']['median_ms']} | "
                         f"{row['int8_vs_ort_fp32']} | {row['quantize_static_vs_ort_fp32']} | "
                         f"{row['int8_vs_quantize_static']} |")
    remeasured = [row for row in report.get("models", []) if row.get("remeasured")]
    if remeasured or report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.get("notes", [])]
        lines += [f"- \\* {row['model']}: {row['remeasured']}" for row in remeasured]
    lines += ["", "Regenerate: `python benchmarks/int8.py` (see its docstring); re-measure some rows of the "
                  "committed results with `--update-models NAME,...`."]
    path.write_text("\n".join(lines) + "\n")


def update_models(args: argparse.Namespace, names: list[str]) -> None:
    """Re-measure some rows of the committed results (same settings as a full run), marking them."""
    import datetime

    from edgeseg.spec import parse_size

    report = json.loads((args.out / "int8.json").read_text())
    mh, mw = parse_size(report["models_size"])
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        work = Path(tmp)
        small_calib = synthetic_images(work / "calib_small", 8, mh, mw, seed=1)
        for name in names:
            print(f"{name} at {mh}x{mw} ...", flush=True)
            load = os.getloadavg()[0]
            row = measure_model(name, mh, mw, small_calib, work, threads=args.threads,
                                iterations=args.models_iterations, warmup=3, calib_images=8, method=args.method,
                                variants=False, with_torch=False)
            row["remeasured"] = (f"re-measured alone on {datetime.date.today()} with the current code (load avg "
                                 f"{load:.2f} at start, PyTorch with denormals flushed)")
            report["models"] = [row if r["model"] == name else r for r in report["models"]]
            print(json.dumps(row), flush=True)
    (args.out / "int8.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out / "int8.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--models", default="all", help="'all', 'none' or comma-separated names (besides the target)")
    parser.add_argument("--models-size", default="512x1024")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--models-iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calib", type=Path, default=None)
    parser.add_argument("--calib-images", type=int, default=100)
    parser.add_argument("--method", default="percentile")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite int8.md from int8.json")
    parser.add_argument("--update-models", default=None,
                        help="comma-separated names: re-measure only these rows of the committed int8.json")
    args = parser.parse_args()
    if args.markdown_only:
        write_markdown(json.loads((args.out / "int8.json").read_text()), args.out / "int8.md")
        return
    if args.update_models:
        update_models(args, args.update_models.split(","))
        return

    from edgeseg.models import list_models
    from edgeseg.spec import parse_size

    height, width = parse_size(args.size)
    mh, mw = parse_size(args.models_size)
    names = [] if args.models == "none" else (
        [m for m in list_models() if m != TARGET] if args.models == "all" else args.models.split(","))
    import onnxruntime
    import torch

    report: dict = {
        "conditions": (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other "
                       f"jobs (load avg at start {os.getloadavg()[0]:.2f}), {args.threads} threads for every "
                       f"backend, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
                       f"{args.warmup} warm-up + {args.iterations} interleaved iterations "
                       f"({SETTLE_S * 1e3:.0f} ms idle before each timed call), random weights"),
        "method": args.method,
    }
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        work = Path(tmp)
        calib = args.calib or synthetic_images(work / "calib", args.calib_images, height, width)
        print(f"target {TARGET} at {height}x{width} ...", flush=True)
        report["target"] = measure_model(TARGET, height, width, calib, work, threads=args.threads,
                                         iterations=args.iterations, warmup=args.warmup,
                                         calib_images=args.calib_images, method=args.method, variants=True)
        print(json.dumps(report["target"], indent=1), flush=True)
        report["models_size"] = f"{mh}x{mw}"
        report["models"] = []
        small_calib = synthetic_images(work / "calib_small", 8, mh, mw, seed=1)
        for name in names:
            print(f"{name} at {mh}x{mw} ...", flush=True)
            try:
                row = measure_model(name, mh, mw, small_calib, work, threads=args.threads,
                                    iterations=args.models_iterations, warmup=3, calib_images=8,
                                    method=args.method, variants=False, with_torch=False)
            except Exception as exc:  # one broken model must not lose the others' numbers
                row = {"model": name, "error": f"{type(exc).__name__}: {exc}"[:200]}
            report["models"].append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out / "int8.md")
    print(f"wrote {args.out / 'int8.json'} and {args.out / 'int8.md'}")


if __name__ == "__main__":
    main()
