"""`edgeseg data synth`, `edgeseg train` and `edgeseg eval` end to end on a real zoo model at a tiny size."""

from __future__ import annotations

from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.models.checkpoint import load_checkpoint

MODEL = "shufflenetv2_x0_5_dspp"


def test_synth_train_eval(tmp_path):
    runner = CliRunner()
    for split, num, seed in (("train", 4, 0), ("val", 2, 1)):
        result = runner.invoke(
            main,
            [
                "data",
                "synth",
                "--out",
                str(tmp_path / "data" / split),
                "--num",
                str(num),
                "--size",
                "128x128",
                "--seed",
                str(seed),
            ],
        )
        assert result.exit_code == 0, result.output
        assert len(list((tmp_path / "data" / split / "images").glob("*.jpg"))) == num
    out = tmp_path / "run"
    result = runner.invoke(
        main,
        [
            "train",
            "--model",
            MODEL,
            "--data",
            str(tmp_path / "data"),
            "--input-size",
            "128x128",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--workers",
            "0",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best val mIoU" in result.output and "edgeseg eval" in result.output
    assert load_checkpoint(out / "best.pt")["model"] == MODEL
    result = runner.invoke(main, ["eval", "--weights", str(out / "best.pt"), "--data", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "2 images at 128x128 input: mIoU" in result.output and "model input size" in result.output
    for name in ("floor", "wall", "sky_ceiling", "obstacle", "person", "pole"):
        assert name in result.output


def test_user_errors_exit_cleanly(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["train", "--model", MODEL, "--data", str(tmp_path), "--input-size", "128x100", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2 and "multiples of 32" in result.output
    result = runner.invoke(
        main,
        ["train", "--model", MODEL, "--data", str(tmp_path), "--input-size", "128x128", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 1 and "not a dataset folder" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["eval", "--weights", str(tmp_path / "missing.pt"), "--data", str(tmp_path)])
    assert result.exit_code == 1 and "not found" in result.output
    result = runner.invoke(main, ["data", "synth", "--out", str(tmp_path / "s"), "--num", "0"])
    assert result.exit_code == 2
