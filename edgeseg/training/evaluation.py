"""Scoring a model on a dataset (layer 3, torch): mIoU, pixel accuracy and per-class IoU from
``edgeseg.metrics``, label 255 left out of every score and counted; ``evaluate_folder`` is ``edgeseg eval``.

Where the score is taken (``eval_at``): "label" upsamples the logits bilinearly to each label's own resolution
and takes the argmax there, as the official Cityscapes, ADE20K and VOC evaluations do (the default for public
datasets); "input" resizes the labels to the model input (nearest) and scores there (the default for folder
datasets, and what training's per-epoch validation uses: cheaper, and not comparable with published numbers).
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
from ..data.torch_dataset import EVAL_AT, SegmentationDataset, collate_full_masks
from ..errors import InputError, ModelError
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
    eval_at: str = "input"  # "label": logits upsampled to each label's resolution; "input": labels resized

    @property
    def protocol(self) -> str:
        """Where the score was taken, in words (what the summaries print beside it)."""
        if self.eval_at == "label":
            return "scored at the label's full resolution (logits upsampled bilinearly: the official protocol)"
        return "scored at the model input size (labels resized, nearest: not comparable with published numbers)"

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
    """Score ``model`` on ``loader``'s batches. Targets as one tensor (at the input size) are scored against the
    argmax of the logits; targets as a list (``collate_full_masks``: each at its label's resolution) against
    the argmax of the logits upsampled bilinearly to each label's size."""
    model.eval()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    images = ignored = pixels = nonfinite = 0
    at_label = False
    for inputs, targets in loader:
        logits = model(inputs.to(device))
        nonfinite += int((~torch.isfinite(logits)).flatten(1).any(1).sum())
        if isinstance(targets, (list, tuple)):
            at_label = True
            pairs = [(_upsampled_argmax(logits[k:k + 1], target.shape[-2:]), target.numpy())
                     for k, target in enumerate(targets)]
        else:
            pairs = [(logits.argmax(1).cpu().numpy(), targets.numpy())]
        for pred, target in pairs:
            confusion += confusion_matrix(pred, target, num_classes)
            ignored += int(np.count_nonzero(target == IGNORE_INDEX))
            pixels += target.size
        images += len(inputs)
        if on_batch:
            on_batch(len(inputs))
    return EvalResult(mean_iou(confusion), pixel_accuracy(confusion), iou_per_class(confusion).tolist(),
                      list(classes), images, ignored, pixels, nonfinite, "label" if at_label else "input")


def _upsampled_argmax(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Argmax of 1xCxhxw logits after a bilinear upsampling to ``size`` (half-pixel centres, as the official
    evaluations' reference code does)."""
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = torch.nn.functional.interpolate(logits, size=tuple(int(v) for v in size), mode="bilinear",
                                                 align_corners=False)
    return logits.argmax(1).cpu().numpy()


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
    eval_at: str | None = None,
) -> tuple[EvalResult, InputSpec]:
    """Score checkpoint ``weights`` on a dataset (its ``val`` split when it has one; see ``open_dataset``).

    ``eval_at``: "label" or "input" (module docstring); None: "label" for a public dataset (its official protocol),
    "input" for a folder dataset. No labelled pixel at all (a test split whose labels are withheld) is an
    InputError, not a score."""
    net, saved = model_from_checkpoint(weights, name=model)
    spec = InputSpec.from_dict(saved["input_spec"])
    if input_size is not None:
        spec = InputSpec(**{**spec.to_dict(), "height": input_size[0], "width": input_size[1]})
    dataset = as_dataset_spec(data)
    eval_at = eval_at or default_eval_at(dataset)
    if eval_at not in EVAL_AT:
        raise ValueError(f"eval_at must be one of {EVAL_AT}, not {eval_at!r}")
    folder = open_dataset(dataset, default_split(dataset, "val"), num_classes=int(saved["num_classes"]),
                          skip_bad=skip_bad, classes_hint=f"pass --weights of a model trained on these classes "
                                                          f"(this one has {saved['num_classes']})")
    for path, why in folder.skipped:
        log(f"skipped {path}: {why}")
    log(summary(folder))
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loader = DataLoader(SegmentationDataset(folder, spec, train=False, eval_at=eval_at), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate_full_masks if eval_at == "label" else None)
    names = _eval_names(folder.classes, list(saved["classes"]))
    result = evaluate(net.to(target), loader, folder.num_classes, names, target)
    if result.pixels == result.ignored_pixels:
        raise InputError(f"no labelled pixel in {folder.name or folder.root}: every mask pixel of the "
                         f"{result.images} images is ignored (255 after the label table), so there is nothing to score",
                         expected="masks with class labels", found=f"{result.ignored_pixels} of {result.pixels} pixels "
                                                                   "ignored",
                         fix="score a split with public labels (the Cityscapes and ADE20K test labels are withheld: "
                             "use :val), or check that the masks hold class ids")
    if result.nonfinite_images:
        raise ModelError(f"the model's logits are NaN or Inf on {result.nonfinite_images} of {result.images} "
                         "images: no score is meaningful", found=str(weights),
                         fix="check the checkpoint (a training run whose loss diverged?) and its input size")
    return result, spec


def default_eval_at(data: DatasetSpec | str | os.PathLike[str]) -> str:
    """"label" for a public dataset (its official protocol), "input" for a folder dataset."""
    return "input" if as_dataset_spec(data).is_folder else "label"


def _eval_names(data_names: list[str], checkpoint_names: list[str]) -> list[str]:
    """The dataset's class names, unless they are only generic ``class_k`` ones and the checkpoint has names."""
    generic = all(name == f"class_{k}" for k, name in enumerate(data_names))
    return checkpoint_names if generic and len(checkpoint_names) == len(data_names) else list(data_names)
