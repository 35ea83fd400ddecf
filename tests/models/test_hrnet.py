"""HRNet-specific behaviour: timm key compatibility, stage structure, fuse rule, HRNetV2 and OCR heads.

Shapes, export and ONNX Runtime parity of every registered model are in test_zoo.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.errors import ModelError
from edgeseg.models import create_model, model_info
from edgeseg.models.hrnet import (
    HRNET_CONFIGS,
    HighResolutionModule,
    HRNetBackbone,
    StageConfig,
    backbone_state_dict,
    hrnet_config,
)
from edgeseg.models.ocr import ObjectAttentionBlock, SpatialGather

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "hrnet_w18_small_keys.json"


def _shape_text(tensor: torch.Tensor) -> str:
    return "x".join(str(d) for d in tensor.shape)  # the golden file's format ("" for 0-d)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())["models"]


@pytest.mark.parametrize("config", ["w18_small_v1", "w18_small_v2"])
def test_backbone_keys_and_shapes_match_timm(config: str, golden: dict) -> None:
    ours = {k: _shape_text(v) for k, v in HRNetBackbone(HRNET_CONFIGS[config]).state_dict().items()}
    theirs = golden[config]["keys"]
    assert sorted(set(ours) - set(theirs)) == [] and sorted(set(theirs) - set(ours)) == []
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}


def test_timm_checkpoint_loads_strictly_after_dropping_classifier_keys(golden: dict) -> None:
    # A checkpoint shaped like timm's hrnet_w18_small_v2, saved from DataParallel, with its classifier.
    generator = torch.Generator().manual_seed(0)
    checkpoint = {}
    for key, shape in golden["w18_small_v2"]["keys"].items():
        dims = [int(d) for d in shape.split("x")] if shape else []
        checkpoint["module." + key] = torch.randn(dims, generator=generator) if dims else torch.tensor(7)
    checkpoint["module.incre_modules.0.0.conv1.weight"] = torch.zeros(32, 18, 1, 1)
    checkpoint["module.final_layer.0.weight"] = torch.zeros(2048, 1024, 1, 1)
    checkpoint["module.classifier.weight"] = torch.zeros(1000, 2048)

    model = create_model("hrnet_w18_small_v2", num_classes=19)
    model.backbone.load_state_dict(backbone_state_dict(checkpoint), strict=True)
    state = model.backbone.state_dict()
    assert torch.equal(state["stage4.1.fuse_layers.3.0.1.0.weight"],
                       checkpoint["module.stage4.1.fuse_layers.3.0.1.0.weight"])
    assert int(state["layer1.1.bn3.num_batches_tracked"]) == 7
    with pytest.raises(RuntimeError, match="Unexpected key"):
        model.backbone.load_state_dict({k.removeprefix("module."): v for k, v in checkpoint.items()})


@pytest.mark.parametrize(("name", "paper_millions"), [("hrnet_w18_small_v1", 1.5), ("hrnet_w18_small_v2", 3.9)])
def test_parameter_count_matches_paper(name: str, paper_millions: float) -> None:
    count = _num_params(create_model(name, num_classes=19))
    assert abs(count / (paper_millions * 1e6) - 1) <= 0.03, count


@pytest.mark.parametrize(("config", "modules", "channels"),
                         [("w18_small_v1", (1, 1, 1), [16, 32, 64, 128]),
                          ("w18_small_v2", (1, 3, 2), [18, 36, 72, 144])])
def test_stage_structure(config: str, modules: tuple[int, int, int], channels: list[int]) -> None:
    backbone = HRNetBackbone(HRNET_CONFIGS[config])
    assert (len(backbone.stage2), len(backbone.stage3), len(backbone.stage4)) == modules
    assert backbone.out_channels == channels
    assert len(backbone.layer1) == HRNET_CONFIGS[config].stage1.num_blocks[0]
    assert backbone.layer1[0].conv3.out_channels == 4 * HRNET_CONFIGS[config].stage1.num_channels[0]
    # branch 0 -> branch 3: three stride-2 3x3 convs, ReLU after all but the last
    chain = backbone.stage4[0].fuse_layers[3][0]
    assert [step[0].stride for step in chain] == [(2, 2)] * 3
    assert [isinstance(step[-1], nn.ReLU) for step in chain] == [True, True, False]
    assert [step[0].out_channels for step in chain] == [channels[0], channels[0], channels[3]]
    # branch 3 -> branch 0: 1x1 conv + BN only (the upsampling is in forward)
    up = backbone.stage4[0].fuse_layers[0][3]
    assert [type(m) for m in up] == [nn.Conv2d, nn.BatchNorm2d] and up[0].kernel_size == (1, 1)
    # the new branch of transition3 starts from the lowest-resolution branch with one stride-2 conv
    assert backbone.transition3[3][0][0].in_channels == channels[2] and backbone.transition3[3][0][0].stride == (2, 2)


def test_backbone_returns_four_strides_highest_resolution_first() -> None:
    backbone = HRNetBackbone(HRNET_CONFIGS["w18_small_v1"]).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 128))
    assert [tuple(f.shape) for f in features] == [
        (2, c, 64 // s, 128 // s) for c, s in zip(backbone.out_channels, (4, 8, 16, 32), strict=True)
    ]


def test_fuse_is_a_sum_with_bilinear_upsampling() -> None:
    torch.manual_seed(0)
    module = HighResolutionModule([8, 16], StageConfig(1, "basic", (1, 1), (8, 16))).eval()
    for m in module.modules():  # non-trivial BN so a missing or swapped term shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x0, x1 = torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        out0, out1 = module([x0, x1])
        b0, b1 = module.branches[0](x0), module.branches[1](x1)
        up = F.interpolate(module.fuse_layers[0][1](b1), size=(16, 16), mode="bilinear", align_corners=False)
        expected0 = torch.relu(b0 + up)
        expected1 = torch.relu(module.fuse_layers[1][0](b0) + b1)
        nearest = torch.relu(b0 + F.interpolate(module.fuse_layers[0][1](b1), scale_factor=2.0, mode="nearest"))
    torch.testing.assert_close(out0, expected0)
    torch.testing.assert_close(out1, expected1)
    assert not torch.allclose(out0, nearest)


@pytest.mark.parametrize(("config", "concat"), [("w18_small_v1", 240), ("w18_small_v2", 270)])
def test_hrnetv2_head_concatenates_all_branches_at_stride_4(config: str, concat: int) -> None:
    model = create_model(f"hrnet_{config}", num_classes=7).eval()
    assert model.decoder.conv.in_channels == concat and model.decoder.conv.bias is not None
    assert (model.head.in_channels, model.head.out_channels) == (concat, 7)
    with torch.no_grad():
        features = model.decoder(model.backbone(torch.randn(1, 3, 64, 96)))
    assert features.shape == (1, concat, 16, 24) and bool((features >= 0).all())  # after ReLU


def test_registrations() -> None:
    for name, decoder in [("hrnet_w18_small_v1", "hrnetv2"), ("hrnet_w18_small_v2", "hrnetv2"),
                          ("hrnet_w18_small_v2_ocr", "ocr")]:
        info = model_info(name)
        assert (info.family, info.decoder, info.default_input_size) == ("hrnet", decoder, (512, 1024))
    with pytest.raises(ModelError, match="does not take that option"):
        create_model("hrnet_w18_small_v1", num_classes=19, output_stride=8)


def test_spatial_gather_is_a_softmax_weighted_mean_per_class() -> None:
    features = torch.randn(1, 4, 3, 5)
    logits = torch.full((1, 2, 3, 5), -50.0)
    logits[0, 0, 1, 2] = 50.0  # class 0 lives at exactly one pixel
    logits[0, 1] = 0.0  # class 1 is spread uniformly
    objects = SpatialGather()(features, logits)
    assert objects.shape == (1, 4, 2, 1)
    torch.testing.assert_close(objects[0, :, 0, 0], features[0, :, 1, 2])
    torch.testing.assert_close(objects[0, :, 1, 0], features[0].mean(dim=(1, 2)))


def test_object_attention_matches_scaled_dot_product_attention() -> None:
    torch.manual_seed(0)
    block = ObjectAttentionBlock(in_channels=6, key_channels=4).eval()
    pixels, objects = torch.randn(2, 6, 3, 4), torch.randn(2, 6, 5, 1)
    with torch.no_grad():
        out = block(pixels, objects)
        q = block.f_pixel(pixels).flatten(2).transpose(1, 2)  # B x HW x Kc
        k = block.f_object(objects).flatten(2).transpose(1, 2)  # B x K x Kc
        v = block.f_down(objects).flatten(2).transpose(1, 2)
        context = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(Kc)
        expected = block.f_up(context.transpose(1, 2).reshape(2, 4, 3, 4))
    torch.testing.assert_close(out, expected)


def test_ocr_forward_returns_logits_and_aux_trains() -> None:
    torch.manual_seed(0)
    model = create_model("hrnet_w18_small_v2_ocr", num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        out, aux = model.forward_with_aux(x)
        torch.testing.assert_close(model(x), out)
    assert out.shape == aux.shape == (2, 5, 64, 64)
    model.train()
    out, aux = model.forward_with_aux(x)
    target = torch.randint(0, 5, (2, 64, 64))
    (F.cross_entropy(out, target) + 0.4 * F.cross_entropy(aux, target)).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert float(grads["decoder.aux_head.3.weight"].abs().sum()) > 0
    assert float(grads["decoder.ocr_distri_head.object_context_block.f_object.0.weight"].abs().sum()) > 0


def test_ocr_channel_options_and_validation() -> None:
    small = create_model("hrnet_w18_small_v2_ocr")
    large = create_model("hrnet_w18_small_v2_ocr", ocr_mid_channels=512, ocr_key_channels=256)
    assert small.decoder.conv3x3_ocr[0].out_channels == 256 and large.decoder.conv3x3_ocr[0].out_channels == 512
    assert large.head.in_channels == 512 and _num_params(large) > _num_params(small)
    with pytest.raises(ModelError, match="dropout"):
        create_model("hrnet_w18_small_v2_ocr", dropout=1.5)
    with pytest.raises(ModelError, match="ocr_key_channels"):
        create_model("hrnet_w18_small_v2_ocr", ocr_key_channels=0)
    with pytest.raises(ModelError, match="unknown HRNet configuration"):
        hrnet_config("w18")
