"""Segmentation metrics on label maps (layer 0: numpy only).

One implementation for training evaluation, validation and reports. Pixels whose
target is ``ignore_index`` are left out everywhere.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``num_classes x num_classes`` int64 counts; rows = target class, columns = predicted."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target differ in size: {pred.shape} vs {target.shape}")
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    index = target[keep] * num_classes + np.clip(pred[keep], 0, num_classes - 1)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN for classes absent from both target and prediction."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """mIoU over the classes present (in target or prediction); 0.0 when none is."""
    ious = iou_per_class(confusion)
    return float(np.nanmean(ious)) if np.any(~np.isnan(ious)) else 0.0


def pixel_accuracy(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else 0.0
