"""``edgeseg eval``: score a checkpoint on a dataset (training.evaluation does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import DATASET, DATASET_HELP, POSITIVE, quote, summary_table
from .option_groups import input_size_option, model_options

if TYPE_CHECKING:
    from ..data.datasets import DatasetSpec


@click.command("eval")
@model_options(model_help="Model name (checked against the checkpoint) [default: the checkpoint's].",
               weights_help="Checkpoint (best.pt / last.pt / best.safetensors / a shipped asset).",
               weights_required=True)
@click.option("--data", type=DATASET, required=True,
              help=f"Data to score: {DATASET_HELP} (its val split unless :split is given; a folder without one: "
                   "all of it).")
@input_size_option("Evaluate at this size [default: the checkpoint's].")
@click.option("--batch-size", type=POSITIVE, default=8, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data loader processes (0: load in the main process).")
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable files and images without masks (listed).")
@click.option("--eval-at", type=click.Choice(["label", "input"]), default=None,
              help="label: logits upsampled bilinearly to each label's full resolution, argmax there (the official "
                   "Cityscapes/ADE20K/VOC protocol); input: labels resized to the model input (nearest) "
                   "[default: label for a public dataset, input for a folder].")
def eval_cmd(
    model_name: str | None,
    weights: Path,
    data: DatasetSpec,
    input_size: tuple[int, int] | None,
    batch_size: int,
    workers: int,
    skip_bad: bool,
    eval_at: str | None,
) -> None:
    """Score a checkpoint: mIoU, pixel accuracy and IoU per class. A public dataset is scored at its labels' full
    resolution (its official protocol), a folder dataset at the model input size (--eval-at changes it)."""
    from ..training.evaluation import evaluate_folder

    result, spec = evaluate_folder(
        weights,
        data,
        model=model_name,
        input_size=input_size,
        batch_size=batch_size,
        workers=workers,
        skip_bad=skip_bad,
        log=lambda line: click.echo(line, err=True),
        eval_at=eval_at,
    )
    engine = Path("engines") / (weights.resolve().parent.name or "model")
    summary_table(
        f"{result.images} images at {spec.height}x{spec.width} input: mIoU {result.miou:.4f}, "
        f"pixel accuracy {result.pixel_accuracy:.4f}",
        [*result.rows(), ("ignored pixels", f"{result.ignored_pixels} of {result.pixels} (label 255, not scored)"),
         ("protocol", result.protocol)],
        [f"edgeseg build --weights {quote(weights)} --val-data {quote(data)} --out {quote(engine)}   "
         "(ONNX + INT8, validated against PyTorch on this data)"],
    )
