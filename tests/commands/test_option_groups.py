"""commands/option_groups: one name per idea across commands; the old spellings still work, hidden, with a warning."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.commands.option_groups import calib_options, gate_options, option, val_data_options
from edgeseg.pipeline.options import DEFAULT_MAX_MIOU_DROP, DEFAULT_MIN_AGREEMENT, BuildOptions, ValidationConfig


@click.command()
@option("--calib-method", "method", aliases=("--method",), type=click.Choice(["entropy", "minmax"]), default="minmax")
@option("--val-images", aliases=("--max-images", "--num-samples"), type=int, default=None)
def probe(method: str, val_images: int | None) -> None:
    click.echo(f"method={method} val_images={val_images}")


def _invoke(command: click.Command, *args: str) -> click.testing.Result:
    return CliRunner().invoke(command, list(args))


def test_the_new_spelling_needs_no_warning() -> None:
    result = _invoke(probe, "--calib-method", "entropy", "--val-images", "3")
    assert result.exit_code == 0 and "method=entropy val_images=3" in result.output
    assert "deprecated" not in result.output


@pytest.mark.parametrize("old", ["--max-images", "--num-samples"])
def test_an_old_spelling_feeds_the_new_option_and_warns(old: str) -> None:
    result = _invoke(probe, "--method", "entropy", old, "7")
    assert result.exit_code == 0, result.output
    assert "method=entropy val_images=7" in result.output
    assert "warning: --method is deprecated: use --calib-method" in result.output
    assert f"warning: {old} is deprecated: use --val-images" in result.output


def test_an_old_spelling_is_checked_like_the_new_one() -> None:
    result = _invoke(probe, "--method", "percentile")
    assert result.exit_code == 2 and "percentile" in result.output


def test_both_spellings_at_once_is_a_usage_error() -> None:
    result = _invoke(probe, "--method", "entropy", "--calib-method", "minmax")
    assert result.exit_code == 2 and "pass only --calib-method" in result.output


def test_old_spellings_are_hidden_from_help() -> None:
    text = _invoke(probe, "--help").output
    assert "--calib-method" in text and "--val-images" in text
    assert "--method" not in text.replace("--calib-method", "") and "--max-images" not in text


@pytest.mark.parametrize("command, new, old", [
    ("build", "--val-data", "--val"),
    ("validate", "--val-data", "--data"),
    ("validate", "--val-images", "--max-images"),
    ("export", "--val-data", "--reference-images"),
    ("export", "--val-images", "--num-samples"),
    ("calibrate", "--calib-method", "--method"),
])
def test_every_command_shows_the_new_name_only(command: str, new: str, old: str) -> None:
    text = CliRunner().invoke(main, [command, "--help"]).output
    assert new in text
    assert f"{old} " not in text and f"{old}," not in text and f"{old}\n" not in text


def test_validate_takes_the_old_data_spelling_with_a_warning(tmp_path: Path) -> None:
    """A real command: --data still reaches validate's check (here the refusal that names the new spelling)."""
    result = CliRunner().invoke(main, ["validate", "--candidate", str(tmp_path / "m.onnx"), "--reference", "R",
                                       "--data", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "warning: --data is deprecated: use --val-data" in result.output
    assert "--val-data is for a PyTorch reference" in result.output


def test_build_refuses_old_and_new_spellings_together(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "--val", str(tmp_path), "--val-data", str(tmp_path),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "pass only --val-data" in result.output
    assert not (tmp_path / "o").exists()


def test_the_gates_have_one_default() -> None:
    """BuildOptions, ValidationConfig and the CLI's gate options all take pipeline.options' defaults."""
    options = BuildOptions()
    assert (options.min_agreement, options.max_miou_drop) == (DEFAULT_MIN_AGREEMENT, DEFAULT_MAX_MIOU_DROP)
    assert (ValidationConfig().min_agreement, ValidationConfig().max_miou_drop) == \
        (DEFAULT_MIN_AGREEMENT, DEFAULT_MAX_MIOU_DROP)

    @click.command()
    @gate_options()
    def gates(min_agreement: float, max_miou_drop: float) -> None:
        click.echo(f"{min_agreement} {max_miou_drop}")

    assert _invoke(gates).output.strip() == f"{DEFAULT_MIN_AGREEMENT} {DEFAULT_MAX_MIOU_DROP}"
    build_help = CliRunner().invoke(main, ["build", "--help"]).output
    assert f"[default: {DEFAULT_MIN_AGREEMENT}]" in build_help


def test_groups_declare_their_options_once() -> None:
    @click.command()
    @calib_options(calib_help="frames")
    @val_data_options(data_help="data", images_help="how many")
    def cmd(**kwargs: object) -> None:
        click.echo(" ".join(sorted(kwargs)))

    names = _invoke(cmd).output.split()
    assert names == sorted(["calib", "topic", "calib_images", "calib_method", "val", "val_images"])


@pytest.mark.parametrize("args", [["export", "--model", "shufflenetv2_x0_5_mdspp", "--input-size", "64x64"],
                                  ["calibrate", "--onnx", "model.onnx"]])
def test_a_required_group_option_is_still_required(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "Missing option" in result.output, result.output
