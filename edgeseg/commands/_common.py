"""Shared CLI pieces: option types, progress, quoting, the closing summary table."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click

T = TypeVar("T")
PIPED_INTERVAL_S = 10.0  # when stderr is not a terminal: one progress line at most this often


class SizeType(click.ParamType):
    """``HxW`` with both multiples of 32; a usage error (exit 2) otherwise."""

    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        from ..errors import UsageError
        from ..spec import parse_size

        option = param.opts[0] if param is not None and param.opts else "--input-size"
        try:
            return parse_size(value, option=option)
        except UsageError as exc:
            self.fail(exc.format(), param, ctx)


SIZE = SizeType()


class DatasetType(click.ParamType):
    """``DIR`` or ``KIND:ROOT[:split]`` (edgeseg.data.datasets); an unknown KIND is a usage error (exit 2).

    ``exists``: ROOT must exist (else exit 2, as click.Path(exists=True) did for the options that had it).
    """

    name = "DATASET"

    def __init__(self, exists: bool = False) -> None:
        self.exists = exists

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..data.datasets import DatasetSpec, parse_dataset_spec
        from ..errors import UsageError

        if isinstance(value, DatasetSpec):
            return value
        try:
            spec = parse_dataset_spec(value)
        except UsageError as exc:
            self.fail(exc.format(), param, ctx)
        if self.exists and not spec.root.is_dir():
            self.fail(f"{spec.root} is not a folder" if spec.root.exists() else f"{spec.root} does not exist",
                      param, ctx)
        return spec


DATASET = DatasetType()


class CalibType(click.ParamType):
    """``--calib``: an image folder, ``bag:PATH`` (a ROS bag) or ``KIND:ROOT[:split]`` (a dataset's images);
    what it names must exist (else exit 2). ``resolve_calib`` turns the value into a calibration source."""

    name = "CALIB"
    folder = click.Path(exists=True, file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if text.startswith("bag:"):
            from ..runtime.bags import strip_bag_prefix

            if not strip_bag_prefix(text).exists():
                self.fail(f"bag {text[4:]} does not exist", param, ctx)
            return text  # quant.calib_data.calib_source makes it a BagCalibSource with --topic
        bare = Path(text).expanduser()
        if (bare.is_file() and bare.suffix.lower() in (".bag", ".mcap", ".db3")) or (bare / "metadata.yaml").is_file():
            return "bag:" + str(bare)  # a bare bag path (file or rosbag2 folder), as --source takes it
        spec = DatasetType(exists=True).convert(value, param, ctx)
        return self.folder.convert(spec.root, param, ctx) if spec.is_folder and spec.split is None else spec


def resolve_calib(value: Any, topic: str | None) -> Any:
    """A --calib value (CalibType) + --topic as what quant.calib_data reads: a folder Path, a BagCalibSource,
    or an ImageListSource with a dataset's images (resolved here: data/ sits above quant/)."""
    from ..data.datasets import DatasetSpec, dataset_image_paths
    from ..quant.calib_data import ImageListSource, calib_source

    if isinstance(value, DatasetSpec):
        value = ImageListSource(str(value), value.root, tuple(dataset_image_paths(value)))
    return calib_source(value, topic)
CALIB_HELP = ("an image folder (searched recursively), bag:PATH (a ROS 1 .bag, ROS 2 .mcap/.db3 or rosbag2 "
              "folder; --topic picks the image topic: frames spread over the recording, near-duplicates skipped), "
              "or a dataset's images: cityscapes:ROOT[:split], camvid:, voc:, ade20k: (train split by default)")
CALIB_TOPIC_HELP = "Image topic of a --calib bag:PATH [default: the bag's only image topic]."
DATASET_HELP = ("DIR (images/ + masks/ [+ classes.json]), or cityscapes:ROOT[:split], camvid:ROOT[:split], "
                "voc:ROOT[:split], ade20k:ROOT[:split]")
POSITIVE = click.IntRange(min=1)  # counts and thread numbers: 0 is rejected up front (exit 2)


class Progress:
    """Progress on stderr: a bar in a terminal; when piped, a plain line every PIPED_INTERVAL_S and at the end
    (a redirected log shows that a long step is alive, and is not filled with carriage returns)."""

    def __init__(self, label: str, total: int | None, stream: IO[str] | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.started = self.last_line = time.monotonic()
        self.bar: Any = None
        if _is_terminal(self.stream):
            bar: Any = click.progressbar  # typed overloads want an iterable or a length; we feed counts
            self.bar = bar(length=total, label=label, file=self.stream, show_pos=True, show_eta=True)
            self.bar.__enter__()

    def update(self, done: int) -> None:
        step, self.done = done - self.done, done
        if self.bar is not None:
            self.bar.update(step)
        elif time.monotonic() - self.last_line >= PIPED_INTERVAL_S:
            self._line()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        else:
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        of = f"/{self.total}" if self.total is not None else ""
        click.echo(f"{self.label}: {self.done}{of} ({self.last_line - self.started:.0f} s)", file=self.stream)
        self.stream.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(items: Iterable[T], *, label: str, length: int | None = None) -> Iterator[T]:
    """Wrap ``items`` with ``Progress`` (``length`` defaults to ``len(items)`` where it has one)."""
    total = length if length is not None else (len(items) if hasattr(items, "__len__") else None)  # type: ignore[arg-type]
    shown = Progress(label, total)
    try:
        for count, item in enumerate(items, 1):
            yield item
            shown.update(count)
    finally:
        shown.close()


def progress_callback(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """``(on_progress(done, total), close)`` for library functions that report counts."""
    holder: list[Progress] = []

    def on_progress(done: int, total: int) -> None:
        if not holder:
            holder.append(Progress(label, total))
        holder[0].update(done)

    def close() -> None:
        if holder:
            holder[0].close()

    return on_progress, close


def echo_step(message: str) -> None:
    """A log line on stderr, flushed at once (step lines must not sit in a buffer when redirected)."""
    click.echo(message, err=True)
    sys.stderr.flush()


def quote(value: object) -> str:
    """A path or value as the shell needs it in a "next:" command (spaces, quotes...)."""
    return shlex.quote(str(value))


def summary_table(title: str, rows: Sequence[tuple[str, str]], next_commands: Sequence[str] = ()) -> None:
    """The closing summary every long command prints: what was written, what to run next."""
    width = max((len(k) for k, _ in rows), default=0)
    click.echo("")
    click.secho(title, bold=True)
    for key, value in rows:
        click.echo(f"  {key.ljust(width)}  {value}")
    if next_commands:
        click.echo("next:")
        for command in next_commands:
            click.echo(f"  {command}")
