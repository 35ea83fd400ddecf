"""`train`, `eval`, `validate` and `build --val` on public-dataset layouts (``--data KIND:ROOT[:split]``).

A tiny registered model at 64x128 on the fixtures of helpers.dataset_layouts: one pass per adapter through
train -> eval -> build -> validate, checking that the dataset's class names and colours reach the
checkpoint, the ONNX metadata, the manifest and the report, and that ignored pixels are counted, not scored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.dataset_layouts import MAPPED, WRITERS, bands

from edgeseg.cli import main
from edgeseg.data.labels import ADE20K_CLASSES, CAMVID_CLASSES, CITYSCAPES_CLASSES, VOC_CLASSES
from edgeseg.images import load_mask
from edgeseg.palette import CITYSCAPES, class_palette

NAMES = {"cityscapes": CITYSCAPES_CLASSES, "camvid": CAMVID_CLASSES, "voc": VOC_CLASSES, "ade20k": ADE20K_CLASSES}
SIZE = "64x128"


def invoke(*args: object) -> object:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def _ok(result: object) -> str:
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    return str(result.output)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", list(WRITERS))
def test_train_eval_validate_build_on_a_public_layout(kind: str, tiny_model: str, tmp_path: Path) -> None:
    root = tmp_path / kind
    WRITERS[kind](root)
    data = f"{kind}:{root}"
    run = tmp_path / "run"
    output = _ok(invoke("train", "--model", tiny_model, "--data", data, "--input-size", SIZE, "--epochs", 1,
                        "--batch-size", 2, "--workers", 0, "--threads", 1, "--out", run))
    train_split = "training" if kind == "ade20k" else "train"
    assert f"training data {kind} {train_split}: 2 pairs" in output
    assert f"--data {data}" in output  # the "next:" eval command takes the val split

    import torch

    checkpoint = torch.load(run / "best.pt", weights_only=True)
    names = list(NAMES[kind])
    assert checkpoint["classes"] == names and checkpoint["num_classes"] == len(names)
    colours = [list(c) for c in class_palette(len(names), checkpoint.get("class_colors"))]
    if kind == "cityscapes":
        assert checkpoint["class_colors"] == [list(c) for c in CITYSCAPES]
    if kind == "ade20k":
        assert checkpoint["class_colors"][0] == [120, 120, 120]  # color150.mat's wall

    output = _ok(invoke("eval", "--weights", run / "best.pt", "--data", data))
    ignored = int(np.count_nonzero(bands(MAPPED[kind]) == 255)) * 2  # two val images at the model's size
    assert re.search(rf"ignored pixels +{ignored} of {2 * 64 * 128} \(label 255", output), output
    assert names[0] in output and names[-1] in output  # per-class IoU under the dataset's names

    build = tmp_path / "build"
    output = _ok(invoke("build", "--weights", run / "best.pt", "--precision", "fp32", "--val-data", f"{data}:val",
                        "--calib", root if kind != "voc" else root / "VOCdevkit" / "VOC2012" / "JPEGImages",
                        "--out", build, "--min-agreement", 0, "--max-miou-drop", 100))
    val_split = "validation" if kind == "ade20k" else "val"
    assert f"validation data {kind} {val_split}: 2 pairs" in output
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["classes"] == names and manifest["class_colors"] == colours
    report = json.loads((build / "report.json").read_text())
    assert [row["class"] for row in report["legend"]] == names
    assert report["legend"][0]["colour"] == "#" + "".join(f"{v:02x}" for v in colours[0])
    written = sorted((build / "val_masks").glob("*.png"))  # reference.npz's ground truth, in train ids
    assert len(written) == 2
    np.testing.assert_array_equal(load_mask(written[0]), bands(MAPPED[kind]))

    output = _ok(invoke("validate", "--candidate", build / "model.onnx", "--weights", run / "best.pt",
                        "--data", f"{data}:val", "--out", tmp_path / "v", "--worst", 1))
    assert f"{kind} {val_split}: 2 pairs" in output and "ground truth (2 images)" in output
    validation = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert [row["class"] for row in validation["per_class"]] == names


def test_export_carries_the_checkpoint_colours(tiny_model: str, tmp_path: Path) -> None:
    from edgeseg.models import create_model
    from edgeseg.models.checkpoint import save_checkpoint
    from edgeseg.onnx_model import read_onnx_model
    from edgeseg.spec import InputSpec

    colours = [[10, 20, 30], [40, 50, 60], [70, 80, 90]]
    ckpt = save_checkpoint(tmp_path / "best.pt", create_model(tiny_model, num_classes=3), model_name=tiny_model,
                           classes=["a", "b", "c"], input_spec=InputSpec(64, 64), class_colors=colours)
    _ok(invoke("export", "--weights", ckpt, "--out", tmp_path / "e", "--num-samples", 1))
    assert read_onnx_model(tmp_path / "e" / "model.onnx").class_colors == colours


def test_a_bad_dataset_spec_is_a_usage_error_before_any_work(tiny_model: str, tmp_path: Path) -> None:
    result = invoke("train", "--model", tiny_model, "--data", f"citiscapes:{tmp_path}", "--input-size", SIZE,
                    "--out", tmp_path / "run")
    assert result.exit_code == 2 and "did you mean cityscapes:" in result.output  # type: ignore[attr-defined]
    assert not (tmp_path / "run").exists()
    result = invoke("build", "--model", tiny_model, "--val-data", f"cityscapes:{tmp_path / 'missing'}",
                    "--out", tmp_path / "b")
    assert result.exit_code == 2 and "does not exist" in result.output  # type: ignore[attr-defined]
    result = invoke("eval", "--weights", tmp_path / "x.pt", "--data", "kitti:/data")
    assert result.exit_code == 2 and "unknown dataset kind 'kitti'" in result.output  # type: ignore[attr-defined]


def test_a_wrong_layout_exits_1_with_the_census(tiny_model: str, tmp_path: Path) -> None:
    root = WRITERS["cityscapes"](tmp_path / "cs", {"train": 2})
    result = invoke("train", "--model", tiny_model, "--data", f"cityscapes:{root}", "--input-size", SIZE,
                    "--epochs", 1, "--workers", 0, "--out", tmp_path / "run")
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1 and "Traceback" not in output, output  # type: ignore[attr-defined]
    assert "no 'val' split" in output and "train (2 pairs)" in output
