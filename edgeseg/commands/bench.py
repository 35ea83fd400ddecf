"""``edgeseg bench``: latency of every backend/precision of a build, side by side; with ``--source``, also
the capture-to-mask latency of the runtime on real frames."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._common import POSITIVE, Progress, progress, quote, summary_table
from .backend_option import backend_option
from .option_groups import model_options, out_option, threads_option
from .run import SOURCE_HELP

if TYPE_CHECKING:  # the pipeline is imported when a command runs
    from ..pipeline.bench import SourceTiming


@click.command("bench")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A build folder (engines/NAME): model.onnx, the CPU INT8 model, model.engine.")
@click.option("--onnx", "onnx_files", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              help="ONNX file(s) to time with ONNX Runtime (repeatable).")
@model_options(model_help="Also time this PyTorch model (eager FP32).",
               weights_help="Weights or checkpoint for the PyTorch model (without: random weights, latency only).")
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@threads_option(help="CPU threads for every backend (default: all usable cores).")
@out_option(help="Where bench.json and the plot go (default: the build folder / the first ONNX's folder).")
@click.option("--no-plot", is_flag=True, help="Skip the latency plot (without matplotlib it is skipped anyway).")
@click.option("--source", default=None,
              help="Also time capture-to-mask on these frames with the build's runtime (needs --artifacts). "
                   + SOURCE_HELP)
@click.option("--topic", default=None, help="Image topic of a bag: --source (needed when it has several).")
@click.option("--max-frames", type=POSITIVE, default=None,
              help="Frames of --source to time [default: all of a file or bag, 300 of a camera].")
@click.option("--allow-unvalidated", is_flag=True,
              help="With --source: time a folder whose accuracy gates failed or were not run.")
@backend_option(runs_files=True, multiple=True,
                help="Also time the build folder's files on this runtime (repeatable; e.g. openvino: model.onnx "
                     "and the Q/DQ model.int8.onnx). ONNX Runtime, TensorRT and the build's own runtime are always "
                     "timed.")
def bench_cmd(artifacts: Path | None, onnx_files: tuple[Path, ...], model_name: str | None, weights: Path | None,
              iterations: int, warmup: int, threads: int | None, out: Path | None, no_plot: bool,
              source: str | None, topic: str | None, max_frames: int | None, allow_unvalidated: bool,
              backend: tuple[str, ...] = ()) -> None:
    """Time PyTorch eager, ONNX Runtime FP32/INT8 and TensorRT on the same inputs (p50/p90/p99, fps).

    With --source (any `edgeseg run` source: bag, camera, video, folder), the build's runtime also
    segments those frames and bench reports capture-to-mask latency p50/p90/p99, jitter, FPS and
    dropped frames, in the table and in bench.json (source_latency).
    """
    from ..pipeline.bench import plan_bench, run_bench

    src = _check_source_options(artifacts, source, topic, max_frames, allow_unvalidated)
    if backend and artifacts is None:
        from ..errors import UsageError

        raise UsageError("--backend times a build folder's files", found="no --artifacts",
                         fix="add --artifacts engines/NAME")
    plan = plan_bench(artifacts=artifacts, onnx_files=list(onnx_files), model=model_name, weights=weights,
                      threads=threads, out_dir=out, backends=[b for b in backend if b != "auto"])
    source_latency = _time_source(artifacts, src, warmup, max_frames, plan.threads, allow_unvalidated) \
        if src is not None else None
    click.echo(f"timing {', '.join(r.name for r in plan.runners)}: {iterations} iterations after {warmup} "
               f"warm-up, {plan.threads} threads, interleaved", err=True)
    result, written = run_bench(plan, iterations=iterations, warmup=warmup, plot=not no_plot, progress=progress,
                                source_latency=source_latency)
    click.echo("")
    for line in result.table():
        click.echo(line)
    if source_latency is not None:
        for line in source_lines(source_latency):
            click.echo(line)
    machine, load = result.machine, result.load_average
    click.echo(f"\nmachine: {machine['cpu']}, {machine['usable_cores']} usable cores; threads {result.threads}; "
               f"load average {_load_text(load.get('start'))} at start, {_load_text(load.get('end'))} at end")
    for note in result.notes() + ([result.plot_note] if result.plot_note else []):
        click.echo(f"note: {note}")
    next_commands = [f"edgeseg validate --candidate {r.source} --reference {Path(r.source).parent / 'reference.npz'}"
                     for r in result.runners if r.backend == "onnxruntime" and r.precision == "int8"][:1]
    if src is not None:
        next_commands.append(f"edgeseg run --artifacts {quote(artifacts)} --source {quote(src.text)}"
                             + (f" --topic {quote(src.topic)}" if src.topic else "")
                             + (" --save out.mcap" if src.stamped else " --save overlays"))
    summary_table("benchmark done", [("wrote", str(p)) for p in written], next_commands)


def _check_source_options(artifacts: Path | None, source: str | None, topic: str | None, max_frames: int | None,
                          allow_unvalidated: bool) -> Any:
    """The parsed, prepared --source (None without one); bad combinations exit 2 before any work."""
    from ..errors import UsageError

    if source is None:
        given = [name for name, value in (("--topic", topic), ("--max-frames", max_frames),
                                          ("--allow-unvalidated", allow_unvalidated)) if value]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            named = given[0] if len(given) == 1 else ", ".join(given[:-1]) + " and " + given[-1]
            raise UsageError(f"{named} only {verb} to --source", fix="add --source SRC or drop "
                             + ("it" if len(given) == 1 else "them"))
        return None
    if artifacts is None:
        raise UsageError("--source times the runtime of a build folder and needs --artifacts",
                         fix="edgeseg bench --artifacts engines/NAME --source " + quote(source))
    from ..runtime.sources import parse_source, prepare_source

    return prepare_source(parse_source(source, topic=topic))


def _time_source(artifacts: Any, src: Any, warmup: int, max_frames: int | None, threads: int,
                 allow_unvalidated: bool) -> SourceTiming:
    from ..pipeline.source_bench import bench_source, frame_limit

    shown = Progress(f"capture-to-mask on {src.text}", frame_limit(src, max_frames))
    try:
        timed = bench_source(artifacts, src, warmup=warmup, max_frames=max_frames, threads=threads,
                             allow_unvalidated=allow_unvalidated, on_frame=shown.update)
    finally:
        shown.close()
    if timed.warning:
        click.secho(str(timed.warning), fg="yellow", err=True)
    return timed


def source_lines(timed: SourceTiming) -> list[str]:
    """The capture-to-mask block printed under the runners' table."""
    summary = timed.latency
    where = timed.text + (f" topic {timed.topic}" if timed.topic else "")
    lines = ["", f"capture-to-mask on {where} ({timed.backend}, {Path(timed.model_file).name}; "
                 f"ended: {timed.ended_because}):"]
    lines += [f"  {key:<16} {value}" for key, value in summary.rows()]
    return lines + [f"  ({summary.meaning}; the first frame, after {timed.warmup_calls} warm-up calls on it, "
                    "is left out)"]


def _load_text(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"
