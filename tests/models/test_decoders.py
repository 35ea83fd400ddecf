"""DeepLabV3+ (dense and separable), DeepLabV3, DSPP, MDSPP and the SPEED decoder on ShuffleNetV2, and their 20
registrations."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from edgeseg.errors import ConfigError, ModelError
from edgeseg.models import create_model, list_models, model_info
from edgeseg.models.deeplabv3 import DeepLabV3Decoder
from edgeseg.models.deeplabv3plus import ASPP, DeepLabV3PlusDecoder
from edgeseg.models.shufflenetv2 import ShuffleNetV2Backbone
from edgeseg.models.speed_decoder import DSPP, MDSPP, SPEEDDecoder

WIDTHS = ("x0_5", "x1_0", "x1_5", "x2_0")
DECODERS = ("deeplabv3plus", "deeplabv3plus_sep", "deeplabv3", "dspp", "mdspp")


def _features(backbone: ShuffleNetV2Backbone, height: int, width: int) -> list[torch.Tensor]:
    pairs = zip(backbone.out_channels, backbone.strides, strict=True)
    return [torch.randn(1, c, height // s, width // s) for c, s in pairs]


# ---- DeepLabV3+ --------------------------------------------------------------------------------

@pytest.mark.parametrize(("output_stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36)), (32, (3, 6, 9))])
def test_aspp_rates_follow_the_output_stride(output_stride, rates):
    model = create_model("shufflenetv2_x0_5_deeplabv3plus", num_classes=3, output_stride=output_stride)
    assert model.backbone.output_stride == output_stride
    atrous = [branch[0] for branch in model.decoder.aspp.branches[1:4]]
    assert [conv.dilation for conv in atrous] == [(r, r) for r in rates]
    assert [conv.padding for conv in atrous] == [(r, r) for r in rates]
    assert all(conv.kernel_size == (3, 3) and conv.out_channels == 256 for conv in atrous)


def test_deeplabv3plus_defaults_to_output_stride_16():
    model = create_model("shufflenetv2_x1_0_deeplabv3plus")
    assert model.backbone.output_stride == 16 and model.backbone.strides == [4, 8, 16, 16]
    assert model.decoder.aspp.rates == (6, 12, 18)


@pytest.mark.parametrize(("low_level_stride", "expected_size"), [(4, (16, 32)), (8, (8, 16))])
def test_deeplabv3plus_decoder_output_is_at_the_low_level_stride(low_level_stride, expected_size):
    backbone = ShuffleNetV2Backbone("x0_5", 16)
    decoder = DeepLabV3PlusDecoder(backbone.out_channels, backbone.strides, low_level_stride=low_level_stride).eval()
    assert decoder.low_level[0].out_channels == 48
    assert decoder.low_level[0].in_channels == (24 if low_level_stride == 4 else 48)
    with torch.no_grad():
        out = decoder(_features(backbone, 64, 128))
    assert tuple(out.shape) == (1, 256, *expected_size)


def test_deeplabv3plus_image_pooling_is_the_only_adaptive_pool_and_it_is_global():
    model = create_model("shufflenetv2_x0_5_deeplabv3plus")
    adaptive = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    assert len(adaptive) == 1 and adaptive[0].output_size in (1, (1, 1))


def test_separable_deeplabv3plus_uses_depthwise_atrous_and_decoder_convs():
    plain = create_model("shufflenetv2_x0_5_deeplabv3plus", num_classes=3)
    light = create_model("shufflenetv2_x0_5_deeplabv3plus", num_classes=3, separable=True).eval()
    for block in [*light.decoder.aspp.branches[1:4], *light.decoder.fuse]:
        depthwise, pointwise = block[0], block[3]
        assert depthwise.groups == depthwise.in_channels and depthwise.kernel_size == (3, 3)
        assert pointwise.kernel_size == (1, 1)
    assert [b[0].dilation for b in light.decoder.aspp.branches[1:4]] == [(6, 6), (12, 12), (18, 18)]
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(light) < count(plain) / 3
    with torch.no_grad():
        assert tuple(light(torch.randn(1, 3, 64, 128)).shape) == (1, 3, 64, 128)
    with pytest.raises(ModelError, match="true or false"):
        create_model("shufflenetv2_x0_5_deeplabv3plus", separable="yes")


def test_registered_separable_deeplabv3plus_is_the_separable_option():
    named = create_model("shufflenetv2_x1_0_deeplabv3plus_sep", num_classes=3)
    option = create_model("shufflenetv2_x1_0_deeplabv3plus", num_classes=3, separable=True)
    shapes = lambda model: {k: tuple(v.shape) for k, v in model.state_dict().items()}  # noqa: E731
    assert shapes(named) == shapes(option)  # same layers: checkpoints of either load into the other
    assert named.decoder.separable and named.model_name == "shufflenetv2_x1_0_deeplabv3plus_sep"
    assert create_model("shufflenetv2_x0_5_deeplabv3plus_sep", output_stride=8).decoder.aspp.rates == (12, 24, 36)
    with pytest.raises(ModelError, match="does not take that option"):
        create_model("shufflenetv2_x0_5_deeplabv3plus_sep", separable=False)


@pytest.mark.parametrize(("output_stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36)), (32, (3, 6, 9))])
def test_deeplabv3_is_aspp_on_the_deepest_feature(output_stride, rates):
    model = create_model("shufflenetv2_x0_5_deeplabv3", num_classes=3, output_stride=output_stride).eval()
    assert isinstance(model.decoder, DeepLabV3Decoder) and isinstance(model.decoder.aspp, ASPP)
    assert model.decoder.aspp.rates == rates and model.backbone.output_stride == output_stride
    assert [m for m in model.decoder.modules() if isinstance(m, nn.Conv2d)][0].in_channels == 192  # stage4 x0.5
    seen: list[tuple[int, ...]] = []
    model.head.register_forward_hook(lambda module, inputs, output: seen.append(tuple(output.shape)))
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 128))
    assert seen == [(1, 3, 64 // output_stride, 128 // output_stride)]  # the head works at the output stride
    assert tuple(logits.shape) == (1, 3, 64, 128)  # ... and the model resizes to the input
    with pytest.raises(ModelError, match="does not take that option"):
        create_model("shufflenetv2_x0_5_deeplabv3", low_level_stride=4)


def test_deeplabv3plus_rejects_an_unknown_low_level_stride():
    with pytest.raises(ModelError, match="low_level_stride"):
        create_model("shufflenetv2_x0_5_deeplabv3plus", low_level_stride=16)


# ---- DSPP / MDSPP ------------------------------------------------------------------------------

def test_dspp_concatenates_the_input_and_four_branches():
    dspp = DSPP(16, branch_channels=8).eval()
    x = torch.randn(2, 16, 12, 16)
    with torch.no_grad():
        out = dspp(x)
    assert dspp.out_channels == 16 + 4 * 8
    assert tuple(out.shape) == (2, 48, 12, 16)
    assert torch.equal(out[:, :16], x)
    assert all(branch.pointwise.bias is not None for branch in dspp.branches)  # Keras default: with bias


def test_pyramid_kernels_use_floor_division_like_the_paper():
    # SPEED paper: kernel = size // bin. At 12x16: bin 6 -> pool (2, 2) -> a 6x8 grid (not 6x6);
    # bin 8 -> pool (1, 2) -> 12x8.
    dspp = DSPP(4, branch_channels=4).eval()
    grids: dict[int, tuple[int, int]] = {}
    for bin_size, branch in zip(dspp.bins, dspp.branches, strict=True):
        branch.register_forward_hook(
            lambda module, inputs, output, b=bin_size: grids.__setitem__(b, tuple(inputs[0].shape[-2:])))
    with torch.no_grad():
        dspp(torch.randn(1, 4, 12, 16))
    assert grids == {2: (2, 2), 4: (4, 4), 6: (6, 8), 8: (12, 8)}


def test_pyramid_branch_sees_the_block_averages():
    dspp = DSPP(1, branch_channels=1).eval()
    seen: list[torch.Tensor] = []
    dspp.branches[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = torch.arange(8 * 12, dtype=torch.float32).reshape(1, 1, 8, 12)  # value = 12 * row + column
    with torch.no_grad():
        dspp(x)
    # bin 2 on 8x12: 4x6 blocks; top-left block mean = 12 * 1.5 + 2.5 = 20.5, right +6, bottom +48.
    expected = torch.tensor([[20.5, 26.5], [68.5, 74.5]])
    assert torch.allclose(seen[0][0, 0], expected)


def test_mdspp_output_layout_and_bin_groups():
    mdspp = MDSPP(8, filters=16).eval()
    assert mdspp.out_channels == 8 + 2 * 8
    assert all(branch.pointwise.bias is None for branch in mdspp.branches)
    x = torch.rand(1, 8, 16, 16) + 0.5
    with torch.no_grad():
        out = mdspp(x)
        assert tuple(out.shape) == (1, 24, 16, 16)
        assert torch.equal(out[:, 16:], x)  # the input comes last
        # Silence bins 4 and 8: only group B (channels 8..15) must go to zero (no biases anywhere).
        for index in (1, 3):
            mdspp.branches[index].pointwise.weight.zero_()
        out = mdspp(x)
    assert torch.count_nonzero(out[:, 8:16]) == 0
    assert torch.count_nonzero(out[:, :8]) > 0


def test_mdspp_rejects_groups_that_do_not_cover_the_bins():
    with pytest.raises(ModelError, match="every bin"):
        MDSPP(8, filters=16, groups=((2, 4), (6, 6)))


def test_a_feature_smaller_than_a_bin_names_the_minimum_input_size():
    model = create_model("shufflenetv2_x0_5_mdspp", num_classes=3).eval()
    with pytest.raises(ConfigError) as info, torch.no_grad():
        model(torch.randn(1, 3, 96, 96))  # the /16 feature is 6x6 < bin 8
    message = str(info.value)
    assert "128x128" in message and "6x6" in message
    with torch.no_grad():
        assert tuple(model(torch.randn(1, 3, 128, 128)).shape) == (1, 3, 128, 128)


# ---- SPEED decoder -----------------------------------------------------------------------------

@pytest.mark.parametrize("pyramid", ["dspp", "mdspp"])
def test_speed_decoder_shapes_and_pyramid_kind(pyramid):
    backbone = ShuffleNetV2Backbone("x0_5")
    decoder = SPEEDDecoder(backbone.out_channels, backbone.strides, pyramid=pyramid).eval()
    expected_type = DSPP if pyramid == "dspp" else MDSPP
    assert isinstance(decoder.up8.pyramid, expected_type) and isinstance(decoder.up4.pyramid, expected_type)
    assert isinstance(decoder.up16.pyramid, nn.Identity)
    assert decoder.up8.pyramid.out_channels == 128 + 64 and decoder.up4.pyramid.out_channels == 64 + 32
    with torch.no_grad():
        out = decoder(_features(backbone, 128, 256))
    assert tuple(out.shape) == (1, decoder.out_channels, 32, 64)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in decoder.modules())


def test_speed_decoder_needs_an_output_stride_32_backbone():
    backbone = ShuffleNetV2Backbone("x0_5", 16)
    with pytest.raises(ModelError, match="strides 4, 8, 16, 32"):
        SPEEDDecoder(backbone.out_channels, backbone.strides)
    with pytest.raises(ModelError, match="output stride 32 only"):
        create_model("shufflenetv2_x0_5_dspp", output_stride=16)


def test_speed_models_have_no_adaptive_pooling_and_stay_light():
    model = create_model("shufflenetv2_x0_5_mdspp")
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


# ---- registration ------------------------------------------------------------------------------

def test_twenty_shufflenetv2_models_are_registered():
    names = list_models("shufflenetv2_*")
    assert names == sorted(f"shufflenetv2_{w}_{d}" for w in WIDTHS for d in DECODERS) and len(names) == 20
    for name in names:
        info = model_info(name)
        assert info.family == "shufflenetv2"
        assert info.decoder == name.split("_", 3)[3]  # shufflenetv2_<w>_<w>_<decoder>
        assert info.default_input_size == (512, 1024)
        width = ".".join(name.split("_")[1:3])
        assert info.description.startswith(f"ShuffleNetV2 {width} + "), info.description
        assert ("separable" in info.description) == name.endswith("_sep")


def test_models_use_the_backbone_width_and_init_batchnorm():
    model = create_model("shufflenetv2_x1_5_dspp", num_classes=7)
    assert model.backbone.width == "x1_5" and model.head.out_channels == 7
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


def test_untrained_models_keep_their_deepest_feature_alive():
    """Depthwise convs initialised with the fan_out of one group: torch's kaiming fan_out counts every channel and
    shrank the stride-32 feature to ~1e-6, so an untrained DeepLabV3 (head on that feature only) gave all ties;
    logits stay at a few units (absolute tolerances and INT8 checks of random models rely on it)."""
    torch.manual_seed(0)
    model = create_model("shufflenetv2_x1_0_deeplabv3", num_classes=19).eval()
    depthwise = model.backbone.stage3[1].branch2[3]
    assert depthwise.groups == depthwise.in_channels == 116
    assert 0.25 < float(depthwise.weight.std()) < 0.42  # sqrt(1 / 9) = 0.33, not sqrt(2 / (116 * 9)) = 0.04
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 128))
        logits = model(torch.randn(1, 3, 128, 128))
    assert 0.05 < float(features[-1].std()) < 2 and float(logits.abs().max()) < 50
    top2 = logits.topk(2, dim=1).values
    assert float(((top2[:, 0] - top2[:, 1]) < 1e-3).float().mean()) < 0.01


def test_unknown_factory_option_is_a_model_error():
    with pytest.raises(ModelError):
        create_model("shufflenetv2_x0_5_mdspp", pretrained_backbone="/nonexistent.pth")


# ---- export ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["shufflenetv2_x0_5_dspp", "shufflenetv2_x0_5_mdspp"])
def test_onnx_export_bakes_pool_kernels_and_matches_onnxruntime(name):
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(1, 3, 128, 256)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["logits"])
    graph = onnx.load_from_string(buffer.getvalue()).graph
    ops = {node.op_type for node in graph.node}
    assert "AveragePool" in ops and "ConvTranspose" in ops
    assert not ops & {"GlobalAveragePool", "AdaptiveAvgPool2d"}
    kernels = {tuple(onnx.helper.get_attribute_value(a)) for node in graph.node if node.op_type == "AveragePool"
               for a in node.attribute if a.name == "kernel_shape"}
    # /16 feature 8x16 with bins 2/4/6/8 and /8 feature 16x32 (bin 6: 16//6, 32//6 = 2, 5).
    assert {(4, 8), (2, 4), (1, 2), (8, 16), (2, 5)} <= kernels

    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        reference = model(x).numpy()
    assert logits.shape == (1, 19, 128, 256)
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=1e-4)
    assert np.array_equal(logits.argmax(1), reference.argmax(1))
