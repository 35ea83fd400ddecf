"""``edgeseg validate``: a candidate (ONNX / INT8 / engine) against PyTorch, with accuracy gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..pipeline.options import DEFAULT_MAX_MIOU_DROP, DEFAULT_MIN_AGREEMENT
from ._common import DATASET, progress, quote, summary_table
from .backend_option import backend_option
from .option_groups import VAL_DATA_HELP, gate_options, model_options, out_option, threads_option, val_data_options


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:6.2f}"


def print_validation(result: Any) -> None:
    """The numbers of a ValidationResult as plain-text tables on stdout."""
    parity, truth = result.parity, result.ground_truth
    click.secho(f"\n{Path(result.candidate).name} vs {result.reference_kind} ({result.reference})", bold=True)
    click.echo(f"  images                    {parity['images']}")
    click.echo(f"  argmax agreement          {parity['agreement'] * 100:.3f} %")
    click.echo(f"  max / mean abs logit err  {parity['max_abs_error']:.4g} / {parity['mean_abs_error']:.4g}")
    click.echo(f"  cosine similarity         {parity['cosine_similarity']:.6f}")
    click.echo(f"  mIoU vs PyTorch argmax    {parity['miou_vs_reference'] * 100:.2f} %")
    if parity["nonfinite_logits"]:
        click.secho(f"  non-finite logits         {parity['nonfinite_logits']}", fg="red")
    if truth:
        click.echo(f"  ground truth ({truth['images']} images): mIoU PyTorch {_pct(truth['miou_reference'])} %, "
                   f"candidate {_pct(truth['miou_candidate'])} %, drop "
                   + ("-" if truth["miou_drop_points"] is None else f"{truth['miou_drop_points']:.2f} points"))
    against = "ground truth" if result.per_class and result.per_class[0]["against"] == "ground_truth" \
        else "PyTorch argmax"
    click.echo(f"\n  per class (IoU %, against {against})")
    click.echo(f"  {'class':<20} {'PyTorch':>8} {'cand.':>8} {'delta':>8} {'share %':>8}")
    for row in result.per_class:
        delta = "-" if row["delta_points"] is None else f"{row['delta_points']:+.2f}"
        click.echo(f"  {row['class'][:20]:<20} {_pct(row['iou_reference']):>8} {_pct(row['iou_candidate']):>8} "
                   f"{delta:>8} {row['pixel_share'] * 100:8.2f}")
    for note in result.notes:
        click.echo(f"  note: {note}")
    for skipped in result.gates["skipped"]:
        click.echo(f"  gate not applied: {skipped}")


@click.command("validate")
@click.option("--candidate", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="model.onnx, a model.int8*.onnx or model.engine to check.")
@click.option("--reference", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="reference.npz saved by edgeseg export (PyTorch logits; no torch needed).")
@model_options(model_help="Run this PyTorch model as the reference (with --weights).",
               weights_help="Weights or edgeseg checkpoint of the PyTorch reference.")
@val_data_options(data_dest="data_dir", data_type=DATASET, data_aliases=("--data",),
                  data_help=f"Frames to check on (with a PyTorch reference): a folder of images, or {VAL_DATA_HELP} "
                            "(its val split unless :split is given); masks add ground-truth scores.",
                  images_dest="max_images", images_aliases=("--max-images",),
                  images_help="Use at most N images/samples.")
@gate_options(from_build=True)
@click.option("--worst", "worst_k", type=click.IntRange(min=0), default=4, show_default=True,
              help="Overlay PNGs of the N images with the lowest agreement.")
@out_option(help="Where validation.json and overlays go (default: the candidate's folder).")
@threads_option("CPU threads for ONNX Runtime / OpenVINO.")
@backend_option(runs_files=True, help="The runtime that runs --candidate (auto: by its suffix: .onnx ONNX Runtime, "
                                      ".engine TensorRT).")
@click.option("--inference-precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="--backend openvino: run the candidate with this inference-precision hint (bf16/fp16 where the "
                   "CPU has them) [default: fp32].")
@click.option("--device", default=None, help="--backend openvino: its device (CPU, GPU, NPU; GPU/NPU untested).")
def validate_cmd(candidate: Path, reference: Path | None, model_name: str | None, weights: Path | None,
                 data_dir: Any, max_images: int | None, min_agreement: float | None,
                 max_miou_drop: float | None,
                 worst_k: int, out: Path | None, threads: int | None, backend: str = "auto",
                 inference_precision: str | None = None, device: str | None = None) -> None:
    """Compare a candidate with the PyTorch model it came from: logits, argmax agreement, per-class IoU.

    \b
    Without torch (e.g. on the robot):  --reference engines/NAME/reference.npz
    With the PyTorch model:             --weights model.pt [--model NAME] --val-data DIR
    Exits 1 when a gate (--min-agreement, --max-miou-drop) is missed.
    """
    from ..errors import UsageError
    from ..pipeline.validate import (
        TorchReference,
        ValidationConfig,
        accuracy_next_commands,
        gate_error,
        validate_candidate,
    )

    if reference is not None and weights is not None:
        raise UsageError("--reference and --weights are two different references", found="both given",
                         fix="pass one: --reference DIR/reference.npz, or --weights F [--model NAME]")
    if reference is None and weights is None:
        raise UsageError("no reference to compare with", found="neither --reference nor --weights",
                         fix="pass --reference DIR/reference.npz, or --weights F [--model NAME] --val-data DIR")
    if reference is not None and data_dir is not None:
        raise UsageError("--val-data is for a PyTorch reference: reference.npz holds its own frames (and their "
                         "masks, when the build had them), and the candidate is checked on those",
                         found=f"--reference {reference} --val-data {data_dir}",
                         fix="drop --val-data, or compare on your data with the PyTorch model: --weights F "
                             f"[--model NAME] --val-data {data_dir}")
    if model_name is not None and weights is None:
        raise UsageError("--model needs --weights", expected="the trained weights the candidate was exported from",
                         fix="pass --weights F, or use --reference DIR/reference.npz")
    backend_options = {k: v for k, v in (("inference_precision", inference_precision), ("device", device)) if v}
    if backend_options and backend != "openvino":
        raise UsageError(f"--{next(iter(backend_options)).replace('_', '-')} is an OpenVINO setting",
                         found=f"--backend {backend}", fix="add --backend openvino, or drop it")
    min_agreement, max_miou_drop = _gates(candidate, min_agreement, max_miou_drop)
    source: Any = reference if reference is not None else TorchReference(weights, model_name)  # type: ignore[arg-type]
    config = ValidationConfig(max_images=max_images, min_agreement=min_agreement, max_miou_drop=max_miou_drop,
                              worst_k=worst_k, threads=threads)
    result = validate_candidate(candidate, source, data_dir=data_dir, config=config, out_dir=out,
                                progress=progress, raise_on_failure=False, files_optional=True, backend=backend,
                                backend_options=backend_options)
    print_validation(result)
    verdict = "validation passed" if result.passed else "validation FAILED"
    rows = [("candidate", str(candidate)), ("verdict", verdict)] + [("wrote", f) for f in result.files[:3]]
    if len(result.files) > 3:
        rows.append(("wrote", f"... {len(result.files) - 3} more overlay(s)"))
    if result.not_written:  # a read-only robot folder: the verdict stands, the files are optional
        rows.append(("not written", f"validation.json and overlays: {result.not_written}; pass --out DIR for them"))
    is_build = (candidate.parent / "manifest.json").is_file()
    next_commands = [f"edgeseg bench --artifacts {quote(candidate.parent)}"] if result.passed and is_build else []
    if not result.passed:
        next_commands = accuracy_next_commands(candidate)
    summary_table(verdict, rows, next_commands)
    if not result.passed:
        raise gate_error(result)


def _gates(candidate: Path, min_agreement: float | None, max_miou_drop: float | None) -> tuple[float, float]:
    """Gates not given on the command line come from the build that made the candidate, so the robot's verdict
    on a build folder is the build's verdict; elsewhere the defaults."""
    from ..manifest import ValidationVerdict, find_manifest

    recorded = ValidationVerdict()  # no gates recorded: the defaults
    if min_agreement is None or max_miou_drop is None:
        manifest = find_manifest(candidate.parent) if candidate.parent.is_dir() else None
        if manifest is not None and manifest.validation is not None:
            recorded = manifest.validation
    if recorded.min_agreement is not None and min_agreement is None:
        click.echo(f"gates from {candidate.parent / 'manifest.json'}", err=True)
    if min_agreement is None:
        agreement = recorded.min_agreement
        min_agreement = float(agreement) if agreement is not None else DEFAULT_MIN_AGREEMENT
    if max_miou_drop is None:
        drop = recorded.max_miou_drop
        max_miou_drop = float(drop) if drop is not None else DEFAULT_MAX_MIOU_DROP
    return min_agreement, max_miou_drop
