"""report.json -> report.md (layer 4, stdlib only): one pure function, sections in a fixed order."""

from __future__ import annotations

from typing import Any


def _precision(report: dict[str, Any]) -> str:
    """The kept file's precision; after --precision best, what was chosen and why."""
    selection = report.get("selection") or {}
    if not selection:
        return str(report["precision"])
    return (f"{report['precision']} ({selection.get('chosen')}, kept by --precision best: {selection.get('why')}; "
            f"every candidate in {selection.get('details')})")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v, digits) for v in value)
    return str(value).replace("|", "\\|")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _key_values(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for key, value in sorted(data.items()):
        if isinstance(value, dict):
            value = f"{len(value)} entries (see report.json)"
        elif isinstance(value, list) and len(value) > 8:
            value = f"{len(value)} items (see report.json)"
        rows.append([key, value])
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    spec = report["input_spec"]
    out = [f"# edgeseg report: {report['model']}", "",
           f"Generated {report['generated']} by edgeseg {report['edgeseg_version']}.", ""]
    out += _verdict(report)
    out += ["## Model", ""]
    gpu = report.get("gpu") or {}
    out += _table(["", ""], [
        ["model", report["model"]],
        ["classes", f"{report['num_classes']}" + (f" ({', '.join(report['classes'])})" if report["classes"] else "")],
        ["input size (HxW)", f"{spec['height']}x{spec['width']}"],
        ["mean / std", f"{_fmt(spec['mean'])} / {_fmt(spec['std'])}"],
        ["channel order", spec["channel_order"]],
        ["precision", _precision(report)],
        ["backend", report["backend"]],
        ["TensorRT", report.get("tensorrt_version")],
        ["GPU", f"{gpu.get('name') or '-'} (compute capability {gpu.get('compute_capability') or '-'})"],
    ])
    out += ["## Artifacts", ""]
    out += _table(["role", "file", "size (bytes)", "sha256", "matches manifest"],
                  [[a["role"], a["file"] if a["exists"] else f"{a['file']} (missing)", a["size_bytes"],
                    (a["sha256"] or "-")[:16], a["matches_manifest"]] for a in report["artifacts"]])
    out += ["## Calibration", ""]
    calibration = {k: v for k, v in (report.get("calibration") or {}).items() if k not in ("fallback", "qat")}
    out += _table(["", ""], _key_values(calibration)) if calibration else \
        ["No calibration (not an INT8 build, or not recorded).", ""]
    out += _fallback((report.get("calibration") or {}).get("fallback"))
    out += _qat((report.get("calibration") or {}).get("qat"))
    if report.get("export"):
        out += ["## Export", ""] + _table(["", ""], _key_values(report["export"]))
    out += _accuracy(report)
    out += _legend(report)
    out += _latency(report)
    machine = report.get("machine") or {}
    out += ["## Machine", ""]
    libraries = machine.get("libraries") or {}
    machine_rows: list[list[Any]] = [
        ["CPU", machine.get("cpu")], ["cores (usable)", f"{machine.get('cores')} ({machine.get('usable_cores')})"],
        ["system", machine.get("system")], ["python", machine.get("python")],
    ]
    out += _table(["", ""], machine_rows + [[name, version or "not installed"]
                                            for name, version in sorted(libraries.items())])
    if report.get("notes"):
        out += ["## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
    return "\n".join(out).rstrip() + "\n"


def _fallback(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    kept = found.get("kept") or []
    lines = ["### INT8 fallback (--fallback auto)", ""]
    if kept:
        lines.append(f"{len(kept)} layer(s) kept in {found.get('precision_of_kept')} (no Q/DQ around them), in the "
                     "order sensitivity.md ranks them:")
        lines += [""] + [f"- `{name}`" for name in kept] + [""]
    elif found.get("passed"):
        lines += ["The all-INT8 candidate passed the gates: no layer kept in float.", ""]
    else:
        lines += [f"The gates were still missed with {found.get('cap')} layer(s) in float (--fallback-cap); "
                  f"next in line: {', '.join(f'`{n}`' for n in found.get('next_layers') or []) or '-'}. "
                  "The files hold the all-INT8 model.", ""]
    latency = {k: v for k, v in (found.get("latency_ms") or {}).items() if isinstance(v, (int, float))}
    if "all-int8" in latency and "with-fallback" in latency:
        lines += [f"Latency cost (p50, {latency.get('iterations')} interleaved runs): all-INT8 "
                  f"{latency['all-int8']:.2f} ms -> with the fallback {latency['with-fallback']:.2f} ms.", ""]
    lines += [f"Trials: {found.get('trials')} (fallback.json has each one's agreement and mIoU drop).", ""]
    return lines


def _qat(qat: dict[str, Any] | None) -> list[str]:
    """A QAT build: float, calibrated (PTQ) and QAT side by side, as the QAT run scored them."""
    if not qat:
        return []
    source = qat.get("float_checkpoint") or {}
    return ["### Quantization-aware training", "",
            f"Built from the QAT checkpoint `{qat.get('checkpoint')}` ({qat.get('epochs')} epochs from "
            f"`{source.get('path', '?')}`): no calibration ran, and reference.npz holds the QAT model's verdict, "
            "so the accuracy below is against the QAT model. Validation figures of the QAT run (model input size):",
            ""] + \
        _table(["model", "val mIoU (%)", "agreement with float (%)"],
               [["float", _pct(qat.get("float_miou")), "100.00"],
                ["INT8, calibrated (PTQ)", _pct(qat.get("ptq_miou")), _pct(qat.get("ptq_agreement"))],
                ["INT8, QAT", _pct(qat.get("qat_miou")), _pct(qat.get("qat_agreement"))]])


def _accuracy(report: dict[str, Any]) -> list[str]:
    out = ["## Accuracy against PyTorch", ""]
    acc = report.get("accuracy")
    if not acc or "parity" not in acc:
        return out + ["Not validated: run `edgeseg validate --candidate ... --reference .../reference.npz`.", ""]
    parity, gates = acc["parity"], acc.get("gates") or {}
    out += [f"Candidate `{acc['candidate']}` against {acc['reference_kind']} `{acc['reference']}`: "
            f"**{'passed' if gates.get('passed') else 'FAILED'}** the gates "
            f"(agreement >= {_fmt(gates.get('min_agreement'))}, mIoU drop <= {_fmt(gates.get('max_miou_drop'))} "
            f"points).", ""]
    out += _table(["metric", "value"], [
        ["images", parity["images"]], ["argmax pixel agreement (%)", _pct(parity["agreement"])],
        ["max abs logit error", parity["max_abs_error"]], ["mean abs logit error", parity["mean_abs_error"]],
        ["cosine similarity", f"{parity['cosine_similarity']:.6f}"],
        ["mIoU vs PyTorch predictions (%)", _pct(parity["miou_vs_reference"])],
        ["non-finite logits", parity["nonfinite_logits"]],
    ])
    for failure in gates.get("failures") or []:
        out += [f"- gate failed: {failure}"]
    for skipped in gates.get("skipped") or []:
        out += [f"- gate not applied: {skipped}"]
    truth = acc.get("ground_truth")
    if truth:
        out += ["", "Against ground truth:", ""]
        out += _table(["", "PyTorch", "candidate", "drop (points)"],
                      [["mIoU (%)", _pct(truth["miou_reference"]), _pct(truth["miou_candidate"]),
                        _fmt(truth["miou_drop_points"], 3)],
                       ["pixel accuracy (%)", _pct(truth["pixel_accuracy_reference"]),
                        _pct(truth["pixel_accuracy_candidate"]), "-"]])
    rows = acc.get("per_class") or []
    if rows:
        if rows[0].get("against") == "ground_truth":
            against, share = "ground truth", "of the labelled pixels"
        else:
            against, share = "PyTorch's predictions", "of PyTorch's predicted pixels"
        out += ["", f"Per class (IoU in %, against {against}; pixel share {share}):", ""]
        out += _table(["class", "IoU PyTorch", "IoU candidate", "delta (points)", "pixel share (%)"],
                      [[r["class"], _pct(r["iou_reference"]), _pct(r["iou_candidate"]), _fmt(r["delta_points"], 3),
                        _pct(r["pixel_share"])] for r in rows])
    if "iou" in report.get("plots", {}):
        out += [f"![Per-class IoU]({report['plots']['iou']})", ""]
    for note in acc.get("notes") or []:
        out += [f"- {note}"]
    if report.get("overlays"):
        colour = report.get("disagreement_colour") or {"name": "cyan", "colour": "#00ffff"}
        out += ["", f"Images with the lowest agreement (dimmed frame with disagreeing pixels in {colour['name']} "
                    f"{colour['colour']} | PyTorch | candidate; class colours below):", ""]
        out += [f"![{path}]({path})" for path in report["overlays"]]
    if report.get("overlays_elsewhere"):
        out += ["", "Disagreement overlays (outside this folder): "
                + ", ".join(f"`{p}`" for p in report["overlays_elsewhere"])]
    return out + [""]


def _latency(report: dict[str, Any]) -> list[str]:
    out = ["## Latency", ""]
    lat = report.get("latency")
    if not lat or not lat.get("runners"):
        return out + ["Not measured: run `edgeseg bench --artifacts <this folder>`.", ""]
    out += [f"{lat.get('iterations')} iterations after {lat.get('warmup')} warm-up, {lat.get('threads')} threads, "
            f"{lat.get('order')}, input {'x'.join(str(d) for d in lat.get('input_shape') or [])}.", ""]
    ratios = lat.get("ratios") or {}
    out += ["Latency per frame in ms (p50/p90/p99: median/90th/99th percentile). The latency ratio is this "
            "runner's p50 divided by the baseline's p50: below 1 is faster than the baseline.", ""]
    out += _table(["runner", "p50 ms", "p90 ms", "p99 ms", "mean ms", "frames/s", "latency ratio vs PyTorch eager",
                   "latency ratio vs ORT FP32"],
                  [[r["name"], f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['mean_ms']:.2f}",
                    f"{r['throughput_fps']:.1f}", _ratio(ratios, r["name"], "vs_pytorch-fp32"),
                    _ratio(ratios, r["name"], "vs_ort-fp32")] for r in lat["runners"]])
    for skip in lat.get("skipped") or []:
        out += [f"- {skip['name']} skipped: {skip['reason']}"]
    load = lat.get("load_average") or {}
    if load.get("start") is not None:
        out += [f"- load average {load['start']:.2f} at the start, {_fmt(load.get('end'), 3)} at the end "
                f"({load.get('usable_cores')} usable cores)"]
    for note in lat.get("notes") or []:
        out += [f"- **{note}**" if "NOISY" in note or "SLOWER" in note else f"- {note}"]  # warnings stand out
    src = lat.get("source_latency")
    if src:  # bench --source
        out += ["", f"Capture-to-mask on `{src['source']['text']}` ({src['backend']}, {src['frames']} frames, "
                    f"clock `{src['clock']}`: {src.get('meaning', '')}):", ""]
        out += _table(["p50 ms", "p90 ms", "p99 ms", "jitter ms (p99-p50)", "FPS", "dropped", "dropped if live"],
                      [[src["p50_ms"], src["p90_ms"], src["p99_ms"], src["jitter_ms"], src.get("fps"),
                        src.get("dropped"), src.get("dropped_if_live")]])
    if "latency" in report.get("plots", {}):
        out += ["", f"![Latency per backend]({report['plots']['latency']})"]
    return out + [""]


def _verdict(report: dict[str, Any]) -> list[str]:
    """The build's promise first: what the robot will (or will not) load, and why."""
    verdict = report.get("validation") or {}
    status = verdict.get("status")
    if status is None:
        return []
    candidate = verdict.get("candidate_file") or verdict.get("candidate") or "-"
    if status == "passed":
        line = f"**Build passed**: `{candidate}` segments like the PyTorch model within the gates below."
    elif status == "failed":
        line = (f"**Build FAILED its accuracy gates** on `{candidate}`: "
                + "; ".join(verdict.get("failures") or []) + ". `edgeseg run` and `Segmenter` refuse this folder "
                "unless given `--allow-unvalidated`.")
    else:
        line = (f"**Build NOT VALIDATED**: {verdict.get('why', 'no reference')}. `edgeseg run` and `Segmenter` "
                "refuse this folder unless given `--allow-unvalidated`.")
    return [line, ""]


def _legend(report: dict[str, Any]) -> list[str]:
    legend = report.get("legend") or []
    if not legend:
        return []
    out = ["## Class colours", "", "The same colours in validation overlays, `edgeseg run` overlays and "
           "classes.json.", ""]
    colour = report.get("disagreement_colour")
    rows = [[e["index"], e["class"], e["colour"]] for e in legend]
    if colour:
        rows.append(["-", "disagreement (validation overlays)", colour["colour"]])
    out += _table(["index", "class", "colour"], rows)
    if "legend" in report.get("plots", {}):
        out += [f"![Class colours]({report['plots']['legend']})", ""]
    return out


def _ratio(ratios: dict[str, Any], name: str, key: str) -> str:
    value = (ratios.get(name) or {}).get(key)
    return "-" if value is None else f"{value:.2f}x"
