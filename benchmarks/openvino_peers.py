"""OpenVINO vs ONNX Runtime on the CPU, and edgeseg's Q/DQ file vs the peers' INT8 (issue #26 item 3).

    python benchmarks/openvino_peers.py timing --size 512x1024 --repeats 5 [--models all|NAME,NAME]
    python benchmarks/openvino_peers.py demo --nncf-python /tmp/nncfenv/bin/python
    python benchmarks/openvino_peers.py report [--findings FILE]   # openvino_peers.md from the json

timing (random weights, latency only): per model `edgeseg export`, `edgeseg calibrate` (model.int8.onnx: Q/DQ,
the file TensorRT gets; model.int8.ort.onnx: ONNX Runtime's CPU INT8), ONNX Runtime's own `quantize_static` (QDQ,
per-channel, on the same calibration images as edgeseg feeds them), OpenVINO's NNCF `quantize` PTQ (same images;
needs --nncf-python), then every runner timed in ONE interleaved run on the same input: each repeat times every
runner once, in turn; a runner's figure is its minimum over the repeats, and ratios are to ONNX Runtime FP32 of the
same run. Runners: ORT FP32, ORT INT8 (ours), ORT quantize_static, OV FP32 (f32 hint asked for), OV on our Q/DQ
file (TensorRT's, ov_qdq_ours) and on OpenVINO's own (model.int8.ov.onnx: 7-bit weights without VNNI/AMX,
ov_qdq_ours_ov; the one `--precision best` offers), OV on NNCF's model, and OV with the bf16 / fp16 hint where
the CPU lists it. Denormals are flushed to zero in both runtimes (random weights). The CPU's ISA (AVX2,
AVX-512 VNNI, AMX, AVX-512 BF16) and the load average are
recorded.

demo (the trained demo model, accuracy): `edgeseg build --precision best` on the demo (the build's calibration
scenes and held-out scenes; reference.npz), then every candidate and NNCF's PTQ model of the same calibration
images validated against reference.npz: argmax agreement and ground-truth mIoU drop, plus the build's choice; also
TensorRT's model.int8.onnx on OpenVINO (what the OpenVINO INT8 candidate ran before model.int8.ov.onnx).

Results: benchmarks/results/openvino_peers.json (sections replaced when rerun) and openvino_peers.md.
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

RESULTS = ROOT / "benchmarks" / "results"
JSON_OUT = RESULTS / "openvino_peers.json"
MD_OUT = RESULTS / "openvino_peers.md"
ISSUE_MODELS = ("shufflenetv2_x0_5_mdspp", "shufflenetv2_x1_0_dspp", "hrnet_w18_small_v1",
                "shufflenetv2_x1_0_deeplabv3plus")
# issue #26's targets for the --precision best choice, as a ratio to ORT FP32 (on a CPU with AMX)
TARGETS = {"deeplabv3plus": 0.25, "hrnet": 0.5, "x1_0+ speed decoders": 0.5, "shufflenetv2_x0_5_mdspp": 1.0}

NNCF_SCRIPT = r'''
import sys, numpy as np, openvino as ov, nncf
model_path, calib_npy, out_xml = sys.argv[1:4]
calib = np.load(calib_npy)
core = ov.Core()
model = core.read_model(model_path)
dataset = nncf.Dataset([calib[i:i + 1] for i in range(calib.shape[0])])
quantized = nncf.quantize(model, dataset, subset_size=calib.shape[0])
ov.save_model(quantized, out_xml, compress_to_fp16=False)
print("nncf", nncf.__version__, "ok")
'''


def run(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(ROOT))
    with log.open("a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if rc != 0:
        raise RuntimeError(f"exit {rc}: {shlex.join(cmd)} (log: {log})")
    return time.perf_counter() - start


def edgeseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeseg", *args]


def isa() -> dict[str, Any]:
    from edgeseg.machine import cpu_model
    from edgeseg.quant.qdq_ov import cpu_flags

    flags = cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    return {"cpu": cpu_model(), "flags": [f for f in wanted if f in flags],
            "vnni": "avx512_vnni" in flags or "avx_vnni" in flags, "amx": "amx_tile" in flags}


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {}
    for name in ("onnxruntime", "openvino", "onnx", "torch", "numpy"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "absent"
    return found


# -- the calibration images, as edgeseg feeds them ---------------------------------------------------------------
def calibration_array(onnx_path: Path, calib_dir: Path, count: int) -> np.ndarray:
    from edgeseg.onnx_model import input_spec_of, load_onnx
    from edgeseg.quant.calib_data import CalibrationFeed

    spec = input_spec_of(load_onnx(onnx_path))
    feed = CalibrationFeed(calib_dir, spec, count=count, batch_size=1, seed=0)
    return np.concatenate([batch[spec.input_name] for batch in feed], axis=0).astype(np.float32)


def ort_quantize_static(fp32: Path, calib: np.ndarray, out: Path) -> Path:
    """ONNX Runtime's own PTQ: quantize_static, QDQ, per-channel weights, MinMax, on the same images."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: calib[i:i + 1]} for i in range(calib.shape[0])])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def nncf_quantize(python: str, fp32: Path, calib: np.ndarray, out_xml: Path, log: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "calib.npy"
        np.save(npy, calib)
        script = Path(tmp) / "nncf_ptq.py"
        script.write_text(NNCF_SCRIPT)
        run([python, str(script), str(fp32), str(npy), str(out_xml)], log)
    return out_xml


# -- runners: the settings of edgeseg's backends, denormals flushed (random weights) -------------------------------
def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def ov_request(path: Path, threads: int, hint: str) -> Any:
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint, "NUM_STREAMS": 1,
              "INFERENCE_NUM_THREADS": threads, "CPU_DENORMALS_OPTIMIZATION": True}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()

    def infer(x: np.ndarray) -> np.ndarray:
        request.get_input_tensor(0).data[...] = x
        request.infer()
        return request.get_output_tensor(0).data

    return infer


def ov_hints() -> list[str]:
    from edgeseg.runtime.openvino_backend import device_precisions

    return [p for p in device_precisions("CPU") if p != "fp32"]


def time_interleaved(runners: dict[str, Any], x: np.ndarray, repeats: int, warmup: int = 2) -> dict[str, float]:
    for infer in runners.values():
        for _ in range(warmup):
            infer(x)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, infer in runners.items():
            start = time.perf_counter()
            infer(x)
            samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: min(values) for name, values in samples.items()}


def timing_one(model: str, size: str, repeats: int, threads: int, calib_images: int, nncf_python: str | None,
               work: Path, log: Path) -> dict[str, Any]:
    folder = work / model
    folder.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    seconds["export"] = run(edgeseg("export", "--model", model, "--input-size", size, "--out", str(folder),
                                    "--val-images", "1"), log) if not (folder / "model.onnx").is_file() else 0.0
    calib_dir = work / f"calib_{size}"
    if not calib_dir.is_dir():
        h, w = size.split("x")
        run(edgeseg("data", "synth", "--out", str(calib_dir), "--num", str(calib_images), "--size", f"{h}x{w}",
                    "--seed", "2"), log)
    fp32 = folder / "model.onnx"
    if not (folder / "model.int8.onnx").is_file():
        seconds["calibrate"] = run(edgeseg("calibrate", "--onnx", str(fp32), "--calib", str(calib_dir / "images"),
                                           "--calib-images", str(calib_images)), log)
    calib = calibration_array(fp32, calib_dir / "images", calib_images)
    files = {"ort_fp32": ("ort", fp32), "ort_int8_ours": ("ort", folder / "model.int8.ort.onnx"),
             "ov_fp32": ("ov", fp32), "ov_qdq_ours": ("ov", folder / "model.int8.onnx")}
    if (folder / "model.int8.ov.onnx").is_file():  # OpenVINO's own Q/DQ file (7-bit weights without VNNI/AMX)
        files["ov_qdq_ours_ov"] = ("ov", folder / "model.int8.ov.onnx")
    notes = []
    qs = folder / "model.ort_quantize_static.onnx"
    try:
        if not qs.is_file():
            start = time.perf_counter()
            ort_quantize_static(fp32, calib, qs)
            seconds["ort_quantize_static"] = time.perf_counter() - start
        files["ort_quantize_static"] = ("ort", qs)
    except Exception as exc:  # recorded, not hidden
        notes.append(f"ORT quantize_static failed: {type(exc).__name__}: {str(exc)[:200]}")
    nncf_xml = folder / "model.nncf.xml"
    if nncf_python:
        try:
            if not nncf_xml.is_file():
                start = time.perf_counter()
                nncf_quantize(nncf_python, fp32, calib, nncf_xml, log)
                seconds["nncf_quantize"] = time.perf_counter() - start
            files["ov_nncf_int8"] = ("ov", nncf_xml)
        except Exception as exc:
            notes.append(f"NNCF quantize failed: {str(exc)[:200]}")
    else:
        notes.append("NNCF not run (no --nncf-python)")
    runners: dict[str, Any] = {}
    for name, (runtime, path) in files.items():
        runners[name] = ort_session(path, threads) if runtime == "ort" else ov_request(path, threads, "f32")
    for hint in ov_hints():
        ov_hint = {"bf16": "bf16", "fp16": "f16"}[hint]
        runners[f"ov_fp32_{hint}"] = ov_request(fp32, threads, ov_hint)
        runners[f"ov_qdq_ours_{hint}"] = ov_request(folder / "model.int8.onnx", threads, ov_hint)
    from edgeseg.onnx_model import input_spec_of, load_onnx

    spec = input_spec_of(load_onnx(fp32))
    x = np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)
    load_start = load()
    ms = time_interleaved(runners, x, repeats)
    load_end = load()
    base = ms["ort_fp32"]
    return {"model": model, "size": size, "threads": threads, "repeats": repeats, "min_ms": ms,
            "ratio_to_ort_fp32": {k: round(v / base, 3) for k, v in ms.items()}, "load_start": load_start,
            "load_end": load_end, "seconds": {k: round(v, 1) for k, v in seconds.items()}, "notes": notes,
            "calib_images": calib_images}


# -- the demo: accuracy of every candidate and of NNCF's PTQ ------------------------------------------------------
def demo(args: argparse.Namespace, work: Path, log: Path) -> dict[str, Any]:
    out = work / "demo"
    run(edgeseg("build", "--precision", "best", "--out", str(out), "--threads", str(args.threads)), log)
    selection = json.loads((out / "selection.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    rows = {name: {k: row.get(k) for k in ("backend", "file", "precision", "passed", "agreement",
                                           "miou_drop_points", "p50_ms", "failures")}
            for name, row in selection["candidates"].items()}
    from edgeseg.pipeline.validate import ValidationConfig, validate_candidate

    gates = ValidationConfig(min_agreement=manifest["validation"].get("min_agreement") or 0.99,
                             max_miou_drop=manifest["validation"].get("max_miou_drop") or 0.5, threads=args.threads)
    # the build's calibration frames: ./calib when the checkout has it (as the build says), else its synthetic set
    calib_dir = ROOT / "calib" if (ROOT / "calib").is_dir() else out / "calib_synth" / "images"
    calib = calibration_array(out / "model.onnx", calib_dir, int(args.demo_calib_images))
    peers = {}
    # TensorRT's Q/DQ file on OpenVINO (8-bit weights): the file the OpenVINO candidate ran before model.int8.ov.onnx
    peers["openvino on TensorRT's Q/DQ file"] = (out / "model.int8.onnx", "openvino")
    qs = ort_quantize_static(out / "model.onnx", calib, work / "demo_ort_quantize_static.onnx")
    peers["ort quantize_static"] = (qs, "onnxruntime")
    if args.nncf_python:
        xml = nncf_quantize(args.nncf_python, out / "model.onnx", calib, work / "demo_nncf.xml", log)
        peers["openvino NNCF quantize"] = (xml, "openvino")
    for name, (path, backend) in peers.items():
        result = validate_candidate(path, out / "reference.npz", config=gates, write=False, raise_on_failure=False,
                                    backend=backend)
        rows[name] = {"backend": backend, "file": path.name, "precision": "int8", "passed": result.passed,
                      "agreement": float(result.parity["agreement"]),
                      "miou_drop_points": (result.ground_truth or {}).get("miou_drop_points"),
                      "failures": list(result.gates["failures"]), "peer": path.parent != out}
    return {"model": manifest["model"], "input_size": manifest["input_spec"], "chosen": selection["chosen"],
            "kept": manifest["build"]["selection"], "verdict": manifest["validation"]["status"],
            "gates": [gates.min_agreement, gates.max_miou_drop], "candidates": rows,
            "reference_frames": "reference.npz of the build: the demo's held-out scenes (synthetic seed 3)",
            "calibration": f"the build's calibration frames ({_shown(calib_dir)}), {calib.shape[0]} images, the same "
                           "for the peers",
            "load": load()}


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# -- results ---------------------------------------------------------------------------------------------------------
def save(section: str, data: Any) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = json.loads(JSON_OUT.read_text()) if JSON_OUT.is_file() else {}
    results[section] = data
    results.pop("findings", None)  # written for the figures they describe: rerunning a section drops them
    results["machine"] = {**isa(), "versions": versions(), "python": platform.python_version(),
                          "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    JSON_OUT.write_text(json.dumps(results, indent=1) + "\n")
    MD_OUT.write_text(markdown(results))


def target_of(model: str) -> float | None:
    if "deeplabv3plus" in model and "sep" not in model:
        return TARGETS["deeplabv3plus"]
    if model.startswith("hrnet"):
        return TARGETS["hrnet"]
    if model == "shufflenetv2_x0_5_mdspp":
        return TARGETS["shufflenetv2_x0_5_mdspp"]
    if ("dspp" in model or "mdspp" in model) and "x0_5" not in model:
        return TARGETS["x1_0+ speed decoders"]
    return None


COLUMNS = ("ort_int8_ours", "ort_quantize_static", "ov_fp32", "ov_qdq_ours", "ov_qdq_ours_ov", "ov_nncf_int8",
           "ov_fp32_bf16",
           "ov_qdq_ours_bf16", "ov_fp32_fp16", "ov_qdq_ours_fp16")


def markdown(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    lines = ["# OpenVINO vs ONNX Runtime on the CPU (issue #26)", "",
             f"Generated by `benchmarks/openvino_peers.py` ({machine.get('updated', '')}). CPU: {machine.get('cpu')}; "
             f"ISA flags: {', '.join(machine.get('flags', [])) or 'none of interest'} "
             f"(VNNI: {'yes' if machine.get('vnni') else 'no'}, AMX: {'yes' if machine.get('amx') else 'no'}); "
             f"versions: {', '.join(f'{k} {v}' for k, v in machine.get('versions', {}).items())}.", ""]
    # the issue's size (512x1024) first, then smaller runs
    sections = [(k, v) for k, v in results.items() if k.startswith("timing")]
    for key, section in sorted(sections, key=lambda kv: -int(kv[0].split("_")[-1].split("x")[0])
                               if kv[0].split("_")[-1].split("x")[0].isdigit() else 0):
        rows = section["rows"]
        lines += [f"## Latency, random weights ({key})", "",
                  f"{section['how']}", "",
                  "Ratios to ONNX Runtime FP32 of the same interleaved run (below 1: faster); `-`: not run (not "
                  "available on this CPU, or it failed: see notes). `best` is what `--precision best` would keep "
                  "among the candidates edgeseg builds (ORT FP32/INT8, OV FP32/Q-DQ INT8 and bf16/fp16 where the "
                  "CPU has them) if every one passed the gates (random weights: accuracy is not measured here); "
                  "target: issue #26's ratio for the model (set for a CPU with AMX).", "",
                  "| model | ORT FP32 ms | " + " | ".join(COLUMNS) + " | best | target | met |",
                  "|---" * (len(COLUMNS) + 5) + "|"]
        for row in rows:
            ratios = row["ratio_to_ort_fp32"]
            # OpenVINO's INT8 candidate: its own file (model.int8.ov.onnx) where the run had it, else TensorRT's
            ov_int8 = "ov_qdq_ours_ov" if "ov_qdq_ours_ov" in ratios else "ov_qdq_ours"
            ours = {k: v for k, v in ratios.items() if k in ("ort_fp32", "ort_int8_ours", "ov_fp32", ov_int8)
                    or (k.startswith("ov_") and k.endswith(("_bf16", "_fp16")))}
            best = min(ours, key=lambda k: ours[k])
            target = target_of(row["model"])
            met = "-" if target is None else ("yes" if (ours[best] <= target if target < 1 else ours[best] < target)
                                              else "no")
            lines.append(f"| {row['model']} | {row['min_ms']['ort_fp32']:.1f} | "
                         + " | ".join(f"{ratios[c]:.2f}" if c in ratios else "-" for c in COLUMNS)
                         + f" | {best} {ours[best]:.2f} | {target if target is not None else '-'} | {met} |")
        lines += [""] + [f"- {row['model']}: load {row['load_start']} -> {row['load_end']}; "
                         + "; ".join(row["notes"]) for row in rows] + [""]
    findings = results.get("findings") or []
    if findings:
        lines += ["## Findings on this CPU", ""] + [f"- {text}" for text in findings] + [""]
    if "demo" in results:
        d = results["demo"]
        lines += ["## Accuracy on the demo (trained model)", "",
                  f"{d['model']} at {d['input_size'].get('height')}x{d['input_size'].get('width')}; gates: agreement "
                  f">= {d['gates'][0]}, mIoU drop <= {d['gates'][1]} points; frames: {d['reference_frames']}; "
                  f"calibration: {d['calibration']}. `--precision best` kept **{d['chosen']}** (verdict "
                  f"{d['verdict']}).", "",
                  "| candidate | runtime | file | precision | agreement % | mIoU drop (points) | p50 ms (build) "
                  "| gates |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, row in d["candidates"].items():
            drop = row.get("miou_drop_points")
            agreement = row.get("agreement")
            p50 = row.get("p50_ms")
            lines.append(f"| {name}{' (peer)' if row.get('peer') else ''} | {row['backend']} | {row['file']} | "
                         f"{row['precision']} | {'-' if agreement is None else f'{agreement * 100:.2f}'} | "
                         f"{'-' if drop is None else f'{drop:.2f}'} | {'-' if p50 is None else p50} | "
                         f"{'passed' if row['passed'] else 'failed'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["timing", "demo", "report"])
    parser.add_argument("--models", default=",".join(ISSUE_MODELS), help="comma-separated, or 'all'")
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--demo-calib-images", type=int, default=64)
    parser.add_argument("--nncf-python", default=None, help="a Python with nncf (kept out of edgeseg's deps)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edgeseg_openvino_peers")
    parser.add_argument("--section", default=None, help="json section name (default: timing_<size>)")
    parser.add_argument("--findings", type=Path, default=None, help="report: a text file of findings to record")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "log.txt"
    if args.what == "report":
        results = json.loads(JSON_OUT.read_text())
        if args.findings is not None:  # one finding per line, written by whoever read the figures
            results["findings"] = [line.strip() for line in args.findings.read_text().splitlines() if line.strip()]
            JSON_OUT.write_text(json.dumps(results, indent=1) + "\n")
        MD_OUT.write_text(markdown(results))
        return
    if args.what == "demo":
        save("demo", demo(args, args.work, log))
        print(MD_OUT.read_text())
        return
    if args.models == "all":
        from edgeseg.models.registry import list_models

        models = list(list_models())
    else:
        models = [m for m in args.models.split(",") if m]
    section = args.section or f"timing_{args.size}"
    rows = []
    for model in models:
        print(f"{model} ...", flush=True)
        rows.append(timing_one(model, args.size, args.repeats, args.threads, args.calib_images, args.nncf_python,
                               args.work, log))
        save(section, {"rows": rows, "how": (
            f"{args.size}, {args.threads} threads, random weights, one interleaved run per model, min of "
            f"{args.repeats} repeats per runner (after 2 warm-ups), denormals flushed to zero in both runtimes; "
            f"calibration: {args.calib_images} synthetic scenes (seed 2) for every INT8 file")})
    print(MD_OUT.read_text())


if __name__ == "__main__":
    main()
