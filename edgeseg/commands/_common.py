"""Shared CLI pieces: option types, progress bars, the closing summary table."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import click

T = TypeVar("T")


class SizeType(click.ParamType):
    """``HxW`` with both multiples of 32; a usage error (exit 2) otherwise."""

    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        from ..errors import UsageError
        from ..spec import parse_size

        try:
            return parse_size(value)
        except UsageError as exc:
            self.fail(exc.format(), param, ctx)


SIZE = SizeType()


def progress(items: Iterable[T], *, label: str, length: int | None = None) -> Iterator[T]:
    """A progress bar on stderr (hidden when stderr is not a terminal, except a final line)."""
    with click.progressbar(items, length=length, label=label, file=click.get_text_stream("stderr"),
                           show_pos=True, show_eta=True) as bar:
        yield from bar


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
