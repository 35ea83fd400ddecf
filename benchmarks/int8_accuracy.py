"""INT8 accuracy of one trained model: edgeseg's calibrators and NVIDIA ModelOpt's ONNX PTQ vs PyTorch.

    python -m edgeseg data synth --out CAL --num 100 --size 192x384 --seed 2
    python -m edgeseg data synth --out TEST --num 128 --size 192x384 --seed 3
    python benchmarks/int8_accuracy.py --weights edgeseg/assets/demo_model.pt --input-size 192x384 \\
        --calib CAL/images --test TEST --methods entropy,percentile \\
        --modelopt-python /work/modelopt-venv/bin/python --label demo

Per model: `edgeseg export`, `edgeseg calibrate` per method (CPU INT8 model.int8.ort.onnx and
Q/DQ model.int8.onnx for TensorRT, run here by ONNX Runtime as a simulation), ModelOpt's
`python -m modelopt.onnx.quantization` on the same calibration images preprocessed by edgeseg's
own CalibrationFeed, then `edgeseg validate` of every candidate against PyTorch on the labelled
test scenes. Each --label is one section of benchmarks/results/int8_accuracy.json (replaced when
run again); the markdown is regenerated from the json. Without --modelopt-python (or when it
fails) the ModelOpt row is skipped with the reason in the notes.
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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIN_AGREEMENT = 0.995  # targets: argmax agreement with PyTorch, GT mIoU drop in points
MAX_DROP = 0.3
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "int8_accuracy.md"


def run(cmd: list[str], log: Path, ok_codes: tuple[int, ...] = (0,)) -> tuple[int, float]:
    """Run a command, its output appended to ``log``; (exit code, seconds). Raises on other codes."""
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="2")
    if cmd[0] == sys.executable:  # edgeseg from this checkout; the ModelOpt venv keeps its own path
        env["PYTHONPATH"] = str(ROOT)
    with log.open("a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if rc not in ok_codes:
        raise RuntimeError(f"exit {rc}: {shlex.join(cmd)} (log: {log})")
    return rc, time.perf_counter() - start


def edgeseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeseg", *args]


def tail(log: Path, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in log.read_text(errors="replace").splitlines()[-lines:] if line.strip())


def calibration_array(onnx_path: Path, calib_dir: Path, count: int, ranges_json: Path | None) -> tuple[np.ndarray, str]:
    """The calibration images as edgeseg's calibrate feeds them (same sampling and preprocessing): N x 3 x H x W."""
    from edgeseg.onnx_model import input_spec_of, load_onnx
    from edgeseg.quant.calib_data import CalibrationFeed

    spec = input_spec_of(load_onnx(onnx_path))
    feed = CalibrationFeed(calib_dir, spec, count=count, batch_size=1, seed=0)
    array = np.concatenate([batch[spec.input_name] for batch in feed], axis=0).astype(np.float32)
    note = f"{array.shape[0]} images, sha256 {feed.images.sha256()[:12]}"
    if ranges_json is not None and ranges_json.is_file():  # the same set edgeseg calibrated on?
        recorded = json.dumps(json.loads(ranges_json.read_text()))
        note += " (same set as edgeseg's ranges.json)" if feed.images.sha256() in recorded else \
            " (WARNING: not found in edgeseg's ranges.json)"
    return array, note


def copy_metadata(source: Path, target: Path) -> bool:
    """Give ``target`` the edgeseg metadata_props of ``source`` if it lacks them; True if copied."""
    import onnx

    src, dst = onnx.load(str(source)), onnx.load(str(target))
    have = {p.key for p in dst.metadata_props}
    missing = [p for p in src.metadata_props if p.key not in have]
    if not missing:
        return False
    for prop in missing:
        dst.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(dst, str(target))
    return True


def modelopt(py: str, work: Path, calib_dir: Path, count: int, method: str, ranges_json: Path | None,
             log: Path, notes: list[str]) -> tuple[Path | None, dict[str, str], float]:
    """ModelOpt ONNX PTQ (int8) of work/model.onnx; (candidate or None, versions, seconds)."""
    versions: dict[str, str] = {}
    probe = subprocess.run([py, "-c", "import modelopt, onnxruntime as o; print(modelopt.__version__, o.__version__,"
                            " ','.join(o.get_available_providers()))"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        notes.append(f"ModelOpt skipped: `{py}` cannot import modelopt/onnxruntime: "
                     + (probe.stderr.strip().splitlines() or ["?"])[-1])
        return None, versions, 0.0
    mo_version, ort_version, providers = probe.stdout.split()
    versions = {"modelopt": mo_version, "modelopt_onnxruntime": ort_version, "modelopt_ort_providers": providers}
    out_dir = work / f"modelopt-{method}"
    out_dir.mkdir(parents=True, exist_ok=True)
    array, note = calibration_array(work / "model.onnx", calib_dir, count, ranges_json)
    np.save(out_dir / "calib.npy", array)
    notes.append(f"ModelOpt calibration data: edgeseg's CalibrationFeed (seed 0), {note}.")
    help_text = subprocess.run([py, "-m", "modelopt.onnx.quantization", "--help"], capture_output=True, text=True,
                               check=False).stdout
    target = out_dir / "model.int8.onnx"
    cmd = [py, "-m", "modelopt.onnx.quantization", "--onnx_path", str(work / "model.onnx"), "--quantize_mode", "int8",
           "--calibration_data_path" if "--calibration_data_path" in help_text else "--calibration_data",
           str(out_dir / "calib.npy"), "--calibration_method", method, "--output_path", str(target)]
    if "--high_precision_dtype" in help_text:
        cmd += ["--high_precision_dtype", "fp32"]
    if "--calibration_eps" in help_text:
        cmd += ["--calibration_eps", "cpu"]
    try:
        _, seconds = run(cmd, log)
    except RuntimeError as exc:
        notes.append(f"ModelOpt ({method}) failed: {exc}; last lines: {tail(log)}")
        return None, versions, 0.0
    if not target.is_file():
        notes.append(f"ModelOpt ({method}) wrote no {target.name}; last lines: {tail(log)}")
        return None, versions, seconds
    if copy_metadata(work / "model.onnx", target):
        notes.append(f"ModelOpt's output has no edgeseg ONNX metadata (input spec, classes): metadata_props copied "
                     f"from model.onnx into modelopt-{method}/model.int8.onnx before validating.")
    return target, versions, seconds


def validate(candidate: Path, out_dir: Path, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = out_dir / "validation.json"
    result.unlink(missing_ok=True)
    cmd = edgeseg("validate", "--candidate", str(candidate), "--weights", str(args.weights),
                  "--val-data", str(args.test), "--min-agreement", str(MIN_AGREEMENT), "--max-miou-drop", str(MAX_DROP),
                  "--worst", "0",
                  "--out", str(out_dir), "--threads", str(args.threads))
    if args.model:
        cmd += ["--model", args.model]
    if args.max_test_images:
        cmd += ["--val-images", str(args.max_test_images)]
    _, seconds = run(cmd, log, ok_codes=(0, 1))  # 1: a gate was missed, validation.json is still written
    if not result.is_file():
        raise RuntimeError(f"validate wrote no {result} (log: {log})")
    data = json.loads(result.read_text())
    truth = data.get("ground_truth") or {}
    agreement, drop = data["parity"]["agreement"], truth.get("miou_drop_points")
    return {"agreement": agreement, "images": data["parity"]["images"], "miou_pytorch": truth.get("miou_reference"),
            "miou_candidate": truth.get("miou_candidate"), "drop_points": drop, "validate_s": round(seconds, 1),
            "passed": bool(agreement >= MIN_AGREEMENT and drop is not None and drop <= MAX_DROP)}


MARGINS = (0.1, 0.3, 0.5)  # logit gaps reported: a pixel whose top-1/top-2 gap is below the INT8 logit error flips


def logit_margins(onnx_path: Path, args: argparse.Namespace) -> dict[str, float]:
    """Share of test pixels whose FP32 top-1/top-2 logit gap is below each of MARGINS (same frames as validate):
    how close the model is to flipping, whatever the quantizer."""
    import onnxruntime as ort

    from edgeseg.onnx_model import input_spec_of, load_onnx
    from edgeseg.pipeline.validation_data import data_samples
    from edgeseg.spec import preprocess

    model = load_onnx(onnx_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name, spec = session.get_inputs()[0].name, input_spec_of(model)
    samples = data_samples(args.test, args.max_test_images, int(session.get_outputs()[0].shape[1]))
    below, total = np.zeros(len(MARGINS), np.int64), 0
    for _stem, frame, _truth in samples.items:
        top = np.sort(session.run(None, {name: preprocess(frame, spec)})[0][0], axis=0)
        gap = top[-1] - top[-2]
        below += [int(np.count_nonzero(gap < m)) for m in MARGINS]
        total += gap.size
    return {f"{m:g}": float(b / max(total, 1)) for m, b in zip(MARGINS, below, strict=True)}


def code_state() -> str:
    """The commit the edgeseg code came from, and any uncommitted change under edgeseg/ (it changes the numbers)."""
    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown commit"
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "edgeseg").splitlines()]
    return commit + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean edgeseg/)")


def conditions(args: argparse.Namespace, versions: dict[str, str]) -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": f"{platform.node()}: {os.cpu_count()} CPU(s), {cpu}, {platform.system()} {platform.release()}",
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "code": code_state(), "threads": args.threads,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], **versions}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work or tempfile.mkdtemp(prefix=f"int8acc-{args.label}-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    print(f"work folder {work} (log {log})", flush=True)
    started = time.perf_counter()
    notes: list[str] = []
    seconds: dict[str, float] = {}
    cond = conditions(args, {})
    export = edgeseg("export", "--weights", str(args.weights), "--out", str(work))
    export += ["--model", args.model] if args.model else []
    export += ["--input-size", args.input_size] if args.input_size else []
    seconds["export"] = round(run(export, log)[1], 1)
    margins = logit_margins(work / "model.onnx", args)
    candidates: list[tuple[str, str, Path]] = [("FP32 ONNX (model.onnx)", "-", work / "model.onnx")]
    for method in args.methods:
        print(f"calibrating: {method}", flush=True)
        cmd = edgeseg("calibrate", "--onnx", str(work / "model.onnx"), "--calib", str(args.calib),
                      "--calib-method", method, "--calib-images", str(args.calib_images), "--out", str(work / method))
        cmd += ["--percentile", str(args.percentile)] if method == "percentile" else []
        seconds[f"calibrate {method}"] = round(run(cmd, log)[1], 1)
        label = f"{method} ({args.percentile})" if method == "percentile" else method
        candidates += [("edgeseg CPU INT8 (model.int8.ort.onnx)", label, work / method / "model.int8.ort.onnx"),
                       ("edgeseg Q/DQ for TensorRT (model.int8.onnx, ORT simulation)", label,
                        work / method / "model.int8.onnx")]
    if args.modelopt_python:
        ranges = next((work / m / "ranges.json" for m in args.methods), None)
        for method in args.modelopt_methods:
            print(f"ModelOpt: {method}", flush=True)
            target, versions, secs = modelopt(args.modelopt_python, work, args.calib, args.calib_images, method,
                                              ranges, log, notes)
            cond.update(versions)
            if target is not None:
                seconds[f"modelopt {method}"] = round(secs, 1)
                candidates.append(("ModelOpt ONNX PTQ int8 (Q/DQ, ORT simulation)", method, target))
    else:
        notes.append("ModelOpt skipped: no --modelopt-python given.")
    rows = []
    for name, calibration, path in candidates:
        print(f"validating {path.relative_to(work)}", flush=True)
        out = work / "validation" / path.relative_to(work).as_posix().replace("/", "__").removesuffix(".onnx")
        rows.append({"candidate": name, "calibration": calibration, "file": str(path.relative_to(work)),
                     **validate(path, out, args, log)})
    cond["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    seconds["total"] = round(time.perf_counter() - started, 1)
    from edgeseg.onnx_model import load_onnx, read_onnx_metadata

    meta = read_onnx_metadata(load_onnx(work / "model.onnx"))
    spec = meta.get("input_spec") or {}
    return {"label": args.label, "model": meta.get("model") or args.model, "weights": shown(args.weights),
            "input_size": f"{spec.get('height', '?')}x{spec.get('width', '?')}",
            "calib": shown(args.calib), "calib_images": args.calib_images, "test": shown(args.test),
            "test_scenes": rows[0]["images"], "conditions": cond, "seconds": seconds, "rows": rows,
            "logit_margins": margins,
            "notes": list(dict.fromkeys([*notes, *args.note])),
            "work": str(work), "command": "python benchmarks/int8_accuracy.py " + shlex.join(args.argv),
            "data_commands": [c for c in (synth_command(args.calib), synth_command(args.test)) if c]}


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def synth_command(folder: Path) -> str | None:
    """The `edgeseg data synth` line that made ``folder`` (or its parent, for DIR/images), from its synth.json."""
    for root in (folder, folder.parent):
        if (root / "synth.json").is_file():
            m = json.loads((root / "synth.json").read_text())
            start = f" --start {m['start']}" if m.get("start") else ""
            return (f"python -m edgeseg data synth --out {shlex.quote(shown(root))} --num {m['num']} "
                    f"--size {m['height']}x{m['width']} --seed {m['seed']}{start}")
    return None


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def markdown(report: dict[str, Any]) -> str:
    out = ["# INT8 accuracy: edgeseg calibrators vs NVIDIA ModelOpt ONNX PTQ", "",
           "Every candidate is compared with PyTorch FP32 on held-out labelled synthetic scenes by `edgeseg validate`:",
           "agreement = share of pixels whose argmax matches PyTorch; drop = ground-truth mIoU of PyTorch minus the",
           f"candidate's, in points. Gates (targets): agreement >= {MIN_AGREEMENT * 100:g} % and drop <= {MAX_DROP:g} "
           "points. Q/DQ models (for TensorRT) are run by ONNX Runtime on the CPU, a simulation: no TensorRT here.",
           "Written by benchmarks/int8_accuracy.py from int8_accuracy.json (one section per --label).", ""]
    for label, sec in sorted(report.items()):
        c = sec["conditions"]
        out += [f"## {label}: {sec['model']} ({sec['input_size']}, `{sec['weights']}`)", "",
                f"Calibration: {sec['calib_images']} images of `{sec['calib']}`; test: {sec['test_scenes']} scenes of "
                f"`{sec['test']}`.", "",
                "| candidate | calibration | agreement % | GT mIoU PyTorch -> candidate % | drop (points) | gates |",
                "|---|---|---|---|---|---|"]
        for r in sec["rows"]:
            drop = "-" if r["drop_points"] is None else f"{r['drop_points']:.2f}"
            out.append(f"| {r['candidate']} | {r['calibration']} | {pct(r['agreement'])} | {pct(r['miou_pytorch'])} "
                       f"-> {pct(r['miou_candidate'])} | {drop} | {'pass' if r['passed'] else 'fail'} |")
        if sec.get("logit_margins"):
            gaps = ", ".join(f"{v * 100:.2f} % below {k}" for k, v in sec["logit_margins"].items())
            out += ["", f"How close the model is to flipping (FP32 top-1 minus top-2 logit, test pixels): {gaps}."]
        out += ["", "Conditions:", "",
                f"- date {c['date']}; machine {c['machine']}; Python {c['python']}",
                f"- edgeseg code {c.get('code', '?')}: onnxruntime {c['onnxruntime']}, torch {c['torch']}, "
                f"{c['threads']} ORT thread(s)",
                "- ModelOpt side: " + (f"nvidia-modelopt {c['modelopt']}, onnxruntime {c['modelopt_onnxruntime']} "
                                       f"(providers {c['modelopt_ort_providers']})" if "modelopt" in c else "not run"),
                f"- load average (1/5/15 min) at start {c['loadavg_start']}, at end {c['loadavg_end']}",
                "- seconds: " + ", ".join(f"{k} {v}" for k, v in sec["seconds"].items()), ""]
        if sec["notes"]:
            out += ["Notes:", ""] + [f"- {n}" for n in sec["notes"]] + [""]
        lines = [f"    {x}" for x in sec.get("data_commands", []) + [sec["command"]]]
        out += ["Regenerate (from the repository root; data lines from the folders' synth.json):", ""] + lines + [""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown from the json")
    parser.add_argument("--weights", type=Path, help="edgeseg checkpoint (.pt)")
    parser.add_argument("--model", default=None, help="model name (default: the checkpoint's)")
    parser.add_argument("--input-size", default=None, help="HxW (default: the checkpoint's)")
    parser.add_argument("--calib", type=Path, help="folder of calibration images")
    parser.add_argument("--calib-images", type=int, default=100, help="images sampled from --calib [100]")
    parser.add_argument("--test", type=Path, help="labelled folder: images/ + masks/")
    parser.add_argument("--max-test-images", type=int, default=None, help="use at most N test scenes")
    parser.add_argument("--methods", default="entropy,percentile", help="edgeseg calibrate methods")
    parser.add_argument("--percentile", type=float, default=99.99, help="for --methods percentile [99.99]")
    parser.add_argument("--modelopt-python", default=None, help="python of a venv with nvidia-modelopt")
    parser.add_argument("--modelopt-methods", default="entropy", help="ModelOpt --calibration_method(s) [entropy]")
    parser.add_argument("--label", default="demo", help="section name in the results [demo]")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for validate [2]")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown to write; the .json lies beside it")
    parser.add_argument("--note", action="append", default=[], help="a note to record in this section (repeatable)")
    args = parser.parse_args(argv)
    if not args.render and None in (args.weights, args.calib, args.test):
        parser.error("--weights, --calib and --test are required (unless --render)")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.modelopt_methods = [m for m in args.modelopt_methods.split(",") if m]
    for name in ("weights", "calib", "test", "work", "out"):  # the commands run in the repository root
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    json_path = args.out.with_suffix(".json")
    report = json.loads(json_path.read_text()) if json_path.is_file() else {}
    if not args.render:
        report[args.label] = measure(args)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        print(markdown({args.label: report[args.label]}))
    args.out.write_text(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
