"""Where a model's INT8 error comes from: weights vs activations, the range of every tensor, the Q/DQ placement.

    python benchmarks/int8_accuracy.py ... --work WORK      # exports model.onnx, calibrates WORK/<method>/
    python benchmarks/int8_error_budget.py --work WORK --test TEST --label NAME

Every variant is the TensorRT Q/DQ model (``quant.qdq_trt.quantize_for_tensorrt``) from WORK/<method>/ranges.json
with one thing changed, run by ONNX Runtime on the CPU (a simulation, as in int8_accuracy.md) and compared with the
float model.onnx (which matches PyTorch to ~1e-5) on the same test frames ``edgeseg validate`` scores:

- weights only / activations only: the activation Q/DQ pairs removed, or the float weights put back;
- every activation range scaled by a factor (is the calibrator's clip too tight or too loose overall?);
- the ranges of each calibration method found in WORK;
- placement: residual-Add inputs in float, the first conv and the classifier in float.

Per variant: argmax agreement, RMS logit error, and the share of flipped pixels whose float top-1/top-2 logit gap
was below 0.3 (flips of near-ties say the model's margins, not the quantizer, set the limit). Each --label is one
section of benchmarks/results/int8_error_budget.json; the markdown is regenerated from it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "int8_error_budget.md"
NEAR_TIE = 0.3  # float top-1/top-2 logit gap under which a flip counts as a near-tie
SCALES = (0.7, 0.85, 1.2, 1.5)


def strip_activation_qdq(model: Any, only: Any = None) -> Any:
    """A copy of ``model`` without the activation Q/DQ pairs (those whose DQ feeds only ``only`` ops, if given)."""
    import onnx

    out = onnx.ModelProto.FromString(model.SerializeToString())
    graph = out.graph
    inits = {i.name for i in graph.initializer}
    users: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node.op_type)
    quantize = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    rename: dict[str, str] = {}
    nodes = list(graph.node)
    for node in nodes:
        q = quantize.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if q is None or (only is not None and not all(op in only for op in users.get(node.output[0], []))):
            continue
        rename[node.output[0]] = q.input[0]
    kept = [n for n in nodes if not (n.op_type == "DequantizeLinear" and n.output[0] in rename)]
    for node in kept:
        node.input[:] = [rename.get(name, name) for name in node.input]
    live = {name for n in kept for name in n.input}
    kept = [n for n in kept if n.op_type != "QuantizeLinear" or n.output[0] not in quantize or n.output[0] in live]
    copies = [type(n)() for n in kept]
    for copy, node in zip(copies, kept, strict=True):
        copy.CopyFrom(node)  # the originals are cleared from the graph below
    del graph.node[:]
    graph.node.extend(copies)
    return out


def float_weights(model: Any, float_model: Any) -> Any:
    """A copy of ``model`` whose weight DequantizeLinear outputs are replaced by the float model's weights."""
    import onnx

    from edgeseg.quant.qdq_trt import DEQUANTIZED

    out = onnx.ModelProto.FromString(model.SerializeToString())
    originals = {i.name: i for i in float_model.graph.initializer}
    inits = {i.name for i in out.graph.initializer}
    restored = set()
    for node in out.graph.node:
        for i, name in enumerate(node.input):
            source = name[: -len(DEQUANTIZED)] if name.endswith(DEQUANTIZED) else None
            if source in originals and source not in inits:  # a weight: activations' sources are not initializers
                node.input[i] = source
                restored.add(source)
    out.graph.initializer.extend(originals[name] for name in sorted(restored))
    return out


class Scorer:
    """Runs candidates over the test frames and compares their logits with the float model's."""

    def __init__(self, float_path: Path, test: Path, max_images: int | None, threads: int) -> None:
        from edgeseg.onnx_model import input_spec_of, load_onnx
        from edgeseg.pipeline.validation_data import data_samples
        from edgeseg.spec import preprocess

        self.float_model = load_onnx(float_path)
        self.threads = threads
        spec = input_spec_of(self.float_model)
        num_classes = int(self.float_model.graph.output[0].type.tensor_type.shape.dim[1].dim_value)
        samples = data_samples(test, max_images, num_classes)
        self.inputs = [preprocess(frame, spec) for _stem, frame, _truth in samples.items]
        self.reference = self.logits(self.float_model)
        top = np.sort(self.reference, axis=1)
        self.gap = top[:, -1] - top[:, -2]
        self.labels = self.reference.argmax(1)

    def logits(self, model: Any) -> np.ndarray:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3  # unused-initializer warnings of the stripped variants
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: x})[0] for x in self.inputs])

    def score(self, model: Any) -> dict[str, float]:
        logits = self.logits(model)
        flipped = logits.argmax(1) != self.labels
        flips = int(np.count_nonzero(flipped))
        return {"agreement": float(1.0 - flipped.mean()),
                "rms_logit_error": float(np.sqrt(np.mean((logits - self.reference) ** 2))),
                "near_tie_flips": float(np.count_nonzero(flipped & (self.gap < NEAR_TIE)) / flips) if flips else 0.0}


def scaled(ranges: Any, factor: float) -> Any:
    from dataclasses import replace

    from edgeseg.quant.ranges import TensorRange

    return replace(ranges, tensors={k: TensorRange(v.min * factor, v.max * factor, v.amax * factor)
                                    for k, v in ranges.tensors.items()})


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from edgeseg.quant.qdq_trt import CLASSIFIER, FIRST_CONV, quantize_for_tensorrt
    from edgeseg.quant.ranges import load_ranges

    work = args.work.resolve()
    started, load_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    scorer = Scorer(work / "model.onnx", args.test, args.max_images, args.threads)
    methods = [p.parent.name for p in sorted(work.glob("*/ranges.json"))]
    if args.method not in methods:
        raise SystemExit(f"no {work}/{args.method}/ranges.json (found: {', '.join(methods) or 'none'})")
    ranges = load_ranges(work / args.method / "ranges.json")
    full = quantize_for_tensorrt(scorer.float_model, ranges)
    variants: list[tuple[str, Any]] = [
        (f"all INT8 ({args.method} ranges)", full),
        ("weights INT8, activations float", strip_activation_qdq(full)),
        ("activations INT8, weights float", float_weights(full, scorer.float_model)),
    ]
    variants += [(f"activation ranges x{f:g}", quantize_for_tensorrt(scorer.float_model, scaled(ranges, f)))
                 for f in SCALES]
    variants += [(f"{m} ranges", quantize_for_tensorrt(scorer.float_model, load_ranges(work / m / "ranges.json")))
                 for m in methods if m != args.method]
    variants += [("residual-Add inputs float", strip_activation_qdq(full, only={"Add"})),
                 ("first conv + classifier float",
                  quantize_for_tensorrt(scorer.float_model, ranges, keep_fp_layers=[FIRST_CONV, CLASSIFIER]))]
    rows = []
    for name, model in variants:
        print(f"scoring: {name}", flush=True)
        rows.append({"variant": name, **scorer.score(model)})
    gaps = {f"{t:g}": float(np.mean(scorer.gap < t)) for t in (0.1, NEAR_TIE, 0.5)}
    return {"label": args.label, "work": str(work), "test": str(args.test), "frames": len(scorer.inputs),
            "method": args.method, "rows": rows, "float_gaps_below": gaps,
            "conditions": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "threads": args.threads, "loadavg_start": load_start,
                           "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                           "seconds": round(time.perf_counter() - started, 1)},
            "command": "python benchmarks/int8_error_budget.py " + " ".join(args.argv)}


def markdown(report: dict[str, Any]) -> str:
    out = ["# INT8 error budget: where the Q/DQ model's disagreement with the float model comes from", "",
           "Written by benchmarks/int8_error_budget.py from int8_error_budget.json. Each variant changes one thing "
           "in the TensorRT Q/DQ model (ONNX Runtime simulation on the CPU) and is compared with the float model.onnx "
           f"on the same test frames; a near-tie flip is a flipped pixel whose float top-1/top-2 gap was < {NEAR_TIE}.",
           ""]
    for label, sec in sorted(report.items()):
        c = sec["conditions"]
        gaps = ", ".join(f"{v * 100:.2f} % below {k}" for k, v in sec["float_gaps_below"].items())
        out += [f"## {label}", "", f"Work folder `{sec['work']}`; {sec['frames']} frames of `{sec['test']}`. "
                f"Float top-1/top-2 logit gaps: {gaps}.", "",
                "| variant | agreement % | RMS logit error | near-tie flips % |", "|---|---|---|---|"]
        out += [f"| {r['variant']} | {r['agreement'] * 100:.2f} | {r['rms_logit_error']:.3f} | "
                f"{r['near_tie_flips'] * 100:.1f} |" for r in sec["rows"]]
        out += ["", f"Conditions: {c['date']}, {c['threads']} ORT thread(s), load average {c['loadavg_start']} -> "
                f"{c['loadavg_end']}, {c['seconds']} s.", "", "    " + sec["command"], ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="int8_accuracy.py work folder (model.onnx, <method>/ranges.json)")
    parser.add_argument("--test", type=Path, help="labelled test scenes (as int8_accuracy.py --test)")
    parser.add_argument("--method", default="percentile", help="the ranges the variants start from [percentile]")
    parser.add_argument("--label", help="section name in the results")
    parser.add_argument("--max-images", type=int, default=64, help="test frames scored [64]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown from the json")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    store = args.out.with_suffix(".json")
    report = json.loads(store.read_text()) if store.is_file() else {}
    if not args.render:
        if not (args.work and args.test and args.label):
            parser.error("--work, --test and --label are needed (or --render)")
        report[args.label] = measure(args)
        store.write_text(json.dumps(report, indent=1) + "\n")
    args.out.write_text(markdown(report))
    print(f"wrote {args.out} and {store}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
