"""Quantization-aware fine-tuning (``edgeseg train --qat``), for models calibration cannot save (layer 3, torch).

What is trained is the graph TensorRT gets: the float ``model.onnx`` the ranges were calibrated on (BatchNorm
already folded into the convolutions, as TensorRT folds it), through the Q/DQ placement that
``quant.qdq_trt.quantize_for_tensorrt`` writes for it — the Q/DQ file itself is the placement description, run
as a torch module (``onnx_graph.OnnxGraphModule``), so the fake-quant graph and the ONNX writer cannot drift
apart. Weights: symmetric int8, one scale per output channel from the current weights (what the writer
computes at export), straight-through gradients. Activations: per tensor at the calibrated scales, or
learned (LSQ) with ``learn_scales``. Loss: pixel cross-entropy on the labels, plus optional distillation
from the float model's logits (``distill``: it helps near-ties). AdamW, a cosine learning rate, no warm-up:
a short schedule at a small learning rate.

Before training, the float graph is checked against the float checkpoint (the ranges must belong to these
weights), and the untrained Q/DQ graph is scored: that is the calibrated (PTQ) model, shown beside the float
and the QAT figures. ``qat_export.write_qat_folder`` writes what the build needs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.datasets import DatasetSpec, summary
from ..data.torch_dataset import SegmentationDataset
from ..errors import ArtifactError, ConfigError
from ..fileio import sha256_file
from ..metrics import IGNORE_INDEX, confusion_matrix, mean_iou
from ..models import model_from_weights, read_checkpoint_info
from ..onnx_model import load_onnx, read_onnx_metadata
from ..quant.fp16_regions import check_high_precision, fp16_regions_wanted
from ..quant.qdq_trt import CONCAT_SCALES, quantization_record, quantize_for_tensorrt
from ..quant.ranges import Ranges, load_ranges
from ..quant.trt_cache import DEFAULT_TRT_VERSION
from ..spec import InputSpec
from .onnx_graph import OnnxGraphModule
from .qat_checkpoint import QatCheckpoint, QatMetrics, QatPlacement, is_qat_checkpoint
from .trainer import TrainConfig, open_splits

DEFAULT_QAT_LR = 1e-5
RANGES_FILE = "ranges.json"


@dataclass
class QatConfig:
    weights: Path  # the float checkpoint (edgeseg train's best.pt)
    ranges: Path  # ranges.json, or the folder holding it (a build or calibrate folder)
    data: DatasetSpec | Path
    out: Path
    val_data: DatasetSpec | Path | None = None
    onnx: Path | None = None  # the float model.onnx the ranges belong to; None: beside ranges.json
    epochs: int = 2
    batch_size: int = 8
    lr: float = DEFAULT_QAT_LR
    weight_decay: float = 0.0
    distill: float = 0.0  # weight of the distillation loss (KL to the float model's softmax); 0: labels only
    learn_scales: bool = False  # LSQ activation scales instead of the calibrated ones
    workers: int = 0
    seed: int = 0
    threads: int | None = None
    max_steps_per_epoch: int | None = None  # for quick tests
    skip_bad: bool = False
    device: str | None = None
    placement: QatPlacement | None = None  # None: the one the folder's model.int8.onnx was written with, else defaults
    trt_version: str | None = None  # the TensorRT whose Q/DQ placement is trained (None: as above)
    high_precision: str = "fp16"  # float regions of the model.int8.onnx written at the end (fp16_regions.py)

    def check(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1", found=str(getattr(self, name)))
        if not self.lr > 0:
            raise ConfigError("--lr must be positive", found=str(self.lr))
        check_high_precision(self.high_precision)
        if self.distill < 0:
            raise ConfigError("--distill must be 0 or more", found=str(self.distill))
        if self.placement is not None and self.placement.concat_scales not in CONCAT_SCALES:
            raise ConfigError("unknown --concat-scales", expected=" | ".join(CONCAT_SCALES),
                              found=repr(self.placement.concat_scales))


@dataclass
class QatInputs:
    """What the fine-tuning starts from, located and checked (``locate_inputs``)."""

    float_model: Any  # onnx.ModelProto: the float graph the ranges belong to
    onnx_path: Path
    ranges: Ranges
    ranges_path: Path
    placement: QatPlacement
    placement_source: str  # where the placement options came from, in words
    spec: InputSpec
    model: str
    classes: list[str]
    class_colors: list[list[int]] = field(default_factory=list)


@dataclass
class QatResult:
    checkpoint: QatCheckpoint
    history: list[dict[str, Any]]
    seconds: float
    inputs: QatInputs


def locate_inputs(config: QatConfig, log: Callable[[str], None] = print) -> QatInputs:
    """The ranges, the float ONNX they were calibrated on, and the placement; each checked against the float
    checkpoint before any training starts."""
    if is_qat_checkpoint(config.weights):
        raise ConfigError(f"{config.weights} is already a QAT checkpoint", expected="the float checkpoint "
                          "(edgeseg train's best.pt)", fix=f"build it: edgeseg build --int8 --weights {config.weights}")
    info = read_checkpoint_info(config.weights, require_checkpoint="pass the best.pt written by edgeseg train")
    ranges_path = Path(config.ranges)
    if ranges_path.is_dir():
        ranges_path = ranges_path / RANGES_FILE
    if not ranges_path.is_file():
        raise ConfigError("no ranges file for QAT", expected=f"{ranges_path}", found="no such file",
                          fix=f"calibrate first: edgeseg build --int8 --weights {config.weights} --out DIR, then "
                              "pass --ranges DIR")
    ranges = load_ranges(ranges_path)
    onnx_path = Path(config.onnx) if config.onnx is not None else ranges_path.parent / "model.onnx"
    if not onnx_path.is_file():
        raise ConfigError("the float model the ranges were calibrated on was not found",
                          expected=str(onnx_path), fix="pass --onnx PATH/model.onnx (the file edgeseg calibrate read)")
    if ranges.onnx_sha256 and sha256_file(onnx_path) != ranges.onnx_sha256:
        raise ArtifactError(f"{ranges_path} was calibrated on another model.onnx than {onnx_path}",
                            expected=f"sha256 {ranges.onnx_sha256[:12]}…",
                            found=f"sha256 {sha256_file(onnx_path)[:12]}…",
                            fix="pass the model.onnx edgeseg calibrate read with --onnx, or calibrate again")
    float_model = load_onnx(onnx_path)
    meta = read_onnx_metadata(float_model)
    if meta.get("model") != info.model or list(meta.get("classes", [])) != list(info.classes):
        raise ArtifactError(f"{onnx_path} was not exported from {config.weights}",
                            expected=f"{info.model} with {len(info.classes)} classes",
                            found=f"{meta.get('model')} with {len(meta.get('classes', []))} classes",
                            fix="build and calibrate from these weights: edgeseg build --int8 --weights "
                                f"{config.weights}")
    placement, source = _placement(config, ranges_path.parent / "model.int8.onnx")
    log(f"QAT starts from {onnx_path} and {ranges_path} ({ranges.method}, {len(ranges.tensors)} tensors); "
        f"placement: TensorRT {placement.trt_version}, concat scales {placement.concat_scales}, "
        f"{len(placement.keep_fp_layers)} layers kept in float, {placement.high_precision} float regions ({source})")
    colours = [list(c) for c in info.extra.get("class_colors", [])]
    spec = InputSpec.from_dict(meta["input_spec"]) if isinstance(meta.get("input_spec"), dict) else info.input_spec
    if spec is None:
        raise ArtifactError(f"{onnx_path} records no input spec", fix="export it with edgeseg export")
    return QatInputs(float_model, onnx_path, ranges, ranges_path, placement, source, spec, info.model,
                     list(info.classes), colours)


def _placement(config: QatConfig, sibling: Path) -> tuple[QatPlacement, str]:
    """The placement options: as given, else those the folder's model.int8.onnx was written with (its layers
    kept in float by a fallback stay in float), else the defaults; ``trt_version`` overrides the version."""
    if config.placement is not None:
        return config.placement, "as given"
    placement, source = QatPlacement(DEFAULT_TRT_VERSION), "defaults"
    record = quantization_record(load_onnx(sibling)) if sibling.is_file() else {}
    if record:
        placement = QatPlacement(str(record.get("trt_version", DEFAULT_TRT_VERSION)),
                                 str(record.get("concat_scales", "separate")),
                                 [str(n) for n in record.get("keep_fp_layers", [])])
        source = f"as in {sibling}"
    if config.trt_version is not None:
        placement.trt_version, source = config.trt_version, f"{source}, TensorRT {config.trt_version} as given"
    placement.high_precision = config.high_precision
    return placement, source


def qat_graph(float_model: Any, ranges: Ranges, placement: QatPlacement, *, scales: dict[str, float] | None = None,
              learn_scales: bool = False) -> OnnxGraphModule:
    """The fake-quant graph: ``float_model`` through the Q/DQ placement TensorRT gets. Where model.int8.onnx
    will have FP16 float regions its scales are float16: the graph computes with them rounded alike (a scale
    off by a float16 rounding moves every value near a rounding tie by one int8 step)."""
    qdq = quantize_for_tensorrt(float_model, ranges, keep_fp_layers=placement.keep_fp_layers,
                                concat_scales=placement.concat_scales, trt_version=placement.trt_version,
                                scales=scales)
    half = fp16_regions_wanted(placement.high_precision, placement.trt_version)
    return OnnxGraphModule(qdq, float_model=float_model, learn_scales=learn_scales, half_scales=half)


def train_qat(config: QatConfig, log: Callable[[str], None] = print,
              on_step: Callable[[dict[str, float]], None] | None = None) -> QatResult:
    """Fine-tune; see the module docstring. The returned checkpoint is the last epoch's (a short schedule)."""
    config.check()
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % (1 << 32))
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    inputs = locate_inputs(config, log)
    train_set, val_set = open_splits(TrainConfig(model=inputs.model, data=config.data, out=config.out,
                                                 input_size=inputs.spec.size, val_data=config.val_data,
                                                 skip_bad=config.skip_bad))
    for folder, what in ((train_set, "training"), (val_set, "validation")):
        log(f"{what} data {summary(folder)}")
    if train_set.num_classes != len(inputs.classes):
        raise ConfigError("the training data has another number of classes than the model",
                          expected=str(len(inputs.classes)), found=str(train_set.num_classes))
    teacher = OnnxGraphModule(inputs.float_model).to(device).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    student = qat_graph(inputs.float_model, inputs.ranges, inputs.placement,
                        learn_scales=config.learn_scales).to(device)
    _check_float_graph(teacher, config.weights, inputs.spec, device)
    val_loader = DataLoader(SegmentationDataset(val_set, inputs.spec, train=False), batch_size=config.batch_size,
                            num_workers=config.workers)
    scorer = _Scorer(teacher, val_loader, len(inputs.classes), device)
    ptq_miou, ptq_agreement = scorer.score(student)
    log(f"float model: val mIoU {scorer.float_miou:.4f}; calibrated INT8 (PTQ, epoch 0): val mIoU {ptq_miou:.4f}, "
        f"agreement with float {ptq_agreement:.2%}")
    train_data = SegmentationDataset(train_set, inputs.spec, train=True, seed=config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=True, num_workers=config.workers,
                        drop_last=len(train_data) > config.batch_size, generator=generator)
    steps = len(loader) if config.max_steps_per_epoch is None else min(len(loader), config.max_steps_per_epoch)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, Any]] = [{"epoch": 0, "val_miou": ptq_miou, "val_agreement": ptq_agreement}]
    began = time.perf_counter()
    for epoch in range(config.epochs):
        train_data.set_epoch(epoch)
        generator.manual_seed(config.seed * 1000 + epoch)
        record = _train_epoch(student, teacher, loader, optimizer, config, epoch, steps, device, on_step)
        miou, agreement = scorer.score(student)
        record.update(epoch=epoch + 1, val_miou=miou, val_agreement=agreement)
        history.append(record)
        log(f"epoch {epoch + 1}/{config.epochs}  loss {record['train_loss']:.4f}  val mIoU {miou:.4f}  agreement "
            f"with float {agreement:.2%}  {record['images_per_s']:.1f} img/s  {record['seconds']:.0f} s")
    metrics = QatMetrics(scorer.images, scorer.float_miou, ptq_miou, history[-1]["val_miou"], ptq_agreement,
                         history[-1]["val_agreement"])
    checkpoint = QatCheckpoint(
        inputs.model, inputs.classes, inputs.spec, _trained_float_onnx(inputs.float_model, student),
        _trained_ranges(inputs.ranges, student, config.learn_scales), student.activation_scales(), inputs.placement,
        {"path": str(config.weights), "sha256": sha256_file(config.weights)},
        inputs.float_model.SerializeToString(), metrics, inputs.class_colors, history, _config_dict(config))
    return QatResult(checkpoint, history, time.perf_counter() - began, inputs)


def _check_float_graph(teacher: OnnxGraphModule, weights: Path, spec: InputSpec, device: torch.device) -> None:
    """The float graph (the ranges' model.onnx) computes what the float checkpoint computes: the ranges belong
    to these weights."""

    model, _ = model_from_weights(weights)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, *spec.size, generator=generator)
    with torch.no_grad():
        expected = model.float().eval()(x)
        found = teacher(x.to(device)).cpu()
    agreement = float((expected.argmax(1) == found.argmax(1)).float().mean())
    if agreement < 0.999:
        raise ArtifactError("the float model.onnx beside the ranges does not compute what --weights computes",
                            expected="the export of these weights", found=f"argmax agreement {agreement:.2%}",
                            fix=f"build and calibrate from these weights: edgeseg build --int8 --weights {weights}")


class _Scorer:
    """Scores models on the validation batches: mIoU against the labels, agreement with the float model."""

    def __init__(self, teacher: OnnxGraphModule, loader: DataLoader, num_classes: int, device: torch.device) -> None:
        self.loader, self.num_classes, self.device = loader, num_classes, device
        self.float_labels: list[np.ndarray] = []
        confusion = np.zeros((num_classes, num_classes), np.int64)
        with torch.no_grad():
            for inputs, targets in loader:
                labels = teacher(inputs.to(device)).argmax(1).cpu().numpy()
                self.float_labels.append(labels)
                confusion += confusion_matrix(labels, targets.numpy(), num_classes)
        self.float_miou = mean_iou(confusion)
        self.images = sum(len(labels) for labels in self.float_labels)

    @torch.no_grad()
    def score(self, model: torch.nn.Module) -> tuple[float, float]:
        model.eval()
        confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
        same = total = 0
        for (inputs, targets), reference in zip(self.loader, self.float_labels, strict=True):
            labels = model(inputs.to(self.device)).argmax(1).cpu().numpy()
            confusion += confusion_matrix(labels, targets.numpy(), self.num_classes)
            same += int(np.count_nonzero(labels == reference))
            total += labels.size
        return mean_iou(confusion), same / max(total, 1)


def _train_epoch(student: OnnxGraphModule, teacher: OnnxGraphModule, loader: DataLoader,
                 optimizer: torch.optim.Optimizer, config: QatConfig, epoch: int, steps: int, device: torch.device,
                 on_step: Callable[[dict[str, float]], None] | None) -> dict[str, Any]:
    student.train()
    seen, loss_sum, began = 0, 0.0, time.perf_counter()
    total = steps * config.epochs
    for step, (inputs, targets) in enumerate(loader):
        if step >= steps:
            break
        done = epoch * steps + step
        for group in optimizer.param_groups:  # cosine to 0 over the whole schedule
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * done / max(total, 1)))
        inputs, targets = inputs.to(device), targets.to(device)
        logits = student(inputs)
        loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
        if config.distill > 0:
            with torch.no_grad():
                soft = F.softmax(teacher(inputs), dim=1)
            loss = loss + config.distill * F.kl_div(F.log_softmax(logits, dim=1), soft, reduction="none").sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(inputs)
        loss_sum += float(loss.detach()) * len(inputs)
        if on_step:
            on_step({"epoch": epoch, "step": step, "steps": steps, "loss": float(loss.detach()),
                     "images_per_s": seen / max(time.perf_counter() - began, 1e-9),
                     "lr": optimizer.param_groups[0]["lr"]})
    seconds = time.perf_counter() - began
    return {"train_loss": loss_sum / max(seen, 1), "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds}


def _trained_float_onnx(float_model: Any, student: OnnxGraphModule) -> bytes:
    """``float_model`` with the fine-tuned weights and biases in place of its initializers (serialized)."""
    import onnx

    trained = onnx.ModelProto.FromString(float_model.SerializeToString())
    values = student.float_initializers()
    for init in trained.graph.initializer:
        if init.name in values:
            init.CopyFrom(onnx.numpy_helper.from_array(values[init.name].astype(np.float32), init.name))
    return trained.SerializeToString()


def _trained_ranges(ranges: Ranges, student: OnnxGraphModule, learned: bool) -> Ranges:
    """The calibrated ranges; with learned scales each quantized tensor's amax is 127 x its trained scale
    (for the files that take ranges: ONNX Runtime's and OpenVINO's)."""
    if not learned:
        return ranges
    tensors = dict(ranges.tensors)
    scales = student.activation_scales()
    for quantizer in student.activation_quantizers:
        old = tensors.get(quantizer.tensor)
        if old is not None and quantizer.scale_name == f"{quantizer.tensor}_scale":
            amax = 127.0 * scales[quantizer.scale_name]
            tensors[quantizer.tensor] = type(old)(max(old.min, -amax), min(old.max, amax), amax)
    return replace(ranges, tensors=tensors, method=f"{ranges.method}+lsq")


def _config_dict(config: QatConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, (Path, DatasetSpec)) else asdict(v) if isinstance(v, QatPlacement) else v)
            for k, v in vars(config).items()}


def validation_inputs(inputs: QatInputs, config: QatConfig, count: int) -> np.ndarray:
    """The first ``count`` validation images, preprocessed (N x 3 x H x W float32): parity frames."""
    _, val_set = open_splits(TrainConfig(model=inputs.model, data=config.data, out=config.out,
                                         input_size=inputs.spec.size, val_data=config.val_data,
                                         skip_bad=config.skip_bad))
    dataset = SegmentationDataset(val_set, inputs.spec, train=False)
    return np.stack([dataset[i][0].numpy() for i in range(min(count, len(dataset)))])
