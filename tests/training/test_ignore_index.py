"""Pixels labelled 255 (edgeseg.metrics.IGNORE_INDEX) are left out of the mIoU and the scores of ``evaluate``
(the training loss passes the same index to cross_entropy), and counted apart."""

from __future__ import annotations

import torch
from torch import nn

from edgeseg.metrics import IGNORE_INDEX
from edgeseg.training.evaluation import evaluate


class _Fixed(nn.Module):
    """Predicts class 0 on the left half and class 1 on the right half of every image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 2, *x.shape[2:])
        half = x.shape[3] // 2
        logits[:, 0, :, :half] = 1
        logits[:, 1, :, half:] = 1
        return logits


def test_evaluate_counts_ignored_pixels_and_leaves_them_out() -> None:
    target = torch.zeros(1, 4, 8, dtype=torch.int64)
    target[:, :, 4:] = 1
    target[:, :2, 4:] = IGNORE_INDEX  # a wrong label would cost class 1 IoU; ignored, it costs nothing
    loader = [(torch.zeros(1, 3, 4, 8), target)]
    result = evaluate(_Fixed(), loader, 2, ["a", "b"], torch.device("cpu"))  # type: ignore[arg-type]
    assert result.miou == 1.0 and result.pixel_accuracy == 1.0
    assert (result.ignored_pixels, result.pixels) == (8, 32)

