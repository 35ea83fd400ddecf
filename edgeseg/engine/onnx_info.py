"""What the builder reads from the ONNX itself (layer 2: onnx, lazily).

The facts come from ``edgeseg.onnx_model`` (their one owner): Q/DQ and float16 presence
(as ``versions.OnnxFacts`` for the version switch), node names by index (parser errors
report an index on some TensorRT versions) and the export metadata (input spec, model
name, classes). This module only adds the builder's defaults on top.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..onnx_model import OnnxModelInfo, read_onnx_model
from .versions import OnnxFacts


def plan_facts(info: OnnxModelInfo) -> OnnxFacts:
    """The version switch's view of an ONNX (graph facts unknown count as absent)."""
    return OnnxFacts(has_qdq=bool(info.has_qdq), has_fp16=bool(info.has_fp16))


def model_name(info: OnnxModelInfo, path: Path) -> str:
    """The model name export wrote, else the file's stem (``model.int8.onnx`` -> ``model``)."""
    return info.model or path.stem.split(".")[0]


def read_onnx_info(path: str | os.PathLike[str]) -> OnnxModelInfo:
    """The ONNX as the builder reads it: with onnx, so every graph fact (Q/DQ, float16, node names) is known."""
    return read_onnx_model(path, need_graph=True, purpose="reading the ONNX before a TensorRT build")
