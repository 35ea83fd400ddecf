"""``edgeseg calibrate``: ranges, Q/DQ ONNX for TensorRT, CPU INT8 ONNX and TensorRT's cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..quant.fp16_regions import DEFAULT_HIGH_PRECISION, HIGH_PRECISIONS
from ..quant.qdq_trt import CONCAT_SCALES
from ..quant.ranges import DEFAULT_METHOD, DEFAULT_PERCENTILE
from ..quant.sensitivity import SENSITIVITY_FRAMES
from ._common import (
    POSITIVE,
    progress_callback,
    quote,
    resolve_calib,
    summary_table,
)
from .option_groups import CALIB_FOLDER_HELP, calib_options


@click.command("calibrate")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(path_type=Path),
              help="model.onnx written by edgeseg export.")
@calib_options(calib_help=f"{CALIB_FOLDER_HELP}.", calib_dest="calib_dir", required=True,
               images_help="Number of images sampled (seeded) from the folder, or frames from the bag.",
               method_dest="method", method_default=DEFAULT_METHOD, method_aliases=("--method",),
               method_help="How activation ranges are chosen: percentile of |x|, entropy (TensorRT's KL), or min/max.")
@click.option("--batch-size", type=POSITIVE, default=1, show_default=True,
              help="Images per calibration batch (must match the model's static batch).")
@click.option("--percentile", type=click.FloatRange(min=0, max=100, min_open=True), default=DEFAULT_PERCENTILE,
              show_default=True, help="Percentile for --calib-method percentile.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the image sampling.")
@click.option("--trt-version", default="10.3.0", show_default=True,
              help="TensorRT the files are for: calibration.cache's header (8.5 - 10.x), and model.int8.onnx's "
                   "float regions (8.x: float32, the builder's FP16 flag; >= 10: float16, see --high-precision).")
@click.option("--keep-fp", "keep_fp", multiple=True, metavar="NODE",
              help="Keep this node in float in model.int8.onnx (repeatable; aliases: first_conv, classifier).")
@click.option("--concat-scales", type=click.Choice(CONCAT_SCALES), default="separate", show_default=True,
              help="Q/DQ for TensorRT: every tensor keeps its own scale, or Concat groups share a pooled one.")
@click.option("--high-precision", type=click.Choice(HIGH_PRECISIONS), default=DEFAULT_HIGH_PRECISION,
              show_default=True,
              help="Type of model.int8.onnx's float regions (the layers outside Q/DQ pairs). fp16: float16 tensors "
                   "for TensorRT >= 10 (FP32 kept where a range overflows FP16); for 8.x the file stays float32 and "
                   "the build sets FP16 beside INT8.")
@click.option("--sensitivity", is_flag=True,
              help="Also rank the quantized layers: each kept alone in float, on calibration frames "
                   "(sensitivity.md/.json/.png).")
@click.option("--sensitivity-frames", type=POSITIVE, default=SENSITIVITY_FRAMES, show_default=True,
              help="Calibration frames each sensitivity candidate runs on.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: the ONNX file's folder].")
def calibrate_cmd(onnx_path: Path, calib_dir: Any, topic: str | None, method: str, calib_images: int, batch_size: int,
                  percentile: float, seed: int, trt_version: str, keep_fp: tuple[str, ...], concat_scales: str,
                  high_precision: str, sensitivity: bool, sensitivity_frames: int, out_dir: Path | None) -> None:
    """Calibrate an exported model on images and write its INT8 artifacts.

    \b
    Writes next to the ONNX (or into --out), atomically:
      ranges.json          activation ranges (+ method, images, hashes)
      model.int8.onnx      Q/DQ ONNX for TensorRT explicit INT8 (lint-checked)
      model.int8.ort.onnx  INT8 ONNX for ONNX Runtime on the CPU
      model.int8.ov.onnx   Q/DQ ONNX for OpenVINO (7-bit weights on a CPU without VNNI/AMX)
      calibration.cache    TensorRT's native cache (implicit INT8, TensorRT <= 10)
    """
    from ..fileio import prepare_out_dir, remove_if_empty
    from ..quant.calibrate import CalibrateConfig, calibrate_model, layer_sensitivity
    from ..quant.ranges import load_ranges
    from ..report.plots import sensitivity_plot

    calib = resolve_calib(calib_dir, topic)  # a folder Path, a bag or a dataset's image list

    config = CalibrateConfig(method=method, calib_images=calib_images, batch_size=batch_size,
                             percentile=percentile, seed=seed, trt_version=trt_version, keep_fp_layers=keep_fp,
                             concat_scales=concat_scales, high_precision=high_precision)
    check_calibrate_options(config, onnx_path)  # bad options (and --keep-fp names) fail before any work
    created = False
    if out_dir is not None:
        out_dir, created = prepare_out_dir(out_dir)
    elif onnx_path.parent.is_dir():  # the default: beside the ONNX, which must then be writable
        prepare_out_dir(onnx_path.parent)
    on_progress, close = progress_callback("calibrating")  # a bar in a terminal, periodic lines when piped
    try:
        result = calibrate_model(onnx_path, calib, config, out_dir=out_dir, on_progress=on_progress)
    except BaseException:
        if created and out_dir is not None:  # an early failure leaves no empty --out behind
            remove_if_empty(out_dir)
        raise
    finally:
        close()
    ranked: list[Path] = []
    if sensitivity:
        on_progress, close = progress_callback("sensitivity (candidates)")
        try:
            _, ranked = layer_sensitivity(onnx_path, calib, load_ranges(result.ranges_path), config,
                                          frames=sensitivity_frames, out_dir=result.out_dir, on_progress=on_progress,
                                          plot=sensitivity_plot)
        finally:
            close()

    images = result.images
    rows = [
        ("ranges", str(result.ranges_path)),
        ("TensorRT Q/DQ", str(result.trt_int8_path)),
        ("ONNX Runtime INT8", str(result.ort_int8_path)),
        ("TensorRT cache", f"{result.trt_cache_path} (TRT {trt_version})"),
        ("method", method + (f" ({percentile})" if method == "percentile" else "")),
        ("Concat scales", concat_scales),
        ("float regions", _float_regions_row(result.trt_int8_path, high_precision, trt_version)),
        ("TensorRT fusion", _fusion_row(result.trt_int8_path, trt_version)),
        ("images", f"{len(images.used)} used of {images.requested} requested, {len(images.skipped)} skipped"),
        *_bag_rows(images.bag),
        ("tensors", str(result.num_tensors)),
        ("time", ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())),
    ]
    if ranked:
        rows.append(("sensitivity", ", ".join(str(p) for p in ranked)))
    for name, why in images.skipped:
        rows.append(("skipped", f"{name}: {why}"))
    if images.ignored:
        shown = ", ".join(images.ignored[:5]) + (" ..." if len(images.ignored) > 5 else "")
        rows.append(("ignored", f"{len(images.ignored)} non-image file(s): {shown}"))
    reference = onnx_path.parent / "reference.npz"  # written by edgeseg export beside model.onnx
    summary_table("calibrated", rows, [
        f"edgeseg validate --candidate {quote(result.ort_int8_path)} --reference {quote(reference)}",
        f"edgeseg build --onnx {quote(result.trt_int8_path)} --precision int8",
    ])


def _fusion_row(path: Path, trt_version: str) -> str:
    """model.int8.onnx's predicted TensorRT fusion (quant/trt_fusion.py: documented rules, no engine built)."""
    from ..onnx_model import load_onnx
    from ..quant.lint import qdq_warnings
    from ..quant.trt_fusion import predict_fusion

    model = load_onnx(path)
    for issue in qdq_warnings(model, trt_version=trt_version):
        click.echo(f"warning: {issue}", err=True)
    return "predicted: " + predict_fusion(model, trt_version).summary()


def _float_regions_row(path: Path, high_precision: str, trt_version: str) -> str:
    """What the summary says of model.int8.onnx's float regions (read back from its metadata)."""
    from ..onnx_model import load_onnx
    from ..quant.fp16_regions import float_regions_of

    regions = float_regions_of(load_onnx(path))
    if regions.get("high_precision") != "fp16":
        why = " (TensorRT 8.x: the build sets FP16 beside INT8)" if high_precision == "fp16" else ""
        return f"FP32 tensors, TRT {trt_version}{why}"
    kept = regions.get("fp32_tensors") or {}
    shown = ", ".join(f"{name} (|x| {peak:g})" for name, peak in list(kept.items())[:5])
    return (f"FP16 ({regions.get('fp16_nodes')} ops, {regions.get('casts')} casts)"
            + (f"; kept FP32, range over +/-{regions.get('limit'):g}: {shown}" if kept else "; nothing kept FP32"))


def check_calibrate_options(config: Any, onnx_path: Path) -> None:
    """The options as a whole, before any work: each is a bad option (exit 2), a --keep-fp name included
    (checked against the model's nodes, not after calibration)."""
    from ..errors import ConfigError, UsageError

    try:
        config.check()
    except ConfigError as exc:
        raise UsageError(exc.problem, expected=exc.expected, found=exc.found, fix=exc.fix) from None
    if config.keep_fp_layers:
        from ..onnx_model import load_onnx
        from ..quant.qdq_trt import resolve_keep_fp_layers

        try:
            resolve_keep_fp_layers(load_onnx(onnx_path, external_data=False), config.keep_fp_layers)
        except ConfigError as exc:
            raise UsageError(f"--keep-fp: {exc.problem}", expected=exc.expected, found=exc.found,
                             fix="pass a node name of the model (e.g. from Netron), first_conv or classifier") from None


def _bag_rows(bag: dict | None) -> list[tuple[str, str]]:
    """The summary's lines about a bag's frames (none for a folder)."""
    if not bag:
        return []
    stamps = bag["stamps_ns"]
    span = f", stamps {stamps[0] / 1e9:.3f} .. {stamps[-1] / 1e9:.3f} s" if stamps else ""
    return [("bag", f"{bag['bag']} ({bag['storage']}), topic {bag['topic']}"),
            ("frames", f"{bag['kept']} of {bag['messages']} messages, spread evenly{span}; "
                       f"{bag['skipped_duplicates']} near-duplicate(s) skipped")]
