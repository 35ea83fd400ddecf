"""Weights files: round trips, explained mismatches, refusal of unsafe pickles, NaN detection."""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import last_feature, tiny_backbone
from torch import nn

from edgeseg.errors import ModelError
from edgeseg.models import create_model, load_backbone_weights, load_checkpoint, load_weights, save_checkpoint
from edgeseg.models.base import SegmentationModel
from edgeseg.models.weights import CHECKPOINT_FORMAT
from edgeseg.spec import InputSpec


def tiny(num_classes: int = 3) -> SegmentationModel:
    torch.manual_seed(num_classes)
    return SegmentationModel(tiny_backbone(two_scales=True), last_feature(), nn.Conv2d(16, num_classes, 1),
                             num_classes=num_classes, name="tiny")


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_state_dict_round_trip(tmp_path: Path) -> None:
    source, target = tiny(), tiny()
    nn.init.normal_(source.state_dict()["head.weight"])
    torch.save(source.state_dict(), tmp_path / "w.pt")
    report = load_weights(target, tmp_path / "w.pt")
    assert report.kind == "state-dict" and report.num_tensors == len(source.state_dict())
    assert_same_weights(source, target)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    source = tiny(4)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    source(torch.randn(1, 3, 64, 64)).sum().backward()
    optimizer.step()
    spec = InputSpec(64, 96, channel_order="BGR")
    path = save_checkpoint(tmp_path / "ckpt.pt", source, model_name="tiny", classes=["a", "b", "c", "d"],
                           input_spec=spec, model_options={"width": 1}, epoch=3, metrics={"miou": 0.5},
                           optimizer=optimizer.state_dict())
    checkpoint = load_checkpoint(path)
    assert checkpoint["format"] == CHECKPOINT_FORMAT
    assert (checkpoint["model"], checkpoint["num_classes"], checkpoint["classes"]) == ("tiny", 4, ["a", "b", "c", "d"])
    assert InputSpec.from_dict(checkpoint["input_spec"]) == spec
    assert checkpoint["model_options"] == {"width": 1} and checkpoint["epoch"] == 3
    assert checkpoint["metrics"] == {"miou": 0.5} and "state" in checkpoint["optimizer"]
    target = tiny(4)
    report = load_weights(target, path)
    assert report.kind == "edgeseg-checkpoint" and report.checkpoint["epoch"] == 3
    assert_same_weights(source, target)
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temp file"


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state"])
def test_generic_checkpoint_with_dataparallel_prefix(tmp_path: Path, key: str) -> None:
    source = tiny()
    nn.init.normal_(source.state_dict()["head.weight"])
    wrapped = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({key: wrapped, "epoch": 7, "best_miou": 0.4}, tmp_path / "generic.pth")
    target = tiny()
    assert load_weights(target, tmp_path / "generic.pth").kind == f"checkpoint[{key!r}]"
    assert_same_weights(source, target)


def test_key_mismatch_lists_missing_and_unexpected(tmp_path: Path) -> None:
    state = tiny().state_dict()
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelError) as info:
        load_weights(tiny(), tmp_path / "w.pt")
    message = str(info.value)
    assert "missing keys: 1 (head.bias)" in message
    assert "unexpected keys: 1 (extra.weight)" in message


def test_non_strict_load_reports_what_it_skipped(tmp_path: Path) -> None:
    state = tiny().state_dict()
    state.pop("head.bias")
    torch.save(state, tmp_path / "w.pt")
    report = load_weights(tiny(), tmp_path / "w.pt", strict=False)
    assert report.missing == ["head.bias"] and report.unexpected == []


def test_wrong_num_classes_computes_the_fix(tmp_path: Path) -> None:
    torch.save(tiny(7).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelError) as info:
        load_weights(tiny(5), tmp_path / "w.pt")
    message = str(info.value)
    assert "head.weight: [5, 16, 1, 1]" in message and "head.weight: [7, 16, 1, 1]" in message
    assert "the checkpoint has 7 classes: pass --num-classes 7" in message


def test_other_shape_mismatch_names_the_key(tmp_path: Path) -> None:
    state = tiny().state_dict()
    state["backbone.down.weight"] = torch.zeros(16, 8, 1, 1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelError, match=r"backbone\.down\.weight: \[16, 8, 3, 3\]") as info:
        load_weights(tiny(), tmp_path / "w.pt")
    assert "classes: pass --num-classes" not in str(info.value)


@pytest.mark.parametrize("damage", ["truncate", "empty", "text"])
def test_corrupt_files_are_user_errors(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "w.pt"
    torch.save(tiny().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "text": b"not weights\n"}[damage])
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        load_weights(tiny(), path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_weights(tiny(), tmp_path / "nope.pt")


class Payload:
    """Unpickling this creates ``marker``: proof that the pickle executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return builtins.open, (str(self.marker), "w")


def test_payload_really_executes_when_unpickled_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(Payload(marker))).close()
    assert marker.exists()  # the control: the refusal tests below are meaningful


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickle_with_code_is_refused_without_running_it(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    content = {"head.weight": torch.zeros(3, 16, 1, 1), "evil": Payload(marker)}
    path = tmp_path / "evil.pt"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(content))
    else:
        torch.save(content, path)
    with pytest.raises(ModelError, match="Python objects other than tensors|not a PyTorch checkpoint"):
        load_weights(tiny(), path)
    with pytest.raises(ModelError):
        load_checkpoint(path)
    assert not marker.exists()


def test_not_a_dict_of_tensors(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="does not contain a state dict"):
        load_weights(tiny(), tmp_path / "w.pt")


def test_bare_state_dict_is_not_a_checkpoint(tmp_path: Path) -> None:
    torch.save(tiny().state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelError, match="not an edgeseg checkpoint"):
        load_checkpoint(tmp_path / "w.pt")


def test_nan_weights_are_named(tmp_path: Path) -> None:
    state = tiny().state_dict()
    state["head.weight"][0, 0, 0, 0] = float("nan")
    state["backbone.stem.1.running_var"][2] = float("inf")
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="NaN or Inf") as info:
        load_weights(tiny(), tmp_path / "w.pt")
    assert "head.weight" in str(info.value) and "backbone.stem.1.running_var" in str(info.value)


def test_backbone_file_given_as_full_weights_gets_a_hint(tmp_path: Path) -> None:
    torch.save(tiny().backbone.state_dict(), tmp_path / "imagenet.pth")
    with pytest.raises(ModelError, match="load_backbone_weights"):
        load_weights(tiny(), tmp_path / "imagenet.pth")


def _imagenet_file(backbone: nn.Module, extra: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in backbone.state_dict().items()}
    torch.save({**state, **extra}, path)
    return state


@pytest.mark.parametrize(("name", "classifier"), [
    ("shufflenetv2_x0_5_dspp", {"conv5.0.weight": torch.zeros(1024, 192, 1, 1), "fc.weight": torch.zeros(1000, 1024),
                                "fc.bias": torch.zeros(1000)}),
    ("hrnet_w18_small_v1", {"incre_modules.0.0.conv1.weight": torch.zeros(32, 16, 1, 1),
                            "downsamp_modules.0.0.weight": torch.zeros(256, 128, 3, 3),
                            "final_layer.0.weight": torch.zeros(2048, 1024, 1, 1),
                            "classifier.weight": torch.zeros(1000, 2048), "classifier.bias": torch.zeros(1000)}),
])
def test_backbone_weights_drop_the_imagenet_classifier(tmp_path: Path, name: str,
                                                       classifier: dict[str, torch.Tensor]) -> None:
    model = create_model(name, num_classes=3)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    state = _imagenet_file(model.backbone, classifier, tmp_path / "imagenet.pth")
    report = load_backbone_weights(model, tmp_path / "imagenet.pth")
    assert report.dropped == sorted(classifier)
    for key, value in state.items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    for key, value in head_before.items():  # only the backbone changed
        assert torch.equal(model.state_dict()[key], value), key


def test_backbone_weights_are_strict_for_the_rest(tmp_path: Path) -> None:
    model = tiny()
    state = model.backbone.state_dict()
    state.pop("down.bias")
    torch.save({**state, "fc.weight": torch.zeros(10, 16), "layer9.weight": torch.zeros(1)}, tmp_path / "b.pth")
    with pytest.raises(ModelError) as info:
        load_backbone_weights(model, tmp_path / "b.pth")
    assert "missing keys: 1 (down.bias)" in str(info.value)
    assert "unexpected keys: 1 (layer9.weight)" in str(info.value)  # fc.* was dropped, not reported
