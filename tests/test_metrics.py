from __future__ import annotations

import numpy as np

from edgeseg.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy


def test_perfect_and_known_confusion() -> None:
    target = np.array([0, 0, 1, 1, 2, 255])
    assert mean_iou(confusion_matrix(target, target, 3)) == 1.0
    pred = np.array([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(pred, target, 3)
    assert cm.sum() == 5  # ignore pixel dropped
    ious = iou_per_class(cm)
    assert np.allclose(ious, [1 / 2, 2 / 3, 1.0])
    assert np.isclose(mean_iou(cm), np.mean([0.5, 2 / 3, 1.0]))
    assert np.isclose(pixel_accuracy(cm), 4 / 5)


def test_absent_classes_are_nan_not_zero() -> None:
    cm = confusion_matrix(np.zeros(4), np.zeros(4), 3)
    assert np.isnan(iou_per_class(cm)[1:]).all() and mean_iou(cm) == 1.0
