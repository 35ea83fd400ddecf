"""Weights files: safe, explained reading and loading of state dicts (layer 3, torch).

Every ``.pt``/``.pth`` file is read with ``torch.load(weights_only=True)``: a pickle holding
anything but tensors and plain containers is refused (ModelError) and never executed. A
``.safetensors`` file is read with ``safetensors.torch.load_file`` (no pickle at all); when
its metadata holds edgeseg's checkpoint fields (``save_safetensors`` in ``checkpoint.py``)
it reads as an edgeseg checkpoint, else as a bare state dict. Key and shape mismatches name
the keys and the fix. The checkpoint format and the file -> model path are in ``checkpoint.py``.
"""

from __future__ import annotations

import json
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

from ..errors import ModelError, require
from .registry import BackboneEntry, backbone_entry, backbone_of, list_backbones, models_with_backbone

CHECKPOINT_FORMAT = "edgeseg-checkpoint-1"
SAFETENSORS_SUFFIX = ".safetensors"
# The safetensors metadata key (metadata is str -> str) holding the checkpoint fields as JSON.
SAFETENSORS_METADATA_KEY = "edgeseg_checkpoint"
# Keys that generic training scripts use for the model's state dict, most specific first.
GENERIC_STATE_KEYS = ("state_dict", "model_state_dict", "model_state", "model")
_SHOWN = 5  # how many key names an error message lists


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


def open_weights_file(path: str | os.PathLike[str]) -> tuple[Path, Any]:
    target = Path(path)
    if not target.is_file():
        raise ModelError("weights file not found", expected="an existing .pt/.pth/.safetensors file",
                         found=str(target), fix="check the --weights path")
    if target.suffix.lower() == SAFETENSORS_SUFFIX:
        return target, _read_safetensors(target)
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


def _read_safetensors(target: Path) -> dict[str, Any]:
    """A bare state dict, or an edgeseg checkpoint dict when the metadata carries its fields."""
    st = require("safetensors.torch", extra="desktop", purpose=f"reading {target.name}")
    try:
        state = st.load_file(str(target), device="cpu")
        with st.safe_open(str(target), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except PermissionError:
        raise ModelError(f"cannot read the weights file {target}: permission denied",
                         fix=f"chmod u+r {shlex.quote(str(target))}") from None
    except MemoryError:
        raise
    except Exception as exc:  # SafetensorError (bad header, truncated data), OSError...
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelError(f"{target} is not a readable safetensors file (truncated, or another format)",
                         expected="a file written by safetensors (an 8-byte header length, a JSON header, data)",
                         found=f"{type(exc).__name__}: {first_line}",
                         fix="copy or download it again; a torch.save file must end in .pt or .pth") from None
    if SAFETENSORS_METADATA_KEY not in metadata:
        return state
    try:
        fields = json.loads(metadata[SAFETENSORS_METADATA_KEY])
    except ValueError as exc:
        raise ModelError(f"{target} has broken edgeseg metadata", found=f"{type(exc).__name__}: {exc}",
                         fix="write the file again with edgeseg.models.save_safetensors") from None
    if not isinstance(fields, dict):
        raise ModelError(f"{target} has broken edgeseg metadata", expected="a JSON object",
                         found=type(fields).__name__)
    return {**fields, "format": CHECKPOINT_FORMAT, "state_dict": state}


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
    head = b""
    try:
        with open(target, "rb") as handle:
            head = handle.read(16)
        start = f"; the file starts with {head!r} ({target.stat().st_size} bytes)"
    except OSError:
        start = ""
    fix = ("pass the best.pt / last.pt that `edgeseg train --out RUN` wrote, or a state dict saved with "
           "torch.save; if this file was copied, copy it again")
    if head[8:10] == b'{"':  # a little-endian header length, then JSON: the safetensors layout
        fix = f"this looks like a safetensors file: rename it to {target.with_suffix(SAFETENSORS_SUFFIX).name}"
    return ModelError(f"{target} is not a PyTorch checkpoint (truncated, or not written by torch.save)",
                      expected="a file written by torch.save: a zip archive (starts with b'PK') or a pickle of "
                               "tensors (plain pickle files with objects are not read)",
                      found=f"{type(exc).__name__}: {first_line}{start}", fix=fix)


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
            fix = hint or "pass the --model and --num-classes the weights were trained with"
        raise ModelError(
            f"{source} have {len(mismatched)} tensor(s) with the wrong shape",
            expected=f"{key}: {list(want)}",
            found=f"{key}: {list(got)}" + (f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""),
            fix=fix,
        )
    return missing, unexpected


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> WeightsReport:
    """Load a weights file into ``model``, or raise a ModelError that says why not and what to do."""
    target, obj = open_weights_file(path)
    return load_state_into(model, target, obj, strict=strict)


def load_state_into(model: nn.Module, target: Path, obj: Any, *, strict: bool = True) -> WeightsReport:
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
    """Load an ImageNet backbone file (.pth or .safetensors; the one the model's backbone entry names: torchvision
    ShuffleNetV2, timm/official HRNet...) into ``model.backbone``, dropping the classifier keys registered
    backbones declare (``PretrainedWeights.classifier_prefixes``); or the backbone of a segmentation checkpoint."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ModelError("the model has no .backbone to load ImageNet weights into",
                         found=type(model).__name__)
    target, obj = open_weights_file(path)
    kind, state = extract_state_dict(obj, source=str(target))
    expected = backbone.state_dict()
    dropped: list[str] = []
    if not any(k in expected for k in state) and any(k.startswith("backbone.") for k in state):
        # a segmentation checkpoint (e.g. trained on Cityscapes): its backbone, not its decoder and head
        dropped = sorted(k for k in state if not k.startswith("backbone."))
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    classifier = sorted(k for k in state if k not in expected and k.startswith(classifier_prefixes()))
    state = {k: v for k, v in state.items() if k not in classifier}
    dropped += classifier
    check_finite(state, source=f"the backbone weights in {target}")
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        _check_keys(expected, state, source=f"the backbone weights in {target}", strict=True, num_classes=None,
                    hint=_backbone_fix(backbone_of(getattr(model, "model_name", "")), state))
    backbone.load_state_dict(state, strict=True)
    return WeightsReport(target, kind, len(state), dropped=dropped)


def pretrained_backbone(model_name: str, path: str | os.PathLike[str], *, log: Any = None,
                        **model_options: Any) -> nn.Module:
    """The backbone of ``model_name`` with the weights of ``path`` (``load_backbone_weights``, which finds the
    backbone's entry, hence its ImageNet file, through the model name): checked before a run reads its data,
    then copied into the run's model (the backbone does not depend on the class count)."""
    from .registry import create_model

    probe = create_model(model_name, num_classes=1, **model_options)
    report = load_backbone_weights(probe, path)
    if log is not None:
        left_out = f"; left out {len(report.dropped)} classifier/head tensors" if report.dropped else ""
        log(f"backbone weights: {report.num_tensors} tensors from {report.path} ({report.kind}{left_out})")
    return probe.backbone


def classifier_prefixes() -> tuple[str, ...]:
    """The ImageNet classifier key prefixes of every registered backbone (``PretrainedWeights``): left out of a
    backbone file when the backbone has no such key, so a file of another backbone is still recognised."""
    prefixes: list[str] = []
    for name in list_backbones():
        pretrained = backbone_entry(name).pretrained
        prefixes += [p for p in (pretrained.classifier_prefixes if pretrained else ()) if p not in prefixes]
    return tuple(prefixes)


def imagenet_source(entry: BackboneEntry | None) -> str:
    """Where the ImageNet weights of a registered backbone come from (its entry's ``pretrained.source``)."""
    if entry is not None and entry.pretrained is not None:
        return entry.pretrained.source
    return "the ImageNet weights of the same backbone and width"


def _backbone_fix(entry: BackboneEntry | None, state: Mapping[str, torch.Tensor]) -> str:
    """The fix for a backbone file that does not fit: the registered backbone it does fit, or the file to get."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name in list_backbones():
        candidate = backbone_entry(name)
        models = models_with_backbone(name)
        if not models:
            continue
        with torch.device("meta"):  # shapes only: no memory, no init
            layout = {k: tuple(v.shape) for k, v in candidate.build().state_dict().items()}
        if layout == shapes:
            prefix = os.path.commonprefix(models)  # "shufflenetv2_x0_5_", "hrnet_w18_small_v2" (+ _ocr)
            if prefix not in models:
                prefix = prefix[: prefix.rfind("_") + 1] or prefix  # whole words: not "..._d" of dspp, deeplabv3
            return (f"these are {name} backbone weights: train a {prefix}* model "
                    f"(`edgeseg models --pattern '{prefix}*'`), or pass {imagenet_source(entry)}")
    return f"pass {imagenet_source(entry)}"
