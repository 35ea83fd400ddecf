"""``edgeseg train`` (``edgeseg eval`` scores what it wrote: commands/eval.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import DATASET, DATASET_HELP, POSITIVE, SIZE, quote, summary_table
from .option_groups import out_option, threads_option

if TYPE_CHECKING:
    from ..data.datasets import DatasetSpec

FILE = click.Path(dir_okay=False, path_type=Path)


class _StepDisplay:
    """A one-line live status on a terminal; a log line every ``every`` steps otherwise (nohup logs)."""

    def __init__(self, every: int = 20) -> None:
        self.tty = sys.stderr.isatty()
        self.every = every

    def __call__(self, info: dict) -> None:
        epoch, step, steps = int(info["epoch"]), int(info["step"]), int(info["steps"])
        line = (
            f"epoch {epoch + 1} step {step + 1}/{steps}  loss {info['loss']:.4f}  "
            f"{info['images_per_s']:.1f} img/s  lr {info['lr']:.2e}"
        )
        if self.tty:
            click.echo("\r" + line.ljust(80), nl=False, err=True)
            if step + 1 == steps:
                click.echo("", err=True)
        elif (step + 1) % self.every == 0 or step + 1 == steps:
            click.echo(line, err=True)


@click.command("train")
@click.option("--model", required=True, help="Registered model name (see `edgeseg models`).")
@click.option(
    "--data",
    type=DATASET,
    required=True,
    help=f"Training data: {DATASET_HELP}. A folder's splits: train/ + val/ sub-folders or train.txt/val.txt; "
         "a public dataset's: train and val unless :split is given.",
)
@click.option("--input-size", type=SIZE, required=True, help="Model input size HxW (multiples of 32).")
@click.option("--epochs", type=POSITIVE, default=30, show_default=True)
@out_option(help="Run folder for best.pt, last.pt, history.json.", required=True)
@click.option("--batch-size", type=POSITIVE, default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate [default: 2e-3 adamw, 0.02 sgd].")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Data loader processes (0: load in the main process).")
@threads_option("torch CPU threads [default: all cores].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", type=FILE, default=None, help="Continue from a last.pt of the same run.")
@click.option("--val-data", type=DATASET, default=None,
              help="Validation data, as --data (a folder is used whole) [default: the val split of --data].")
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable files and images without masks (listed).")
@click.option("--device", default=None, help="torch device [default: cuda when available, else cpu].")
@click.option("--backbone-weights", type=FILE, default=None,
              help="ImageNet weights for the backbone (.pth or .safetensors): torchvision shufflenet_v2_x* for "
                   "shufflenetv2_x*, timm hrnet_w18_small(_v2) for hrnet_w18_small_v1/v2; classifier keys dropped.")
@click.option("--save-safetensors", is_flag=True,
              help="Also write OUT/best.safetensors: the best model without pickle, model name in its metadata.")
def train_cmd(
    model: str,
    data: DatasetSpec,
    input_size: tuple[int, int],
    epochs: int,
    out: Path,
    batch_size: int,
    lr: float | None,
    optimizer: str,
    weight_decay: float,
    workers: int,
    threads: int | None,
    seed: int,
    resume: Path | None,
    val_data: DatasetSpec | None,
    skip_bad: bool,
    device: str | None,
    backbone_weights: Path | None,
    save_safetensors: bool,
) -> None:
    """Train a segmentation model; writes OUT/best.pt and OUT/last.pt after every epoch."""
    from ..fileio import prepare_out_dir, remove_if_empty
    from ..models import model_info
    from ..training.trainer import TrainConfig, train

    model_info(model)  # an unknown name fails now, not after the dataset check
    out, created = prepare_out_dir(out)
    config = TrainConfig(
        model=model,
        data=data,
        out=out,
        input_size=input_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        workers=workers,
        threads=threads,
        seed=seed,
        resume=resume,
        val_data=val_data,
        skip_bad=skip_bad,
        device=device,
        backbone_weights=backbone_weights,
        save_safetensors=save_safetensors,
    )
    try:
        result = train(config, log=lambda line: click.echo(line, err=True), on_step=_StepDisplay())
    except BaseException:
        if created:  # an early failure (bad data) leaves no empty run folder behind
            remove_if_empty(out)
        raise
    h, w = input_size
    best = quote(result.best_path)
    rows = [("best", str(result.best_path)), ("last", str(result.last_path)), ("history", str(out / "history.json"))]
    if save_safetensors and (out / "best.safetensors").is_file():
        rows.insert(1, ("best (safetensors)", str(out / "best.safetensors")))
    summary_table(
        f"trained {model}: best val mIoU {result.best_miou:.4f} (epoch {result.best_epoch + 1}; scored at the "
        f"model input size, labels resized) in {result.seconds / 60:.1f} min",
        rows,
        [
            f"edgeseg eval --model {model} --weights {best} --data {quote(val_data or _without_split(data))}",
            f"edgeseg export --model {model} --weights {best} --input-size {h}x{w} "
            f"--out {quote(Path('engines') / (out.resolve().name or model))}",
        ],
    )


def _without_split(data: DatasetSpec) -> DatasetSpec:
    """A public dataset without its training split, so that eval takes its val split."""
    from ..data.datasets import DatasetSpec

    return data if data.is_folder else DatasetSpec(data.kind, data.root)
