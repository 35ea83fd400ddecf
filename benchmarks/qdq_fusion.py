"""Predicted TensorRT fusion of the Q/DQ files: edgeseg before / after issue #29's placement vs ModelOpt.

    python -m edgeseg data synth --out SYN --num 8 --size 512x1024 --seed 4
    python benchmarks/qdq_fusion.py --calib SYN/images --calib-images 8 --baseline-src OLD_TREE \\
        --modelopt-python /work/modelopt-venv/bin/python --work /tmp/qdqfusion

Per model (random weights, torch seed 0, 512x1024): edgeseg export, one calibration pass (percentile, the
default) on --calib-images synthetic frames, then model.int8.onnx written from those same ranges by
- the baseline tree (--baseline-src: an edgeseg checkout before the change; its quantize_for_tensorrt),
- this tree for TensorRT 8.5.2 and 10.3 (FP32 float regions, as ModelOpt's --high_precision_dtype fp32; and the
  10.3 file with FP16 regions, what `edgeseg calibrate` writes for TensorRT >= 10),
- ModelOpt's ONNX PTQ (int8, entropy, same frames through edgeseg's CalibrationFeed, benchmarks/int8_accuracy.py),
and edgeseg.quant.trt_fusion.predict_fusion of each: precision boundaries, standalone Q/DQ kernels, INT8-in
float-out weighted layers, activation MB per frame written in float, round trips. A PREDICTION from TensorRT's
documented Q/DQ rules: no engine is built here; to be confirmed on a Jetson. Placement does not depend much on
the values, so a few frames suffice. Writes benchmarks/results/qdq_fusion.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODELS = ("shufflenetv2_x0_5_mdspp", "shufflenetv2_x1_0_deeplabv3plus_sep", "hrnet_w18_small_v1")
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "qdq_fusion.md"
BASELINE_SNIPPET = """
import sys, onnx
from edgeseg.quant.qdq_trt import quantize_for_tensorrt
from edgeseg.quant.ranges import load_ranges
onnx.save(quantize_for_tensorrt(onnx.load(sys.argv[1]), load_ranges(sys.argv[2])), sys.argv[3])
"""


def export(name: str, size: tuple[int, int], folder: Path) -> Path:
    import torch

    from edgeseg.export import ExportConfig, export_onnx
    from edgeseg.models import create_model
    from edgeseg.spec import InputSpec

    torch.manual_seed(0)
    model = create_model(name, num_classes=19).eval()
    config = ExportConfig(model=name, num_classes=19, input_spec=InputSpec(*size), num_reference_samples=1)
    return Path(export_onnx(model, config, folder).onnx_path)


def predict(path: Path, version: str) -> dict[str, Any]:
    from edgeseg.onnx_model import load_onnx
    from edgeseg.quant.trt_fusion import predict_fusion

    return predict_fusion(load_onnx(path), version).to_dict()


def measure(name: str, args: argparse.Namespace, work: Path, notes: list[str]) -> dict[str, Any]:
    if args.predict_only:
        return repredict(name, args, work)
    from edgeseg.quant.calibrate import CalibrateConfig, calibrate_ranges

    folder = work / name
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    onnx_path = export(name, args.size, folder)
    seconds["export"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    calibrate_ranges(onnx_path, args.calib, CalibrateConfig(calib_images=args.calib_images), out_dir=folder)
    seconds["calibration"] = round(time.perf_counter() - clock, 1)
    write_after(folder, onnx_path)
    files: dict[str, tuple[Path, list[str]]] = {
        "after 8.5.2": (folder / "after-8.5.2.int8.onnx", ["8.5.2"]),
        "after 10.3": (folder / "after-10.3.int8.onnx", ["10.3"]),
        "after 10.3 FP16 regions": (folder / "after-10.3-fp16.int8.onnx", ["10.3"])}
    if args.baseline_src:
        path = folder / "before.int8.onnx"
        env = dict(os.environ, PYTHONPATH=str(args.baseline_src))
        subprocess.run([sys.executable, "-c", BASELINE_SNIPPET, str(onnx_path), str(folder / "ranges.json"),
                        str(path)], env=env, check=True, cwd=str(args.baseline_src))
        files["before"] = (path, ["8.5.2", "10.3"])
    if args.modelopt_python:
        from int8_accuracy import modelopt

        clock = time.perf_counter()
        target, versions, _ = modelopt(args.modelopt_python, folder, args.calib, args.calib_images, "entropy",
                                       folder / "ranges.json", folder / "modelopt.log", notes)
        seconds["modelopt"] = round(time.perf_counter() - clock, 1)
        if target is not None:
            files[f"ModelOpt {versions.get('modelopt', '?')}"] = (target, ["8.5.2", "10.3"])
    rows = {}
    for label, (path, versions_of) in files.items():
        for version in versions_of:
            rows[f"{label} @ TRT {version}" if len(versions_of) > 1 else label] = predict(path, version)
    return {"model": name, "input_size": list(args.size), "rows": rows, "seconds": seconds}


def write_after(folder: Path, onnx_path: Path) -> None:
    """This tree's model.int8.onnx for TensorRT 8.5.2 and 10.3 (FP32 regions; and 10.3 with FP16 regions) from
    the folder's ranges.json."""
    import onnx

    from edgeseg.quant.fp16_regions import convert_float_regions
    from edgeseg.quant.qdq_trt import quantize_for_tensorrt
    from edgeseg.quant.ranges import load_ranges

    float_model, ranges = onnx.load(str(onnx_path)), load_ranges(folder / "ranges.json")
    for version in ("8.5.2", "10.3"):
        quantized = quantize_for_tensorrt(float_model, ranges, trt_version=version)
        onnx.save(quantized, str(folder / f"after-{version}.int8.onnx"))
        if version == "10.3":
            onnx.save(convert_float_regions(quantized, ranges)[0], str(folder / "after-10.3-fp16.int8.onnx"))


def repredict(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The predictions again from the files a previous run left in --work: the float model, ranges, baseline and
    ModelOpt files are reused; this tree's files are written again from the same ranges."""
    folder = work / name
    write_after(folder, folder / "model.onnx")
    previous = json.loads(args.out.with_suffix(".json").read_text())
    entry = next(e for e in previous["models"] if e["model"] == name)
    files = {"after 8.5.2": (folder / "after-8.5.2.int8.onnx", ["8.5.2"]),
             "after 10.3": (folder / "after-10.3.int8.onnx", ["10.3"]),
             "after 10.3 FP16 regions": (folder / "after-10.3-fp16.int8.onnx", ["10.3"]),
             "before": (folder / "before.int8.onnx", ["8.5.2", "10.3"])}
    modelopt = [label.split(" @ ")[0] for label in entry["rows"] if label.startswith("ModelOpt")]
    if modelopt:
        files[modelopt[0]] = (folder / "modelopt-entropy" / "model.int8.onnx", ["8.5.2", "10.3"])
    rows = {}
    for label, (path, versions_of) in files.items():
        if path.is_file():
            for version in versions_of:
                rows[f"{label} @ TRT {version}" if len(versions_of) > 1 else label] = predict(path, version)
    return {**entry, "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    c = report["conditions"]
    out = ["# Predicted TensorRT fusion of the Q/DQ files (issue #29)", "",
           "A **prediction** from TensorRT's documented Q/DQ processing (edgeseg/quant/trt_fusion.py: Q moved backward "
           "through Concat and cloned per input, DQ moved forward only over equal scales and commuting layers, "
           "Conv+BN+ReLU(+Add with a DQ residual)+Q fused, no Q fused after a deconvolution, quantizable AveragePool "
           "and Add, Resize INT8 on TensorRT >= 10 only, per-output-channel deconvolution weights not INT8 on 8.x, "
           "every other Q/DQ its own kernel). No engine was built; to be confirmed on a Jetson.", "",
           "boundaries = standalone Q + DQ feeding a float layer; kernels = boundaries + requantizations; "
           "INT8->float = weighted INT8 layers whose output Q could not be fused; MB = activation bytes written per "
           "frame (float 4 B, FP16 2 B, int8 1 B; reshapes free), in float / total; round trips = Q/DQ no INT8 "
           "layer reads.", ""]
    for entry in report["models"]:
        out += [f"## {entry['model']} ({entry['input_size'][0]}x{entry['input_size'][1]}, random weights)", "",
                "| file | boundaries | standalone Q/DQ kernels | INT8 layers | INT8 -> float | MB in float / total | "
                "round trips |", "|---|---|---|---|---|---|---|"]
        for label, r in entry["rows"].items():
            out.append(f"| {label} | {r['precision_boundaries']} | {r['standalone_qdq_kernels']} | "
                       f"{r['int8_weighted_layers']}/{r['weighted_layers']} | {r['int8_in_float_out']} | "
                       f"{r['float_activation_mb']:.1f} / {r['activation_mb']:.1f} "
                       f"({100 * r['float_activation_share']:.0f} %) | {r['round_trips']} |")
        out += ["", "seconds: " + ", ".join(f"{k} {v}" for k, v in entry["seconds"].items()), ""]
    out += ["Conditions:", "",
            f"- date {c['date']}; {c['machine']}; Python {c['python']}; CPU ISA {c['isa']}",
            f"- load average at start {c['load_start']}, at end {c['load_end']}",
            f"- calibration: {c['calib_images']} frames of {c['calib']} (percentile); baseline tree "
            f"{c['baseline']}", ""]
    if report.get("notes"):
        out += ["Notes:", ""] + [f"- {n}" for n in dict.fromkeys(report["notes"])] + [""]
    out += ["Regenerate:", "", "    " + c["command"], ""]
    return "\n".join(out)


def isa() -> str:
    from edgeseg.quant.qdq_ov import cpu_flags

    flags = cpu_flags()
    if not flags:
        return "?"
    return ", ".join(f for f in ("avx2", "avx512_vnni", "amx_tile") if f in flags) or "none of avx2/avx512_vnni/amx"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--calib", type=Path, required=True, help="folder of calibration images")
    parser.add_argument("--calib-images", type=int, default=8)
    parser.add_argument("--baseline-src", type=Path, default=None, help="edgeseg tree before the change")
    parser.add_argument("--modelopt-python", default=None)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--predict-only", action="store_true",
                        help="reuse --work's float models, ranges, baseline and ModelOpt files: write this tree's "
                             "files again and predict every file (the conditions of that run are kept)")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    args.size = (height, width)
    work = args.work or Path(tempfile.mkdtemp(prefix="qdqfusion-"))
    work.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    load_start = [round(v, 2) for v in os.getloadavg()]
    models = [measure(name, args, work, notes) for name in args.models.split(",") if name]
    if args.predict_only:
        report = json.loads(args.out.with_suffix(".json").read_text())
        report["models"] = models
        report["notes"] = [*report.get("notes", []), "Rerun with --predict-only: the float models, ranges, baseline "
                           "and ModelOpt files and the timings are the first run's; this tree's files were written "
                           "again from the same ranges and every file predicted again."]
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        args.out.write_text(markdown(report))
        print(args.out.read_text())
        return 0
    report = {"models": models, "notes": notes, "conditions": {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}, {platform.platform()}",
        "python": platform.python_version(), "isa": isa(), "load_start": load_start,
        "load_end": [round(v, 2) for v in os.getloadavg()], "calib_images": args.calib_images,
        "calib": str(args.calib), "baseline": str(args.baseline_src),
        "command": "python benchmarks/qdq_fusion.py " + " ".join(argv if argv is not None else sys.argv[1:])}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.write_text(markdown(report))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
