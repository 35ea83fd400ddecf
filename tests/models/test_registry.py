"""Models composed, not hand-wired (#25 item 4): a backbone or decoder added as one module (helpers/fake_backbone.py)
is a model everywhere a zoo model is: ``create_model``, options, checkpoints and ``model_from_weights``, ImageNet
backbone files, the zoo checks, ``edgeseg models``, ``--model``'s did-you-mean and ``edgeseg train``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from helpers import zoo  # noqa: E402
from helpers.imagenet_files import write  # noqa: E402

from edgeseg.cli import main  # noqa: E402
from edgeseg.errors import InternalError, ModelError  # noqa: E402
from edgeseg.models import (  # noqa: E402
    create_model,
    list_models,
    load_backbone_weights,
    model_from_weights,
    model_info,
    registry,  # noqa: E402
    save_checkpoint,
)
from edgeseg.models.weights import pretrained_backbone  # noqa: E402
from edgeseg.spec import InputSpec  # noqa: E402

FAKE = "helpers.fake_backbone"


@pytest.fixture()
def fake() -> Iterator[ModuleType]:
    with zoo.registered_from(FAKE) as module:
        yield module


# -- how a name resolves ---------------------------------------------------------------------------------------
def test_every_zoo_model_is_a_registered_backbone_plus_a_registered_decoder() -> None:
    for name in list_models():
        info = model_info(name)
        backbone, decoder = registry.backbone_entry(info.backbone), registry.decoder_entry(info.decoder)
        assert info.family == backbone.family and backbone.pretrained is not None
        model = create_model(name, num_classes=3)
        assert type(model.backbone).__name__ in ("ShuffleNetV2Backbone", "HRNetBackbone")
        assert type(model).__name__ == ("OCRSegmentationModel" if decoder.name == "ocr" else "SegmentationModel")
        assert model.model_name == name and model.head.in_channels == model.decoder.out_channels
    assert registry.list_backbones() == ["hrnet_w18_small_v1", "hrnet_w18_small_v2", "shufflenetv2_x0_5",
                                         "shufflenetv2_x1_0", "shufflenetv2_x1_5", "shufflenetv2_x2_0"]
    assert registry.list_decoders() == ["deeplabv3", "deeplabv3plus", "deeplabv3plus_sep", "dspp", "hrnetv2",
                                        "mdspp", "ocr"]


def test_options_go_to_the_part_that_takes_them() -> None:
    model = create_model("shufflenetv2_x0_5_deeplabv3plus", output_stride=8, low_level_stride=8, separable=True)
    assert model.backbone.output_stride == 8 and model.decoder.low_level_index == 1 and model.decoder.separable
    assert create_model("shufflenetv2_x0_5_deeplabv3").backbone.output_stride == 16  # the decoder's default
    assert create_model("shufflenetv2_x0_5_dspp", output_stride=32).backbone.output_stride == 32  # what it requires
    with pytest.raises(ModelError, match="does not take that option") as info:
        create_model("shufflenetv2_x0_5_deeplabv3", low_level_stride=8)
    assert "its options: output_stride" in str(info.value) and "low_level_stride=8" in str(info.value)
    with pytest.raises(ModelError, match="output stride 32 only") as info:
        create_model("shufflenetv2_x1_0_mdspp", output_stride=8)
    assert "the SPEED decoder upsamples" in str(info.value)
    assert "use shufflenetv2_x1_0_deeplabv3plus for another output stride" in str(info.value)


def test_registration_mistakes_are_bugs(fake: ModuleType) -> None:
    with pytest.raises(InternalError, match="registered twice"):
        registry.register_backbone(fake.BACKBONE, family="x")(fake.fakenet_s)
    with pytest.raises(InternalError, match="registered twice"):
        registry.register_decoder(fake.DECODER)(fake.fakehead)
    with pytest.raises(InternalError, match="no decoder 'nodecoder' is registered"):
        registry.register_composed("fakenet_s_nodecoder", backbone=fake.BACKBONE, decoder="nodecoder")
    with pytest.raises(InternalError, match="must name its options"):
        registry.register_backbone("fakenet_kw", family="x")(lambda **options: None)
    assert "fakenet_s_nodecoder" not in list_models()


# -- a new backbone and decoder, everywhere ---------------------------------------------------------------------
def test_the_fake_parts_compose_with_each_other_and_with_the_zoo(fake: ModuleType) -> None:
    assert set(fake.MODELS) <= set(list_models())
    info = model_info("fakenet_s_fakehead")
    assert (info.family, info.backbone, info.decoder, info.default_input_size) == ("fakenet", "fakenet_s",
                                                                                   "fakehead", (64, 64))
    assert info.description == "FakeNet S + fake head (1x1 on the deepest feature)"
    model = create_model("fakenet_s_fakehead", num_classes=4, depth_scale=2, mid_channels=8)
    assert isinstance(model.backbone, fake.FakeNet) and model.backbone.out_channels == [16, 32, 64]
    assert model.decoder.out_channels == 8 and model.head.out_channels == 4
    assert isinstance(create_model("fakenet_s_deeplabv3plus", separable=True).backbone, fake.FakeNet)
    hybrid = create_model("hrnet_w18_small_v1_fakehead")
    assert type(hybrid.backbone).__name__ == "HRNetBackbone" and isinstance(hybrid.decoder, fake.FakeHead)
    assert not hybrid.backbone.layer1[0].bn3.weight.detach().any()  # the HRNet entry's init ran
    with pytest.raises(ModelError, match="does not take that option") as error:
        create_model("fakenet_s_fakehead", output_stride=16)
    assert "its options: depth_scale, mid_channels" in str(error.value)


def test_the_zoo_checks_pick_up_the_fake_models(fake: ModuleType, tmp_path: Path) -> None:
    assert set(fake.MODELS) <= set(zoo.zoo_models())
    assert zoo.first_model_per_decoder()["fakehead"] == "fakenet_s_fakehead"
    for name in ("fakenet_s_fakehead", "fakenet_s_deeplabv3plus"):
        zoo.check_forward_shape_and_size_errors(name)
        zoo.check_backbone_features_highest_resolution_first(name)
        zoo.check_other_class_counts(name)
        zoo.check_export_and_onnxruntime_parity(name, tmp_path / name)


def test_the_registry_is_the_zoo_again_after_the_fake() -> None:
    with zoo.registered_from(FAKE):
        assert "fakenet_s_fakehead" in list_models()
    assert not any(name.startswith("fakenet") or name.endswith("fakehead") for name in list_models())
    assert "fakenet_s" not in registry.list_backbones() and "fakehead" not in registry.list_decoders()


def test_checkpoints_of_a_fake_model_rebuild_it(fake: ModuleType, tmp_path: Path) -> None:
    options = {"depth_scale": 2, "mid_channels": 8}  # both differ from the defaults: dropping them breaks loading
    torch.manual_seed(3)
    source = create_model("fakenet_s_fakehead", num_classes=3, **options).eval()
    path = save_checkpoint(tmp_path / "best.pt", source, model_name="fakenet_s_fakehead", classes=["a", "b", "c"],
                           input_spec=InputSpec(64, 64), model_options=options)
    loaded, info = model_from_weights(path)
    assert info.model == "fakenet_s_fakehead" and info.model_options == options and info.num_classes == 3
    frame = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(frame), source(frame), rtol=0, atol=0)
    plain = tmp_path / "plain.pt"
    torch.save(source.state_dict(), plain)
    again, _ = model_from_weights(plain, model="fakenet_s_fakehead", num_classes=3, **options)
    with torch.no_grad():
        torch.testing.assert_close(again(frame), source(frame), rtol=0, atol=0)
    with pytest.raises(ModelError, match="did you mean fakenet_s_fakehead"):
        model_from_weights(plain, model="fakenet_s_fakehed")


def test_imagenet_weights_are_looked_up_through_the_backbone_entry(fake: ModuleType, tmp_path: Path) -> None:
    path = write(fake.imagenet_file(), tmp_path / "fakenet_s.pth")
    model = create_model("fakenet_s_deeplabv3plus", num_classes=3)
    report = load_backbone_weights(model, path)
    assert report.dropped == ["classifier.bias", "classifier.weight"]  # the entry's classifier prefix
    backbone = pretrained_backbone("fakenet_s_fakehead", path)
    assert torch.equal(backbone.state_dict()["stem.0.weight"], fake.imagenet_file()["stem.0.weight"])
    with pytest.raises(ModelError, match="wrong shape") as info:  # another depth: the entry says what to get
        load_backbone_weights(create_model("fakenet_s_fakehead", depth_scale=2), path)
    assert f"pass {fake.IMAGENET_SOURCE}" in str(info.value)
    with pytest.raises(ModelError) as info:  # a fake file in a zoo model: recognised as the fake backbone
        load_backbone_weights(create_model("shufflenetv2_x0_5_deeplabv3"), path)
    assert "these are fakenet_s backbone weights: train a fakenet_s_* model" in str(info.value)
    assert "pass torchvision's shufflenet_v2_x0_5 weights" in str(info.value)


def test_the_cli_lists_names_and_trains_the_fake(fake: ModuleType, tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["models", "--pattern", "fakenet*", "--input-size", "64x64"])
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.output.splitlines() if line.startswith("fakenet")]
    assert [row[:3] for row in rows] == [["fakenet_s_deeplabv3plus", "fakenet", "deeplabv3plus"],
                                         ["fakenet_s_fakehead", "fakenet", "fakehead"]]
    wrong = runner.invoke(main, ["export", "--model", "fakenet_s_fakehaed", "--out", str(tmp_path / "x")])
    assert wrong.exit_code == 2 and "did you mean fakenet_s_fakehead" in wrong.output
    for split, num, seed in (("train", 2, 0), ("val", 2, 1)):
        made = runner.invoke(main, ["data", "synth", "--out", str(tmp_path / "data" / split), "--num", str(num),
                                    "--size", "64x64", "--seed", str(seed)])
        assert made.exit_code == 0, made.output
    weights = write(fake.imagenet_file(), tmp_path / "fakenet_s.safetensors")
    trained = runner.invoke(main, ["train", "--model", "fakenet_s_fakehead", "--data", str(tmp_path / "data"),
                                   "--input-size", "64x64", "--epochs", "1", "--batch-size", "2", "--workers", "0",
                                   "--threads", "1", "--backbone-weights", str(weights), "--out",
                                   str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
    assert "backbone weights: 11 tensors" in trained.output and "left out 2 classifier/head tensors" in trained.output
    model, info = model_from_weights(tmp_path / "run" / "best.pt")
    assert info.model == "fakenet_s_fakehead" and isinstance(model.backbone, fake.FakeNet)
