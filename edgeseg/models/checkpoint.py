"""The edgeseg checkpoint and the one way from a weights file to a model (layer 3, torch).

Checkpoint (``torch.save`` of a plain dict, loadable with ``weights_only=True``)::

    {"format": "edgeseg-checkpoint-1", "model": name, "num_classes": int, "classes": [names],
     "input_spec": InputSpec.to_dict(), "state_dict": {...}, "model_options": {...},
     "edgeseg_version": str, optional "epoch", "metrics", "optimizer"}

``save_safetensors`` writes the same as a .safetensors file (no pickle): the state dict as
tensors, the other fields as JSON in the metadata; reading it gives the same dict.

``model_from_weights`` is the one way from a weights file to a model (export, build, validate,
bench, train resume/eval and the torch runtime backend all use it): a checkpoint names its
model, classes, input spec and model options; a plain state dict needs the model name from
the caller. ``read_checkpoint_info`` says the same without building the model. Reading the
bytes safely and matching keys is ``weights.py``'s job.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import ModelError, UsageError, require
from ..fileio import atomic_open
from ..spec import InputSpec
from .registry import create_model, model_info
from .weights import CHECKPOINT_FORMAT, SAFETENSORS_METADATA_KEY, extract_state_dict, load_state_into, open_weights_file

QAT_CHECKPOINT_FORMAT = "edgeseg-qat-1"  # training/qat_checkpoint.py's (it sits above models/): refused here
PLAIN_DEFAULT_CLASSES = 19  # create_model's default: plain weights when neither caller nor file says otherwise
_CHECKPOINT_FIELDS = ("format", "model", "num_classes", "classes", "input_spec", "state_dict", "model_options")


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, *, model_name: str, classes: Sequence[str],
                    input_spec: InputSpec, model_options: Mapping[str, Any] | None = None, **extra: Any) -> Path:
    """Write an edgeseg checkpoint atomically; ``extra`` adds e.g. epoch, metrics, optimizer."""
    checkpoint = _checkpoint_fields(model, model_name=model_name, classes=classes, input_spec=input_spec,
                                    model_options=model_options, extra=extra)
    checkpoint["state_dict"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_open(path, "wb") as handle:
        torch.save(checkpoint, handle)
    return Path(path)


def save_safetensors(path: str | os.PathLike[str], model: nn.Module, *, model_name: str, classes: Sequence[str],
                     input_spec: InputSpec, model_options: Mapping[str, Any] | None = None, **extra: Any) -> Path:
    """The same checkpoint as ``save_checkpoint`` as a .safetensors file (no pickle): the tensors, and the other
    fields as JSON in the metadata, so ``--weights FILE.safetensors`` needs no --model. ``extra`` must be JSON."""
    st = require("safetensors.torch", extra="desktop", purpose="writing .safetensors weights")
    fields = _checkpoint_fields(model, model_name=model_name, classes=classes, input_spec=input_spec,
                                model_options=model_options, extra=extra)
    try:
        metadata = {SAFETENSORS_METADATA_KEY: json.dumps(fields)}
    except TypeError as exc:
        raise ModelError("checkpoint fields for a .safetensors file must be JSON values", found=str(exc)) from None
    # contiguous copies: safetensors refuses views and tensors that share memory
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    data = st.save(state, metadata=metadata)
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def _checkpoint_fields(model: nn.Module, *, model_name: str, classes: Sequence[str], input_spec: InputSpec,
                       model_options: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Every checkpoint field but the state dict, checked."""
    num_classes = int(getattr(model, "num_classes", len(classes)))
    if len(classes) != num_classes:
        raise ModelError("class names do not match the model", expected=f"{num_classes} names",
                         found=f"{len(classes)} names")
    reserved = {"format", "model", "num_classes", "classes", "input_spec", "state_dict", "model_options",
                "edgeseg_version"}
    clash = sorted(reserved & set(extra))
    if clash:
        raise ModelError("extra checkpoint fields clash with reserved ones", found=", ".join(clash))
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "num_classes": num_classes,
        "classes": [str(c) for c in classes],
        "input_spec": input_spec.to_dict(),
        "model_options": dict(model_options or {}),
        "edgeseg_version": __version__,
        **extra,
    }


def load_checkpoint(path: str | os.PathLike[str], *, fix: str | None = None) -> dict[str, Any]:
    """Read an edgeseg checkpoint (safely); a ModelError if the file is something else.

    ``fix`` replaces the generic advice when the file is not an edgeseg checkpoint (a command knows its options).
    """
    target, obj = open_weights_file(path)
    return checkpoint_from(obj, source=str(target), fix=fix)


def checkpoint_from(obj: Any, *, source: str = "weights", fix: str | None = None) -> dict[str, Any]:
    """``obj`` (an unpickled weights file) as a validated edgeseg checkpoint dict."""
    if isinstance(obj, Mapping) and obj.get("format") == QAT_CHECKPOINT_FORMAT:
        origin = (obj.get("float_checkpoint") or {}).get("path", "?")
        raise ModelError(f"{source} is a QAT checkpoint (edgeseg qat): a fine-tuned ONNX graph, not PyTorch weights",
                         expected=f"format {CHECKPOINT_FORMAT!r}", found=f"format {QAT_CHECKPOINT_FORMAT!r}",
                         fix=f"build it: edgeseg build --int8 --weights {source}; for PyTorch, use the float "
                             f"checkpoint it was fine-tuned from ({origin})")
    if not is_checkpoint(obj):
        found = f"format {obj.get('format')!r}" if isinstance(obj, Mapping) and "format" in obj else \
            "a bare state dict or another program's checkpoint"
        raise ModelError(f"{source} is not an edgeseg checkpoint", expected=f"format {CHECKPOINT_FORMAT!r}",
                         found=found,
                         fix=fix or "pass --model and --num-classes explicitly; load it with load_weights()")
    missing = [k for k in ("model", "num_classes", "classes", "input_spec", "state_dict") if k not in obj]
    if missing:
        raise ModelError(f"{source} is an incomplete edgeseg checkpoint", found="missing " + ", ".join(missing))
    return dict(obj)


def is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def read_weights_file(path: str | os.PathLike[str]) -> Any:
    """The safely unpickled content of a weights file (for callers that inspect it first)."""
    return open_weights_file(path)[1]


# -- weights file -> model: the one owner ------------------------------------------------------------
class CheckpointConflict(UsageError, ModelError):
    """The caller's model name or class count contradicts the checkpoint.

    A usage error (exit 2: an option is wrong) about the model, so ``except ModelError`` catches it too.
    """


@dataclass(frozen=True)
class CheckpointInfo:
    """What a weights file says about its model: ``model_from_weights`` builds exactly this model."""

    path: Path
    model: str
    num_classes: int
    classes: list[str] = field(default_factory=list)  # the checkpoint's class names; [] for plain weights
    input_spec: InputSpec | None = None  # None for plain weights
    model_options: dict[str, Any] = field(default_factory=dict)  # the checkpoint's, updated by the overrides
    full_checkpoint: bool = False  # False: a plain state dict; model (and num_classes) came from the caller
    kind: str = ""  # "edgeseg-checkpoint", "state-dict", "checkpoint['<key>']"
    num_tensors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # the checkpoint's other fields: epoch, metrics, optimizer...

    def checkpoint_dict(self) -> dict[str, Any]:
        """The checkpoint's fields as ``load_checkpoint`` returns them, without the state dict (plain weights:
        what the caller said, without a format)."""
        data: dict[str, Any] = {"model": self.model, "num_classes": self.num_classes, "classes": list(self.classes),
                                "model_options": dict(self.model_options)}
        if self.full_checkpoint:
            data = {"format": CHECKPOINT_FORMAT, **data}
        if self.input_spec is not None:
            data["input_spec"] = self.input_spec.to_dict()
        return {**data, **self.extra}


def read_checkpoint_info(path: str | os.PathLike[str], *, model: str | None = None, num_classes: int | None = None,
                         default_num_classes: int | None = None, require_checkpoint: bool | str = False,
                         origin: str | None = None, **overrides: Any) -> CheckpointInfo:
    """What ``model_from_weights`` would build from ``path``, without building it (same arguments, same errors)."""
    target, obj = open_weights_file(path)
    return _checkpoint_info(target, obj, model=model, num_classes=num_classes,
                            default_num_classes=default_num_classes, require_checkpoint=require_checkpoint,
                            origin=origin, overrides=overrides)


def model_from_weights(path: str | os.PathLike[str], *, model: str | None = None, num_classes: int | None = None,
                       default_num_classes: int | None = None, require_checkpoint: bool | str = False,
                       origin: str | None = None, **overrides: Any) -> tuple[nn.Module, CheckpointInfo]:
    """(the model of a weights file with its weights loaded, in eval mode; what the file said about it).

    - an edgeseg checkpoint names its model, class count, classes, input spec and model options;
      ``model`` / ``num_classes``, when given, must agree with it (else ``CheckpointConflict``).
    - a plain state dict (or another program's checkpoint) needs ``model``; its class count is
      ``num_classes``, else ``default_num_classes``, else 19 (a wrong count is explained on loading).
    - ``overrides`` are model options (e.g. ``separable=True``) over the checkpoint's ``model_options``.
    - ``require_checkpoint``: refuse plain weights (a string is the fix the error suggests).
    - ``origin`` names where ``model`` / ``num_classes`` come from in error messages (default: the
      --model / --num-classes options).

    The file is read once, safely (``torch.load(weights_only=True)``); every failure is a ModelError
    or UsageError that says what to pass instead.
    """
    target, obj = open_weights_file(path)
    info = _checkpoint_info(target, obj, model=model, num_classes=num_classes,
                            default_num_classes=default_num_classes, require_checkpoint=require_checkpoint,
                            origin=origin, overrides=overrides)
    net = create_model(info.model, num_classes=info.num_classes, **info.model_options)
    load_state_into(net, target, obj)
    return net.eval(), info


def _checkpoint_info(target: Path, obj: Any, *, model: str | None, num_classes: int | None,
                     default_num_classes: int | None, require_checkpoint: bool | str, origin: str | None,
                     overrides: Mapping[str, Any]) -> CheckpointInfo:
    source = str(target)
    if (require_checkpoint and not is_checkpoint(obj)) or (isinstance(obj, Mapping) and
                                                             obj.get("format") == QAT_CHECKPOINT_FORMAT):
        checkpoint_from(obj, source=source, fix=require_checkpoint if isinstance(require_checkpoint, str) else None)
    kind, state = extract_state_dict(obj, source=source)
    if is_checkpoint(obj):
        checkpoint = checkpoint_from(obj, source=source)
        _check_agreement(checkpoint, model, num_classes, origin, source)
        info = CheckpointInfo(
            path=target, model=str(checkpoint["model"]), num_classes=int(checkpoint["num_classes"]),
            classes=[str(c) for c in checkpoint.get("classes") or []],
            input_spec=InputSpec.from_dict(checkpoint["input_spec"]),
            model_options={**dict(checkpoint.get("model_options") or {}), **overrides}, full_checkpoint=True,
            kind=kind, num_tensors=len(state),
            extra={k: v for k, v in checkpoint.items() if k not in _CHECKPOINT_FIELDS})
    else:
        if model is None:
            plain = "a .safetensors file without edgeseg metadata" if target.suffix.lower() == ".safetensors" \
                else kind
            raise UsageError(f"{source} holds weights but not the name of their model",
                             expected="--model NAME with plain weights, or an edgeseg checkpoint (the best.pt / "
                                      "last.pt of edgeseg train names its model; so does the best.safetensors "
                                      "of edgeseg train --save-safetensors)",
                             found=f"{plain} with {len(state)} tensors",
                             fix="pass --model NAME (`edgeseg models` lists them)")
        count = num_classes if num_classes is not None else default_num_classes
        info = CheckpointInfo(path=target, model=model, num_classes=int(count or PLAIN_DEFAULT_CLASSES),
                              model_options=dict(overrides), kind=kind, num_tensors=len(state))
    model_info(info.model)  # a name that is not registered fails here, with the close matches
    return info


def _check_agreement(checkpoint: Mapping[str, Any], model: str | None, num_classes: int | None,
                     origin: str | None, source: str) -> None:
    saved_model, saved_count = str(checkpoint["model"]), int(checkpoint["num_classes"])
    conflicts: list[tuple[str, str, Any, Any]] = []  # (option, what the checkpoint holds, given, saved)
    if model is not None and model != saved_model:
        conflicts.append(("--model", "another model", model, saved_model))
    if num_classes is not None and int(num_classes) != saved_count:
        conflicts.append(("--num-classes", "another number of classes", num_classes, saved_count))
    if not conflicts:
        return
    holds = " and ".join(c[1] for c in conflicts)
    expected = f"model {saved_model} with {saved_count} classes, as the checkpoint says"
    if origin is None:
        options = " and ".join(c[0] for c in conflicts)
        raise CheckpointConflict(
            f"options contradict the checkpoint given as --weights: it holds {holds}", expected=expected,
            found="; ".join(f"{flag} {given} (checkpoint: {saved})" for flag, _, given, saved in conflicts),
            fix=f"drop {options} (the checkpoint provides {'them' if len(conflicts) > 1 else 'it'}), or pass "
                "the matching weights")
    raise CheckpointConflict(
        f"{source} does not belong to {origin}: it holds {holds}", expected=expected,
        found="; ".join(f"{flag.lstrip('-').replace('-', '_')} {given} in {origin} (checkpoint: {saved})"
                        for flag, _, given, saved in conflicts),
        fix=f"pass the weights {origin} was made from, or build a folder from these: "
            f"edgeseg build --weights {shlex.quote(source)}")
