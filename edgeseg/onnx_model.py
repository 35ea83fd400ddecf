"""What an ONNX model says about itself: the one reader and writer (layer 0: stdlib + numpy; onnx lazily).

``edgeseg export`` writes the model name, class count, class names and the ``InputSpec``
(JSON) into the ONNX ``metadata_props``; calibration, the TensorRT builder, ``build``,
``validate``, ``run`` and ``bench`` read them back through this module, together with
the graph facts the builder's version switch needs (opset, Q/DQ nodes, float16)::

    info = read_onnx_model("engines/x/model.onnx")
    info.model, info.num_classes, info.classes, info.input_spec, info.has_qdq, info.opset

``onnx`` is imported only inside functions. The robot install has no ``onnx``: there
``read_onnx_model`` falls back to ONNX Runtime's model meta (metadata, input and output
names and shapes; the graph facts are then ``None``, "unknown"). Callers that need the
graph pass ``need_graph=True`` and get a DependencyError naming the install instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from . import __version__
from .errors import ArtifactError, DependencyError, require
from .palette import stored_colours
from .spec import InputSpec

# metadata_props keys written by ``edgeseg export`` (every value is a string; classes and input_spec are JSON)
KEY_VERSION = "edgeseg_version"
KEY_MODEL = "model"
KEY_NUM_CLASSES = "num_classes"
KEY_CLASSES = "classes"
KEY_INPUT_SPEC = "input_spec"
KEY_CLASS_COLORS = "class_colors"  # optional: the training data's colours, [[r, g, b], ...] (JSON)
EXPORT_KEYS = (KEY_VERSION, KEY_MODEL, KEY_NUM_CLASSES, KEY_CLASSES, KEY_INPUT_SPEC)

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
MIN_QDQ_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear
FLOAT16 = 10  # onnx.TensorProto.FLOAT16
EXPORT_FIX = "export it first: edgeseg export --model NAME --out DIR"
REEXPORT_FIX = "export it again: edgeseg export --model NAME --out DIR"

# ONNX Runtime's type strings -> numpy dtype names (the onnx reader reports numpy names too)
_ORT_TYPES = {"float": "float32", "double": "float64", "float16": "float16", "bfloat16": "bfloat16",
              "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16", "int32": "int32",
              "uint32": "uint32", "int64": "int64", "uint64": "uint64", "bool": "bool", "string": "object"}

Dim = Union[int, str]  # a static size, or the name of a dynamic one ("?" when it has none)


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as declared in the ONNX."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name ("float32", "float16", ...), "" when unknown


@dataclass
class OnnxModelInfo:
    """One ONNX model's facts. Graph facts are ``None`` when only ONNX Runtime could read the file."""

    path: Path | None
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    opset: int | None = None  # default-domain opset (0: none declared)
    has_qdq: bool | None = None  # QuantizeLinear/DequantizeLinear nodes
    has_fp16: bool | None = None  # float16 initializers, inputs or outputs: a network typed fp16 by itself
    node_names: list[str] = field(default_factory=list)  # by node index (unnamed: "<op>_<index>")
    proto: Any = None  # the onnx.ModelProto (loaded without external data); None from ONNX Runtime
    reader: str = "onnx"  # "onnx" or "onnxruntime"

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else "the ONNX model"

    @property
    def has_graph(self) -> bool:
        return self.proto is not None

    @property
    def model(self) -> str | None:
        """The model name written by export (None when absent)."""
        return self.metadata.get(KEY_MODEL) or None

    @property
    def edgeseg_version(self) -> str | None:
        return self.metadata.get(KEY_VERSION) or None

    @property
    def classes(self) -> list[str]:
        return classes_from_metadata(self.metadata)

    @property
    def class_colors(self) -> list[list[int]]:
        return class_colors_from_metadata(self.metadata)

    @property
    def output_channels(self) -> int | None:
        """Dimension 1 of the first output when static (the class count of a segmentation net)."""
        if self.outputs and len(self.outputs[0].shape) >= 2 and isinstance(self.outputs[0].shape[1], int):
            return self.outputs[0].shape[1] or None
        return None

    @property
    def num_classes(self) -> int | None:
        """From the metadata, else the class names, else the output channels (None: unknown)."""
        text = self.metadata.get(KEY_NUM_CLASSES)
        if text and text.isdigit():
            return int(text)
        return len(self.classes) or self.output_channels

    @property
    def input_spec(self) -> InputSpec | None:
        """The InputSpec written by export; None when absent, ArtifactError when unreadable."""
        return spec_from_metadata(self.metadata, source=self.source)

    def require_input_spec(self) -> InputSpec:
        return require_input_spec(self.metadata, source=self.source)


# -- metadata: decoding -----------------------------------------------------------------------------
def spec_from_metadata(metadata: dict[str, str], *, source: str) -> InputSpec | None:
    """The InputSpec in ``metadata``; None when absent, ArtifactError when unreadable."""
    text = metadata.get(KEY_INPUT_SPEC)
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{source} has an unreadable input_spec", found=str(exc), fix=REEXPORT_FIX) from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{source} has an input_spec that is not a JSON object", found=type(data).__name__,
                            fix=REEXPORT_FIX)
    try:
        return InputSpec.from_dict(data)
    except (TypeError, ValueError, AttributeError) as exc:  # e.g. "mean": 5
        raise ArtifactError(f"{source} has an unreadable input_spec", found=f"{type(exc).__name__}: {exc}",
                            fix=REEXPORT_FIX) from None


def require_input_spec(metadata: dict[str, str], *, source: str = "model.onnx") -> InputSpec:
    """The InputSpec in ``metadata``, or an ArtifactError listing the keys that are there."""
    spec = spec_from_metadata(metadata, source=source)
    if spec is None:
        raise ArtifactError(
            f"{source} carries no input spec in its metadata",
            expected=f"metadata_props key {KEY_INPUT_SPEC!r} (written by edgeseg export)",
            found="keys: " + (", ".join(sorted(metadata)) or "none"),
            fix="export the model with edgeseg export, or pass the input spec explicitly",
        )
    return spec


def classes_from_metadata(metadata: dict[str, str]) -> list[str]:
    """The class names in ``metadata`` ([] when absent or unreadable: names are cosmetic)."""
    try:
        value = json.loads(metadata.get(KEY_CLASSES, "[]"))
    except json.JSONDecodeError:
        return []
    return [str(c) for c in value] if isinstance(value, list) else []


def class_colors_from_metadata(metadata: dict[str, str]) -> list[list[int]]:
    """The training data's class colours in ``metadata`` ([] when absent or unreadable: colours are cosmetic,
    ``edgeseg.palette.class_palette`` fills in)."""
    try:
        value = json.loads(metadata.get(KEY_CLASS_COLORS, "[]"))
    except json.JSONDecodeError:
        return []
    return stored_colours(value, len(value) if isinstance(value, list) else 0)


def decode_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """``metadata`` with the export's JSON fields decoded and num_classes an int (strict: raises ValueError)."""
    props: dict[str, Any] = dict(metadata)
    for key in (KEY_CLASSES, KEY_INPUT_SPEC, KEY_CLASS_COLORS):
        if key in props:
            props[key] = json.loads(props[key])
    if KEY_NUM_CLASSES in props:
        props[KEY_NUM_CLASSES] = int(props[KEY_NUM_CLASSES])
    return props


# -- metadata: on a loaded onnx.ModelProto --------------------------------------------------------
def metadata_of(model: Any) -> dict[str, str]:
    """metadata_props of an onnx.ModelProto as a dict."""
    return {prop.key: prop.value for prop in model.metadata_props}


def read_onnx_metadata(model: Any) -> dict[str, Any]:
    """The edgeseg metadata of an exported onnx.ModelProto, JSON fields decoded."""
    return decode_metadata(metadata_of(model))


def input_spec_of(model: Any, *, source: str = "model.onnx") -> InputSpec:
    """The InputSpec the exporter stored in an onnx.ModelProto (ArtifactError when absent)."""
    return require_input_spec(metadata_of(model), source=source)


def set_metadata(model: Any, values: dict[str, str]) -> None:
    """Add or replace metadata_props entries (keeps the others and their order)."""
    existing = {prop.key: prop for prop in model.metadata_props}
    for key, value in values.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value


def remove_metadata(model: Any, *, prefix: str) -> None:
    """Drop the metadata_props entries whose key starts with ``prefix`` (keeps the others' order)."""
    kept = [prop for prop in model.metadata_props if not prop.key.startswith(prefix)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)


def export_metadata(*, model: str, num_classes: int, classes: list[str], input_spec: InputSpec,
                    class_colors: Sequence[Sequence[int]] = ()) -> dict[str, str]:
    """The metadata_props ``edgeseg export`` writes (the contract every reader above decodes); class colours
    only when the training data had its own."""
    values = {
        KEY_VERSION: __version__,
        KEY_MODEL: model,
        KEY_NUM_CLASSES: str(num_classes),
        KEY_CLASSES: json.dumps(list(classes)),
        KEY_INPUT_SPEC: json.dumps(input_spec.to_dict(), sort_keys=True),
    }
    if class_colors:
        values[KEY_CLASS_COLORS] = json.dumps([[int(v) for v in c] for c in class_colors])
    return values


def write_export_metadata(proto: Any, *, model: str, num_classes: int, classes: list[str],
                          input_spec: InputSpec, class_colors: Sequence[Sequence[int]] = ()) -> None:
    set_metadata(proto, export_metadata(model=model, num_classes=num_classes, classes=classes,
                                        input_spec=input_spec, class_colors=class_colors))


# -- graph facts on a loaded onnx.ModelProto ------------------------------------------------------
def opset_of(model: Any) -> int:
    """The default-domain opset of an onnx.ModelProto (0 when none is declared)."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def has_qdq(model: Any) -> bool:
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def has_fp16(model: Any) -> bool:
    graph = model.graph
    elem_types = {init.data_type for init in graph.initializer}
    elem_types |= {value.type.tensor_type.elem_type for value in list(graph.input) + list(graph.output)}
    return FLOAT16 in elem_types


def _dims(value: Any) -> tuple[Dim, ...]:
    return tuple(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?")
                 for dim in value.type.tensor_type.shape.dim)


def input_dims(model: Any, name: str) -> list[Dim]:
    """The declared shape of a graph input: ints for static dims, names for dynamic ones."""
    for value in model.graph.input:
        if value.name == name:
            return list(_dims(value))
    names = ", ".join(v.name for v in model.graph.input)
    raise ArtifactError("the ONNX model has no input of the expected name", expected=name, found=names or "none")


def _tensor_info(value: Any) -> TensorInfo:
    dtype = ""
    elem_type = value.type.tensor_type.elem_type
    if elem_type:
        try:
            from onnx import helper

            dtype = str(helper.tensor_dtype_to_np_dtype(elem_type).name)
        except (ImportError, KeyError, ValueError, TypeError):
            dtype = ""
    return TensorInfo(value.name, _dims(value), dtype)


def facts_of(model: Any, path: str | os.PathLike[str] | None = None) -> OnnxModelInfo:
    """Every fact of an onnx.ModelProto (graph inputs that are initializers are not inputs)."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    return OnnxModelInfo(
        path=Path(path) if path is not None else None,
        metadata=metadata_of(model),
        inputs=[_tensor_info(v) for v in graph.input if v.name not in initializers],
        outputs=[_tensor_info(v) for v in graph.output],
        opset=opset_of(model),
        has_qdq=has_qdq(model),
        has_fp16=has_fp16(model),
        node_names=[node.name or f"{node.op_type}_{i}" for i, node in enumerate(graph.node)],
        proto=model,
        reader="onnx",
    )


# -- files ------------------------------------------------------------------------------------------
def _check_file(target: Path, what: str) -> None:
    if not target.is_file():
        raise ArtifactError(
            f"{what} not found",
            expected=f"an ONNX file at {target}",
            found="no such file" if not target.exists() else "a folder",
            fix=EXPORT_FIX,
        )


def _unreadable(target: Path, what: str, exc: BaseException) -> ArtifactError:
    return ArtifactError(f"{what} {target} is corrupt or not an ONNX file", found=f"{type(exc).__name__}: {exc}",
                         fix=REEXPORT_FIX)


def _import_onnx() -> Any | None:
    try:
        import onnx
    except ImportError:  # the robot install: no onnx
        return None
    return onnx


def load_onnx(path: str | os.PathLike[str], *, what: str = "ONNX model", external_data: bool = True) -> Any:
    """Load an ONNX file (onnx required) or raise an ArtifactError that names the file and the fix."""
    onnx = require("onnx", purpose="reading ONNX models")
    target = Path(path)
    _check_file(target, what)
    try:
        model = onnx.load(str(target), load_external_data=external_data)
    except Exception as exc:  # protobuf raises DecodeError and friends, onnx OSError...
        raise _unreadable(target, what, exc) from None
    if not model.graph.node:
        raise ArtifactError(f"{what} {target} has an empty graph", fix=REEXPORT_FIX)
    return model


def read_onnx_model(path: str | os.PathLike[str], *, need_graph: bool = False, purpose: str = "reading ONNX models",
                    what: str = "ONNX model") -> OnnxModelInfo:
    """The facts of an ONNX file: with onnx when installed, else from ONNX Runtime's model meta.

    ``need_graph``: the caller needs opset/Q/DQ/fp16/the proto, so onnx is required (DependencyError).
    """
    target = Path(path)
    onnx = require("onnx", purpose=purpose) if need_graph else _import_onnx()
    _check_file(target, what)
    if onnx is not None:
        try:
            model = onnx.load(str(target), load_external_data=False)
        except Exception as exc:  # protobuf / onnx raise many types for a bad file
            raise _unreadable(target, what, exc) from None
        return facts_of(model, target)
    return _read_with_onnxruntime(target, what)


def _ort_dtype(type_name: str) -> str:
    inner = type_name[len("tensor("):-1] if type_name.startswith("tensor(") else type_name
    return _ORT_TYPES.get(inner, inner)


def _ort_tensor(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else (str(d) if d else "?") for d in (arg.shape or []))
    return TensorInfo(str(arg.name), shape, _ort_dtype(str(arg.type)))


def _read_with_onnxruntime(target: Path, what: str) -> OnnxModelInfo:
    ort = require("onnxruntime", purpose="reading ONNX metadata")
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only the meta is read
        session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
        meta = dict(session.get_modelmeta().custom_metadata_map)
        inputs = [_ort_tensor(a) for a in session.get_inputs()]
        outputs = [_ort_tensor(a) for a in session.get_outputs()]
    except DependencyError:
        raise
    except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, RuntimeError... for a bad file
        raise _unreadable(target, what, exc) from None
    return OnnxModelInfo(path=target, metadata=meta, inputs=inputs, outputs=outputs, reader="onnxruntime")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """metadata_props of an ONNX file (onnx if installed, else ONNX Runtime's model meta)."""
    return read_onnx_model(path).metadata
