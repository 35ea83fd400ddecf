"""``edgeseg export``: a registered model (+ weights) -> model.onnx + reference.npz, parity-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._common import quote, summary_table
from .option_groups import input_size_option, model_options, out_option, val_data_options


def _err(message: str) -> None:
    click.echo(message, err=True)


def resolve_export_options(*, model: str | None, num_classes: int | None, input_size: tuple[int, int] | None,
                           checkpoint: Any = None) -> tuple[str, int, list[str], Any, dict[str, Any]]:
    """(model name, num_classes, classes, InputSpec, model options) from options and the weights' CheckpointInfo.

    ``checkpoint`` is what ``read_checkpoint_info`` read from --weights (None without weights); it has already
    checked --model/--num-classes against an edgeseg checkpoint, which supplies the defaults.
    """
    from dataclasses import replace

    from ..errors import UsageError
    from ..spec import InputSpec

    if checkpoint is None or not checkpoint.full_checkpoint:
        if model is None:
            raise UsageError("--model is required", expected="a model name, or an edgeseg checkpoint as --weights",
                             found="neither", fix="run `edgeseg models` for the list, then --model NAME")
        if input_size is None:
            raise UsageError("--input-size is required", expected="HxW, e.g. 512x1024 (multiples of 32)",
                             found="no --input-size and no edgeseg checkpoint to take it from",
                             fix="pass --input-size 512x1024")
        count = checkpoint.num_classes if checkpoint is not None else 19 if num_classes is None else num_classes
        return model, count, [f"class_{i}" for i in range(count)], InputSpec(*input_size), {}

    spec = checkpoint.input_spec
    if input_size is not None and tuple(input_size) != spec.size:
        # Fully convolutional: exporting at the deployment size is legitimate, but say so.
        _err(f"note: exporting at {input_size[0]}x{input_size[1]}; the checkpoint was trained at "
             f"{spec.height}x{spec.width} (mean/std and channel order kept from the checkpoint)")
        spec = replace(spec, height=input_size[0], width=input_size[1])
    count = checkpoint.num_classes
    classes = list(checkpoint.classes) if len(checkpoint.classes) == count else [f"class_{i}" for i in range(count)]
    return checkpoint.model, count, classes, spec, dict(checkpoint.model_options)


@click.command("export")
@model_options(model_help="Registered model name (see `edgeseg models`).",
               weights_help="State dict or checkpoint (.pt/.pth, or .safetensors: no pickle); an edgeseg checkpoint "
                            "also supplies model, classes and input spec.")
@click.option("--num-classes", type=click.IntRange(1, 255), default=None,
              help="Classes (default 19, or the checkpoint's).")
@input_size_option()
@click.option("--batch", type=click.IntRange(1, 64), default=1, show_default=True, help="Static batch size.")
@click.option("--opset", type=click.IntRange(13, 20), default=17, show_default=True)
@out_option(help="Folder for model.onnx and reference.npz (created if needed).", required=True)
@click.option("--no-simplify", is_flag=True, help="Keep the graph as traced; it must then have no dynamic-shape ops.")
@val_data_options(data_dest="reference_images", data_aliases=("--reference-images",),
                  data_type=click.Path(file_okay=False, exists=True, path_type=Path),
                  data_help="Take the reference samples from this image folder instead of synthetic frames.",
                  images_dest="num_samples", images_aliases=("--num-samples",), images_type=click.IntRange(1, 64),
                  images_default=16,
                  images_help="Frames kept in reference.npz for later validation (uint8 frames + PyTorch argmax and "
                              "top-2 logits: about 2.7 MB per frame at 512x1024).")
def export_cmd(model_name: str | None, weights: Path | None, num_classes: int | None,
               input_size: tuple[int, int] | None, batch: int, opset: int, out: Path, no_simplify: bool,
               reference_images: Path | None, num_samples: int) -> None:
    """Export a model to ONNX, check the graph for TensorRT and check parity with PyTorch."""
    from ..errors import InputError
    from ..export.onnx_export import ExportConfig, check_export_memory, export_onnx, export_summary_rows
    from ..fileio import prepare_out_dir, remove_if_empty
    from ..images import list_images
    from ..models import create_model, model_from_weights, model_info, read_checkpoint_info
    from ..palette import stored_colours

    if model_name is not None:
        model_info(model_name)  # an unknown name is the first thing to say (before any missing --input-size)
    # A contradicting --model/--num-classes or a plain state dict without --model fails here, before any work.
    checkpoint = read_checkpoint_info(weights, model=model_name, num_classes=num_classes) if weights else None
    name, count, classes, spec, options = resolve_export_options(
        model=model_name, num_classes=num_classes, input_size=input_size, checkpoint=checkpoint)
    samples = list_images(reference_images)[:num_samples] if reference_images else []
    if reference_images and not samples:
        raise InputError(f"no images in {reference_images}", expected="a folder of .jpg/.png/.bmp images",
                         fix="point --val-data at a folder with images, or drop it for synthetic frames")
    model_info(name)  # an unknown --model fails before the output folder is made
    # Before the model is built: a size that cannot fit fails now, not when the kernel kills the process.
    check_export_memory(spec.height, spec.width, batch=batch, num_samples=len(samples) or num_samples,
                        num_classes=count)
    out, created = prepare_out_dir(out)

    try:
        if weights is None:
            model = create_model(name, num_classes=count, **options)
            _err("warning: no --weights given: random weights, accuracy numbers are meaningless")
        else:
            model, loaded = model_from_weights(weights, model=name, num_classes=count)
            _err(f"weights: {loaded.num_tensors} tensors from {loaded.path} ({loaded.kind})")
        colours = stored_colours(checkpoint.extra.get("class_colors"), count) if checkpoint else []
        config = ExportConfig(model=name, num_classes=count, input_spec=spec, batch=batch, opset=opset,
                              simplify=not no_simplify, num_reference_samples=num_samples, classes=classes,
                              class_colors=colours, sample_images=samples)
        result = export_onnx(model, config, out, log=_err)
    except BaseException:
        if created:  # a failed export leaves no empty --out behind
            remove_if_empty(out)
        raise
    for notice in result.notices:
        _err(f"note: {notice}")
    summary_table(f"export passed: {name} {spec.height}x{spec.width}, {count} classes",
                  export_summary_rows(result),
                  [f"edgeseg calibrate --onnx {quote(result.onnx_path)} --calib {_calib_folder()}"])


def _calib_folder() -> str:
    """./calib when it holds frames (a checkout's), else a placeholder the user must replace: a printed command
    names no folder that does not exist."""
    from ..images import list_images

    return "calib/" if Path("calib").is_dir() and list_images("calib") else "DIR_OF_CAMERA_FRAMES"
