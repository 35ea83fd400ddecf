"""Accuracy of model.int8.onnx with FP16 float regions (TensorRT >= 10) next to the FP32-region file.

    python -m edgeseg data synth --out /tmp/fp16reg/test --num 64 --size 192x384 --seed 3
    python benchmarks/fp16_regions.py --weights edgeseg/assets/demo_model.pt --calib calib \\
        --test /tmp/fp16reg/test --work /tmp/fp16reg/work

One `edgeseg export`, then `edgeseg calibrate --high-precision fp32` and `--high-precision fp16` (same images,
same seed: the same ranges.json, checked), then `edgeseg validate` of both Q/DQ files against PyTorch on the
labelled held-out scenes with the INT8 gates of benchmarks/int8_accuracy.py. ONNX Runtime's CPU provider runs
both files (a simulation of TensorRT: float16 storage between ops is modelled, TensorRT's kernels are not).
Also compares the two files directly (argmax agreement, logit differences) on the same frames. Writes
benchmarks/results/fp16_regions.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import int8_accuracy as acc  # noqa: E402  (run, edgeseg, validate, conditions, shown, synth_command, pct)

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "fp16_regions.md"
VARIANTS = ("fp32", "fp16")


def cpu_isa() -> list[str]:
    """The int8/vector extensions ONNX Runtime's CPU kernels can use here (what the brief asks to record)."""
    from edgeseg.quant.qdq_ov import cpu_flags

    flags = cpu_flags()
    return sorted(f for f in ("avx2", "avx512_vnni", "amx_tile", "avx_vnni") if f in flags)


def direct_comparison(files: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    """The FP16-region file against the FP32-region file on the test frames: argmax agreement and logit error."""
    import onnxruntime as ort

    from edgeseg.onnx_model import input_spec_of, load_onnx
    from edgeseg.pipeline.validation_data import data_samples
    from edgeseg.spec import preprocess

    sessions = {}
    for label, path in files.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.log_severity_level = 3
        sessions[label] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    first = sessions["fp32"]
    spec, name = input_spec_of(load_onnx(files["fp32"])), first.get_inputs()[0].name
    samples = data_samples(args.test, args.max_test_images, int(first.get_outputs()[0].shape[1]))
    same = total = 0
    abs_sum, peak, frames = 0.0, 0.0, 0
    for _stem, frame, _truth in samples.items:
        x = preprocess(frame, spec)
        a, b = (sessions[k].run(None, {name: x})[0] for k in VARIANTS)
        same += int(np.count_nonzero(a.argmax(1) == b.argmax(1)))
        total += a.shape[0] * a.shape[2] * a.shape[3]
        diff = np.abs(a.astype(np.float64) - b)
        abs_sum, peak, frames = abs_sum + float(diff.sum()), max(peak, float(diff.max())), frames + 1
        elements = a.size
    return {"frames": frames, "argmax_agreement": same / max(total, 1),
            "mean_abs_logit_diff": abs_sum / max(frames * elements, 1), "max_abs_logit_diff": peak}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from edgeseg.onnx_model import load_onnx
    from edgeseg.quant.fp16_regions import float_regions_of

    work = Path(args.work or tempfile.mkdtemp(prefix="fp16reg-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    print(f"work folder {work} (log {log})", flush=True)
    started = time.perf_counter()
    cond = acc.conditions(args, {})
    cond["cpu_isa"] = cpu_isa()
    seconds: dict[str, float] = {}
    export = acc.edgeseg("export", "--weights", str(args.weights), "--out", str(work), "--val-images", "4")
    seconds["export"] = round(acc.run(export, log)[1], 1)
    files: dict[str, Path] = {}
    regions: dict[str, Any] = {}
    for variant in VARIANTS:
        print(f"calibrating: --high-precision {variant}", flush=True)
        cmd = acc.edgeseg("calibrate", "--onnx", str(work / "model.onnx"), "--calib", str(args.calib),
                          "--calib-images", str(args.calib_images), "--trt-version", args.trt_version,
                          "--high-precision", variant, "--out", str(work / variant))
        seconds[f"calibrate {variant}"] = round(acc.run(cmd, log)[1], 1)
        files[variant] = work / variant / "model.int8.onnx"
        regions[variant] = float_regions_of(load_onnx(files[variant]))
    same_ranges = ((work / "fp32" / "ranges.json").read_text() == (work / "fp16" / "ranges.json").read_text())
    rows = []
    for variant in VARIANTS:
        print(f"validating {variant}", flush=True)
        rows.append({"variant": variant, "file": str(files[variant].relative_to(work)),
                     "bytes": files[variant].stat().st_size, "float_regions": regions[variant],
                     **acc.validate(files[variant], work / "validation" / variant, args, log)})
    direct = direct_comparison(files, args)
    cond["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    seconds["total"] = round(time.perf_counter() - started, 1)
    return {"model": "shufflenetv2_x0_5_mdspp (demo)", "weights": acc.shown(args.weights),
            "calib": acc.shown(args.calib), "calib_images": args.calib_images, "test": acc.shown(args.test),
            "test_scenes": rows[0]["images"], "trt_version": args.trt_version, "same_ranges": same_ranges,
            "rows": rows, "direct": direct, "conditions": cond, "seconds": seconds,
            "gates": {"min_agreement": acc.MIN_AGREEMENT, "max_drop_points": acc.MAX_DROP},
            "command": "python benchmarks/fp16_regions.py " + shlex.join(args.argv),
            "data_commands": [c for c in (acc.synth_command(args.test),) if c]}


def markdown(r: dict[str, Any]) -> str:
    c = r["conditions"]
    out = ["# FP16 float regions in the Q/DQ model for TensorRT: accuracy on the demo", "",
           "`model.int8.onnx` written with `--high-precision fp32` (float32 tensors outside the Q/DQ pairs, the file "
           "before issue #23) and `--high-precision fp16` (the default for TensorRT >= 10: float16 tensors, "
           "float16 scales, float32 graph input/output), from the same ranges.json"
           + (" (identical files, checked)" if r["same_ranges"] else " (**the two ranges.json differ**)")
           + f", TensorRT target {r['trt_version']}. Each is scored by `edgeseg validate` against PyTorch FP32 on "
           f"{r['test_scenes']} held-out labelled scenes (`{r['test']}`); calibration: {r['calib_images']} images of "
           f"`{r['calib']}`, percentile (99.99). ONNX Runtime's CPU provider runs both files (a simulation: it "
           "keeps the float16 rounding between ops, not TensorRT's kernels). Gates as in int8_accuracy.md: "
           f"agreement >= {r['gates']['min_agreement'] * 100:g} %, drop <= {r['gates']['max_drop_points']:g} points.",
           "", "| float regions | agreement vs PyTorch % | GT mIoU PyTorch -> candidate % | drop (points) | gates | "
           "ops FP16 / kept FP32 / casts | file |", "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        reg = row["float_regions"]
        ops = (f"{reg['fp16_nodes']} / {len(reg['fp32_nodes'])} / {reg['casts']}"
               if reg.get("high_precision") == "fp16" else "-")
        drop = "-" if row["drop_points"] is None else f"{row['drop_points']:.2f}"
        out.append(f"| {row['variant'].upper()} | {acc.pct(row['agreement'])} | {acc.pct(row['miou_pytorch'])} -> "
                   f"{acc.pct(row['miou_candidate'])} | {drop} | {'pass' if row['passed'] else 'fail'} | {ops} | "
                   f"{row['bytes'] / 1e6:.2f} MB |")
    d = r["direct"]
    fp16 = next(row for row in r["rows"] if row["variant"] == "fp16")["float_regions"]
    kept = fp16.get("fp32_tensors") or {}
    out += ["", f"FP16-region file against the FP32-region file on the same {d['frames']} frames: argmax agreement "
            f"{d['argmax_agreement'] * 100:.2f} %, mean |logit difference| {d['mean_abs_logit_diff']:.4f}, "
            f"max {d['max_abs_logit_diff']:.3f}.", "",
            "Tensors kept FP32 (observed range beyond +/-"
            f"{fp16.get('limit', 60000):g}): " + (", ".join(f"`{k}` ({v:g})" for k, v in kept.items()) if kept
                                                  else "none (the largest calibrated |x| of the demo is far below "
                                                       "FP16's range)") + ".", "",
            "Not measured here: TensorRT's acceptance of the FP16-region file and its speed (no TensorRT or GPU on "
            "this machine).", "", "Conditions:", "",
            f"- date {c['date']}; machine {c['machine']}; CPU ISA flags {', '.join(c['cpu_isa']) or 'none found'}; "
            f"Python {c['python']}",
            f"- edgeseg code {c.get('code', '?')}: onnxruntime {c['onnxruntime']}, torch {c['torch']}, "
            f"{c['threads']} ORT thread(s); one run",
            f"- load average (1/5/15 min) at start {c['loadavg_start']}, at end {c['loadavg_end']} (2 cores shared "
            "with other jobs: accuracy figures do not depend on it)",
            "- seconds: " + ", ".join(f"{k} {v}" for k, v in r["seconds"].items()), "",
            "Regenerate (from the repository root):", ""]
    out += [f"    {x}" for x in r.get("data_commands", []) + [r["command"]]] + [""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown from the json")
    parser.add_argument("--weights", type=Path, default=ROOT / "edgeseg" / "assets" / "demo_model.pt")
    parser.add_argument("--model", default=None, help="model name (default: the checkpoint's)")
    parser.add_argument("--calib", type=Path, default=ROOT / "calib", help="calibration images [calib/]")
    parser.add_argument("--calib-images", type=int, default=64, help="images sampled from --calib [64]")
    parser.add_argument("--test", type=Path, help="labelled folder: images/ + masks/")
    parser.add_argument("--max-test-images", type=int, default=None, help="use at most N test scenes")
    parser.add_argument("--trt-version", default="10.3.0", help="TensorRT target of the Q/DQ files [10.3.0]")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads [2]")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown to write; the .json lies beside it")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    json_path = args.out.with_suffix(".json")
    if args.render:
        args.out.write_text(markdown(json.loads(json_path.read_text())))
        return 0
    if args.test is None:
        parser.error("--test is required (a labelled folder: edgeseg data synth --out DIR ...)")
    report = measure(args)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    args.out.write_text(markdown(report))
    print(f"wrote {args.out} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
