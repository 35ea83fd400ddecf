"""Tiny torch models for the tests, the Q/DQ test net, and the one torch -> ONNX export call they use.

torch is imported when a model is built, never when this module is imported, and a test that builds
one is skipped where torch is absent (``pytest.importorskip``): test modules import these at the top.
"""

from __future__ import annotations

import functools
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

from edgeseg.spec import InputSpec

from .tiny_onnx import add_metadata, class_names

TINY = "_tiny_test_model"  # the registered name of segmentation_model (fixture: tests/commands/conftest.py)
QDQ_NET_CLASSES = class_names(3)  # build_tiny_net's classes


@functools.cache
def _modules() -> types.SimpleNamespace:
    """The nn.Module classes, made once, on first use (they need torch)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch import nn

    class TinyBackbone(nn.Module):
        """Stride-4 stem (8 channels); with ``two_scales`` also a stride-32 feature (16 channels)."""

        def __init__(self, two_scales: bool = False) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            if two_scales:
                self.down = nn.Conv2d(8, 16, 3, stride=8, padding=1)

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            low = self.stem(x)
            return [low, self.down(low)] if hasattr(self, "down") else [low]

    class FirstFeature(nn.Module):
        def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
            return features[0]

    class LastFeature(nn.Module):
        def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
            return features[-1]

    class QdqNet(nn.Module):
        """Every op the Q/DQ rules talk about: Conv, a residual Add, a Concat (one input from a Resize),
        a ConvTranspose, a Gemm (channel attention), a MatMul with a constant weight, a final Resize."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.res = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
            self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
            self.fc = nn.Linear(16, 16)
            self.mix = nn.Parameter(torch.randn(16, 16) * 0.2)
            self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
            self.fuse = nn.Sequential(nn.Conv2d(24, 8, 3, padding=1, groups=1), nn.ReLU())
            self.classifier = nn.Conv2d(8, len(QDQ_NET_CLASSES), 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            size = x.shape[-2:]
            x = self.stem(x)
            x = F.relu(x + self.res(x))  # residual Add
            y = self.down(x)
            attention = torch.sigmoid(self.fc(y.mean(dim=(2, 3))))  # Gemm
            y = y * attention[:, :, None, None]
            y = (y.permute(0, 2, 3, 1) @ self.mix).permute(0, 3, 1, 2)  # MatMul, constant weight
            up = self.up(y)  # ConvTranspose
            pooled = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
            z = torch.cat([up, x, pooled[:, :8]], dim=1)  # Concat, one input from a Resize
            z = self.fuse(z)
            return F.interpolate(self.classifier(z), size=size, mode="bilinear", align_corners=False)

    return types.SimpleNamespace(TinyBackbone=TinyBackbone, FirstFeature=FirstFeature, LastFeature=LastFeature,
                                 QdqNet=QdqNet)


def conv_net(num_classes: int = 5, hidden: int | None = 6, *, seed: int = 0) -> Any:
    """Conv 3x3 (3 -> hidden) -> ReLU -> Conv 1x1 (hidden -> num_classes), or with ``hidden=None`` one
    Conv 3x3 (3 -> num_classes); an ``nn.Sequential`` in eval mode, seeded: same arguments, same weights."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    torch.manual_seed(seed)
    if hidden is None:
        return nn.Sequential(nn.Conv2d(3, num_classes, 3, padding=1)).eval()
    return nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, num_classes, 1)).eval()


def tiny_backbone(*, two_scales: bool = False) -> Any:
    """A stride-4 stem (8 channels) returning ``[low]``; ``two_scales``: ``[low, deep]`` (deep: stride 32,
    16 channels). Unseeded: seed before building when the weights matter."""
    return _modules().TinyBackbone(two_scales)


def first_feature() -> Any:
    """A decoder that passes the first (highest-resolution) backbone feature on."""
    return _modules().FirstFeature()


def last_feature() -> Any:
    """A decoder that passes the last (deepest) backbone feature on."""
    return _modules().LastFeature()


def segmentation_model(num_classes: int = 19, *, name: str = TINY, seed: int = 0) -> Any:
    """A ``SegmentationModel`` fast to export, train and build: ``tiny_backbone()`` -> 1x1 classifier."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from edgeseg.models.base import SegmentationModel

    torch.manual_seed(seed)
    return SegmentationModel(tiny_backbone(), first_feature(), nn.Conv2d(8, num_classes, 1), num_classes=num_classes,
                             name=name)


def export_onnx(model: Any, path: Path, spec: InputSpec, *, metadata: bool = False, name: str = "tiny_net",
                classes: list[str] | None = None) -> Path:
    """``torch.onnx.export`` of ``model`` at ``spec``'s shape (input "images", output "logits", opset 17,
    the TorchScript exporter: no onnxscript needed); ``metadata``: the metadata ``edgeseg export`` writes,
    with the class count read from the model's output."""
    torch = pytest.importorskip("torch")

    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.zeros(spec.shape)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (sample,), str(path), input_names=["images"], output_names=["logits"],
                          opset_version=17, dynamo=False, do_constant_folding=True)
    if metadata:
        with torch.no_grad():
            num_classes = int(model(sample).shape[1])
        add_metadata(path, spec=spec, num_classes=num_classes, name=name, classes=classes)
    return path


def build_tiny_net(path: Path, *, height: int = 64, width: int = 96, seed: int = 0) -> Path:
    """The Q/DQ test net (``QdqNet``: BatchNorm statistics that make folding matter) exported to ``path``
    with export metadata (model "tiny", classes ``QDQ_NET_CLASSES``)."""
    torch = pytest.importorskip("torch")

    torch.manual_seed(seed)
    net = _modules().QdqNet().eval()
    with torch.no_grad():  # non-trivial BN statistics so folding matters
        net.stem[1].running_mean.uniform_(-0.2, 0.2)
        net.stem[1].running_var.uniform_(0.5, 1.5)
    return export_onnx(net, path, InputSpec(height, width), metadata=True, name="tiny", classes=QDQ_NET_CLASSES)

