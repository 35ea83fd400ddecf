"""Tiny ONNX segmentation nets for the quant/runtime/CLI tests (torch is allowed in tests only).

The net has every op the Q/DQ rules talk about: Conv, a residual Add, a Concat (with one
input from a Resize), a ConvTranspose, a Gemm (channel attention) and a MatMul with a
constant weight, and a final Resize back to the input size.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx

from edgeseg.onnx_model import export_metadata, set_metadata
from edgeseg.spec import InputSpec

CLASSES = ["road", "car", "person"]


def build_tiny_net(path: Path, *, height: int = 64, width: int = 96, seed: int = 0) -> Path:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.res = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
            self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
            self.fc = nn.Linear(16, 16)
            self.mix = nn.Parameter(torch.randn(16, 16) * 0.2)
            self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
            self.fuse = nn.Sequential(nn.Conv2d(24, 8, 3, padding=1, groups=1), nn.ReLU())
            self.classifier = nn.Conv2d(8, len(CLASSES), 1)

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

    torch.manual_seed(seed)
    net = Tiny().eval()
    with torch.no_grad():  # non-trivial BN statistics so folding matters
        net.stem[1].running_mean.uniform_(-0.2, 0.2)
        net.stem[1].running_var.uniform_(0.5, 1.5)
    sample = torch.randn(1, 3, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (sample,), str(path), input_names=["images"], output_names=["logits"],
                          opset_version=17, dynamo=False, do_constant_folding=True)
    add_metadata(path, height=height, width=width)
    return path


def add_metadata(path: Path, *, height: int, width: int, name: str = "tiny") -> None:
    """The metadata ``edgeseg export`` writes (``edgeseg.onnx_model`` owns its format)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    set_metadata(model, export_metadata(model=name, num_classes=len(CLASSES), classes=CLASSES,
                                        input_spec=InputSpec(height, width)))
    onnx.save(model, str(path))


def write_images(folder: Path, count: int, *, seed: int = 0, size: tuple[int, int] = (48, 80)) -> list[Path]:
    """Random-ish RGB images with structure (gradients + noise), as PNG and JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        base = np.stack([(xx * (i + 1)) % 256, (yy * 3 + i * 17) % 256, ((xx + yy) * 2) % 256], axis=-1)
        noise = rng.integers(0, 40, size=(h, w, 3))
        image = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = folder / (f"img_{i:03d}.png" if i % 2 == 0 else f"sub/img_{i:03d}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths
