"""edgeseg.pipeline.build: the shipped demo model and how `edgeseg build` resolves its defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeseg.errors import UsageError
from edgeseg.fileio import sha256_file
from edgeseg.pipeline import build
from edgeseg.pipeline.build import DEFAULT_CALIB_METHOD, BuildOptions, resolve_options
from edgeseg.quant.ranges import METHODS

DEMO_TARGET_MIOU = 0.80  # issue 3: val mIoU of the demo model on the held-out synthetic set


def test_shipped_demo_model_matches_its_description() -> None:
    info = build.demo_defaults()
    assert sha256_file(info["checkpoint"]) == info["sha256"]
    assert info["val_miou"] >= DEMO_TARGET_MIOU
    assert info["calibration_method"] in METHODS
    train_command = next(c for c in info["reproduce"] if " train " in c)
    assert f"--epochs {info['epochs']}" in train_command and f"--model {info['model']}" in train_command
    assert f"--input-size {info['input_size'][0]}x{info['input_size'][1]}" in train_command


def test_shipped_demo_model_segments_held_out_scenes(tmp_path: Path) -> None:
    # Re-scores the checkpoint instead of trusting the JSON: 16 scenes of the seed no step has seen.
    from edgeseg.data.generate import SynthConfig, write_synthetic_dataset
    from edgeseg.training.evaluation import evaluate_folder

    info = build.demo_defaults()
    height, width = info["input_size"]
    write_synthetic_dataset(SynthConfig(out=tmp_path, num=16, height=height, width=width, seed=build.SYNTH_VAL_SEED))
    result, spec = evaluate_folder(info["checkpoint"], tmp_path, log=lambda _: None)
    assert spec.size == (height, width)
    assert result.miou >= DEMO_TARGET_MIOU - 0.05, result.rows()  # 16 scenes: a few points of sampling noise


def _fake_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    (tmp_path / "w.pt").write_bytes(b"weights")
    info = {"model": "shufflenetv2_x0_5_mdspp", "weights": "w.pt", "input_size": [192, 384], **extra}
    (tmp_path / "demo_model.json").write_text(json.dumps(info))
    monkeypatch.setattr(build, "ASSETS", tmp_path)
    monkeypatch.setattr(build, "DEMO_INFO", tmp_path / "demo_model.json")


def test_demo_build_uses_the_recorded_calibration_method_and_says_so(tmp_path, monkeypatch) -> None:
    _fake_demo(tmp_path, monkeypatch, calibration_method="percentile", calibration_note="why")
    said: list[str] = []
    options = resolve_options(BuildOptions(out=tmp_path / "out"), said.append)
    assert options.demo and options.calib_method == "percentile"
    assert any("--calib-method percentile" in line and "why" in line for line in said)


def test_explicit_calibration_method_wins_over_the_demo_record(tmp_path, monkeypatch) -> None:
    _fake_demo(tmp_path, monkeypatch, calibration_method="percentile")
    said: list[str] = []
    options = resolve_options(BuildOptions(out=tmp_path / "out", calib_method="minmax"), said.append)
    assert options.calib_method == "minmax" and not said


def test_default_calibration_method_without_a_record(tmp_path, monkeypatch) -> None:
    _fake_demo(tmp_path, monkeypatch)
    assert resolve_options(BuildOptions(out=tmp_path / "out"), lambda _: None).calib_method == DEFAULT_CALIB_METHOD
    user_model = BuildOptions(model="shufflenetv2_x0_5_mdspp", out=tmp_path / "o2")
    assert resolve_options(user_model, lambda _: None).calib_method == DEFAULT_CALIB_METHOD == "percentile"


def test_unknown_calibration_method_is_a_usage_error(tmp_path, monkeypatch) -> None:
    _fake_demo(tmp_path, monkeypatch)
    with pytest.raises(UsageError, match="calibration method"):
        resolve_options(BuildOptions(out=tmp_path / "out", calib_method="kl"), lambda _: None)


def test_the_demo_build_carries_the_demo_class_colours() -> None:
    """The shipped checkpoint has no colours; demo_model.json has the training set's: they reach the export (and
    from there the manifest, the report legend and the overlays), not []."""
    from edgeseg.data.synth import classes_json
    from edgeseg.pipeline.build import BuildOptions, resolve_options
    from edgeseg.pipeline.build_steps import model_info

    options = resolve_options(BuildOptions(), log=lambda _line: None)
    info = model_info(options)
    assert options.demo and info.class_colors == [c["color"] for c in classes_json()["classes"]]
    assert len(info.class_colors) == info.num_classes == 6
