"""Exit codes as the README says: 1 a user error, 2 a bad option (an unknown name given as an option value
included), 130 for Ctrl-C; and the texts of those errors suggest only what can work here."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeseg import cli
from edgeseg.cli import main


def test_ctrl_c_exits_130_with_a_short_message(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command("slow")
    def slow() -> None:
        raise KeyboardInterrupt

    module = types.ModuleType("edgeseg.commands._slow_for_test")
    module.slow = slow  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "slow", ("_slow_for_test", "slow"))
    result = CliRunner().invoke(main, ["slow"])
    assert result.exit_code == 130, result.output
    assert "interrupted (Ctrl-C): edgeseg slow stopped" in result.output
    assert "Aborted!" not in result.output and "Traceback" not in result.output


def test_unknown_model_and_unknown_dataset_kind_exit_alike(tmp_path: Path) -> None:
    kind = CliRunner().invoke(main, ["build", "--val-data", f"cityscape:{tmp_path}", "--out", str(tmp_path / "o")])
    model = CliRunner().invoke(main, ["export", "--model", "shufflenetv2_x0_5_mdsp", "--input-size", "64x64",
                                      "--out", str(tmp_path / "o")])
    assert kind.exit_code == model.exit_code == 2, kind.output + model.output
    assert "unknown model" in model.output and "shufflenetv2_x0_5_mdspp" in model.output


@pytest.mark.parametrize("version, says, never", [
    ("7.0", "TensorRT 7.0.0 is not supported", "TensorRT 11"),
    ("11.0", "implicit INT8 was removed in TensorRT 11", "dpkg"),
])
def test_trt_version_texts_match_the_version(version: str, says: str, never: str, tmp_path: Path) -> None:
    from helpers.tiny_onnx import save_conv_onnx, write_images

    onnx = save_conv_onnx(tmp_path / "m" / "model.onnx")
    write_images(tmp_path / "frames", 2)
    result = CliRunner().invoke(main, ["calibrate", "--onnx", str(onnx), "--calib", str(tmp_path / "frames"),
                                       "--trt-version", version])
    assert result.exit_code == 2, result.output  # an option this edgeseg cannot honour: before any work
    assert says in result.output and never not in result.output
    assert not (tmp_path / "m" / "ranges.json").exists()


def test_empty_and_corrupt_build_folders_exit_alike_and_name_a_build(tmp_path: Path) -> None:
    from helpers.tiny_onnx import write_images

    write_images(tmp_path / "frames", 1)
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.onnx").write_bytes(b"onnx")
    (corrupt / "manifest.json").write_text('{"format": 3, "mod')  # cut short
    outputs = {}
    for name in ("empty", "corrupt"):
        result = CliRunner().invoke(main, ["run", "--artifacts", str(tmp_path / name), "--source",
                                           str(tmp_path / "frames"), "--max-frames", "1"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        outputs[name] = result.output
    assert "edgeseg build" in outputs["empty"]
    assert f"{corrupt / 'manifest.json'} is corrupt" in outputs["corrupt"]
    assert f"edgeseg build --onnx {corrupt / 'model.onnx'} --out {corrupt} --force" in outputs["corrupt"]
