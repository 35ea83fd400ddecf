"""What the builder reads from the ONNX itself (layer 2: onnx, lazily).

The facts come from ``edgeseg.onnx_model`` (their one owner): Q/DQ and float16 presence
(as ``versions.OnnxFacts`` for the version switch), node names by index (parser errors
report an index on some TensorRT versions) and the export metadata (input spec, model
name, classes). This module only adds the builder's defaults on top.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..onnx_model import OnnxModelInfo, read_onnx_model
from ..spec import InputSpec
from .versions import OnnxFacts


def plan_facts(info: OnnxModelInfo) -> OnnxFacts:
    """The version switch's view of an ONNX (graph facts unknown count as absent)."""
    return OnnxFacts(has_qdq=bool(info.has_qdq), has_fp16=bool(info.has_fp16))


@dataclass
class OnnxInfo:
    """``OnnxModelInfo`` as the builder uses it (read with onnx, so every graph fact is known)."""

    info: OnnxModelInfo

    @property
    def path(self) -> Path:
        assert self.info.path is not None
        return self.info.path

    @property
    def facts(self) -> OnnxFacts:
        return plan_facts(self.info)

    @property
    def node_names(self) -> list[str]:
        return self.info.node_names

    @property
    def metadata(self) -> dict[str, str]:
        return self.info.metadata

    @property
    def output_channels(self) -> int | None:
        return self.info.output_channels

    @property
    def model(self) -> Any:  # the onnx.ModelProto (for the Q/DQ lint)
        return self.info.proto

    def input_spec(self) -> InputSpec | None:
        return self.info.input_spec

    def classes(self) -> list[str]:
        return self.info.classes

    def num_classes(self) -> int | None:
        return self.info.num_classes

    def model_name(self) -> str:
        return self.info.model or self.path.stem.split(".")[0]


def read_onnx_info(path: str | os.PathLike[str]) -> OnnxInfo:
    return OnnxInfo(read_onnx_model(path, need_graph=True, purpose="reading the ONNX before a TensorRT build"))
