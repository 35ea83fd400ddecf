"""ImageNet backbone files in torchvision / timm layout (.pth and .safetensors, written here from the golden key
lists, no downloads), .safetensors as --weights, and the errors for files that do not fit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers.imagenet_files import TORCHVISION, timm_hrnet, torchvision_shufflenetv2, write
from safetensors.torch import save_file

from edgeseg.errors import DependencyError, ModelError, UsageError
from edgeseg.models import (
    create_model,
    load_backbone_weights,
    load_weights,
    model_from_weights,
    save_checkpoint,
    save_safetensors,
)
from edgeseg.spec import InputSpec


def assert_backbone_is(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.backbone.state_dict()
    assert set(loaded) < set(state)
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("name", ["shufflenetv2_x0_5_deeplabv3plus_sep", "shufflenetv2_x1_0_deeplabv3"])
def test_torchvision_shufflenetv2_file(tmp_path: Path, name: str, suffix: str) -> None:
    width = name.split("_")[1] + "_" + name.split("_")[2]
    state = torchvision_shufflenetv2(width)
    model = create_model(name, num_classes=4)
    head = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    report = load_backbone_weights(model, write(state, tmp_path / f"shufflenetv2_{width}{suffix}"))
    assert report.dropped == sorted(k for k in state if k.startswith(("conv5.", "fc.")))
    assert report.num_tensors == len(TORCHVISION[width])
    assert_backbone_is(model, state)
    for key, value in head.items():  # decoder and head keep their init
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize(("config", "name"), [("w18_small_v1", "hrnet_w18_small_v1"),
                                              ("w18_small_v2", "hrnet_w18_small_v2_ocr")])
def test_timm_hrnet_safetensors(tmp_path: Path, config: str, name: str) -> None:
    state = timm_hrnet(config)
    model = create_model(name, num_classes=3)
    report = load_backbone_weights(model, write(state, tmp_path / "model.safetensors"))
    assert report.dropped == sorted(k for k in state if k.split(".")[0] in
                                    ("incre_modules", "downsamp_modules", "final_layer", "classifier"))
    assert_backbone_is(model, state)


def test_another_width_is_named_with_the_fix(tmp_path: Path) -> None:
    path = write(torchvision_shufflenetv2("x1_0"), tmp_path / "shufflenetv2_x1.pth")
    with pytest.raises(ModelError, match="wrong shape") as info:
        load_backbone_weights(create_model("shufflenetv2_x0_5_deeplabv3plus_sep"), path)
    message = str(info.value)
    assert "stage2.0.branch1.2.weight: [24, 24, 1, 1]" in message  # expected (x0.5) ...
    assert "stage2.0.branch1.2.weight: [58, 24, 1, 1]" in message  # ... and found (x1.0)
    assert "these are shufflenetv2_x1_0 backbone weights: train a shufflenetv2_x1_0_* model" in message
    assert "ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1" in message


def test_another_hrnet_lists_the_keys(tmp_path: Path) -> None:
    path = write(timm_hrnet("w18_small_v2"), tmp_path / "hrnet_w18_small_v2.safetensors")
    with pytest.raises(ModelError, match="do not match the model's layers") as info:
        load_backbone_weights(create_model("hrnet_w18_small_v1"), path)
    message = str(info.value)
    assert "unexpected keys: " in message and "stage3.1." in message  # v2 has 3 stage-3 modules, v1 one
    assert "these are hrnet_w18_small_v2 backbone weights" in message and "timm's hrnet_w18_small weights" in message


def test_renamed_keys_are_listed(tmp_path: Path) -> None:
    state = torchvision_shufflenetv2("x0_5")
    state["features.0.weight"] = state.pop("conv1.0.weight")
    path = write(state, tmp_path / "renamed.safetensors")
    with pytest.raises(ModelError) as info:
        load_backbone_weights(create_model("shufflenetv2_x0_5_deeplabv3"), path)
    message = str(info.value)
    assert "missing keys: 1 (conv1.0.weight)" in message and "unexpected keys: 1 (features.0.weight)" in message
    assert "pass torchvision's shufflenet_v2_x0_5 weights" in message


def test_a_segmentation_checkpoint_gives_its_backbone(tmp_path: Path) -> None:
    """Fine-tuning: the backbone of a model trained on other classes (decoder and head left out)."""
    source = create_model("shufflenetv2_x0_5_deeplabv3", num_classes=19)
    torch.nn.init.normal_(source.backbone.conv1[0].weight)
    path = save_safetensors(tmp_path / "city.safetensors", source, model_name="shufflenetv2_x0_5_deeplabv3",
                            classes=[str(i) for i in range(19)], input_spec=InputSpec(64, 64))
    target = create_model("shufflenetv2_x0_5_deeplabv3", num_classes=5)
    report = load_backbone_weights(target, path)
    assert report.dropped and all(k.startswith(("decoder.", "head.")) for k in report.dropped)
    assert_backbone_is(target, {k.removeprefix("backbone."): v for k, v in source.state_dict().items()})


def test_safetensors_checkpoint_names_its_model(tmp_path: Path) -> None:
    name = "shufflenetv2_x0_5_deeplabv3plus_sep"
    source = create_model(name, num_classes=3, output_stride=32)
    torch.nn.init.normal_(source.head.weight)
    spec = InputSpec(96, 128, channel_order="BGR")
    path = save_safetensors(tmp_path / "best.safetensors", source, model_name=name, classes=["a", "b", "c"],
                            input_spec=spec, model_options={"output_stride": 32}, epoch=4,
                            metrics={"val_miou": 0.5, "per_class_iou": [0.5, float("nan"), 1.0]})
    model, info = model_from_weights(path)
    assert (info.model, info.num_classes, info.classes, info.input_spec) == (name, 3, ["a", "b", "c"], spec)
    assert info.full_checkpoint and info.model_options == {"output_stride": 32} and info.extra["epoch"] == 4
    assert model.backbone.output_stride == 32
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_safetensors_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("shufflenetv2_x0_5_deeplabv3", num_classes=3)
    path = write(model.state_dict(), tmp_path / "w.safetensors")

    calls: list[object] = []

    def no_pickle(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise RuntimeError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_pickle)
    with pytest.raises(UsageError, match="without edgeseg metadata") as info:
        model_from_weights(path)  # no model name in a plain file
    assert "pass --model NAME" in str(info.value)
    loaded, _ = model_from_weights(path, model="shufflenetv2_x0_5_deeplabv3", num_classes=3)
    assert torch.equal(loaded.head.weight, model.head.weight) and not calls
    torch.save(model.state_dict(), tmp_path / "w.pt")  # (torch.save pickles without torch.load)
    with pytest.raises(ModelError):  # the control: a .pt file does go through torch.load
        load_weights(model, tmp_path / "w.pt")
    assert len(calls) == 1


def test_wrong_class_count_in_safetensors(tmp_path: Path) -> None:
    path = write(create_model("shufflenetv2_x0_5_deeplabv3", num_classes=7).state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(ModelError, match="pass --num-classes 7"):
        load_weights(create_model("shufflenetv2_x0_5_deeplabv3", num_classes=5), path)


@pytest.mark.parametrize("damage", ["truncate", "text"])
def test_damaged_safetensors(tmp_path: Path, damage: str) -> None:
    path = write({"w": torch.zeros(64, 64)}, tmp_path / "w.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not weights at all\n")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_weights(create_model("shufflenetv2_x0_5_deeplabv3"), path)


def test_safetensors_named_pt_gets_a_rename_fix(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ModelError, match="rename it to w.safetensors"):
        load_weights(create_model("shufflenetv2_x0_5_deeplabv3"), path)


def test_missing_safetensors_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # import now fails as if not installed
    with pytest.raises(DependencyError) as info:
        load_weights(create_model("shufflenetv2_x0_5_deeplabv3"), path)
    assert "pip install 'edgeseg[desktop]'" in str(info.value)


def test_non_json_extra_fields_are_refused(tmp_path: Path) -> None:
    model = create_model("shufflenetv2_x0_5_deeplabv3", num_classes=1)
    with pytest.raises(ModelError, match="JSON values"):
        save_safetensors(tmp_path / "w.safetensors", model, model_name="shufflenetv2_x0_5_deeplabv3",
                         classes=["a"], input_spec=InputSpec(64, 64), optimizer=torch.zeros(1))
    assert not (tmp_path / "w.safetensors").exists()


def test_checkpoint_and_safetensors_hold_the_same_fields(tmp_path: Path) -> None:
    model = create_model("shufflenetv2_x0_5_deeplabv3", num_classes=2)
    common = {"model_name": "shufflenetv2_x0_5_deeplabv3", "classes": ["a", "b"], "input_spec": InputSpec(64, 64),
              "epoch": 1}
    pt = model_from_weights(save_checkpoint(tmp_path / "best.pt", model, **common))[1]
    st = model_from_weights(save_safetensors(tmp_path / "best.safetensors", model, **common))[1]
    assert pt.checkpoint_dict() == st.checkpoint_dict()
