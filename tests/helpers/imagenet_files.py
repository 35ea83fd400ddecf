"""ImageNet backbone files as torchvision and timm write them, built from the golden key lists (random tensors of
the recorded shapes, classifier included): the tests load them without downloading anything."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TORCHVISION = json.loads((GOLDEN / "torchvision_shufflenetv2_keys.json").read_text())["widths"]
TIMM_HRNET = json.loads((GOLDEN / "hrnet_w18_small_keys.json").read_text())["models"]
# torchvision's ImageNet classifier (stage4 -> conv5 1x1 to 1024, or 2048 for x2.0; fc to 1000), left out of a
# backbone: width -> (stage4 channels, conv5 channels), torchvision's stages_out_channels.
CONV5 = {"x0_5": (192, 1024), "x1_0": (464, 1024), "x1_5": (704, 1024), "x2_0": (976, 2048)}


def _tensor(key: str, shape: list[int], generator: torch.Generator) -> torch.Tensor:
    """Random but trained-like: positive BN variances and He-scaled convs, so a model using them stays finite."""
    if not shape:
        return torch.tensor(100)  # num_batches_tracked
    values = torch.randn(shape, generator=generator)
    if key.endswith("running_var"):
        return values.abs() + 0.5
    if len(shape) == 4:
        return values * (2.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
    return 1 + 0.1 * values if key.endswith("weight") else 0.1 * values  # BN scale / shifts and means


def torchvision_shufflenetv2(width: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict shaped like torchvision.models.shufflenet_v2_<width>(), classifier included."""
    generator = torch.Generator().manual_seed(seed)
    state = {key: _tensor(key, shape, generator) for key, shape in TORCHVISION[width]}
    stage4, conv5 = CONV5[width]
    state.update({"conv5.0.weight": torch.randn(conv5, stage4, 1, 1), "conv5.1.weight": torch.ones(conv5),
                  "conv5.1.bias": torch.zeros(conv5), "conv5.1.running_mean": torch.zeros(conv5),
                  "conv5.1.running_var": torch.ones(conv5), "conv5.1.num_batches_tracked": torch.tensor(0),
                  "fc.weight": torch.randn(1000, conv5), "fc.bias": torch.zeros(1000)})
    return state


def timm_hrnet(config: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict shaped like timm.create_model('hrnet_w18_small[_v2]'), classifier parts included."""
    generator = torch.Generator().manual_seed(seed)
    state = {key: _tensor(key, [int(d) for d in text.split("x")] if text else [], generator)
             for key, text in TIMM_HRNET[config]["keys"].items()}
    state.update({"incre_modules.0.0.conv1.weight": torch.randn(32, 16, 1, 1),
                  "downsamp_modules.0.0.weight": torch.randn(256, 128, 3, 3),
                  "final_layer.0.weight": torch.randn(2048, 1024, 1, 1),
                  "classifier.weight": torch.randn(1000, 2048), "classifier.bias": torch.zeros(1000)})
    return state


def write(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
