"""``edgeseg bench``: latency of every backend/precision of a build, side by side."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import progress, summary_table


@click.command("bench")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A build folder (engines/NAME): model.onnx, the CPU INT8 model, model.engine.")
@click.option("--onnx", "onnx_files", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              help="ONNX file(s) to time with ONNX Runtime (repeatable).")
@click.option("--model", "model_name", default=None, help="Also time this PyTorch model (eager FP32).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Weights or checkpoint for the PyTorch model (without: random weights, latency only).")
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for every backend (default: all usable cores).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where bench.json and the plot go (default: the build folder / the first ONNX's folder).")
@click.option("--no-plot", is_flag=True, help="Skip the latency plot (without matplotlib it is skipped anyway).")
def bench_cmd(artifacts: Path | None, onnx_files: tuple[Path, ...], model_name: str | None, weights: Path | None,
              iterations: int, warmup: int, threads: int | None, out: Path | None, no_plot: bool) -> None:
    """Time PyTorch eager, ONNX Runtime FP32/INT8 and TensorRT on the same inputs (p50/p90/p99, fps)."""
    from ..pipeline.bench import plan_bench, run_bench

    plan = plan_bench(artifacts=artifacts, onnx_files=list(onnx_files), model=model_name, weights=weights,
                      threads=threads, out_dir=out)
    click.echo(f"timing {', '.join(r.name for r in plan.runners)}: {iterations} iterations after {warmup} "
               f"warm-up, {plan.threads} threads, interleaved", err=True)
    result, written = run_bench(plan, iterations=iterations, warmup=warmup, plot=not no_plot, progress=progress)
    click.echo("")
    for line in result.table():
        click.echo(line)
    machine, load = result.machine, result.load_average
    click.echo(f"\nmachine: {machine['cpu']}, {machine['usable_cores']} usable cores; threads {result.threads}; "
               f"load average {_load_text(load.get('start'))} at start, {_load_text(load.get('end'))} at end")
    for note in result.notes() + ([result.plot_note] if result.plot_note else []):
        click.echo(f"note: {note}")
    summary_table("benchmark done", [("wrote", str(p)) for p in written],
                  [f"edgeseg validate --candidate {r.source} --reference {Path(r.source).parent / 'reference.npz'}"
                   for r in result.runners if r.backend == "onnxruntime" and r.precision == "int8"][:1])


def _load_text(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"
