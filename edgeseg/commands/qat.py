"""``edgeseg qat``: quantization-aware fine-tuning of a trained model, ending in the Q/DQ file the build takes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import DATASET, DATASET_HELP, POSITIVE, quote, summary_table
from .option_groups import out_option, threads_option
from .train import _StepDisplay

if TYPE_CHECKING:
    from ..data.datasets import DatasetSpec

FILE = click.Path(dir_okay=False, path_type=Path)
PARITY_FRAMES = 8  # validation frames ONNX Runtime runs to check the written file against the QAT model


@click.command("qat")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The float checkpoint to fine-tune (edgeseg train's best.pt).")
@click.option("--ranges", type=click.Path(exists=True, path_type=Path), required=True,
              help="ranges.json of a calibration of these weights, or its folder (a build folder: edgeseg build "
                   "--int8 --weights FILE --out DIR). The float model.onnx beside it is what gets fine-tuned.")
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The float model.onnx the ranges were calibrated on [default: the one beside ranges.json].")
@click.option("--data", type=DATASET, required=True, help=f"Training data: {DATASET_HELP}.")
@click.option("--val-data", type=DATASET, default=None,
              help="Validation data, as --data [default: the val split of --data].")
@out_option(help="Folder for qat.pt, model.onnx, model.int8.onnx (+ .ort/.ov), ranges.json, qat.json.",
            required=True)
@click.option("--epochs", type=POSITIVE, default=2, show_default=True)
@click.option("--batch-size", type=POSITIVE, default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True,
              help="Peak learning rate (AdamW, cosine to 0).")
@click.option("--distill", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of distillation from the float model's logits (0: labels only).")
@click.option("--learn-scales", is_flag=True, help="Train the activation scales (LSQ) instead of keeping the "
                                                   "calibrated ones.")
@click.option("--high-precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True,
              help="Float regions of model.int8.onnx for TensorRT >= 10 (as edgeseg calibrate).")
@click.option("--trt-version", default=None,
              help="TensorRT whose Q/DQ placement to train (8.x has no Q/DQ around Resize) [default: the one the "
                   "--ranges folder's model.int8.onnx was written for, else 10.3].")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@threads_option("torch CPU threads [default: all cores].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-steps-per-epoch", type=POSITIVE, default=None, hidden=True)
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable files and images without masks (listed).")
@click.option("--device", default=None, help="torch device [default: cuda when available, else cpu].")
def qat_cmd(weights: Path, ranges: Path, onnx: Path | None, data: DatasetSpec, val_data: DatasetSpec | None,
            out: Path, epochs: int, batch_size: int, lr: float, distill: float, learn_scales: bool,
            high_precision: str, trt_version: str | None, workers: int, threads: int | None, seed: int,
            max_steps_per_epoch: int | None, skip_bad: bool, device: str | None) -> None:
    """Fine-tune with INT8 fake quantization at the placement TensorRT gets; writes OUT/qat.pt and the INT8 files.

    For models whose calibrated INT8 misses the accuracy gates (low logit margins): start from the float
    checkpoint and the ranges of a build, fine-tune an epoch or two, then build from OUT/qat.pt: no
    recalibration, and the gates hold the engine to the QAT model.
    """
    from ..errors import UsageError
    from ..export.qat_export import write_qat_folder
    from ..fileio import prepare_out_dir, remove_if_empty
    from ..training.qat import QatConfig, train_qat, validation_inputs
    from ..trt_version import TrtVersion

    if trt_version is not None:
        TrtVersion.parse(trt_version, error=UsageError)  # exit 2, before any work
    out, created = prepare_out_dir(out)
    config = QatConfig(weights=weights, ranges=ranges, onnx=onnx, data=data, val_data=val_data, out=out,
                       epochs=epochs, batch_size=batch_size, lr=lr, distill=distill, learn_scales=learn_scales,
                       workers=workers, threads=threads, seed=seed, max_steps_per_epoch=max_steps_per_epoch,
                       skip_bad=skip_bad, device=device, high_precision=high_precision,
                       trt_version=trt_version)
    try:
        result = train_qat(config, log=lambda line: click.echo(line, err=True), on_step=_StepDisplay())
    except BaseException:
        if created:
            remove_if_empty(out)
        raise
    click.echo("writing the INT8 files and checking ONNX Runtime on model.int8.onnx against the QAT model", err=True)
    parity_frames = validation_inputs(result.inputs, config, PARITY_FRAMES)
    folder = write_qat_folder(result.checkpoint, out, parity_inputs=parity_frames)
    m = result.checkpoint.metrics
    rows = [("", "val mIoU   agreement with float"),
            ("float", f"{m.float_miou:.4f}"),
            ("PTQ (calibrated)", f"{m.ptq_miou:.4f}     {m.ptq_agreement:.2%}"),
            (f"QAT ({epochs} epochs)", f"{m.qat_miou:.4f}     {m.qat_agreement:.2%}")]
    if folder.parity is not None:
        writer, shipped = folder.parity.writer.argmax_agreement, folder.parity.shipped.argmax_agreement
        rows.append(("ONNX Runtime vs QAT", f"{shipped:.3%} of pixels agree on model.int8.onnx"
                     + ("" if folder.parity.writer is folder.parity.shipped else
                        f" ({writer:.3%} with FP32 float regions)") + f", {PARITY_FRAMES} validation frames; "
                     f"{folder.parity.ops_checked} ops checked one by one, none off"))
    rows += [(path.name, str(path)) for path in folder.files]
    summary_table(f"QAT of {result.checkpoint.model}: {epochs} epochs in {result.seconds / 60:.1f} min "
                  f"({m.images} validation images at the model input size)", rows,
                  [f"edgeseg build --int8 --weights {quote(out / 'qat.pt')}"
                   + (f" --val-data {quote(val_data)}" if val_data is not None else "")
                   + f" --out {quote(Path('engines') / (out.resolve().name + '-int8'))}"])
