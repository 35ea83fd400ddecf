"""``--backend``: one option, its choices read from the backend registry (edgeseg.runtime.backend) when the
command line is parsed, so a backend registered after import (a plug-in, a test's fake) is a valid choice of
``run``, ``build``, ``bench`` and ``validate`` alike (layer 5; the registry imports numpy only)."""

from __future__ import annotations

import typing
from typing import Any

import click

# typing's generics, not collections.abc's: evaluated at import, and Python 3.8 runs this module (option_groups
# uses it too)
Decorator = typing.Callable[[typing.Callable[..., Any]], typing.Callable[..., Any]]


class BackendChoice(click.Choice):  # type: ignore[type-arg]
    """click.Choice over the registry's names: ``auto`` and every registered backend (``builds``: those a build
    can target; ``runs_files``: those that run a file, not the PyTorch reference)."""

    name = "backend"

    def __init__(self, *, builds: bool = False, runs_files: bool = False) -> None:
        self.builds, self.runs_files = builds, runs_files
        super().__init__(())  # the registry is read when a command line is parsed or --help shown

    def _names(self) -> tuple[str, ...]:
        from ..runtime.backend import backend_choices

        return backend_choices(builds=self.builds, runs_files=self.runs_files)

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return self._names()

    @choices.setter
    def choices(self, value: Any) -> None:  # click.Choice.__init__ assigns it: the registry decides
        pass


def backend_option(*, builds: bool = False, runs_files: bool = False, default: str = "auto", multiple: bool = False,
                   help: str = "") -> Decorator:  # noqa: A002 - click's own name
    """The ``--backend`` option of a command (exit 2 for a name the registry does not have)."""
    return click.option("--backend", "backend", type=BackendChoice(builds=builds, runs_files=runs_files),
                        default=() if multiple else default, multiple=multiple, show_default=not multiple,
                        help=help)
