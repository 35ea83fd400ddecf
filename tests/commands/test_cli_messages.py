"""What the CLI says when things go wrong: clean user errors, runnable "next:" commands, the safety net."""

from __future__ import annotations

import errno
import functools
import importlib
import json
import os
import shlex
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from helpers.tiny_models import build_tiny_net
from helpers.tiny_onnx import write_images
from PIL import Image

from edgeseg import models as models_package
from edgeseg.cli import main
from edgeseg.errors import DESKTOP_INSTALL, ConfigError, DependencyError, InputError, require
from edgeseg.export import onnx_export as export_module
from edgeseg.models import create_model

MODEL = "shufflenetv2_x0_5_dspp"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(result: Result, exit_code: int, *phrases: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    for phrase in phrases:
        assert phrase in result.output, (phrase, result.output)


@pytest.fixture()
def hello(tmp_path: Path) -> Path:
    path = tmp_path / "hello.pt"
    path.write_text("hello")
    return path


# ---------------------------------------------------------------- 1: a weights file that is not one
@pytest.mark.parametrize("command", ["export", "eval", "train --resume"])
def test_a_text_file_as_weights_is_a_clean_error(command: str, hello: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = {
        "export": ["export", "--weights", hello, "--model", MODEL, "--input-size", "64x64", "--out", out],
        "eval": ["eval", "--weights", hello, "--data", tmp_path],
        "train --resume": ["train", "--model", MODEL, "--data", tmp_path, "--input-size", "64x64", "--out", out,
                           "--resume", hello],
    }[command]
    result = invoke(*args)
    assert_clean_error(result, 1, "not a PyTorch checkpoint", "expected:", "found:", "fix:", "b'hello'")
    assert not out.exists()


def test_eval_of_a_bare_state_dict_names_what_eval_has(tmp_path: Path) -> None:
    torch.save(create_model(MODEL, num_classes=3).state_dict(), tmp_path / "w.pt")
    result = invoke("eval", "--weights", tmp_path / "w.pt", "--data", tmp_path)
    assert_clean_error(result, 1, "not an edgeseg checkpoint", "edgeseg eval --weights")
    assert "--num-classes" not in result.output


def _write_pair(folder: Path, stem: str, label: int) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "images" / f"{stem}.png")
    Image.fromarray(np.full((32, 32), label, np.uint8)).save(folder / "masks" / f"{stem}.png")


def test_class_count_errors_end_with_the_callers_hint(tmp_path: Path) -> None:
    from edgeseg.data.folder import open_folder_dataset

    _write_pair(tmp_path, "a", 5)
    with pytest.raises(InputError) as info:
        open_folder_dataset(tmp_path, num_classes=3, classes_hint="pass --weights of another model")
    assert info.value.fix == "fix the masks, or the class list in classes.json, or pass --weights of another model"
    with pytest.raises(InputError) as info:
        open_folder_dataset(tmp_path, num_classes=3)
    assert "--num-classes" not in str(info.value)
    (tmp_path / "classes.json").write_text(json.dumps({"classes": [{"name": "a"}, {"name": "b"}]}))
    with pytest.raises(ConfigError) as cfg:
        open_folder_dataset(tmp_path, num_classes=3, classes_hint="pass --weights of another model")
    assert cfg.value.fix == "fix classes.json, or pass --weights of another model"


# ---------------------------------------------------------------- 2: --out that cannot be written
@pytest.mark.parametrize("blocker", ["read-only folder", "file"])
@pytest.mark.parametrize("command", ["data synth", "export", "calibrate", "train"])
def test_unwritable_out_fails_before_any_work(command: str, blocker: str, tmp_path: Path) -> None:
    if blocker == "read-only folder" and IS_ROOT:
        pytest.skip("root ignores folder permissions")
    locked = tmp_path / "locked"
    if blocker == "file":  # a --out below a file: refused the same way, for root too
        locked.write_text("")
    else:
        locked.mkdir()
    out = locked / "sub"
    args = {
        "data synth": ["data", "synth", "--num", "1", "--size", "32x32"],
        "export": ["export", "--model", MODEL, "--input-size", "64x64"],
        "calibrate": ["calibrate", "--onnx", tmp_path / "model.onnx", "--calib", tmp_path],
        "train": ["train", "--model", MODEL, "--data", tmp_path, "--input-size", "64x64"],
    }[command]
    locked.chmod(0o500)
    try:
        result = invoke(*args, "--out", out)
    finally:
        locked.chmod(0o700)
    assert_clean_error(result, 1, "cannot write into --out", "choose a writable folder with --out")
    assert not out.exists()


def test_early_failures_leave_no_empty_out(tmp_path: Path, tiny_model: str) -> None:
    result = invoke("train", "--model", MODEL, "--data", tmp_path / "nope", "--input-size", "64x64",
                    "--out", tmp_path / "run")
    assert_clean_error(result, 1, "does not exist")
    assert not (tmp_path / "run").exists()

    torch.save(create_model(tiny_model, num_classes=7).state_dict(), tmp_path / "w.pt")  # 7 classes, exported as 4
    result = invoke("export", "--model", tiny_model, "--weights", tmp_path / "w.pt", "--num-classes", "4",
                    "--input-size", "64x64", "--out", tmp_path / "engines" / "x")
    assert_clean_error(result, 1, "pass --num-classes 7")
    assert not (tmp_path / "engines" / "x").exists()

    result = invoke("calibrate", "--onnx", tmp_path / "nope.onnx", "--calib", tmp_path, "--out", tmp_path / "o")
    assert_clean_error(result, 1, "ONNX model not found")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- 3 + 7: the safety net in LazyGroup.invoke
def _raise_from_models(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    from edgeseg.commands.models import models_cmd

    def boom(**_kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(models_cmd, "callback", boom)


@pytest.mark.parametrize(("module", "fix"), [
    ("torch", DESKTOP_INSTALL),
    ("onnx", "pip install 'edgeseg[jetson]' (on the device; the workstation: " + DESKTOP_INSTALL + ")"),
    ("onnxsim", DESKTOP_INSTALL),
    ("onnxruntime", "pip install 'edgeseg[robot]'"),
    ("cv2", "pip install 'edgeseg[video]'"),
    ("matplotlib", "pip install 'edgeseg[report]'"),
    ("PIL", "pip install pillow"),
])
def test_missing_module_says_what_to_install(monkeypatch: pytest.MonkeyPatch, module: str, fix: str) -> None:
    _raise_from_models(monkeypatch, ModuleNotFoundError(f"No module named '{module}'", name=module))
    result = invoke("models")
    assert_clean_error(result, 1, f"fix:      {fix}")
    if DESKTOP_INSTALL in fix:
        assert "this command needs the desktop install" in result.output
        assert "pip install torch==2.13.0 && pip install 'edgeseg[desktop]'" in result.output


@pytest.mark.parametrize(("code", "phrases"), [
    (errno.EACCES, ["/data/run/best.pt", "choose a writable folder with --out"]),
    (errno.EROFS, ["/data/run/best.pt is on a read-only file system", "choose a writable folder with --out"]),
    (errno.ENOSPC, ["no space left on the disk while writing /data/run/best.pt", "free disk space",
                    "df -h /data/run"]),
])
def test_disk_errors_name_the_path(monkeypatch: pytest.MonkeyPatch, code: int, phrases: list[str]) -> None:
    _raise_from_models(monkeypatch, OSError(code, os.strerror(code), "/data/run/best.pt"))
    assert_clean_error(invoke("models"), 1, *phrases)


def test_permission_error_from_a_nested_group(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from edgeseg.commands.data import synth_cmd

    def boom(**_kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/mnt/ro/images")

    monkeypatch.setattr(synth_cmd, "callback", boom)
    assert_clean_error(invoke("data", "synth", "--out", tmp_path), 1, "/mnt/ro/images", "--out")


@pytest.mark.parametrize("exc", [
    ModuleNotFoundError("No module named 'yaml'", name="yaml"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/x"),
    RuntimeError("a bug"),
])
def test_other_exceptions_keep_their_traceback(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    _raise_from_models(monkeypatch, exc)
    result = invoke("models")
    assert result.exit_code == 1 and result.exception is exc


def test_models_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ModuleNotFoundError
    result = invoke("models", "--pattern", "hrnet_w18_small_v1")
    assert_clean_error(result, 1, "this command needs the desktop install", DESKTOP_INSTALL)


def test_export_without_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "edgeseg.export.onnx_export", raising=False)  # so the command imports it afresh
    result = invoke("export", "--model", MODEL, "--input-size", "64x64", "--out", tmp_path / "out")
    assert_clean_error(result, 1, "this command needs the desktop install", DESKTOP_INSTALL)


@pytest.mark.parametrize(("module", "missing", "extra", "fix"), [
    ("PIL.Image", "PIL", None, "pip install pillow"),
    ("cv2", "cv2", "video", "pip install 'edgeseg[video]'"),
    ("matplotlib", "matplotlib", None, "pip install 'edgeseg[report]'"),
    ("edgeseg.models", "torch", None, DESKTOP_INSTALL),  # fails on torch, not on edgeseg
    ("onnxruntime.quantization", "onnxruntime", None, "pip install 'edgeseg[robot]'"),
    ("pycuda.driver", "pycuda", "trt", "pip install 'edgeseg[trt]'"),
])
def test_require_names_the_pip_package(monkeypatch: pytest.MonkeyPatch, module: str, missing: str,
                                       extra: str | None, fix: str) -> None:
    def fail(name: str, package: str | None = None) -> None:
        raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(DependencyError) as info:
        require(module, extra=extra, purpose="a test")
    assert info.value.fix == fix
    assert "pip install PIL" not in str(info.value)


# ---------------------------------------------------------------- 4: export memory
def _meminfo(tmp_path: Path, kib: int) -> Path:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       {kib * 2} kB\nMemFree:        {kib} kB\nMemAvailable:   {kib} kB\n")
    return path


def test_export_memory_check(tmp_path: Path) -> None:
    one_gib = _meminfo(tmp_path, 1 << 20)
    assert export_module.check_export_memory(256, 512, meminfo=one_gib) is not None  # fits
    with pytest.raises(ConfigError) as info:
        export_module.check_export_memory(4096, 4096, meminfo=one_gib)
    error = info.value
    assert "GiB" in error.problem and error.expected and error.found and error.fix
    suggested = error.fix.split("--input-size ")[1].split()[0]
    height, width = (int(v) for v in suggested.split("x"))
    assert height % 32 == 0 and width % 32 == 0
    assert export_module.check_export_memory(height, width, meminfo=one_gib) is not None  # the fix fits
    assert export_module.check_export_memory(8192, 8192, meminfo=tmp_path / "absent") is None  # no check
    (tmp_path / "no_available").write_text("MemTotal: 100 kB\n")
    assert export_module.check_export_memory(8192, 8192, meminfo=tmp_path / "no_available") is None


def test_export_refuses_what_does_not_fit_before_building(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          tiny_model: str) -> None:
    checked = functools.partial(export_module.check_export_memory, meminfo=_meminfo(tmp_path, 1 << 20))
    monkeypatch.setattr(export_module, "check_export_memory", checked)
    monkeypatch.setattr(models_package, "create_model", lambda *a, **k: pytest.fail("built the model"))
    out = tmp_path / "out"
    result = invoke("export", "--model", tiny_model, "--input-size", "4096x4096", "--out", out)
    assert_clean_error(result, 1, "GiB of memory", "--input-size")
    assert not out.exists()

    result = invoke("export", "--model", tiny_model, "--input-size", "32768x32768", "--out", out)
    assert result.exit_code == 2 and "at most 8192" in result.output and not out.exists()


# ---------------------------------------------------------------- 5: counts must be positive
@pytest.mark.parametrize("args", [
    ["train", "--epochs", "0"],
    ["train", "--batch-size", "-1"],
    ["train", "--threads", "0"],
    ["train", "--workers", "-1"],
    ["eval", "--batch-size", "0"],
    ["data", "synth", "--num", "0"],
    ["data", "synth", "--workers", "0"],
    ["calibrate", "--calib-images", "0"],
    ["calibrate", "--batch-size", "-2"],
    ["export", "--num-samples", "0"],
    ["export", "--batch", "0"],
])
def test_zero_or_negative_counts_exit_2(args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    required = {
        "train": ["--model", MODEL, "--data", tmp_path, "--input-size", "64x64", "--out", out],
        "eval": ["--weights", tmp_path / "w.pt", "--data", tmp_path],
        "data": ["--out", out],
        "calibrate": ["--onnx", tmp_path / "m.onnx", "--calib", tmp_path, "--out", out],
        "export": ["--model", MODEL, "--input-size", "64x64", "--out", out],
    }[args[0]]
    result = invoke(*args, *required)
    assert result.exit_code == 2, result.output
    assert not out.exists()


# ---------------------------------------------------------------- 6: messages and "next:" commands
def _next_commands(output: str) -> list[list[str]]:
    lines = output.split("\nnext:\n", 1)[1].splitlines()
    return [shlex.split(line) for line in lines if line.startswith("  edgeseg ")]


def test_synth_size_error_names_size(tmp_path: Path) -> None:
    result = invoke("data", "synth", "--out", tmp_path / "s", "--size", "-5x10")
    assert result.exit_code == 2 and "--size" in result.output and "--input-size" not in result.output


def test_synth_next_commands_run_as_printed(tmp_path: Path) -> None:
    train = tmp_path / "my data" / "train"
    result = invoke("data", "synth", "--out", train, "--num", "2", "--size", "32x64")
    assert result.exit_code == 0, result.output
    assert shlex.quote(str(train)) in result.output
    synth_val, train_cmd = _next_commands(result.output)
    assert synth_val[:3] == ["edgeseg", "data", "synth"] and synth_val[4] == str(train.parent / "val")
    again = CliRunner().invoke(main, synth_val[1:])  # exactly what was printed
    assert again.exit_code == 0, again.output
    assert train_cmd[:2] == ["edgeseg", "train"]
    context = main.get_command(click.Context(main), "train").make_context("train", train_cmd[2:])  # type: ignore[union-attr]
    data, val_data = context.params["data"], context.params["val_data"]  # parsed dataset specs: folders
    assert (data.kind, data.root) == ("folder", train)
    assert (val_data.kind, val_data.root) == ("folder", train.parent / "val")


def test_train_next_commands_have_out_and_quotes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from edgeseg.training import trainer as train_module

    def fake_train(config: train_module.TrainConfig, **_kwargs: object) -> train_module.TrainResult:
        return train_module.TrainResult(0.5, 0, 0, [], config.out / "best.pt", config.out / "last.pt", 60.0)

    monkeypatch.setattr(train_module, "train", fake_train)
    out, data = tmp_path / "my runs" / "demo", tmp_path / "my data"
    result = invoke("train", "--model", MODEL, "--data", data, "--input-size", "64x64", "--out", out)
    assert result.exit_code == 0, result.output
    eval_cmd, export_cmd = _next_commands(result.output)
    for argv in (eval_cmd, export_cmd):
        command = main.get_command(click.Context(main), argv[1])
        assert command is not None
        params = command.make_context(argv[1], argv[2:]).params  # every required option present and valid
        assert params["weights"] == out / "best.pt"
    assert "--out" in export_cmd and eval_cmd[eval_cmd.index("--data") + 1] == str(data)


def test_export_next_command_is_quoted(tmp_path: Path, tiny_model: str) -> None:
    out = tmp_path / "my engines" / "tiny"
    result = invoke("export", "--model", tiny_model, "--input-size", "32x32", "--num-classes", "3", "--num-samples",
                    "1", "--out", out)
    assert result.exit_code == 0, result.output
    (calibrate,) = _next_commands(result.output)
    assert calibrate[calibrate.index("--onnx") + 1] == str(out / "model.onnx")


def test_calibrate_quotes_paths_and_reports_progress_when_piped(tmp_path: Path) -> None:
    model = build_tiny_net(tmp_path / "my model" / "model.onnx", height=32, width=64)
    write_images(tmp_path / "calib", 2)
    out = tmp_path / "out dir"
    result = invoke("calibrate", "--onnx", model, "--calib", tmp_path / "calib", "--method", "minmax", "--out", out)
    assert result.exit_code == 0, result.output
    validate, build = _next_commands(result.output)
    assert validate[validate.index("--candidate") + 1] == str(out / "model.int8.ort.onnx")
    assert validate[validate.index("--reference") + 1] == str(model.parent / "reference.npz")
    assert build[build.index("--onnx") + 1] == str(out / "model.int8.onnx")
    assert "calibrating: 2/2 (" in result.stderr  # CliRunner's stderr is not a terminal: plain lines


def test_missing_validation_data_fix_is_a_command(tmp_path: Path) -> None:
    from edgeseg.data.generate import SynthConfig, write_synthetic_dataset

    data = tmp_path / "my data"
    write_synthetic_dataset(SynthConfig(out=data, num=1, height=32, width=64, seed=0))
    result = invoke("train", "--model", MODEL, "--data", data, "--input-size", "32x64", "--out", tmp_path / "run")
    assert_clean_error(result, 1, "no validation data")
    fix = result.output.split("fix:", 1)[1].split("generate one: ", 1)[1].split(", then add --val-data")[0]
    argv = shlex.split(fix)
    params = main.get_command(click.Context(main), "data").get_command(  # type: ignore[union-attr]
        click.Context(main), "synth").make_context("synth", argv[3:]).params
    assert argv[:3] == ["edgeseg", "data", "synth"] and params["out"] == tmp_path / "my data-val"
    assert params["size"] == (32, 64)
