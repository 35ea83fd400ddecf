"""``edgeseg build``: the one-command pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..manifest import ValidationVerdict
from ..pipeline.options import DEFAULT_MAX_MIOU_DROP, DEFAULT_MIN_AGREEMENT
from ..quant.fallback import DEFAULT_CAP, FALLBACK_MODES
from ..quant.fp16_regions import DEFAULT_HIGH_PRECISION, HIGH_PRECISIONS
from ..quant.qdq_trt import CONCAT_SCALES
from ..quant.ranges import DEFAULT_METHOD
from ._common import (
    POSITIVE,
    echo_step,
    progress_callback,
    quote,
    resolve_calib,
    summary_table,
)
from .backend_option import backend_option
from .option_groups import (
    CALIB_FOLDER_HELP,
    VAL_DATA_HELP,
    calib_options,
    gate_options,
    input_size_option,
    model_options,
    out_option,
    threads_option,
    val_data_options,
)

TITLES = {"passed": "build passed", "failed": "build FAILED (an accuracy gate)",
          "not_run": "build NOT VALIDATED (no reference to check against)"}


@click.command("build")
@model_options(model_help="Registered model name (default: the demo model).",
               weights_help="Checkpoint or state dict (default: the shipped demo checkpoint).", weights_exist=True)
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Start from an exported model.onnx (or a Q/DQ model.int8.onnx): no torch needed.")
@input_size_option()
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "best"]), default=None,
              help="Engine precision (default int8). best: TensorRT picks per layer among INT8/FP16; on the CPU "
                   "the fastest of FP32 and INT8 that passes the gates is kept (selection.json says why).")
@click.option("--int8", "int8_flag", is_flag=True, help="Same as --precision int8.")
@calib_options(calib_help=f"{CALIB_FOLDER_HELP} [default: ./calib, else synthetic scenes].",
               method_help=f"Activation range method [default: {DEFAULT_METHOD}; the demo model uses the method its "
                           "demo_model.json records].")
@click.option("--concat-scales", type=click.Choice(CONCAT_SCALES), default="separate", show_default=True,
              help="Q/DQ for TensorRT: every tensor keeps its own scale, or Concat groups share a pooled one.")
@click.option("--high-precision", type=click.Choice(HIGH_PRECISIONS), default=DEFAULT_HIGH_PRECISION,
              show_default=True,
              help="INT8 on TensorRT: the precision of the layers outside Q/DQ pairs. fp16: model.int8.onnx carries "
                   "float16 regions for TensorRT >= 10 (FP32 kept where a range overflows FP16) and the builder sets "
                   "FP16 beside INT8 where it takes precision flags (8.x); fp32: float32 everywhere.")
@click.option("--fallback", type=click.Choice(FALLBACK_MODES), default="off", show_default=True,
              help="auto: when a gate fails, keep the layers that cost the most accuracy in float (FP16 on TensorRT, "
                   "FP32 on the CPU), one at a time, until the gates pass.")
@click.option("--fallback-cap", type=POSITIVE, default=DEFAULT_CAP, show_default=True,
              help="Most layers --fallback auto may keep in float before the build fails.")
@click.option("--sensitivity", is_flag=True,
              help="Rank the quantized layers (each alone in float) into sensitivity.md even without a fallback.")
@val_data_options(data_help=f"Labelled data: {VAL_DATA_HELP} (a folder is used whole, a public dataset's val split "
                            "unless :split is given): reference frames and mIoU against ground truth [default: the "
                            "demo's held-out scenes, else calibration frames without ground truth].",
                  data_aliases=("--val",),
                  images_help="Frames kept in reference.npz [default: up to 32, fewer at large input sizes].")
@backend_option(builds=True, help="The runtime the build targets and validates on (auto: TensorRT on a GPU, else "
                                   "ONNX Runtime; with --precision best, every CPU runtime installed here).")
@out_option(help="Build folder (default engines/<model>-<precision>).")
@gate_options()
@threads_option()
@click.option("--force", is_flag=True, help="Redo every step even when its inputs are unchanged.")
def build_cmd(model_name: str | None, weights: Path | None, onnx: Path | None, input_size: tuple[int, int] | None,
              precision: str | None, int8_flag: bool, calib: Path | str | None, topic: str | None, calib_images: int,
              calib_method: str | None,
              concat_scales: str, high_precision: str, fallback: str, fallback_cap: int, sensitivity: bool, val: Any,
              val_images: int | None, backend: str, out: Path | None,
              min_agreement: float, max_miou_drop: float, threads: int | None, force: bool) -> None:
    """Export, calibrate, build and validate an INT8 engine in one command.

    With no options it builds the shipped demo model with the calibration images in ./calib
    (TensorRT where installed, else the ONNX Runtime INT8 model) and checks it against PyTorch.
    """
    from ..errors import UsageError
    from ..pipeline.build import BuildOptions, build_failure, run_build

    if int8_flag and precision not in (None, "int8"):
        raise UsageError("--int8 conflicts with --precision " + str(precision), fix="pass only one of them")
    options = BuildOptions(model=model_name, weights=weights, onnx=onnx, input_size=input_size,
                           precision=precision or "int8", calib=resolve_calib(calib, topic) if calib or topic else None,
                           calib_images=calib_images,
                           calib_method=calib_method, concat_scales=concat_scales, high_precision=high_precision,
                           fallback=fallback,
                           fallback_cap=fallback_cap, sensitivity=sensitivity, val=val, val_images=val_images,
                           backend=backend, out=out,
                           min_agreement=min_agreement, max_miou_drop=max_miou_drop, force=force, threads=threads)
    result = run_build(options, log=echo_step, progress=progress_callback)
    m, acc = result.manifest, result.manifest.accuracy
    runners = result.manifest.latency.runners if result.manifest.latency else {}
    rows = [("model", f"{m.model} ({m.num_classes} classes) {m.input_spec.height}x{m.input_spec.width}"),
            ("precision / backend", f"{m.precision} / {result.backend}"),
            ("candidate", str(result.candidate))]
    if result.calib_opened:  # what an explicit --calib opened
        rows.append(("calibration", result.calib_opened))
    qat = m.calibration.qat if m.calibration is not None else None
    if qat is not None:  # reference.npz is the QAT model's verdict: say so wherever "PyTorch" would stand
        rows.append(("QAT", f"from {qat.checkpoint}: no calibration; the reference is the QAT model (val mIoU "
                            f"float {qat.float_miou:.4f}, PTQ {qat.ptq_miou:.4f}, QAT {qat.qat_miou:.4f})"))
    versus = "the QAT model" if qat is not None else "PyTorch"
    if acc:
        nan = float("nan")
        rows.append((f"agreement vs {versus}", f"{acc.agreement if acc.agreement is not None else nan:.4f}"))
        rows.append((f"mIoU vs {versus} preds",
                     f"{acc.miou_vs_reference if acc.miou_vs_reference is not None else nan:.4f}"))
        for key in ("miou_reference", "miou_candidate", "miou_drop_points"):
            if key in acc.ground_truth:
                rows.append(("ground truth " + key.replace("_", " "), f"{acc.ground_truth[key]:.4f}"))
    selection = (m.build or {}).get("selection")
    if selection:
        rows.append(("best", f"kept {selection.get('chosen')}: {selection.get('why')}"))
    found = m.calibration.fallback if m.calibration is not None else None
    if found:
        kept = found.kept
        rows.append(("fallback", f"{len(kept)} layer(s) in {found.precision_of_kept}: {', '.join(kept)}"
                     if kept else ("none needed" if found.passed else
                                   f"gates still missed with {found.cap} layer(s) in float")))
    for name, stats in runners.items():
        rows.append((f"latency {name}", f"p50 {stats.p50_ms:.1f} ms  p99 {stats.p99_ms:.1f} ms"))
    rows.append(("steps", ", ".join(f"{k}{' (cached)' if v else ''}" for k, v in result.steps.items())))
    # e.g. INT8 slower than FP32 here, noisy figures
    for note in result.bench.notes() if result.bench is not None else []:
        rows.append(("latency note", note))
    verdict = result.manifest.validation or ValidationVerdict()
    if not result.passed:
        rows.append(("verdict", "; ".join(verdict.failures or [verdict.why])))
    rows.append(("written", ", ".join(p.name for p in result.written) or "nothing (every step was cached)"))
    folder = quote(result.out)
    if result.passed:
        next_commands = [f"edgeseg run --artifacts {folder} --source {quote(_example_source(options, result.out))} "
                         f"--save {quote(result.out / 'overlays')}", f"edgeseg bench --artifacts {folder}"]
        slower = _int8_slower(result)
        if slower and qat is None:  # INT8 does not pay off here: the build that keeps the faster file that passes
            rows.append(("INT8 slower", f"{slower}: --precision best keeps the fastest file that passes (next)"))
            next_commands.insert(0, _rebuild_command(options, result.out, "best"))
    else:  # the robot refuses this folder (unless --allow-unvalidated): say what fixes it, not how to run it
        next_commands = [f"less {quote(result.out / 'report.md')}"]
    summary_table(f"{TITLES[result.status]}: {result.out}", rows, next_commands)
    failure = build_failure(result)
    if failure is not None:
        raise failure


def _int8_slower(result: Any) -> str:
    """"ort-int8 p50 15.9 ms vs ort-fp32 13.2 ms" when the kept CPU INT8 model is slower than FP32 here, else ""."""
    if result.backend != "onnxruntime" or result.manifest.precision != "int8" or result.quantized_input:
        return ""  # (a quantized --onnx has no float model here to choose instead)
    runners = {r.precision: r for r in (result.bench.runners if result.bench is not None else [])
               if r.backend == "onnxruntime"}
    int8, fp32 = runners.get("int8"), runners.get("fp32")
    if not int8 or not fp32 or int8.p50_ms <= fp32.p50_ms:
        return ""
    return f"{int8.name} p50 {int8.p50_ms:.1f} ms vs {fp32.name} {fp32.p50_ms:.1f} ms on this machine"


def _rebuild_command(options: Any, out: Path, precision: str) -> str:
    """This build again into the same folder (its cached steps reused) with another --precision."""
    words = ["edgeseg", "build"]
    if options.onnx is not None:
        words += ["--onnx", str(options.onnx)]
    elif not options.demo:
        words += (["--model", options.model] if options.model else []) + \
                 (["--weights", str(options.weights)] if options.weights else [])
        if options.input_size:
            words += ["--input-size", f"{options.input_size[0]}x{options.input_size[1]}"]
    if options.calib is not None:
        calib = options.calib
        words += ["--calib", f"bag:{calib.path}" if hasattr(calib, "topic") else str(calib)]
        if getattr(calib, "topic", None):
            words += ["--topic", calib.topic]
    if options.calib_images != 100:
        words += ["--calib-images", str(options.calib_images)]
    if options.calib_method and not options.demo:  # the demo's recorded method is found again
        words += ["--calib-method", options.calib_method]
    if options.val is not None:
        words += ["--val-data", str(options.val)]
    for option, value, default in (("--min-agreement", options.min_agreement, DEFAULT_MIN_AGREEMENT),
                                   ("--max-miou-drop", options.max_miou_drop, DEFAULT_MAX_MIOU_DROP)):
        if value != default:
            words += [option, str(value)]
    words += ["--precision", precision, "--out", str(out)]
    return " ".join(quote(w) for w in words)


def _example_source(options: object, out: Path) -> str:
    """A folder of frames that exists, so the "next:" run command runs as printed."""
    val = getattr(options, "val", None)
    candidates = [_val_images(val) if val else None, getattr(options, "calib", None), Path("calib"),
                  out / "calib_synth" / "images"]
    for folder in candidates:
        if isinstance(folder, Path) and folder.is_dir():  # a --calib bag:PATH is no folder of frames
            return str(folder)
    return "IMAGES_OR_VIDEO"


def _val_images(val: Any) -> Path | None:
    """The folder holding the --val images (a public dataset's: the first image's folder)."""
    from ..data.datasets import as_dataset_spec, dataset_image_paths
    from ..errors import InputError

    spec = as_dataset_spec(val)
    if spec.is_folder:
        return spec.root / "images"
    try:
        images = dataset_image_paths(spec, "val")
    except InputError:
        return None
    return images[0].parent if images else None
