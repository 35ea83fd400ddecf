"""Training and evaluation of segmentation models on folder datasets (layer 3, torch).

Recipe: pixel-wise cross-entropy (ignore 255), AdamW (default) or SGD with momentum,
poly learning-rate decay (power 0.9) after a short linear warm-up, augmentation from
``edgeseg.data.augment``, mixed precision on CUDA only. After every epoch the model is
scored on the validation split (mIoU and per-class IoU from ``edgeseg.metrics``, masks
resized to the model size with nearest neighbour) and ``last.pt`` / ``best.pt`` are
written atomically in the edgeseg checkpoint format. ``resume`` continues from a
``last.pt``: weights, optimizer, epoch counter and best score.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.datasets import DatasetSpec, as_dataset_spec, default_split, has_split, open_dataset, summary
from ..data.folder import FolderDataset
from ..data.torch_dataset import SegmentationDataset
from ..errors import ConfigError, InputError
from ..fileio import atomic_write_json
from ..metrics import IGNORE_INDEX
from ..models import create_model, model_from_weights, read_checkpoint_info
from ..models.checkpoint import save_checkpoint, save_safetensors
from ..models.weights import pretrained_backbone
from ..spec import InputSpec
from .evaluation import EvalResult, evaluate

OPTIMIZERS = ("adamw", "sgd")
DEFAULT_LR = {"adamw": 2e-3, "sgd": 0.02}


@dataclass
class TrainConfig:
    model: str
    data: DatasetSpec | Path  # a path: the folder format
    out: Path
    input_size: tuple[int, int]
    epochs: int = 30
    batch_size: int = 8
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    workers: int = 2
    seed: int = 0
    resume: Path | None = None
    val_data: DatasetSpec | Path | None = None  # None: DATA's val split (folder: DATA/val/ or DATA/val.txt)
    model_options: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None  # torch CPU threads; None: all cores
    warmup_steps: int = 50
    max_steps_per_epoch: int | None = None  # for quick tests
    skip_bad: bool = False
    device: str | None = None  # None: cuda when available
    backbone_weights: Path | None = None  # ImageNet backbone file for a new run (load_backbone_weights)
    save_safetensors: bool = False  # best.safetensors beside best.pt: the same model, readable without pickle


@dataclass
class TrainResult:
    best_miou: float
    best_epoch: int
    last_epoch: int
    history: list[dict[str, Any]]
    best_path: Path
    last_path: Path
    seconds: float


# ---------------------------------------------------------------- checkpoints
def write_checkpoint(
    path: Path,
    model: torch.nn.Module,
    *,
    name: str,
    classes: list[str],
    spec: InputSpec,
    model_options: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """The edgeseg checkpoint format of ``edgeseg.models.weights``, written atomically."""
    return save_checkpoint(
        path, model, model_name=name, classes=classes, input_spec=spec, model_options=model_options, **(extra or {})
    )


# What to pass instead of a file that is not an edgeseg checkpoint (--resume has no --num-classes).
RESUME_FIX = "pass the last.pt of the run to continue (RUN/last.pt), or start a new run without --resume"


# ---------------------------------------------------------------- training
def _device(config: TrainConfig) -> torch.device:
    if config.device:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check(config: TrainConfig) -> None:
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError("unknown optimizer", expected=" or ".join(OPTIMIZERS), found=repr(config.optimizer))
    for name in ("epochs", "batch_size"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1", found=str(getattr(config, name)))
    if config.workers < 0:
        raise ConfigError("--workers must be 0 or more", found=str(config.workers))
    if config.lr is not None and not config.lr > 0:
        raise ConfigError("--lr must be positive", found=str(config.lr))
    if config.resume is not None and config.backbone_weights is not None:
        raise ConfigError("--backbone-weights starts a new run; --resume continues one", found="both given",
                          fix="drop --backbone-weights: the --resume checkpoint holds the trained backbone")


def open_splits(config: TrainConfig) -> tuple[FolderDataset, FolderDataset]:
    """The training and validation sets of ``config`` (any layout ``edgeseg.data.datasets`` reads)."""
    data = as_dataset_spec(config.data)
    train = open_dataset(data, default_split(data, "train"), skip_bad=config.skip_bad)
    hint = f"use validation data with the {train.num_classes} classes of the training data"
    if config.val_data is not None:
        val_data = as_dataset_spec(config.val_data)  # a folder is used whole, a public dataset's val split
        val = open_dataset(val_data, None if val_data.is_folder else "val", num_classes=train.num_classes,
                           skip_bad=config.skip_bad, classes_hint=hint)
    elif not data.is_folder or has_split(data, "val"):  # folder:DIR:train too: DIR's val split, if any
        val = open_dataset(data.root if data.is_folder else DatasetSpec(data.kind, data.root), "val",
                           num_classes=train.num_classes, skip_bad=config.skip_bad, classes_hint=hint)
    else:
        root = data.root
        base = root.resolve()
        val_dir = shlex.quote(str(base.parent / f"{base.name}-val"))
        height, width = config.input_size
        raise InputError(
            f"no validation data for {root}",
            expected=f"{root}/val/ or {root}/val.txt, or --val-data DIR",
            fix=f"generate one: edgeseg data synth --out {val_dir} --num 200 --size {height}x{width} --seed 1, "
                f"then add --val-data {val_dir}",
        )
    return train, val


def poly_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, 1 - (step - warmup) / max(1, total - warmup)) ** 0.9


def train(
    config: TrainConfig, log: Callable[[str], None] = print, on_step: Callable[[dict[str, float]], None] | None = None
) -> TrainResult:
    """Train ``config.model`` on ``config.data``; see the module docstring."""
    _check(config)
    # A wrong --resume file fails before the dataset is verified (minutes on a large set).
    saved = (read_checkpoint_info(config.resume, require_checkpoint=RESUME_FIX) if config.resume is not None
             else None)
    backbone = (pretrained_backbone(config.model, config.backbone_weights, log=log, **config.model_options)
                if config.backbone_weights is not None else None)  # so does a wrong --backbone-weights file
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % (1 << 32))
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    device = _device(config)
    train_set, val_set = open_splits(config)
    for folder, what in ((train_set, "training"), (val_set, "validation")):
        for path, why in folder.skipped:
            log(f"skipped {what} file {path}: {why}")
        log(f"{what} data {summary(folder)}")
    spec = InputSpec(*config.input_size)
    classes = train_set.classes
    model, model_options = _model(config, saved, classes, spec)
    if backbone is not None:
        model.backbone.load_state_dict(backbone.state_dict())
    model = model.to(device)
    lr = config.lr or DEFAULT_LR[config.optimizer]
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    run = _Run(model, _optimizer(config, model, lr), lr, device, scaler)
    run.class_colors = [list(c) for c in train_set.colors]  # the dataset's palette travels in the checkpoint
    start_epoch = _resume(run, saved, config, log)
    train_data = SegmentationDataset(train_set, spec, train=True, seed=config.seed)
    val_data = SegmentationDataset(val_set, spec, train=False)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=True,
                        drop_last=len(train_data) > config.batch_size, num_workers=config.workers,
                        generator=generator, persistent_workers=False, pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_data, batch_size=config.batch_size, num_workers=config.workers)
    run.steps_per_epoch = (len(loader) if config.max_steps_per_epoch is None
                           else min(len(loader), config.max_steps_per_epoch))
    run.total_steps = run.steps_per_epoch * config.epochs
    run.warmup = min(config.warmup_steps, max(1, run.total_steps // 10))
    out = Path(config.out)
    began = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        train_data.set_epoch(epoch)
        generator.manual_seed(config.seed * 1000 + epoch)  # shuffle order depends on (seed, epoch) only
        record = _train_epoch(run, loader, epoch, on_step)
        result = evaluate(run.model, val_loader, len(classes), classes, device)
        record.update(val_miou=result.miou, val_pixel_accuracy=result.pixel_accuracy,
                      per_class_iou=result.per_class_iou, epoch_seconds=time.perf_counter() - record.pop("started"))
        run.history.append(record)
        _save_epoch(run, config, out, epoch, result, classes, spec, model_options)
        log(
            f"epoch {epoch + 1}/{config.epochs}  loss {record['train_loss']:.4f}  val mIoU {result.miou:.4f}  "
            f"best {run.best_miou:.4f} (epoch {run.best_epoch + 1})  {record['images_per_s']:.1f} img/s  "
            f"{record['epoch_seconds']:.0f} s"
        )
    return TrainResult(run.best_miou, run.best_epoch, config.epochs - 1, run.history, out / "best.pt",
                       out / "last.pt", time.perf_counter() - began)


@dataclass
class _Run:
    """What the epochs share and update: the model, its optimizer, the schedule and the best result so far."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr: float
    device: torch.device
    scaler: Any  # torch.amp.GradScaler
    steps_per_epoch: int = 0
    total_steps: int = 0
    warmup: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_miou: float = -1.0
    best_epoch: int = -1
    class_colors: list[list[int]] = field(default_factory=list)  # the training data's colours ([]: none)


def _model(config: TrainConfig, saved: Any, classes: list[str], spec: InputSpec
           ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A new model, or the --resume checkpoint's (its model options build the model it was trained as)."""
    model_options = dict(config.model_options)
    if saved is None:
        return create_model(config.model, num_classes=len(classes), **model_options), model_options
    _check_resume(saved, config, classes, spec)
    model, saved = model_from_weights(saved.path, model=config.model, **model_options)
    return model, dict(saved.model_options)


def _optimizer(config: TrainConfig, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=config.weight_decay)


def _resume(run: _Run, saved: Any, config: TrainConfig, log: Callable[[str], None]) -> int:
    """Optimizer state, history and best result of the --resume checkpoint; returns the first epoch to run."""
    if saved is None:
        return 0
    if "optimizer" in saved.extra:
        run.optimizer.load_state_dict(saved.extra["optimizer"])
    start_epoch = int(saved.extra.get("epoch", -1)) + 1
    run.best_miou = float(saved.extra.get("best_miou", -1.0))
    run.best_epoch = int(saved.extra.get("best_epoch", -1))
    run.history = list(saved.extra.get("history", []))
    log(f"resumed from {config.resume}: epoch {start_epoch} of {config.epochs}")
    return start_epoch


def _train_epoch(run: _Run, loader: DataLoader, epoch: int,
                 on_step: Callable[[dict[str, float]], None] | None) -> dict[str, Any]:
    """One pass over the training data (poly learning rate per step, AMP on CUDA)."""
    model, optimizer, device = run.model, run.optimizer, run.device
    use_amp = device.type == "cuda"
    model.train()
    seen, loss_sum, epoch_start = 0, 0.0, time.perf_counter()
    for step, (inputs, targets) in enumerate(loader):
        if step >= run.steps_per_epoch:
            break
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(epoch * run.steps_per_epoch + step, run.total_steps, run.lr, run.warmup)
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp):
            loss = F.cross_entropy(model(inputs), targets, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(optimizer)
        run.scaler.update()
        seen += len(inputs)
        loss_sum += loss.item() * len(inputs)
        if on_step:
            on_step({"epoch": epoch, "step": step, "steps": run.steps_per_epoch, "loss": loss.item(),
                     "images_per_s": seen / max(time.perf_counter() - epoch_start, 1e-9),
                     "lr": optimizer.param_groups[0]["lr"]})
    train_seconds = time.perf_counter() - epoch_start
    return {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
            "images_per_s": seen / max(train_seconds, 1e-9), "started": epoch_start}


def _save_epoch(run: _Run, config: TrainConfig, out: Path, epoch: int, result: EvalResult, classes: list[str],
                spec: InputSpec, model_options: dict[str, Any]) -> None:
    """best.pt when the validation mIoU improved, last.pt (with the optimizer, to resume) and history.json."""
    options = {"model_options": model_options}
    colours = {"class_colors": run.class_colors} if run.class_colors else {}  # read back by build/export
    if result.miou > run.best_miou:
        run.best_miou, run.best_epoch = result.miou, epoch
        best = {**colours, "epoch": epoch, "metrics": {"val_miou": result.miou, "per_class_iou": result.per_class_iou}}
        write_checkpoint(out / "best.pt", run.model, name=config.model, classes=classes, spec=spec, **options,
                         extra=best)
        if config.save_safetensors:  # the same fields as best.pt, so both build the same report and overlays
            save_safetensors(out / "best.safetensors", run.model, model_name=config.model, classes=classes,
                             input_spec=spec, model_options=model_options, **best)
    write_checkpoint(out / "last.pt", run.model, name=config.model, classes=classes, spec=spec, **options,
                     extra={**colours, "epoch": epoch, "metrics": {"val_miou": result.miou},
                            "optimizer": run.optimizer.state_dict(), "best_miou": run.best_miou,
                            "best_epoch": run.best_epoch, "history": run.history})
    atomic_write_json(out / "history.json", {"config": _config_dict(config), "history": run.history})


def _check_resume(saved: Any, config: TrainConfig, classes: list[str], spec: InputSpec) -> None:
    """A --resume checkpoint (CheckpointInfo) must be of this run: model, class list and input size."""
    if saved.model != config.model or saved.classes != classes:
        raise ConfigError(
            "--resume checkpoint was trained for another model or class list",
            expected=f"{config.model} with {classes}",
            found=f"{saved.model} with {saved.classes}",
        )
    saved_size = saved.input_spec.size
    if saved_size != spec.size:
        raise ConfigError(
            "--resume checkpoint was trained at another input size",
            expected=f"{saved_size[0]}x{saved_size[1]}",
            found=f"--input-size {spec.height}x{spec.width}",
            fix=f"pass --input-size {saved_size[0]}x{saved_size[1]}, or start a new run without --resume",
        )


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    # vars, not asdict: a DatasetSpec is written as the text the user typed, not as a nested object
    return {k: (str(v) if isinstance(v, (Path, DatasetSpec)) else v) for k, v in vars(config).items()}
