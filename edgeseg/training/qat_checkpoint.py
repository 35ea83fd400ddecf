"""The QAT checkpoint (``qat.pt``): what ``edgeseg train --qat`` fine-tuned, in the form the build needs (layer 3).

A QAT model is not a PyTorch module with a state dict: it is the exported float graph (``model.onnx``,
BatchNorm folded as TensorRT folds it) with fine-tuned weights, run through the Q/DQ placement that
``quant.qdq_trt`` writes for it, at the activation scales it was trained with. So the checkpoint holds that
graph and those scales; ``edgeseg build --int8 --weights qat.pt`` writes the INT8 files from them with the
same writer as after calibration, and never recalibrates.

File: ``torch.save`` of a plain dict (loadable with ``weights_only=True``, like every edgeseg checkpoint)::

    {"format": "edgeseg-qat-1", "model", "classes", "class_colors", "input_spec", "float_onnx": bytes,
     "ranges": ranges.json's dict, "scales": {scale initializer: value}, "placement": {...},
     "float_checkpoint": {"path", "sha256"}, "original_onnx": bytes, "metrics": {...}, "history": [...],
     "config": {...}, "edgeseg_version"}
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import ModelError
from ..fileio import atomic_open
from ..models.checkpoint import QAT_CHECKPOINT_FORMAT
from ..models.weights import open_weights_file
from ..quant.ranges import Ranges
from ..spec import InputSpec

QAT_FORMAT = QAT_CHECKPOINT_FORMAT
QAT_FILE = "qat.pt"


@dataclass
class QatPlacement:
    """The ``quantize_for_tensorrt`` options the QAT graph was built with (the build writes the same)."""

    trt_version: str
    concat_scales: str = "separate"
    keep_fp_layers: list[str] = field(default_factory=list)
    high_precision: str = "fp16"  # model.int8.onnx's float regions; fp16 (TensorRT >= 10): scales trained in float16


@dataclass
class QatMetrics:
    """Validation figures of the float model, the calibrated (PTQ) graph and the fine-tuned (QAT) one, on the
    same validation images at the model input size. Agreement: share of pixels whose argmax matches the float
    model's."""

    images: int = 0
    float_miou: float = 0.0
    ptq_miou: float = 0.0
    qat_miou: float = 0.0
    ptq_agreement: float = 0.0
    qat_agreement: float = 0.0


@dataclass
class QatCheckpoint:
    model: str
    classes: list[str]
    input_spec: InputSpec
    float_onnx: bytes  # model.onnx with the fine-tuned weights: BatchNorm folded, no Q/DQ
    ranges: Ranges  # the calibrated ranges the scales started from (learned ones replace their amax)
    scales: dict[str, float]  # activation scale initializer of the Q/DQ graph -> the scale it was trained with
    placement: QatPlacement
    float_checkpoint: dict[str, str] = field(default_factory=dict)  # path, sha256 of the float weights
    original_onnx: bytes = b""  # the float graph QAT started from (the float checkpoint's export): its scores
    metrics: QatMetrics = field(default_factory=QatMetrics)
    class_colors: list[list[int]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    edgeseg_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {"format": QAT_FORMAT, "model": self.model, "classes": list(self.classes),
                "num_classes": len(self.classes), "input_spec": self.input_spec.to_dict(),
                "float_onnx": self.float_onnx, "ranges": self.ranges.to_dict(), "scales": dict(self.scales),
                "placement": asdict(self.placement), "float_checkpoint": dict(self.float_checkpoint),
                "original_onnx": self.original_onnx,
                "metrics": asdict(self.metrics), "class_colors": [list(c) for c in self.class_colors],
                "history": list(self.history), "config": dict(self.config), "edgeseg_version": self.edgeseg_version}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = QAT_FILE) -> QatCheckpoint:
        if not is_qat(data):
            raise ModelError(f"{source} is not a QAT checkpoint", expected=f"format {QAT_FORMAT!r}",
                             found=f"format {data.get('format')!r}" if isinstance(data, dict) else type(data).__name__,
                             fix="write one with edgeseg qat")
        try:
            return cls(model=str(data["model"]), classes=[str(c) for c in data["classes"]],
                       input_spec=InputSpec.from_dict(data["input_spec"]), float_onnx=bytes(data["float_onnx"]),
                       ranges=Ranges.from_dict(data["ranges"], source=f"{source} (ranges)"),
                       scales={str(k): float(v) for k, v in data["scales"].items()},
                       placement=QatPlacement(**data["placement"]),
                       float_checkpoint=dict(data.get("float_checkpoint", {})),
                       original_onnx=bytes(data.get("original_onnx", b"")),
                       metrics=QatMetrics(**data.get("metrics", {})),
                       class_colors=[list(c) for c in data.get("class_colors", [])],
                       history=list(data.get("history", [])), config=dict(data.get("config", {})),
                       edgeseg_version=str(data.get("edgeseg_version", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source} is a malformed QAT checkpoint", found=f"{type(exc).__name__}: {exc}",
                             fix="write it again with edgeseg qat") from None


def is_qat(obj: Any) -> bool:
    """``obj`` (an unpickled weights file) is a QAT checkpoint."""
    return isinstance(obj, dict) and obj.get("format") == QAT_FORMAT


def is_qat_checkpoint(path: str | os.PathLike[str]) -> bool:
    """The weights file at ``path`` is a QAT checkpoint (a .safetensors file never is)."""
    target = Path(path)
    if not target.is_file() or target.suffix.lower() == ".safetensors":
        return False
    return is_qat(open_weights_file(target)[1])


def read_qat_checkpoint(path: str | os.PathLike[str]) -> QatCheckpoint | None:
    """The QAT checkpoint at ``path``, or None when the file is another weights file (read once)."""
    target = Path(path)
    if target.suffix.lower() == ".safetensors":
        return None
    target, obj = open_weights_file(target)
    return QatCheckpoint.from_dict(obj, source=str(target)) if is_qat(obj) else None


def save_qat_checkpoint(path: str | os.PathLike[str], checkpoint: QatCheckpoint) -> Path:
    with atomic_open(path, "wb") as handle:
        torch.save(checkpoint.to_dict(), handle)
    return Path(path)


def load_qat_checkpoint(path: str | os.PathLike[str]) -> QatCheckpoint:
    target, obj = open_weights_file(path)
    return QatCheckpoint.from_dict(obj, source=str(target))
