"""What the builder reads from the ONNX itself (layer 2: onnx, lazily).

Q/DQ and float16 presence (for the version switch), node names by index (parser
errors report an index on some TensorRT versions) and the export metadata: the input
spec as JSON in ``metadata_props["input_spec"]`` plus the model name and classes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, require
from ..spec import InputSpec
from .versions import OnnxFacts

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
FLOAT16 = 10  # onnx.TensorProto.FLOAT16


@dataclass
class OnnxInfo:
    path: Path
    facts: OnnxFacts
    node_names: list[str]
    metadata: dict[str, str] = field(default_factory=dict)
    output_channels: int | None = None
    model: Any = None  # the onnx.ModelProto (kept for the Q/DQ lint)

    def input_spec(self) -> InputSpec | None:
        text = self.metadata.get("input_spec")
        if not text:
            return None
        try:
            return InputSpec.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{self.path} has unreadable input_spec metadata", found=str(exc),
                                fix="export the model again: edgeseg export ...") from None

    def classes(self) -> list[str]:
        try:
            value = json.loads(self.metadata.get("classes", "[]"))
        except json.JSONDecodeError:
            return []
        return [str(c) for c in value] if isinstance(value, list) else []

    def num_classes(self) -> int | None:
        text = self.metadata.get("num_classes")
        if text and text.isdigit():
            return int(text)
        return len(self.classes()) or self.output_channels

    def model_name(self) -> str:
        return self.metadata.get("model") or self.path.stem.split(".")[0]


def read_onnx_info(path: str | os.PathLike[str]) -> OnnxInfo:
    onnx = require("onnx", purpose="reading the ONNX before a TensorRT build")
    source = Path(path)
    if not source.is_file():
        raise ArtifactError("ONNX model not found", expected=str(source), found="no such file",
                            fix="export it first: edgeseg export ...")
    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, google.protobuf errors, OSError...
        raise ArtifactError(f"{source} is not a readable ONNX model", found=f"{type(exc).__name__}: {exc}",
                            fix="export it again: edgeseg export ...") from None
    graph = model.graph
    ops = {node.op_type for node in graph.node}
    elem_types = {init.data_type for init in graph.initializer}
    elem_types |= {value.type.tensor_type.elem_type for value in list(graph.input) + list(graph.output)}
    output_channels = None
    if graph.output:
        dims = graph.output[0].type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[1].HasField("dim_value"):
            output_channels = int(dims[1].dim_value)
    return OnnxInfo(
        path=source,
        facts=OnnxFacts(has_qdq=bool(ops & QDQ_OPS), has_fp16=FLOAT16 in elem_types),
        node_names=[node.name or f"{node.op_type}_{i}" for i, node in enumerate(graph.node)],
        metadata={prop.key: prop.value for prop in model.metadata_props},
        output_channels=output_channels,
        model=model,
    )
