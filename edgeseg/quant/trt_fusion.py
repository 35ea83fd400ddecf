"""What TensorRT will make of a Q/DQ ONNX, predicted on paper (layer 2). A PREDICTION, not a measurement:
no engine is built and no Jetson has confirmed these figures yet.

``predict_fusion(model, trt_version)`` walks the graph once, in order, and applies a small set of rules
taken from TensorRT's documented explicit-quantization processing (each rule below cites its source) to
decide, per layer, whether it runs in an INT8 kernel and whether each QuantizeLinear / DequantizeLinear
is fused into a neighbour or runs as a kernel of its own. It reports:

- precision boundaries: standalone Q kernels (float -> int8) + DQ kernels that feed a float layer;
- standalone Q/DQ kernels: the boundaries plus requantizations (DQ -> Q at another scale);
- INT8-in, float-out layers: weighted layers (Conv/ConvTranspose/Gemm/MatMul) running INT8 whose output Q
  could not be fused, so they write float;
- round trips: Q/DQ pairs no INT8 layer consumes (pure rounding, no speed);
- activation bytes per frame written by kernels, and the share written in float (outside INT8 kernels);
  float tensors count at their ONNX type (4 bytes, 2 in FP16 regions), int8 ones 1 byte; reshapes are free.

Sources (NVIDIA):

- [QDQ] TensorRT Developer Guide, "Explicit Quantization" (Q/DQ fusion, Q/DQ propagation, layer-placement
  recommendations): https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/
  quantized-types-explicit-quantization.html
- [DECONV] TensorRT issue #2380 (NVIDIA: 8.x does not support per-output-channel quantization of deconvolution
  weights) and #1694 (wrong results with them); pytorch-quantization quantized ConvTranspose weights on axis 0
  until TensorRT 10.2.
- [RESIZE8] onnx-tensorrt 8.5 operator support (Resize: FP32/FP16 only).
- [MODELOPT] TensorRT-Model-Optimizer, modelopt/onnx/quantization (what NVIDIA's own quantizer places
  where: Q/DQ on Resize inputs fed by convolutions for TensorRT 10; residual Add inputs only beside a conv).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import require
from ..trt_version import TrtVersion

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# [QDQ] "Q/DQ fusion": pointwise layers that follow a convolution are fused into it (Conv+BN+ReLU); the fused
# kernel can still take an output Q.
EPILOGUE = ("Relu", "Clip", "BatchNormalization", "LeakyRelu")
# [QDQ] "Q/DQ propagation": DQ is moved forward (and Q backward) over layers that commute with quantization:
# data movement (shuffle, slice, reshape) and MaxPool (the guide's own example); ReLU at zero point 0
# (relu(s * q) = s * relu(q)) is treated the same way.
DQ_COMMUTING = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split", "MaxPool", "Relu",
                "Cast")
# no data moves: no bytes written (a Cast of int8 data only changes the type its DQ would write: an assumption)
VIEWS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast")
# [QDQ] "quantizable layers" fuse their input DQ and their output Q: the guide's figure of a quantized
# AveragePool, and element-wise Add with DQ inputs and a Q output.
QUANTIZABLE = ("AveragePool", "Add")
QDQ = ("QuantizeLinear", "DequantizeLinear")
FLOAT_BYTES = {1: 4, 10: 2, 16: 2, 11: 8}  # onnx FLOAT, FLOAT16, BFLOAT16, DOUBLE
MAX_LISTED = 50  # names kept per list in the result


@dataclass
class FusionPrediction:
    """The predicted fusion of one Q/DQ model for one TensorRT generation (``to_dict`` for manifests)."""

    trt_version: str
    precision_boundaries: int = 0
    standalone_quantize: int = 0
    standalone_dequantize: int = 0
    requantize: int = 0
    weighted_layers: int = 0
    int8_weighted_layers: int = 0
    int8_in_float_out: int = 0
    activation_bytes: int = 0
    float_activation_bytes: int = 0
    placement: dict[str, Any] = field(default_factory=dict)  # what edgeseg's file says it was written for
    round_trips: list[str] = field(default_factory=list)
    boundaries: list[str] = field(default_factory=list)  # where (tensor names), at most MAX_LISTED
    float_out_layers: list[str] = field(default_factory=list)

    @property
    def float_share(self) -> float:
        return self.float_activation_bytes / self.activation_bytes if self.activation_bytes else 0.0

    @property
    def standalone_kernels(self) -> int:
        return self.standalone_quantize + self.standalone_dequantize + self.requantize

    def to_dict(self, *, brief: bool = False) -> dict[str, Any]:
        """Every figure (``brief``: without the lists of names, for the manifest and report)."""
        record = {
            "prediction": True,
            "note": "predicted from TensorRT's documented Q/DQ rules (edgeseg.quant.trt_fusion); not measured on "
                    "an engine: to be confirmed on a Jetson",
            "trt_version": self.trt_version,
            "placement": dict(self.placement),  # the file's target TensorRT and ConvTranspose weight scales
            "precision_boundaries": self.precision_boundaries,
            "standalone_qdq_kernels": self.standalone_kernels,
            "standalone_quantize": self.standalone_quantize,
            "standalone_dequantize": self.standalone_dequantize,
            "requantize": self.requantize,
            "weighted_layers": self.weighted_layers,
            "int8_weighted_layers": self.int8_weighted_layers,
            "int8_in_float_out": self.int8_in_float_out,
            "activation_mb": round(self.activation_bytes / 1e6, 2),
            "float_activation_mb": round(self.float_activation_bytes / 1e6, 2),
            "float_activation_share": round(self.float_share, 4),
            "round_trips": len(self.round_trips),
            "round_trip_tensors": self.round_trips[:MAX_LISTED],
            "boundaries_at": self.boundaries[:MAX_LISTED],
            "float_out_layers": self.float_out_layers[:MAX_LISTED],
        }
        if brief:
            for key in ("round_trip_tensors", "boundaries_at", "float_out_layers"):
                record.pop(key)
        return record

    def summary(self) -> str:
        return (f"{self.precision_boundaries} precision boundaries, {self.standalone_kernels} standalone Q/DQ kernels, "
                f"{self.int8_in_float_out}/{self.int8_weighted_layers} INT8 layers write float, "
                f"{self.float_activation_bytes / 1e6:.1f} of {self.activation_bytes / 1e6:.1f} MB per frame in float "
                f"({100 * self.float_share:.0f} %), {len(self.round_trips)} round trip(s) "
                f"(TensorRT {self.trt_version}; a prediction)")


@dataclass
class _Kernel:
    """An INT8 kernel being fused: its op, whether it is weighted, whether an output Q was fused."""

    name: str
    op: str
    weighted: bool
    int8_out: bool = False


@dataclass
class _Val:
    """What a tensor is at run time. kind: 'float' (materialized float), 'int8' (int8 data with ``scale``:
    a DQ output, possibly moved forward over commuting layers), 'acc' (the still-open output of INT8
    kernel ``kernel``, which a following epilogue, residual Add or Q can join), 'const', 'weight'."""

    kind: str
    scale: float | None = None
    kernel: _Kernel | None = None
    origins: tuple[str, ...] = ()  # for int8: the DQ nodes it comes from


class _Walk:
    def __init__(self, model: Any, version: TrtVersion) -> None:
        onnx = require("onnx", purpose="predicting TensorRT's fusion of a Q/DQ model")
        self.onnx = onnx
        self.version = version
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # a model shape inference cannot read: no byte figures, the counts still stand
            inferred = model
        graph = inferred.graph
        self.graph = graph
        self.types: dict[str, tuple[int, int | None]] = {}
        for info in (*graph.input, *graph.value_info, *graph.output):
            tensor_type = info.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
            numel: int | None = 1
            for d in dims:
                numel = None if d is None or numel is None else numel * d
            self.types[info.name] = (int(tensor_type.elem_type), numel if dims or tensor_type.HasField("shape")
                                     else None)
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}
        self.inits = {i.name: i for i in graph.initializer}
        for node in graph.node:  # Constant nodes hold scales and weights too (other quantizers write them)
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.inits[node.output[0]] = value
        self.vals: dict[str, _Val] = {name: _Val("const") for name in self.inits}
        for i in graph.input:
            if i.name not in self.inits:
                self.vals[i.name] = _Val("float")
        self.kernels: list[_Kernel] = []
        self.result = FusionPrediction(str(version))
        self.dq_kernels: set[str] = set()  # int8 tensors materialized as float for a float reader
        self.int8_used: set[str] = set()  # DQ nodes whose data some INT8 layer reads
        self.qdq_pairs: dict[str, str] = {}  # DQ node -> the Q it dequantizes (activation round-trip candidates)
        self.q_output_of: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------------------------------------
    def val(self, name: str) -> _Val:
        return self.vals.get(name, _Val("float"))

    def scale_of(self, name: str) -> float | None:
        init = self.inits.get(name)
        if init is None:
            return None
        values = self.onnx.numpy_helper.to_array(init).ravel()
        return float(values[0]) if values.size == 1 else None

    def per_channel(self, name: str) -> bool:
        init = self.inits.get(name)
        return init is not None and self.onnx.numpy_helper.to_array(init).size > 1

    def nbytes(self, name: str, int8: bool) -> int:
        elem, numel = self.types.get(name, (1, None))
        if numel is None:
            return 0
        return numel if int8 else numel * FLOAT_BYTES.get(elem, 0)

    def write(self, name: str, int8: bool) -> None:
        size = self.nbytes(name, int8)
        self.result.activation_bytes += size
        if not int8:
            self.result.float_activation_bytes += size

    def boundary(self, where: str) -> None:
        self.result.precision_boundaries += 1
        self.result.boundaries.append(where)

    def as_float(self, name: str) -> None:
        """A float layer reads ``name``: an int8 tensor needs a DQ kernel, an open INT8 kernel writes float."""
        v = self.val(name)
        if v.kind == "int8" and name not in self.dq_kernels:
            # [QDQ] a DQ that no quantizable layer absorbs runs as its own kernel (int8 -> float)
            self.dq_kernels.add(name)
            self.result.standalone_dequantize += 1
            self.boundary(f"DQ {name}")
            self.write(name, int8=False)
        elif v.kind == "acc":
            self.close(name, v)

    def close(self, name: str, v: _Val) -> None:
        """The open INT8 kernel that produced ``name`` ends without an output Q: it writes float."""
        assert v.kernel is not None
        self.write(name, int8=False)
        self.vals[name] = _Val("float")

    def used_int8(self, v: _Val) -> None:
        self.int8_used.update(v.origins)

    def open_single(self, name: str) -> bool:
        """An open kernel output that only one layer reads (fusion needs a single reader, not a graph output)."""
        return self.val(name).kind == "acc" and len(self.consumers.get(name, [])) == 1 and name not in self.outputs

    def float_node(self, node: Any) -> None:
        for name in node.input:
            if name and self.val(name).kind not in ("const", "weight"):
                self.as_float(name)
        # a float pointwise layer read by one epilogue op is fused with it (TensorRT's pointwise fusion)
        for out in node.output:
            self.vals[out] = _Val("float")
            readers = self.consumers.get(out, [])
            fused = len(readers) == 1 and readers[0].op_type in EPILOGUE and out not in self.outputs
            if node.op_type not in VIEWS and not fused:
                self.write(out, int8=False)

    def open_kernel(self, node: Any, weighted: bool) -> None:
        kernel = _Kernel(node.name or node.output[0], node.op_type, weighted)
        self.kernels.append(kernel)
        self.vals[node.output[0]] = _Val("acc", kernel=kernel)

    # -- the rules -----------------------------------------------------------------------------------------
    def visit(self, node: Any) -> None:
        op = node.op_type
        ins = [self.val(name) for name in node.input]
        if op == "DequantizeLinear":
            source = ins[0]
            if source.kind == "const":  # a weight: folded into the layer that reads it
                self.vals[node.output[0]] = _Val("weight")
                return
            self.vals[node.output[0]] = _Val("int8", self.scale_of(node.input[1]), origins=(node.name,))
            quantize = self.q_output_of.get(node.input[0])
            if quantize is not None:
                self.qdq_pairs[node.name] = quantize.input[0]
            return
        if op == "QuantizeLinear":
            if ins[0].kind == "const":  # a float weight quantized in the graph: TensorRT folds it
                self.vals[node.output[0]] = _Val("const")
                return
            self.quantize(node, ins[0])
            return
        if op in WEIGHTED:
            self.weighted(node, ins)
            return
        if op in EPILOGUE and ins[0].kind == "acc" and self.open_single(node.input[0]):
            # [QDQ] Conv + BN + ReLU fusion: the epilogue joins the open INT8 kernel
            self.vals[node.output[0]] = ins[0]
            self.vals[node.input[0]] = _Val("joined")  # never written: it lives inside the kernel
            return
        if op == "Add":
            self.add(node, ins)
            return
        if op == "Concat":
            self.concat(node, ins)
            return
        if op in DQ_COMMUTING and ins and ins[0].kind == "int8":
            # [QDQ] "Q/DQ propagation": DQ moves forward over a commuting layer, which then runs on int8 data
            self.used_int8(ins[0])
            for out in node.output:
                self.vals[out] = _Val("int8", ins[0].scale, origins=ins[0].origins)
                if op not in VIEWS:
                    self.write(out, int8=True)
            return
        if op == "AveragePool" and ins[0].kind == "int8":
            # [QDQ] quantizable AveragePool: fuses its input DQ (and an output Q when one follows)
            self.used_int8(ins[0])
            self.open_kernel(node, weighted=False)
            return
        if op == "Resize" and ins[0].kind == "int8" and self.version.major >= 10:
            # [MODELOPT] TensorRT 10 runs Resize on int8 input (ModelOpt quantizes Resize inputs for it);
            # [RESIZE8] 8.5's parser lists Resize as FP32/FP16 only, so it stays a float layer there
            self.used_int8(ins[0])
            self.open_kernel(node, weighted=False)
            return
        if op == "Constant":
            return  # folded: a constant (recorded with the initializers)
        self.float_node(node)

    def weighted(self, node: Any, ins: list[_Val]) -> None:
        self.result.weighted_layers += 1
        data, weight = ins[0], (ins[1] if len(ins) > 1 else _Val("float"))
        int8 = data.kind == "int8" and weight.kind == "weight"
        if int8 and node.op_type == "ConvTranspose" and self.version.major < 10:
            dq = self.producer_dq(node.input[1])
            if dq is not None and len(dq.input) > 1 and self.per_channel(dq.input[1]):
                # [DECONV] TensorRT 8.x: no per-output-channel deconvolution weights (#2380, wrong results #1694)
                int8 = False
        if not int8:
            self.float_node(node)
            return
        self.used_int8(data)
        self.result.int8_weighted_layers += 1
        self.open_kernel(node, weighted=True)

    def producer_dq(self, name: str) -> Any:
        for node in self.graph.node:
            if name in node.output:
                return node if node.op_type == "DequantizeLinear" else None
        return None

    def add(self, node: Any, ins: list[_Val]) -> None:
        live = [(name, v) for name, v in zip(node.input, ins) if v.kind not in ("const", "weight")]
        if len(live) == 2:
            (a, va), (b, vb) = live
            for (open_name, open_val), (_, other_val) in (((a, va), (b, vb)), ((b, vb), (a, va))):
                if open_val.kind == "acc" and open_val.kernel is not None and open_val.kernel.weighted \
                        and self.open_single(open_name) and other_val.kind == "int8":
                    # [QDQ] Conv + Add (+ ReLU) fusion: the residual input arrives through a DQ
                    self.used_int8(other_val)
                    self.vals[node.output[0]] = open_val
                    self.vals[open_name] = _Val("joined")
                    return
            if va.kind == "int8" and vb.kind == "int8":
                # [QDQ] quantizable element-wise Add: DQ inputs fused, output Q fused when one follows
                self.used_int8(va)
                self.used_int8(vb)
                self.open_kernel(node, weighted=False)
                return
        self.float_node(node)

    def concat(self, node: Any, ins: list[_Val]) -> None:
        live = [(name, v) for name, v in zip(node.input, ins) if v.kind != "const"]
        scales = {v.scale for _, v in live}
        if live and all(v.kind == "int8" for _, v in live) and len(scales) == 1:
            # [QDQ] DQ moves forward over a Concat only when every input has the same scale: an INT8 Concat
            origins: tuple[str, ...] = ()
            for _, v in live:
                origins += v.origins
            out = node.output[0]
            self.vals[out] = _Val("int8", live[0][1].scale, origins=origins)
            self.write(out, int8=True)
            readers = self.consumers.get(out, [])
            if readers and all(r.op_type != "QuantizeLinear" for r in readers):
                pass  # its readers decide (an INT8 layer uses it; a float one gets a DQ kernel)
            return
        readers = self.consumers.get(node.output[0], [])
        if len(readers) == 1 and readers[0].op_type == "QuantizeLinear" and node.output[0] not in self.outputs:
            # [QDQ] a Q after a Concat is moved backward and cloned onto every input
            scale = self.scale_of(readers[0].input[1])
            for name, v in live:
                self.requantize_into(name, v, scale, f"Concat input {name}")
            out = node.output[0]
            self.vals[out] = _Val("concat-q", scale)
            self.write(out, int8=True)
            return
        self.float_node(node)

    def requantize_into(self, name: str, v: _Val, scale: float | None, where: str) -> None:
        """``name`` must become int8 at ``scale`` (a Q moved onto it)."""
        if v.kind == "int8":
            self.used_int8(v)
            if v.scale != scale:
                self.result.requantize += 1  # DQ + Q at another scale: one int8 -> int8 kernel
                self.write(name, int8=True)
        elif v.kind == "acc" and self.open_single(name) and self.q_fusable(v):
            assert v.kernel is not None
            v.kernel.int8_out = True
            self.write(name, int8=True)
            self.vals[name] = _Val("float")
        else:
            if v.kind == "acc":
                self.close(name, v)
            self.result.standalone_quantize += 1
            self.boundary(f"Q {where}")
            self.write(name, int8=True)

    def q_fusable(self, v: _Val) -> bool:
        # issue #29's rule set: no output Q is fused after a deconvolution (its INT8 kernel writes float)
        return v.kernel is not None and v.kernel.op != "ConvTranspose"

    def quantize(self, node: Any, source: _Val) -> None:
        name = node.input[0]
        out = node.output[0]
        self.q_output_of[out] = node
        if source.kind in ("concat-q", "fused"):
            self.vals[out] = _Val("int8q", source.scale)  # already moved onto the Concat's inputs / fused
            return
        scale = self.scale_of(node.input[1])
        readers = self.consumers.get(name, [])
        all_q = all(r.op_type == "QuantizeLinear" for r in readers) and name not in self.outputs
        if source.kind == "acc" and all_q and self.q_fusable(source) and len(
                {self.scale_of(r.input[1]) for r in readers}) == 1:
            # [QDQ] an output Q is fused into the INT8 kernel before it (the kernel writes int8)
            assert source.kernel is not None
            source.kernel.int8_out = True
            self.write(name, int8=True)
            self.vals[name] = _Val("fused", scale, kernel=source.kernel)
        elif source.kind == "int8":
            self.used_int8(source)
            if source.scale != scale:
                self.result.requantize += 1
                self.write(out, int8=True)
        else:
            if source.kind == "acc":
                self.close(name, source)
            # [QDQ] a Q with no INT8 producer to join is a kernel of its own (float -> int8)
            self.result.standalone_quantize += 1
            self.boundary(f"Q {name}")
            self.write(out, int8=True)
        self.vals[out] = _Val("int8q", scale)

    def finish(self) -> FusionPrediction:
        for name in self.outputs:
            v = self.val(name)
            if v.kind in ("int8", "acc"):
                self.as_float(name)
        for name, v in list(self.vals.items()):
            if v.kind == "acc":  # an open kernel nobody closed (unused output)
                self.close(name, v)
        result = self.result
        for kernel in self.kernels:
            if kernel.weighted and not kernel.int8_out:
                result.int8_in_float_out += 1
                result.float_out_layers.append(kernel.name)
        # a Q/DQ pair whose data no INT8 layer reads: pure rounding
        result.round_trips = sorted(tensor for dq, tensor in self.qdq_pairs.items() if dq not in self.int8_used)
        return result


def predict_file(path: Any, trt_version: str | TrtVersion | None = None) -> FusionPrediction:
    """``predict_fusion`` of a model.int8.onnx on disk, for the TensorRT it was written for (its metadata) unless
    ``trt_version`` says otherwise."""
    from ..onnx_model import load_onnx

    model = load_onnx(path)
    return predict_fusion(model, trt_version or written_for(model))


def written_for(model: Any) -> str:
    """The TensorRT a Q/DQ file says it was written for (edgeseg's metadata), else the default target."""
    from .qdq_trt import quantization_record
    from .trt_cache import DEFAULT_TRT_VERSION

    return str(quantization_record(model).get("trt_version") or DEFAULT_TRT_VERSION)


def predict_fusion(model: Any, trt_version: str | TrtVersion) -> FusionPrediction:
    """The predicted TensorRT fusion of Q/DQ ``model`` (an onnx.ModelProto) on ``trt_version``."""
    from .qdq_trt import quantization_record

    walk = _Walk(model, TrtVersion.parse(str(trt_version)))
    for node in walk.graph.node:
        walk.visit(node)
    result = walk.finish()
    record = quantization_record(model)
    result.placement = {key: record[key] for key in ("trt_version", "deconv_weights") if key in record}
    return result
