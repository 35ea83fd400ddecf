"""The ``edgeseg`` command line (layer 5).

Commands live in ``edgeseg/commands/<name>.py`` and are imported only when run (or when
``--help`` lists them), so ``edgeseg --help`` imports neither torch nor onnx: command
modules import click at top level and everything heavy inside the command body.
"""

from __future__ import annotations

import errno
import importlib
import os
import shlex

import click

from . import __version__
from .errors import INSTALL_COMMANDS, ArtifactError, DependencyError, EdgesegError, install_command

# name -> (module under edgeseg.commands, attribute)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("models", "models_cmd"),
    "export": ("export", "export_cmd"),
    "data": ("data", "data_group"),
    "train": ("train", "train_cmd"),
    "qat": ("qat", "qat_cmd"),
    "eval": ("eval", "eval_cmd"),
    "calibrate": ("calibrate", "calibrate_cmd"),
    "validate": ("validate", "validate_cmd"),
    "build": ("build", "build_cmd"),
    "bench": ("bench", "bench_cmd"),
    "run": ("run", "run_cmd"),
    "doctor": ("doctor", "doctor_cmd"),
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
            try:
                return super().invoke(ctx)
            except (ModuleNotFoundError, OSError) as exc:
                # The safety net: a missing optional package or an unwritable/full disk is the user's to
                # fix, wherever it surfaced; anything else keeps its traceback (a bug).
                error = _user_error(exc)
                if error is None:
                    raise
                raise error from exc
        except EdgesegError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:  # click would print "Aborted!" and exit 1: the shell's convention is 128 + SIGINT
            click.secho(f"\ninterrupted (Ctrl-C): edgeseg {ctx.invoked_subcommand or ''} stopped".rstrip(),
                        fg="yellow", err=True)
            ctx.exit(INTERRUPTED)


INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped with Ctrl-C
DESKTOP_MODULES = ("torch", "torchvision", "onnx", "onnxsim")
DISK_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC}


def _user_error(exc: BaseException) -> EdgesegError | None:
    """The user error behind a missing module or a disk/permission failure; None for anything else."""
    if isinstance(exc, ModuleNotFoundError):
        top = (exc.name or "").split(".")[0]
        if top not in INSTALL_COMMANDS:
            return None
        problem = f"this command needs the desktop install ({top} is not installed)" if top in DESKTOP_MODULES \
            else f"this command needs {top}, which is not installed"
        return DependencyError(problem,
                               expected=f"the Python package {top!r}", found=f"{type(exc).__name__}: {exc}",
                               fix=install_command(top))
    if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
        path = str(exc.filename) if exc.filename is not None else "a file"
        if exc.errno == errno.ENOSPC:
            where = shlex.quote(os.path.dirname(path) or ".") if exc.filename is not None else "."
            return ArtifactError(f"no space left on the disk while writing {path}", found=str(exc),
                                 fix=f"free disk space (see: df -h {where}), or choose another folder with --out")
        problem = f"{path} is on a read-only file system" if exc.errno == errno.EROFS else \
            f"no permission to write or read {path}"
        return ArtifactError(problem, found=str(exc), fix="choose a writable folder with --out")
    return None


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
    run()
