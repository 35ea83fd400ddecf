"""The ``edgeseg`` command line (layer 5).

Commands live in ``edgeseg/commands/<name>.py`` and are imported only when run (or when
``--help`` lists them), so ``edgeseg --help`` imports neither torch nor onnx: command
modules import click at top level and everything heavy inside the command body.
"""

from __future__ import annotations

import importlib
import sys

import click

from . import __version__
from .errors import EdgesegError

# name -> (module under edgeseg.commands, attribute)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("models", "models_cmd"),
    "export": ("export", "export_cmd"),
    "data": ("data", "data_group"),
    "train": ("train", "train_cmd"),
    "eval": ("train", "eval_cmd"),
    "calibrate": ("calibrate", "calibrate_cmd"),
    "validate": ("validate", "validate_cmd"),
    "build": ("build", "build_cmd"),
    "bench": ("bench", "bench_cmd"),
    "run": ("run", "run_cmd"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name]
        module = importlib.import_module(f"edgeseg.commands.{module_name}")
        return getattr(module, attr)

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except EdgesegError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgeseg")
def main() -> None:
    """edgeseg: segmentation models from PyTorch to INT8 TensorRT engines, checked against PyTorch.

    \b
    Main job:   edgeseg build --int8        (demo model, shipped calibration images)
    Pipeline:   export -> calibrate -> build -> validate -> run / bench
    """


def run() -> None:  # console-script entry point
    main(prog_name="edgeseg")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
