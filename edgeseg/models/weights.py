"""Weights files: the edgeseg checkpoint format and safe, explained loading (layer 3, torch).

Checkpoint (``torch.save`` of a plain dict, loadable with ``weights_only=True``)::

    {"format": "edgeseg-checkpoint-1", "model": name, "num_classes": int, "classes": [names],
     "input_spec": InputSpec.to_dict(), "state_dict": {...}, "model_options": {...},
     "edgeseg_version": str, optional "epoch", "metrics", "optimizer"}

Every file is read with ``torch.load(weights_only=True)``: a pickle holding anything but
tensors and plain containers is refused (ModelError) and never executed.

``model_from_weights`` is the one way from a weights file to a model (export, build, validate,
bench, train resume/eval and the torch runtime backend all use it): a checkpoint names its
model, classes, input spec and model options; a plain state dict needs the model name from
the caller. ``read_checkpoint_info`` says the same without building the model.
"""

from __future__ import annotations

import os
import pickle
import shlex
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import ModelError, UsageError
from ..io import atomic_open
from ..spec import InputSpec

CHECKPOINT_FORMAT = "edgeseg-checkpoint-1"
# Keys that generic training scripts use for the model's state dict, most specific first.
GENERIC_STATE_KEYS = ("state_dict", "model_state_dict", "model_state", "model")
# ImageNet classifier parts of backbone files that a segmentation backbone does not have.
BACKBONE_CLASSIFIER_PREFIXES = ("conv5.", "fc.", "incre_modules.", "downsamp_modules.", "final_layer.",
                                "classifier.")
_SHOWN = 5  # how many key names an error message lists
PLAIN_DEFAULT_CLASSES = 19  # create_model's default: plain weights when neither caller nor file says otherwise
_CHECKPOINT_FIELDS = ("format", "model", "num_classes", "classes", "input_spec", "state_dict", "model_options")


@dataclass
class WeightsReport:
    """What a load did: where the tensors came from and what was left out."""

    path: Path
    kind: str  # "edgeseg-checkpoint", "state-dict", "checkpoint['<key>']"
    num_tensors: int
    checkpoint: dict[str, Any] = field(default_factory=dict)  # metadata of an edgeseg checkpoint
    missing: list[str] = field(default_factory=list)  # only with strict=False
    unexpected: list[str] = field(default_factory=list)  # only with strict=False
    dropped: list[str] = field(default_factory=list)  # classifier keys left out of a backbone file


def _read(path: str | os.PathLike[str]) -> tuple[Path, Any]:
    target = Path(path)
    if not target.is_file():
        raise ModelError("weights file not found", expected="an existing .pt/.pth file", found=str(target),
                         fix="check the --weights path")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            return target, torch.load(target, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if "global" in detail.lower():  # a class or function reference: the file wants to run code
            raise ModelError(
                f"{target} holds Python objects other than tensors; refusing to unpickle it",
                expected="a state dict or checkpoint of tensors and plain containers",
                found=detail[:300],
                fix="re-save it as a state dict: torch.save(model.state_dict(), path) in a trusted session",
            ) from None
        raise _corrupt(target, exc, detail) from None
    except PermissionError:
        raise ModelError(f"cannot read the weights file {target}: permission denied",
                         fix=f"chmod u+r {shlex.quote(str(target))}") from None
    except MemoryError:
        raise
    except Exception as exc:  # foreign bytes make torch.load raise anything (KeyError, IndexError, struct.error...)
        raise _corrupt(target, exc) from None


def _unpickler_detail(exc: BaseException) -> str:
    """The specific reason inside torch's long weights_only message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[index + 1] if index + 1 < len(lines) else "")
    return lines[0] if lines else type(exc).__name__


def _corrupt(target: Path, exc: BaseException, detail: str | None = None) -> ModelError:
    first_line = detail or (str(exc).strip().splitlines() or [""])[0][:300]
    try:
        with open(target, "rb") as handle:
            head = handle.read(16)
        start = f"; the file starts with {head!r} ({target.stat().st_size} bytes)"
    except OSError:
        start = ""
    return ModelError(f"{target} is not a PyTorch checkpoint (truncated, or not written by torch.save)",
                      expected="a file written by torch.save: a zip archive (starts with b'PK') or a pickle of "
                               "tensors (plain pickle files with objects are not read)",
                      found=f"{type(exc).__name__}: {first_line}{start}",
                      fix="pass the best.pt / last.pt that `edgeseg train --out RUN` wrote, or a state dict "
                          "saved with torch.save; if this file was copied, copy it again")


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        bad = [f"{k!r}: {type(v).__name__}" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        return f"a dict with {len(obj)} keys; non-tensor values: " + ", ".join(bad[:_SHOWN])
    return type(obj).__name__


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def extract_state_dict(obj: Any, *, source: str = "weights") -> tuple[str, dict[str, torch.Tensor]]:
    """(kind, state dict) from a bare state dict, an edgeseg checkpoint or a generic checkpoint."""
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        kind, state = "edgeseg-checkpoint", obj.get("state_dict")
    elif _is_tensor_dict(obj):
        kind, state = "state-dict", obj
    else:
        kind, state = "", None
        if isinstance(obj, Mapping):
            for key in GENERIC_STATE_KEYS:
                if _is_tensor_dict(obj.get(key)):
                    kind, state = f"checkpoint[{key!r}]", obj[key]
                    break
    if state is None or not _is_tensor_dict(state):
        raise ModelError(
            f"{source} does not contain a state dict",
            expected="a dict of name -> tensor, an edgeseg checkpoint, or a checkpoint with one of the keys "
                     + ", ".join(GENERIC_STATE_KEYS),
            found=_describe(state if state is not None else obj),
        )
    return kind, _strip_prefix(state, "module.")  # DataParallel / DistributedDataParallel


def check_finite(state: Mapping[str, torch.Tensor], *, source: str = "weights") -> None:
    """A ModelError naming every floating tensor that holds NaN or Inf."""
    bad = [name for name, tensor in state.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ModelError(
            f"{source} contain NaN or Inf values in {len(bad)} tensor(s)",
            found=", ".join(bad[:_SHOWN]) + (f" ... (+{len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""),
            fix="training diverged: use an earlier checkpoint or lower the learning rate",
        )


def _key_list(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > _SHOWN else ''})"


def _check_keys(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], *, source: str,
                strict: bool, num_classes: int | None, hint: str | None = None) -> tuple[list[str], list[str]]:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if strict and (missing or unexpected):
        found = []
        if missing:
            found.append(f"missing keys: {_key_list(missing)}")
        if unexpected:
            found.append(f"unexpected keys: {_key_list(unexpected)}")
        raise ModelError(f"{source} do not match the model's layers", expected=f"{len(expected)} matching keys",
                         found="; ".join(found),
                         fix=hint or "pass the --model the weights were trained for (see `edgeseg models`)")
    mismatched = [(k, tuple(given[k].shape), tuple(expected[k].shape)) for k in expected
                  if k in given and given[k].shape != expected[k].shape]
    if mismatched:
        key, got, want = mismatched[0]
        classes_in_file = {g[0] for _, g, w in mismatched
                           if num_classes and len(g) == len(w) and w[0] == num_classes and g[1:] == w[1:]}
        if len(classes_in_file) == 1 and all(w[0] == num_classes for _, _, w in mismatched):
            n = classes_in_file.pop()
            fix = f"the checkpoint has {n} classes: pass --num-classes {n}"
        else:
            fix = "pass the --model and --num-classes the weights were trained with"
        raise ModelError(
            f"{source} have {len(mismatched)} tensor(s) with the wrong shape",
            expected=f"{key}: {list(want)}",
            found=f"{key}: {list(got)}" + (f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""),
            fix=fix,
        )
    return missing, unexpected


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> WeightsReport:
    """Load a weights file into ``model``, or raise a ModelError that says why not and what to do."""
    target, obj = _read(path)
    return _load_into(model, target, obj, strict=strict)


def _load_into(model: nn.Module, target: Path, obj: Any, *, strict: bool = True) -> WeightsReport:
    kind, state = extract_state_dict(obj, source=str(target))
    check_finite(state, source=f"the weights in {target}")
    expected = model.state_dict()
    hint = None
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and state and all(k not in expected for k in state):
        if sum(k in backbone.state_dict() for k in state) >= len(state) // 2:
            hint = "this looks like an ImageNet backbone file: load it with load_backbone_weights()"
    missing, unexpected = _check_keys(expected, state, source=f"the weights in {target}", strict=strict,
                                      num_classes=getattr(model, "num_classes", None), hint=hint)
    model.load_state_dict(state, strict=strict)
    meta = {k: v for k, v in obj.items() if k not in ("state_dict", "optimizer")} if kind == "edgeseg-checkpoint" \
        else {}
    return WeightsReport(target, kind, len(state), meta, missing, unexpected)


def load_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> WeightsReport:
    """Load an ImageNet backbone file into ``model.backbone``, dropping its classifier keys."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ModelError("the model has no .backbone to load ImageNet weights into",
                         found=type(model).__name__)
    target, obj = _read(path)
    kind, state = extract_state_dict(obj, source=str(target))
    expected = backbone.state_dict()
    dropped = sorted(k for k in state if k not in expected and k.startswith(BACKBONE_CLASSIFIER_PREFIXES))
    state = {k: v for k, v in state.items() if k not in dropped}
    check_finite(state, source=f"the backbone weights in {target}")
    _check_keys(expected, state, source=f"the backbone weights in {target}", strict=True, num_classes=None,
                hint="use the ImageNet weights of the same backbone and width (e.g. shufflenet_v2_x1_0 for x1.0)")
    backbone.load_state_dict(state, strict=True)
    return WeightsReport(target, kind, len(state), dropped=dropped)


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, *, model_name: str, classes: Sequence[str],
                    input_spec: InputSpec, model_options: Mapping[str, Any] | None = None, **extra: Any) -> Path:
    """Write an edgeseg checkpoint atomically; ``extra`` adds e.g. epoch, metrics, optimizer."""
    num_classes = int(getattr(model, "num_classes", len(classes)))
    if len(classes) != num_classes:
        raise ModelError("class names do not match the model", expected=f"{num_classes} names",
                         found=f"{len(classes)} names")
    reserved = {"format", "model", "num_classes", "classes", "input_spec", "state_dict", "model_options",
                "edgeseg_version"}
    clash = sorted(reserved & set(extra))
    if clash:
        raise ModelError("extra checkpoint fields clash with reserved ones", found=", ".join(clash))
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "num_classes": num_classes,
        "classes": [str(c) for c in classes],
        "input_spec": input_spec.to_dict(),
        "state_dict": state,
        "model_options": dict(model_options or {}),
        "edgeseg_version": __version__,
        **extra,
    }
    with atomic_open(path, "wb") as handle:
        torch.save(checkpoint, handle)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], *, fix: str | None = None) -> dict[str, Any]:
    """Read an edgeseg checkpoint (safely); a ModelError if the file is something else.

    ``fix`` replaces the generic advice when the file is not an edgeseg checkpoint (a command knows its options).
    """
    target, obj = _read(path)
    return checkpoint_from(obj, source=str(target), fix=fix)


def checkpoint_from(obj: Any, *, source: str = "weights", fix: str | None = None) -> dict[str, Any]:
    """``obj`` (an unpickled weights file) as a validated edgeseg checkpoint dict."""
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
    return _read(path)[1]


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
    target, obj = _read(path)
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
    from .registry import create_model

    target, obj = _read(path)
    info = _checkpoint_info(target, obj, model=model, num_classes=num_classes,
                            default_num_classes=default_num_classes, require_checkpoint=require_checkpoint,
                            origin=origin, overrides=overrides)
    net = create_model(info.model, num_classes=info.num_classes, **info.model_options)
    _load_into(net, target, obj)
    return net.eval(), info


def _checkpoint_info(target: Path, obj: Any, *, model: str | None, num_classes: int | None,
                     default_num_classes: int | None, require_checkpoint: bool | str, origin: str | None,
                     overrides: Mapping[str, Any]) -> CheckpointInfo:
    from .registry import model_info

    source = str(target)
    if require_checkpoint and not is_checkpoint(obj):
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
            raise UsageError(f"{source} holds weights but not the name of their model",
                             expected="--model NAME with plain weights, or an edgeseg checkpoint (the best.pt / "
                                      "last.pt of edgeseg train names its model)",
                             found=f"{kind} with {len(state)} tensors",
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
