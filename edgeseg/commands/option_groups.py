"""The CLI's option families, declared once (layer 5; click and cheap project modules only).

Each family is a decorator that adds its options to a command (Polygraphy's ``tools/args`` idea): every
command that takes the model and weights, the input size, the calibration frames, the validation data,
the gates or the output folder spells them the same way, with one help text per idea. One name per idea
across commands:

=================================  ==============================  ===================================
idea                               name                            old spellings (hidden, warn)
=================================  ==============================  ===================================
activation range method            ``--calib-method``              ``--method`` (calibrate)
labelled frames to validate on     ``--val-data``                  ``--val`` (build), ``--data``
                                                                   (validate), ``--reference-images``
                                                                   (export)
how many of those frames           ``--val-images``                ``--max-images`` (validate),
                                                                   ``--num-samples`` (export)
=================================  ==============================  ===================================

An old spelling still works: it is a hidden option that prints a warning naming the new one and feeds
the new option's value (both given: a usage error). The gates' defaults live in
``pipeline.options`` (one place); ``--backend`` stays with each command (the backend registry owns it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from ..pipeline.options import DEFAULT_MAX_MIOU_DROP, DEFAULT_MIN_AGREEMENT
from ..quant.ranges import DEFAULT_METHOD, METHODS
from ._common import CALIB_HELP, CALIB_TOPIC_HELP, DATASET_HELP, POSITIVE, SIZE, CalibType, DatasetType
from .backend_option import Decorator

_ALIAS_KEY = "edgeseg.option_aliases"  # ctx.meta: canonical name -> (old spelling, value) given on the line


def option(*decls: str, aliases: Sequence[str] = (), **attrs: Any) -> Decorator:
    """``click.option(*decls, **attrs)``, plus each of ``aliases`` as a hidden option that warns and feeds it."""
    if attrs.get("required") and attrs.get("default", 0) is None:
        del attrs["default"]  # click >= 8.2 takes an explicit None default as a value: a required option never missing

    def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
        if not aliases:
            return click.option(*decls, **attrs)(f)
        dest = _dest(decls)
        # aliases first: click lists parameters in reverse order of decoration, so the canonical one stays in place
        for number, alias in enumerate(aliases):
            f = click.option(alias, f"_alias_{number}_{dest}", cls=_AliasOption, canonical=_canonical(decls),
                             canonical_dest=dest, hidden=True, expose_value=False, type=attrs.get("type"),
                             multiple=bool(attrs.get("multiple")), default=None)(f)
        return click.option(*decls, cls=_CanonicalOption, **attrs)(f)

    return decorator


def _canonical(decls: Sequence[str]) -> str:
    return next(d for d in decls if d.startswith("--"))


def _dest(decls: Sequence[str]) -> str:
    named = [d for d in decls if not d.startswith("-")]
    return named[0] if named else _canonical(decls).lstrip("-").replace("-", "_")


# ``handle_parse_result(ctx, opts, args)``: ``opts`` holds what the command line gave, by parameter name (click
# 8.1 to 8.4 alike); parameters given on the line are handled in the order they were typed, the others after.
class _AliasOption(click.Option):
    """An old spelling: warns, and hands its value to the canonical option (``ctx.meta``)."""

    def __init__(self, *args: Any, canonical: str, canonical_dest: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.canonical, self.canonical_dest = canonical, canonical_dest

    def handle_parse_result(self, ctx: click.Context, opts: Any, args: list[str]) -> Any:
        if self.name in opts:
            spelling = self.opts[0]
            if self.canonical_dest in opts:
                raise click.UsageError(f"{spelling} and {self.canonical} are the same option: pass only "
                                       f"{self.canonical}", ctx=ctx)
            click.echo(f"warning: {spelling} is deprecated: use {self.canonical} (it means the same)", err=True)
            ctx.meta.setdefault(_ALIAS_KEY, {})[self.canonical_dest] = opts[self.name]
        return super().handle_parse_result(ctx, opts, args)


class _CanonicalOption(click.Option):
    """The one name of an idea: takes an old spelling's value when only that was given."""

    def handle_parse_result(self, ctx: click.Context, opts: Any, args: list[str]) -> Any:
        given = ctx.meta.get(_ALIAS_KEY, {})
        if self.name in given and self.name not in opts:
            opts = {**opts, self.name: given[self.name]}
        return super().handle_parse_result(ctx, opts, args)


def _apply(f: Callable[..., Any], decorators: Sequence[Decorator]) -> Callable[..., Any]:
    for decorate in reversed(decorators):  # the first listed is shown first in --help
        f = decorate(f)
    return f


# -- the families ------------------------------------------------------------------------------------------
def model_options(*, model_help: str, weights_help: str, weights_exist: bool = False,
                  model_required: bool = False, weights_required: bool = False) -> Decorator:
    """``--model NAME`` (into ``model_name``) and ``--weights FILE``."""
    weights = click.Path(exists=weights_exist, dir_okay=False, path_type=Path)
    return lambda f: _apply(f, [
        option("--model", "model_name", default=None, required=model_required, help=model_help),
        option("--weights", type=weights, default=None, required=weights_required, help=weights_help),
    ])


def input_size_option(help: str = "HxW, multiples of 32 (default: the checkpoint's).") -> Decorator:
    return option("--input-size", type=SIZE, default=None, help=help)


def calib_options(*, calib_help: str, calib_dest: str = "calib", required: bool = False,
                  images_help: str = "Images used for calibration.", method_dest: str = "calib_method",
                  method_default: str | None = None, method_help: str | None = None,
                  method_aliases: Sequence[str] = ()) -> Decorator:
    """``--calib`` (folder, bag:PATH or a dataset's images), ``--topic``, ``--calib-images``, ``--calib-method``."""
    return lambda f: _apply(f, [
        option("--calib", calib_dest, type=CalibType(), required=required, default=None, help=calib_help),
        option("--topic", default=None, help=CALIB_TOPIC_HELP),
        option("--calib-images", type=POSITIVE, default=100, show_default=True, help=images_help),
        option("--calib-method", method_dest, aliases=method_aliases, type=click.Choice(METHODS),
               default=method_default, show_default=method_default is not None,
               help=method_help or "Activation range method."),
    ])


CALIB_FOLDER_HELP = f"Calibration frames: {CALIB_HELP}"
CALIB_METHOD_HELP = f"Activation range method [default: {DEFAULT_METHOD}]."


def val_data_options(*, data_help: str, data_dest: str = "val", data_type: Any = None,
                     data_aliases: Sequence[str] = (), images_dest: str = "val_images", images_help: str,
                     images_type: Any = POSITIVE, images_default: int | None = None,
                     images_aliases: Sequence[str] = ()) -> Decorator:
    """``--val-data`` (the labelled frames the candidate is checked on) and ``--val-images`` (how many)."""
    return lambda f: _apply(f, [
        option("--val-data", data_dest, aliases=data_aliases,
               type=data_type if data_type is not None else DatasetType(exists=True), default=None, help=data_help),
        option("--val-images", images_dest, aliases=images_aliases, type=images_type, default=images_default,
               show_default=images_default is not None, help=images_help),
    ])


VAL_DATA_HELP = DATASET_HELP


def gate_options(*, from_build: bool = False) -> Decorator:
    """``--min-agreement`` and ``--max-miou-drop``; defaults from ``pipeline.options`` (``from_build``: None, the
    command takes the build's recorded gates first, then those defaults)."""
    agreement_default = f"the build's gate from manifest.json beside the candidate, else {DEFAULT_MIN_AGREEMENT}" \
        if from_build else str(DEFAULT_MIN_AGREEMENT)
    drop_default = f"the build's, else {DEFAULT_MAX_MIOU_DROP}" if from_build else str(DEFAULT_MAX_MIOU_DROP)
    return lambda f: _apply(f, [
        option("--min-agreement", type=click.FloatRange(0.0, 1.0),
               default=None if from_build else DEFAULT_MIN_AGREEMENT,
               help=f"Gate: minimum fraction of pixels whose argmax matches PyTorch [default: {agreement_default}]."),
        option("--max-miou-drop", type=click.FloatRange(min=0.0),
               default=None if from_build else DEFAULT_MAX_MIOU_DROP,
               help=f"Gate: maximum mIoU drop against ground truth, in points [default: {drop_default}]."),
    ])


def threads_option(help: str = "CPU threads for ONNX Runtime / PyTorch.") -> Decorator:
    return option("--threads", type=POSITIVE, default=None, help=help)


def out_option(*, help: str, dest: str = "out", required: bool = False, file_okay: bool = False) -> Decorator:
    return option("--out", dest, type=click.Path(file_okay=file_okay, path_type=Path), default=None,
                  required=required, help=help)
