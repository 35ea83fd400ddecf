"""Loading an exported ``model.onnx`` and reading what edgeseg wrote into it (layer 2).

The exporter stores the model name, classes and the ``InputSpec`` (JSON) in the ONNX
``metadata_props``; calibration reads the preprocessing from there so it can never drift
from the one the model was exported with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, require
from ..spec import InputSpec

MIN_QDQ_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear


def _onnx():  # type: ignore[no-untyped-def]
    return require("onnx", purpose="reading ONNX models")


def load_onnx(path: str | os.PathLike[str], *, what: str = "ONNX model"):  # -> onnx.ModelProto
    """Load an ONNX file or raise an ArtifactError that names the file and the fix."""
    onnx = _onnx()
    target = Path(path)
    if not target.is_file():
        raise ArtifactError(
            f"{what} not found",
            expected=f"an ONNX file at {target}",
            found="no such file" if not target.exists() else "a folder",
            fix="export it first: edgeseg export --model NAME --out DIR",
        )
    try:
        model = onnx.load(str(target))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ArtifactError(
            f"{what} {target} is corrupt or not an ONNX file",
            found=f"{type(exc).__name__}: {exc}",
            fix="re-export it: edgeseg export --model NAME --out DIR",
        ) from None
    if not model.graph.node:
        raise ArtifactError(f"{what} {target} has an empty graph", fix="re-export it")
    return model


def metadata(model: Any) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def set_metadata(model: Any, values: dict[str, str]) -> None:
    """Add or replace metadata_props entries (keeps the others and their order)."""
    existing = {prop.key: prop for prop in model.metadata_props}
    for key, value in values.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value


def input_spec_of(model: Any, *, source: str = "model.onnx") -> InputSpec:
    """The InputSpec the exporter stored in the ONNX metadata."""
    raw = metadata(model).get("input_spec")
    if raw is None:
        raise ArtifactError(
            f"{source} carries no input spec in its metadata",
            expected="metadata_props key 'input_spec' (written by edgeseg export)",
            found="keys: " + (", ".join(sorted(metadata(model))) or "none"),
            fix="export the model with edgeseg export, or pass the input spec explicitly",
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{source} has an unreadable input_spec", found=str(exc), fix="re-export it") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{source} has an input_spec that is not a JSON object", found=type(data).__name__)
    return InputSpec.from_dict(data)


def opset_of(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def input_dims(model: Any, name: str) -> list[int | str]:
    """The declared shape of a graph input: ints for static dims, names for dynamic ones."""
    for value in model.graph.input:
        if value.name == name:
            dims: list[int | str] = []
            for dim in value.type.tensor_type.shape.dim:
                dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?"))
            return dims
    names = ", ".join(v.name for v in model.graph.input)
    raise ArtifactError("the ONNX model has no input of the expected name", expected=name, found=names or "none")
