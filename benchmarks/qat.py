"""QAT on a low-margin model: edgeseg's PTQ vs edgeseg QAT (1, 2, 4 epochs) vs NVIDIA ModelOpt's PyTorch QAT.

    python benchmarks/qat.py --weights RUN/best.pt --train TRAIN --val VAL --test TEST --calib CAL/images \\
        --epochs 1,2,4 --modelopt-python /work/modelopt-venv/bin/python --work /tmp/qatbench

Steps (every command is logged to WORK/log.txt):
1. PTQ: `edgeseg build --int8 --weights W --calib CAL` per --methods (gates off: the figures are measured here);
2. edgeseg QAT: `edgeseg qat --weights W --ranges WORK/ptq-<first method> --epochs E` per E (each its own
   schedule from the float checkpoint), with --lr / --distill / --learn-scales as given;
3. ModelOpt: benchmarks/modelopt_qat_worker.py in the ModelOpt venv, the same data, epochs, batch, learning
   rate and cosine schedule (INT8_DEFAULT_CFG: max calibration on the same CAL images, BatchNorm unfolded);
4. scoring on the held-out TEST scenes at the model input size: agreement of the argmax with the float
   checkpoint and mIoU against ground truth. edgeseg's files (model.int8.onnx, the file TensorRT gets) run in
   ONNX Runtime with graph optimizations off: Q/DQ as ONNX defines them, what TensorRT's explicit quantization
   computes (ONNX Runtime's fused INT8 kernels saturate full-range weights on CPUs without VNNI). ModelOpt's
   QAT models are scored as its fake-quant PyTorch models (its worker's predictions).
Results: benchmarks/results/qat.json (one section per --label, replaced when run again) and qat.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
GATES_OFF = ["--min-agreement", "0", "--max-miou-drop", "100"]


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output appended to ``log``; its wall seconds. Raises on a non-zero exit."""
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="2")
    if cmd[0] == sys.executable:
        env["PYTHONPATH"] = str(ROOT)
    with log.open("a") as handle:
        handle.write(f"\n$ {shlex.join(cmd)}\n")
        handle.flush()
        code = subprocess.run(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if code != 0:
        raise RuntimeError(f"exit {code}: {shlex.join(cmd)} (log: {log})")
    return time.perf_counter() - start


def edgeseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeseg", *args]


def test_set(test: Path, spec: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Preprocessed inputs, masks at the model input size and file names of the test scenes (sorted)."""
    from edgeseg.data.datasets import open_dataset
    from edgeseg.data.torch_dataset import SegmentationDataset

    folder = open_dataset(test)
    dataset = SegmentationDataset(folder, spec, train=False)
    inputs, masks = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return (np.stack([x.numpy() for x in inputs]), np.stack([m.numpy() for m in masks]),
            [sample.image.name for sample in folder.samples])


def onnx_labels(path: Path, inputs: np.ndarray, *, optimized: bool) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i:i + 1]})[0].argmax(1) for i in range(len(inputs))])


def score(labels: np.ndarray, float_labels: np.ndarray, masks: np.ndarray, num_classes: int) -> dict[str, float]:
    from edgeseg.metrics import confusion_matrix, mean_iou

    confusion = sum(confusion_matrix(p, t, num_classes) for p, t in zip(labels, masks, strict=True))
    return {"agreement": float(np.mean(labels == float_labels)), "miou": mean_iou(np.asarray(confusion))}


def machine() -> dict[str, Any]:
    flags = set()
    model = platform.processor()
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":")[1].split())
        model = next(line for line in text.splitlines() if line.startswith("model name")).split(":")[1].strip()
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "isa": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16"})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--weights", type=Path, required=True)
    for name in ("train", "val", "test", "calib"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--epochs", default="1,2,4")
    parser.add_argument("--methods", default="percentile,entropy", help="PTQ calibration methods (first: QAT's)")
    parser.add_argument("--calib-images", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--distill", type=float, default=0.0)
    parser.add_argument("--learn-scales", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--modelopt-python", default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qatbench"))
    parser.add_argument("--label", default="hrnet_w18_small_v1")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    from edgeseg.models import read_checkpoint_info

    info = read_checkpoint_info(args.weights)
    spec, classes = info.input_spec, len(info.classes)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    epochs = [int(e) for e in args.epochs.split(",")]
    methods = args.methods.split(",")
    load = {"start": list(os.getloadavg())}
    seconds: dict[str, float] = {}
    for method in methods:
        seconds[f"ptq {method}"] = run(edgeseg(
            "build", "--int8", "--weights", str(args.weights), "--calib", str(args.calib), "--calib-images",
            str(args.calib_images), "--calib-method", method, "--val-data", str(args.val), *GATES_OFF,
            "--out", str(work / f"ptq-{method}")), log)
    qat_args = ["--lr", str(args.lr), "--distill", str(args.distill), "--batch-size", str(args.batch_size),
                "--threads", "2"] + (["--learn-scales"] if args.learn_scales else [])
    for count in epochs:
        seconds[f"qat {count}"] = run(edgeseg(
            "qat", "--weights", str(args.weights), "--ranges", str(work / f"ptq-{methods[0]}"), "--data",
            str(args.train), "--val-data", str(args.val), "--epochs", str(count), *qat_args,
            "--out", str(work / f"qat-{count}")), log)
    modelopt: dict[str, Any] = {}
    if args.modelopt_python:
        seconds["modelopt"] = run([args.modelopt_python, "benchmarks/modelopt_qat_worker.py", "--weights",
                                   str(args.weights), "--train", str(args.train), "--calib", str(args.calib.parent
                                   if args.calib.name == "images" else args.calib), "--test", str(args.test),
                                   "--epochs", args.epochs, "--batch-size", str(args.batch_size), "--lr",
                                   str(args.lr), "--threads", "2", "--calib-images", str(args.calib_images),
                                   "--out", str(work / "modelopt")], log)
        modelopt = json.loads((work / "modelopt" / "modelopt_qat.json").read_text())
    load["end"] = list(os.getloadavg())
    rows = evaluate(args, work, spec, classes, epochs, methods, modelopt)
    section = {"label": args.label, "weights": str(args.weights), "input_size": list(spec.size), "rows": rows,
               "seconds": {k: round(v, 1) for k, v in seconds.items()}, "load_average": load,
               "machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "settings": {"lr": args.lr, "distill": args.distill, "learn_scales": args.learn_scales,
                            "batch_size": args.batch_size, "calib_images": args.calib_images, "methods": methods},
               "modelopt": {k: modelopt.get(k) for k in ("versions", "config", "runs") if k in modelopt},
               "note": args.note, "command": shlex.join([sys.executable, *sys.argv])}
    write_results(section)
    return 0


def evaluate(args: argparse.Namespace, work: Path, spec: Any, classes: int, epochs: list[int], methods: list[str],
             modelopt: dict[str, Any]) -> list[dict[str, Any]]:
    inputs, masks, files = test_set(args.test, spec)
    float_labels = onnx_labels(work / f"ptq-{methods[0]}" / "model.onnx", inputs, optimized=True)
    rows = [{"model": "float (FP32)", **score(float_labels, float_labels, masks, classes), "train_minutes": None}]
    for method in methods:
        labels = onnx_labels(work / f"ptq-{method}" / "model.int8.onnx", inputs, optimized=False)
        rows.append({"model": f"edgeseg PTQ ({method})", **score(labels, float_labels, masks, classes),
                     "train_minutes": None})
        labels = onnx_labels(work / f"ptq-{method}" / "model.int8.ort.onnx", inputs, optimized=True)
        rows.append({"model": f"edgeseg PTQ ({method}), CPU INT8 file", **score(labels, float_labels, masks,
                                                                                 classes), "train_minutes": None})
    for count in epochs:
        summary = json.loads((work / f"qat-{count}" / "qat.json").read_text())
        minutes = sum(h.get("seconds", 0.0) for h in summary["history"]) / 60
        labels = onnx_labels(work / f"qat-{count}" / "model.int8.onnx", inputs, optimized=False)
        rows.append({"model": f"edgeseg QAT, {count} epoch(s)", **score(labels, float_labels, masks, classes),
                     "train_minutes": round(minutes, 1)})
        labels = onnx_labels(work / f"qat-{count}" / "model.int8.ort.onnx", inputs, optimized=True)
        rows.append({"model": f"edgeseg QAT, {count} epoch(s), CPU INT8 file",
                     **score(labels, float_labels, masks, classes), "train_minutes": None})
    runs = {int(r["epochs"]): r for r in modelopt.get("runs", [])}
    for count in [0, *epochs] if modelopt else []:
        path = work / "modelopt" / f"modelopt_qat_{count}ep.npz"
        if not path.is_file():
            continue
        data = np.load(path)
        if [str(f) for f in data["files"]] != files:
            raise RuntimeError(f"{path} scored other test files than {args.test}")
        minutes = runs.get(count, {}).get("train_seconds")
        rows.append({"model": "ModelOpt PTQ (max)" if count == 0 else f"ModelOpt QAT, {count} epoch(s)",
                     **score(data["labels"].astype(np.int64), float_labels, masks, classes),
                     "train_minutes": round(minutes / 60, 1) if minutes else None})
    base = rows[0]["miou"]
    for row in rows:
        row["miou_drop_points"] = round(100 * (base - row["miou"]), 2)
    return rows


def write_results(section: dict[str, Any]) -> None:
    path = RESULTS / "qat.json"
    data = json.loads(path.read_text()) if path.is_file() else {"sections": []}
    data["sections"] = [s for s in data["sections"] if s["label"] != section["label"]] + [section]
    path.write_text(json.dumps(data, indent=1) + "\n")
    (RESULTS / "qat.md").write_text(render(data))


def render(data: dict[str, Any]) -> str:
    out = ["# QAT on a low-margin model: edgeseg PTQ vs edgeseg QAT vs ModelOpt QAT", "",
           "Written by benchmarks/qat.py from qat.json. Held-out test scenes at the model input size; agreement = "
           "share of pixels whose argmax matches the float checkpoint; drop = float mIoU minus the row's, in "
           "points. edgeseg rows: model.int8.onnx (the file TensorRT gets) in ONNX Runtime with graph "
           "optimizations off (Q/DQ as ONNX defines them); \"CPU INT8 file\": model.int8.ort.onnx in ONNX Runtime's "
           "fused INT8 kernels (its own placement, 7-bit weights, from the same ranges and weights). ModelOpt rows: "
           "its fake-quant PyTorch model.", ""]
    for s in data["sections"]:
        out += [f"## {s['label']}", "", f"`{s['weights']}` at {s['input_size'][0]}x{s['input_size'][1]}; "
                f"settings {json.dumps(s['settings'])}.", "",
                "| model | agreement with float % | test mIoU % | drop (points) | training minutes |",
                "|---|---|---|---|---|"]
        for r in s["rows"]:
            minutes = "-" if r["train_minutes"] is None else r["train_minutes"]
            out.append(f"| {r['model']} | {100 * r['agreement']:.2f} | {100 * r['miou']:.2f} | "
                       f"{r['miou_drop_points']:.2f} | {minutes} |")
        m = s["machine"]
        out += ["", f"Machine: {m['cpu']}, {m['cores']} cores, ISA {', '.join(m['isa']) or '-'}; load average "
                f"{s['load_average']['start']} -> {s['load_average']['end']}; {s['date']}.",
                f"Seconds per step: {json.dumps(s['seconds'])}."]
        if s.get("modelopt", {}).get("versions"):
            out.append(f"ModelOpt side: {json.dumps(s['modelopt']['versions'])}.")
        if s.get("note"):
            out += ["", s["note"]]
        out += ["", "    " + s["command"], ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(main())
