"""Engine inspector output as layers.json (layer 2).

``inspect_engine`` asks TensorRT's engine inspector for its JSON (detailed when the
engine was built with ProfilingVerbosity.DETAILED); ``inspect_serialized_engine`` does it
for the bytes a build just produced (and frees what it deserialised); ``normalise_layer_information``
is pure: it parses that JSON, unifies TensorRT 11's "I/O Tensors" key with the older
"Bindings", and counts layers per precision so reports can show what ran in INT8.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..errors import ArtifactError
from ..runtime.trt import engine_io_tensors, load_engine

if TYPE_CHECKING:
    import tensorrt


def normalise_layer_information(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError("the engine inspector returned unreadable JSON", found=str(exc)) from None
    if not isinstance(data, dict):
        raise ArtifactError("the engine inspector returned unexpected JSON", found=type(data).__name__)
    layers = data.get("Layers", [])
    io_tensors = data.get("I/O Tensors", data.get("Bindings", []))
    precisions: Counter[str] = Counter()
    for layer in layers:
        if isinstance(layer, dict):
            outputs = layer.get("Outputs") or []
            fmt = outputs[0].get("Format/Datatype", "") if outputs and isinstance(outputs[0], dict) else ""
            precisions[_precision_of(str(fmt))] += 1
        else:
            precisions["unknown"] += 1  # ONELINE/NONE verbosity: layer names only
    return {
        "layers": layers,
        "io_tensors": io_tensors,
        "num_layers": len(layers),
        "layer_precisions": dict(sorted(precisions.items())),
    }


def _precision_of(fmt: str) -> str:
    text = fmt.lower()
    for token, name in (("int8", "int8"), ("half", "fp16"), ("fp16", "fp16"), ("float", "fp32"), ("fp32", "fp32")):
        if token in text:
            return name
    return "other"


def inspect_engine(engine: tensorrt.ICudaEngine, trt: Any) -> dict[str, Any]:
    """layers.json content for a deserialised ICudaEngine."""
    inspector: tensorrt.EngineInspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    return normalise_layer_information(text)


def inspect_serialized_engine(trt: Any, engine_bytes: bytes, *, version_compatible: bool,
                              dla_core: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(layers.json content, I/O tensors) of an engine just built: deserialised the way the robot will
    (``runtime.trt.load_engine``: the process logger, host code allowed when version compatible, the DLA core
    set when built for one), read, then freed, the engine before its runtime."""
    runtime, engine = load_engine(trt, engine_bytes, version_compatible=version_compatible, dla_core=dla_core,
                                  what="the engine just built")
    try:
        return inspect_engine(engine, trt), engine_io_tensors(engine, trt)
    finally:
        del engine
        del runtime
