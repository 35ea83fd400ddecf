"""`edgeseg train --backbone-weights` / `--save-safetensors` and `--weights X.safetensors` for eval and export."""

from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner
from helpers.imagenet_files import TORCHVISION, torchvision_shufflenetv2, write

from edgeseg.cli import main
from edgeseg.models import model_from_weights

MODEL = "shufflenetv2_x0_5_deeplabv3plus_sep"
SIZE = "64x64"


def _synth(runner: CliRunner, root: Path) -> None:
    for split, num, seed in (("train", 4, 0), ("val", 2, 1)):
        result = runner.invoke(main, ["data", "synth", "--out", str(root / split), "--num", str(num), "--size", SIZE,
                                      "--seed", str(seed)])
        assert result.exit_code == 0, result.output


def _train(runner: CliRunner, data: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return runner.invoke(main, ["train", "--model", MODEL, "--data", str(data), "--input-size", SIZE, "--epochs", "1",
                                "--batch-size", "2", "--workers", "0", "--threads", "1", "--out", str(out), *extra])


def test_train_from_imagenet_safetensors_then_eval_and_export(tmp_path: Path) -> None:
    runner = CliRunner()
    _synth(runner, tmp_path / "data")
    imagenet = torchvision_shufflenetv2("x0_5")
    path = write(imagenet, tmp_path / "shufflenetv2_x0_5.safetensors")
    out = tmp_path / "run"
    # a learning rate of ~0: the trained convs must still be the file's
    result = _train(runner, tmp_path / "data", out, "--backbone-weights", str(path), "--lr", "1e-12",
                    "--save-safetensors")
    assert result.exit_code == 0, result.output
    count = len(TORCHVISION["x0_5"])  # every backbone tensor, without conv5.* and fc.*
    assert f"backbone weights: {count} tensors from {path} (state-dict; left out 8 classifier/head tensors)" \
        in result.output
    model, info = model_from_weights(out / "best.safetensors")  # names its model: no --model
    assert info.model == MODEL and info.input_spec is not None and info.input_spec.size == (64, 64)
    _, pickled = model_from_weights(out / "best.pt")  # the same fields as best.pt, the class colours included
    assert info.extra["class_colors"] == pickled.extra["class_colors"] and len(info.extra["class_colors"]) == 6
    assert {k: info.extra[k] for k in ("epoch", "metrics")} == {k: pickled.extra[k] for k in ("epoch", "metrics")}
    convs = [k for k, v in model.backbone.state_dict().items() if v.dim() == 4]
    assert len(convs) > 40
    for key in convs:
        torch.testing.assert_close(model.backbone.state_dict()[key], imagenet[key], rtol=0, atol=1e-6)

    result = runner.invoke(main, ["eval", "--weights", str(out / "best.safetensors"), "--data", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "2 images at 64x64 input: mIoU" in result.output
    result = runner.invoke(main, ["export", "--weights", str(out / "best.safetensors"), "--out", str(tmp_path / "e"),
                                  "--num-samples", "1"])
    assert result.exit_code == 0, result.output
    assert "export passed: " + MODEL in result.output and (tmp_path / "e" / "model.onnx").is_file()


def test_backbone_weights_errors_come_before_the_data(tmp_path: Path) -> None:
    runner = CliRunner()
    wrong = write(torchvision_shufflenetv2("x1_0"), tmp_path / "shufflenetv2_x1_0.pth")
    out = tmp_path / "run"
    result = _train(runner, tmp_path / "no-data-here", out, "--backbone-weights", str(wrong))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "wrong shape" in result.output and "train a shufflenetv2_x1_0_* model" in result.output
    assert not out.exists()  # no empty run folder left behind
    result = _train(runner, tmp_path, out, "--backbone-weights", str(wrong), "--resume", str(wrong))
    assert result.exit_code != 0 and "--backbone-weights starts a new run" in result.output


def test_plain_safetensors_needs_the_model_name(tmp_path: Path) -> None:
    from edgeseg.models import create_model

    path = write(create_model(MODEL, num_classes=3).state_dict(), tmp_path / "plain.safetensors")
    runner = CliRunner()
    result = runner.invoke(main, ["export", "--weights", str(path), "--input-size", SIZE, "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "without edgeseg metadata" in result.output and "pass --model NAME" in result.output
    result = runner.invoke(main, ["eval", "--weights", str(path), "--data", str(tmp_path)])
    assert result.exit_code == 1 and "not an edgeseg checkpoint" in result.output
