"""``edgeseg doctor``: what this machine can run and what to install for the rest (probes: runtime/doctor.py)."""

from __future__ import annotations

import json

import click

COLOURS = {"ok": "green", "warn": "yellow", "error": "red", "title": None}


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts) instead of text.")
@click.pass_context
def doctor_cmd(ctx: click.Context, as_json: bool) -> None:
    """Check this machine: Python, edgeseg's extras, ONNX Runtime, TensorRT and its features, pycuda and CUDA,
    the GPU (zero-copy or staged buffers, DLA cores, whether the shipped GPU kernels load), OpenCV with
    GStreamer, rosbags, matplotlib, and the JetPack release on a Jetson.

    \b
    Exit 0 unless something installed is broken: a package that is installed but fails to import, TensorRT
    without pycuda, TensorRT and pycuda with no GPU visible, or GPU kernels that cannot load (exit 1).
    What is merely not installed is listed with the command that installs it.
    """
    from ..runtime.doctor import diagnose, report_lines

    report = diagnose()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.secho(f"edgeseg {report.edgeseg} doctor", bold=True)
        for status, line in report_lines(report):
            if status == "title":
                click.secho(line, bold=True)
            else:
                click.secho(line, fg=COLOURS.get(status))
    ctx.exit(report.exit_code)
