"""Training loop, evaluation, checkpoints and resume on a tiny model and tiny synthetic data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeseg.data.generate import SynthConfig, write_synthetic_dataset
from edgeseg.errors import ConfigError, InputError, ModelError
from edgeseg.models import registry
from edgeseg.models.base import SegmentationModel
from edgeseg.models.checkpoint import load_checkpoint
from edgeseg.spec import InputSpec, preprocess
from edgeseg.training.evaluation import evaluate_folder, model_from_checkpoint
from edgeseg.training.trainer import TrainConfig, train, write_checkpoint

TINY = "test_tiny_seg"


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 12, 3, 2, 1),
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.Conv2d(12, 16, 3, 2, 1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )

    def forward(self, x):
        return [self.stem(x)]


class _First(nn.Module):
    def forward(self, features):
        return features[0]


def _tiny(num_classes: int, width: int = 16) -> nn.Module:
    return SegmentationModel(_Encoder(), _First(), nn.Conv2d(width, num_classes, 1), num_classes=num_classes, name=TINY)


@pytest.fixture
def tiny_model(monkeypatch):
    registry.list_models()  # load the real zoo first so the patch below is not overwritten
    info = registry.ModelInfo(TINY, "test", "none", _tiny, "tiny test model", (64, 64))
    monkeypatch.setitem(registry._REGISTRY, TINY, info)
    return TINY


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(SynthConfig(out=root / "train", num=12, height=64, width=128, seed=0))
    write_synthetic_dataset(SynthConfig(out=root / "val", num=4, height=64, width=128, seed=1))
    return root


def _config(data: Path, out: Path, **changes) -> TrainConfig:
    values = dict(
        model=TINY,
        data=data,
        out=out,
        input_size=(64, 128),
        epochs=2,
        batch_size=4,
        lr=0.01,
        workers=0,
        threads=1,
        warmup_steps=1,
    )
    values.update(changes)
    return TrainConfig(**values)


def test_training_lowers_the_loss_and_writes_checkpoints(tiny_model, data, tmp_path):
    losses = []
    result = train(_config(data, tmp_path, epochs=8), log=lambda _: None, on_step=lambda s: losses.append(s["loss"]))
    assert len(losses) == 8 * 3  # 12 images / batch 4
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])  # measured: 0.73 (synth v2 scenes)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert 0.0 <= result.best_miou <= 1.0 and result.best_path.is_file() and result.last_path.is_file()
    saved = load_checkpoint(result.best_path)
    assert saved["model"] == TINY and saved["classes"][0] == "floor" and saved["num_classes"] == 6
    assert InputSpec.from_dict(saved["input_spec"]).size == (64, 128)
    assert saved["metrics"]["val_miou"] == pytest.approx(result.best_miou)


def test_same_seed_same_weights(tiny_model, data, tmp_path):
    a = train(_config(data, tmp_path / "a", epochs=1), log=lambda _: None)
    b = train(_config(data, tmp_path / "b", epochs=1), log=lambda _: None)
    sa, sb = load_checkpoint(a.last_path)["state_dict"], load_checkpoint(b.last_path)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trip_gives_identical_outputs(tiny_model, tmp_path):
    torch.manual_seed(0)
    model = _tiny(6).eval()
    spec = InputSpec(64, 128)
    path = write_checkpoint(tmp_path / "m.pt", model, name=TINY, classes=[f"c{k}" for k in range(6)], spec=spec)
    loaded, saved = model_from_checkpoint(path)
    x = torch.from_numpy(preprocess(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8), spec))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(ModelError, match="another model"):
        model_from_checkpoint(path, name="shufflenetv2_x0_5_mdspp")


def test_float16_checkpoint_loads_as_float32(tiny_model, tmp_path):
    torch.manual_seed(0)
    model = _tiny(6).eval()
    half = _tiny(6).eval()
    half.load_state_dict(model.state_dict())
    path = write_checkpoint(tmp_path / "h.pt", half.half(), name=TINY, classes=list("abcdef"), spec=InputSpec(64, 64))
    assert load_checkpoint(path)["state_dict"]["head.weight"].dtype == torch.float16
    loaded, _ = model_from_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=2e-2)


def test_resume_continues_the_epoch_count(tiny_model, data, tmp_path):
    first = train(_config(data, tmp_path, epochs=1), log=lambda _: None)
    assert [h["epoch"] for h in first.history] == [0]
    lines = []
    resumed = train(_config(data, tmp_path, epochs=3, resume=tmp_path / "last.pt"), log=lines.append)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert any("resumed" in line and "epoch 1 of 3" in line for line in lines)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def test_evaluate_folder_scores_a_checkpoint(tiny_model, data, tmp_path):
    result = train(_config(data, tmp_path, epochs=1), log=lambda _: None)
    scored, spec = evaluate_folder(result.last_path, data / "val")
    assert spec.size == (64, 128) and scored.images == 4
    assert scored.miou == pytest.approx(result.history[-1]["val_miou"])  # same policy as training evaluation
    assert len(scored.rows()) == 6 and scored.nonfinite_images == 0

    broken = torch.load(result.last_path, weights_only=False)  # finite weights whose activations overflow
    for key, value in broken["state_dict"].items():
        if value.dim() == 4:
            broken["state_dict"][key] = value * 1e30
    torch.save(broken, tmp_path / "nan.pt")
    with pytest.raises(ModelError, match="NaN or Inf on 4 of 4 images"):
        evaluate_folder(tmp_path / "nan.pt", data / "val")


def test_bad_configs(tiny_model, data, tmp_path):
    with pytest.raises(ConfigError, match="unknown optimizer"):
        train(_config(data, tmp_path, optimizer="lion"))
    with pytest.raises(InputError, match="no validation data"):
        train(_config(data / "train", tmp_path))
    shutil.copytree(data / "train", tmp_path / "only" / "train")  # a train split and no val split
    with pytest.raises(InputError, match="no validation data") as info:
        train(_config(f"folder:{tmp_path / 'only'}:train", tmp_path))
    assert "--val-data" in str(info.value)
    with pytest.raises(ConfigError, match="another model or class list"):
        train(_config(data, tmp_path / "x", epochs=1), log=lambda _: None)
        train(_config(data, tmp_path / "y", model="shufflenetv2_x0_5_dspp", resume=tmp_path / "x" / "last.pt"))
    with pytest.raises(ConfigError, match="another input size"):
        train(_config(data, tmp_path / "z", input_size=(64, 64), resume=tmp_path / "x" / "last.pt"))
