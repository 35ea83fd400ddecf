"""ShuffleNetV2 backbone: torchvision-compatible state dict, parameter counts, strides, dilation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgeseg.errors import ModelError
from edgeseg.models.shufflenetv2 import ShuffleNetV2Backbone, ShuffleUnit, channel_shuffle

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "torchvision_shufflenetv2_keys.json"
WIDTHS = ("x0_5", "x1_0", "x1_5", "x2_0")

# Published torchvision classifier sizes (torchvision docs), an independent check.
FULL_CLASSIFIER_PARAMS = {"x0_5": 1_366_792, "x1_0": 2_278_604, "x1_5": 3_503_624, "x2_0": 7_393_996}
CONV5_CHANNELS = {"x0_5": 1024, "x1_0": 1024, "x1_5": 1024, "x2_0": 2048}


@pytest.fixture(scope="module")
def golden() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    widths = json.loads(GOLDEN.read_text())["widths"]
    return {width: [(key, tuple(shape)) for key, shape in entries] for width, entries in widths.items()}


def _keys_and_shapes(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in module.state_dict().items()]


def test_golden_file_covers_every_width_without_classifier(golden):
    assert set(golden) == set(WIDTHS)
    for entries in golden.values():
        keys = [key for key, _ in entries]
        assert keys[0] == "conv1.0.weight"
        assert not any(key.startswith(("conv5.", "fc.")) for key in keys)


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("width", WIDTHS)
def test_state_dict_matches_torchvision_and_loads_strictly(golden, width, output_stride):
    backbone = ShuffleNetV2Backbone(width, output_stride)
    assert _keys_and_shapes(backbone) == golden[width]

    generator = torch.Generator().manual_seed(0)
    weights = {}
    for key, shape in golden[width]:
        if key.endswith("num_batches_tracked"):
            weights[key] = torch.tensor(7)
        else:
            weights[key] = torch.rand(shape, generator=generator)
    backbone.load_state_dict(weights, strict=True)
    loaded = backbone.state_dict()
    for key in ("conv1.0.weight", "stage4.0.branch1.0.weight", "stage4.3.branch2.6.running_var"):
        assert torch.equal(loaded[key], weights[key])


@pytest.mark.parametrize("width", WIDTHS)
def test_backbone_plus_conv5_and_fc_gives_torchvision_parameter_count(width):
    backbone = ShuffleNetV2Backbone(width)
    last, conv5 = backbone.out_channels[-1], CONV5_CHANNELS[width]
    conv5_params = last * conv5 + 2 * conv5  # 1x1 conv without bias + BN(weight, bias)
    fc_params = conv5 * 1000 + 1000
    backbone_params = sum(p.numel() for p in backbone.parameters())
    assert backbone_params + conv5_params + fc_params == FULL_CLASSIFIER_PARAMS[width]


@pytest.mark.parametrize(
    ("output_stride", "strides"),
    [(32, [4, 8, 16, 32]), (16, [4, 8, 16, 16]), (8, [4, 8, 8, 8])],
)
def test_feature_strides_channels_and_sizes(output_stride, strides):
    backbone = ShuffleNetV2Backbone("x0_5", output_stride).eval()
    assert backbone.strides == strides
    assert backbone.out_channels == [24, 48, 96, 192]
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 128))
    assert [f.shape[1] for f in features] == backbone.out_channels
    assert [tuple(f.shape[-2:]) for f in features] == [(64 // s, 128 // s) for s in strides]


def test_dilated_stages_keep_branch1_at_stride_1_with_matching_padding():
    os8 = ShuffleNetV2Backbone("x1_0", 8)
    expected_dilation = {"stage2": 1, "stage3": 2, "stage4": 4}
    for stage_name, dilation in expected_dilation.items():
        stage = getattr(os8, stage_name)
        entry_stride = 2 if stage_name == "stage2" else 1
        assert stage[0].branch1[0].stride == (entry_stride, entry_stride)
        for unit in stage:
            depthwise = unit.branch2[3]
            assert depthwise.groups == depthwise.in_channels
            assert depthwise.dilation == (dilation, dilation)
            assert depthwise.padding == (dilation, dilation)
    os16 = ShuffleNetV2Backbone("x1_0", 16)
    assert os16.stage3[0].branch2[3].stride == (2, 2) and os16.stage3[0].branch2[3].dilation == (1, 1)
    assert os16.stage4[0].branch2[3].stride == (1, 1) and os16.stage4[3].branch2[3].dilation == (2, 2)


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1, 1).expand(2, 8, 3, 5)
    shuffled = channel_shuffle(x, 8)
    assert shuffled[0, :, 0, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert torch.equal(shuffled[1], shuffled[0])


def test_split_unit_passes_the_first_half_through_unchanged():
    unit = ShuffleUnit(16, 16, first=False).eval()
    x = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        out = unit(x)
    # After the shuffle the untouched half lands on the even channels.
    assert torch.equal(out[:, 0::2], x[:, :8])
    assert not torch.allclose(out[:, 1::2], x[:, 8:])


@pytest.mark.parametrize(("width", "output_stride"), [("x3_0", 32), ("1.0", 32), ("x1_0", 4), ("x1_0", 64)])
def test_bad_width_or_output_stride_is_a_model_error(width, output_stride):
    with pytest.raises(ModelError) as info:
        ShuffleNetV2Backbone(width, output_stride)
    message = str(info.value)
    assert "expected" in message and ("x0_5" in message or "32 or 16 or 8" in message)


def test_a_torchvision_shaped_imagenet_file_loads_into_a_dilated_segmentation_model(golden, tmp_path):
    from edgeseg.models import create_model, load_backbone_weights

    generator = torch.Generator().manual_seed(1)
    state = {key: torch.tensor(3) if key.endswith("num_batches_tracked") else torch.rand(shape, generator=generator)
             for key, shape in golden["x0_5"]}
    # The classifier parts of the full torchvision file, which the backbone does not have.
    state.update({"conv5.0.weight": torch.rand(1024, 192, 1, 1), "conv5.1.weight": torch.rand(1024),
                  "conv5.1.bias": torch.rand(1024), "conv5.1.running_mean": torch.rand(1024),
                  "conv5.1.running_var": torch.rand(1024), "fc.weight": torch.rand(1000, 1024),
                  "fc.bias": torch.rand(1000)})
    path = tmp_path / "shufflenetv2_x0.5.pth"
    torch.save(state, path)

    model = create_model("shufflenetv2_x0_5_deeplabv3plus", num_classes=5, output_stride=8)
    report = load_backbone_weights(model, path)
    assert any(key.startswith("fc.") for key in report.dropped)
    assert torch.equal(model.backbone.stage4[3].branch2[3].weight, state["stage4.3.branch2.3.weight"])
