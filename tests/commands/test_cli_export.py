"""`edgeseg models` and `edgeseg export` end to end through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner, Result
from torch import nn

from edgeseg.cli import main
from edgeseg.commands.models import count_macs
from edgeseg.export.onnx_export import read_onnx_metadata
from edgeseg.models import create_model, list_models, save_checkpoint
from edgeseg.reference import load_reference
from edgeseg.spec import InputSpec


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_models_lists_the_zoo() -> None:
    result = invoke("models", "--input-size", "256x512")
    assert result.exit_code == 0, result.output
    names = list_models()
    assert len(names) >= 14
    for name in names:
        assert name in result.stdout
    assert "GMACs @256x512" in result.stdout and "params (M)" in result.stdout


def test_models_shows_progress_while_it_counts() -> None:
    result = invoke("models", "--pattern", "shufflenetv2_x0_5_d*")
    assert result.exit_code == 0, result.output
    count = len(list_models("shufflenetv2_x0_5_d*"))
    assert f"counting parameters and GMACs of {count} model(s): {count}/{count}" in result.stderr  # no silent wait


def test_models_pattern() -> None:
    result = invoke("models", "--pattern", "hrnet*")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("hrnet")]
    assert len(rows) == len(list_models("hrnet*")) == 3
    assert "shufflenet" not in result.stdout
    assert invoke("models", "--pattern", "nothing*").exit_code == 2


def test_count_macs_on_known_layers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1),
                          nn.Flatten(), nn.Linear(4 * 64 * 64, 10))
    expected = (32 * 32 * 8 * 3 * 9  # dense conv: outputs x in-channels x kernel
                + 32 * 32 * 8 * 1 * 9  # depthwise
                + 32 * 32 * 8 * 4 * 9  # transposed: inputs x out-channels x kernel
                + 10 * 4 * 64 * 64)
    assert count_macs(model, 32, 32) == expected


@pytest.mark.parametrize(("name", "paper_gflops"), [("hrnet_w18_small_v1", 31.1), ("hrnet_w18_small_v2", 71.6)])
def test_hrnet_compute_matches_the_paper_within_ten_percent(name: str, paper_gflops: float) -> None:
    # The paper's "GFLOPs" (1024x2048, 19 classes) count multiply-accumulates.
    macs = count_macs(create_model(name, num_classes=19), 1024, 2048)
    assert macs / 1e9 == pytest.approx(paper_gflops, rel=0.10)


def test_export_end_to_end_on_a_tiny_model(tmp_path: Path, tiny_model: str) -> None:
    out = tmp_path / "engines" / "tiny"
    result = invoke("export", "--model", tiny_model, "--input-size", "64x64", "--num-classes", "4", "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "model.onnx").is_file() and (out / "reference.npz").is_file()
    assert "export passed" in result.stdout and "argmax" in result.stdout
    assert f"edgeseg calibrate --onnx {out / 'model.onnx'} --calib calib/" in result.stdout  # the checkout's calib/


def test_the_next_command_names_no_missing_calib_folder(tmp_path: Path, tiny_model: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./calib here
    out = tmp_path / "tiny"
    result = invoke("export", "--model", tiny_model, "--input-size", "64x64", "--num-classes", "4", "--out", out)
    assert result.exit_code == 0, result.output
    assert "--calib DIR_OF_CAMERA_FRAMES" in result.stdout and "calib/" not in result.stdout
    assert "random weights, accuracy numbers are meaningless" in result.stderr
    reference = load_reference(out / "reference.npz")
    assert reference.labels.shape == (16, 64, 64) and reference.top2.shape == (16, 2, 64, 64)


def test_export_a_zoo_model(tmp_path: Path) -> None:
    result = invoke("export", "--model", "shufflenetv2_x0_5_dspp", "--input-size", "128x128", "--out", tmp_path,
                    "--num-samples", "1")
    assert result.exit_code == 0, result.output
    meta = read_onnx_metadata(onnx.load(str(tmp_path / "model.onnx")))
    assert meta["model"] == "shufflenetv2_x0_5_dspp" and meta["num_classes"] == 19


def test_checkpoint_supplies_the_defaults(tmp_path: Path, tiny_model: str) -> None:
    spec = InputSpec(64, 96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    ckpt = save_checkpoint(tmp_path / "best.pt", create_model(tiny_model, num_classes=3), model_name=tiny_model,
                           classes=["road", "grass", "sky"], input_spec=spec)
    result = invoke("export", "--weights", ckpt, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "random weights" not in result.stderr
    meta = read_onnx_metadata(onnx.load(str(tmp_path / "out" / "model.onnx")))
    assert meta["model"] == tiny_model and meta["classes"] == ["road", "grass", "sky"]
    assert InputSpec.from_dict(meta["input_spec"]) == spec

    resized = invoke("export", "--weights", ckpt, "--input-size", "32x64", "--out", tmp_path / "small")
    assert resized.exit_code == 0, resized.output
    assert "the checkpoint was trained at 64x96" in resized.stderr
    assert InputSpec.from_dict(read_onnx_metadata(onnx.load(str(tmp_path / "small" / "model.onnx")))["input_spec"]) \
        == InputSpec(32, 64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_options_that_contradict_the_checkpoint_are_usage_errors(tmp_path: Path, tiny_model: str) -> None:
    ckpt = save_checkpoint(tmp_path / "best.pt", create_model(tiny_model, num_classes=3), model_name=tiny_model,
                           classes=["a", "b", "c"], input_spec=InputSpec(64, 64))
    result = invoke("export", "--weights", ckpt, "--model", "hrnet_w18_small_v1", "--num-classes", "5",
                    "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "--model hrnet_w18_small_v1 (checkpoint: _tiny_test_model)" in result.stderr
    assert "--num-classes 5 (checkpoint: 3)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_class_count_in_plain_weights_says_what_to_pass(tmp_path: Path, tiny_model: str) -> None:
    torch.save(create_model(tiny_model, num_classes=7).state_dict(), tmp_path / "w.pt")
    result = invoke("export", "--model", tiny_model, "--weights", tmp_path / "w.pt", "--input-size", "64x64",
                    "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "pass --num-classes 7" in result.stderr and "Traceback" not in result.output


def test_plain_weights_without_model_are_a_usage_error(tmp_path: Path, tiny_model: str) -> None:
    torch.save(create_model(tiny_model, num_classes=3).state_dict(), tmp_path / "w.pt")
    result = invoke("export", "--weights", tmp_path / "w.pt", "--input-size", "64x64", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "not the name of their model" in result.stderr and "pass --model NAME" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["--input-size", "100x100"],  # not a multiple of 32
    ["--input-size", "64x64", "--batch", "0"],
    [],  # no --input-size and no checkpoint
])
def test_usage_errors_exit_2(tmp_path: Path, tiny_model: str, args: list[str]) -> None:
    result = invoke("export", "--model", tiny_model, *args, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists()


def test_out_is_required(tiny_model: str) -> None:
    result = invoke("export", "--model", tiny_model, "--input-size", "64x64")
    assert result.exit_code == 2 and "--out" in result.output


def test_unknown_model_exits_2_without_traceback(tmp_path: Path) -> None:
    result = invoke("export", "--model", "shufflenetv2_x1_0_deeplab", "--input-size", "64x64", "--out", tmp_path)
    assert result.exit_code == 2  # an unknown name as an option value is a bad option, like an unknown dataset KIND
    assert "unknown model" in result.stderr and "shufflenetv2_x1_0_deeplabv3plus" in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_empty_reference_folder_is_refused(tmp_path: Path, tiny_model: str) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("export", "--model", tiny_model, "--input-size", "64x64", "--out", tmp_path / "out",
                    "--reference-images", tmp_path / "empty")
    assert result.exit_code == 1 and "no images" in result.stderr


def test_unknown_model_without_input_size_names_the_model(tmp_path: Path) -> None:
    result = invoke("export", "--model", "shufflenetv2_x1_0_deeplab", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "unknown model" in result.stderr, result.output
    assert "--input-size is required" not in result.output and not (tmp_path / "out").exists()
