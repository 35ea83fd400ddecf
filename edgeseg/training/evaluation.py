"""Scoring a model on a dataset (layer 3, torch): mIoU, pixel accuracy and per-class IoU from
``edgeseg.metrics``, label 255 left out of every score and counted; ``evaluate_folder`` is ``edgeseg eval``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.datasets import DatasetSpec, as_dataset_spec, default_split, open_dataset, summary
from ..data.torch_dataset import SegmentationDataset
from ..errors import ModelError
from ..metrics import IGNORE_INDEX, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from ..models import model_from_weights
from ..spec import InputSpec

# What to pass instead of a file that is not an edgeseg checkpoint (eval has no --num-classes).
EVAL_FIX = "pass a checkpoint written by edgeseg train: edgeseg eval --weights RUN/best.pt --data DIR"


@dataclass
class EvalResult:
    miou: float
    pixel_accuracy: float
    per_class_iou: list[float]  # NaN where a class is absent from target and prediction
    classes: list[str]
    images: int
    ignored_pixels: int = 0  # target pixels labelled 255, left out of every score
    pixels: int = 0  # all target pixels (at model resolution)
    nonfinite_images: int = 0  # images whose logits hold a NaN or an Inf (their argmax means nothing)

    def rows(self) -> list[tuple[str, str]]:
        return [
            (name, "absent" if math.isnan(iou) else f"{iou:.4f}")
            for name, iou in zip(self.classes, self.per_class_iou, strict=True)
        ]


def model_from_checkpoint(path: str | os.PathLike[str], *, name: str | None = None) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode with the checkpoint's weights, checkpoint dict without the state dict).

    ``edgeseg.models.model_from_weights`` builds it (with the checkpoint's model options); float16 weights load
    as float32; a ``name`` other than the checkpoint's model is a ModelError.
    """
    model, info = model_from_weights(path, model=name, require_checkpoint=EVAL_FIX)
    return model.float().eval(), info.checkpoint_dict()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: DataLoader,
    num_classes: int,
    classes: list[str],
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    model.eval()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    images = ignored = pixels = nonfinite = 0
    for inputs, targets in loader:
        logits = model(inputs.to(device))
        nonfinite += int((~torch.isfinite(logits)).flatten(1).any(1).sum())
        pred = logits.argmax(1).cpu().numpy()
        target = targets.numpy()
        confusion += confusion_matrix(pred, target, num_classes)
        ignored += int(np.count_nonzero(target == IGNORE_INDEX))
        pixels += target.size
        images += len(inputs)
        if on_batch:
            on_batch(len(inputs))
    return EvalResult(mean_iou(confusion), pixel_accuracy(confusion), iou_per_class(confusion).tolist(),
                      list(classes), images, ignored, pixels, nonfinite)


def evaluate_folder(
    weights: str | os.PathLike[str],
    data: DatasetSpec | str | os.PathLike[str],
    *,
    model: str | None = None,
    input_size: tuple[int, int] | None = None,
    batch_size: int = 8,
    workers: int = 0,
    skip_bad: bool = False,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[EvalResult, InputSpec]:
    """Score checkpoint ``weights`` on a dataset (its ``val`` split when it has one; see ``open_dataset``)."""
    net, saved = model_from_checkpoint(weights, name=model)
    spec = InputSpec.from_dict(saved["input_spec"])
    if input_size is not None:
        spec = InputSpec(**{**spec.to_dict(), "height": input_size[0], "width": input_size[1]})
    dataset = as_dataset_spec(data)
    folder = open_dataset(dataset, default_split(dataset, "val"), num_classes=int(saved["num_classes"]),
                          skip_bad=skip_bad, classes_hint=f"pass --weights of a model trained on these classes "
                                                          f"(this one has {saved['num_classes']})")
    for path, why in folder.skipped:
        log(f"skipped {path}: {why}")
    log(summary(folder))
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loader = DataLoader(SegmentationDataset(folder, spec, train=False), batch_size=batch_size, num_workers=workers)
    names = _eval_names(folder.classes, list(saved["classes"]))
    result = evaluate(net.to(target), loader, folder.num_classes, names, target)
    if result.nonfinite_images:
        raise ModelError(f"the model's logits are NaN or Inf on {result.nonfinite_images} of {result.images} "
                         "images: no score is meaningful", found=str(weights),
                         fix="check the checkpoint (a training run whose loss diverged?) and its input size")
    return result, spec


def _eval_names(data_names: list[str], checkpoint_names: list[str]) -> list[str]:
    """The dataset's class names, unless they are only generic ``class_k`` ones and the checkpoint has names."""
    generic = all(name == f"class_{k}" for k, name in enumerate(data_names))
    return checkpoint_names if generic and len(checkpoint_names) == len(data_names) else list(data_names)
