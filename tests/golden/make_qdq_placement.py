"""Regenerate qdq_placement/<decoder>.json: where the Q/DQ model for TensorRT quantizes, per decoder family.

For the first registered model of each decoder (DeepLabV3+, DSPP, MDSPP, HRNetV2, OCR) at a small
input size: export it as `edgeseg export` does (simplified, static shapes), give every tensor a
range of 1.0, and record what `quantize_for_tensorrt` (default options, TensorRT 10.3) quantizes: the
activation tensors read through Q/DQ, with the op types that read them, the per-edge Q/DQ pairs (Concat
inputs quantized at the scale after the Concat), and the weight count.
tests/quant/test_qdq_placement.py rebuilds the same and compares. Tensor names come from
torch.onnx.export and onnxsim: regenerate after upgrading them, and read the diff.

    python tests/golden/make_qdq_placement.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

OUTPUT_DIR = Path(__file__).with_name("qdq_placement")
SIZE = (128, 128)  # the smallest size every decoder accepts (the SPEED pyramids need a /16 feature of 8x8)
NUM_CLASSES = 4
TRT_VERSION = "10.3"  # the placement's target (quantize_for_tensorrt's default; 8.x drops the Resize Q/DQ)


def family_models() -> dict[str, str]:
    """decoder -> the first registered model that uses it."""
    from edgeseg.models import registry

    registry.list_models()
    first: dict[str, str] = {}
    for name, info in registry._REGISTRY.items():
        first.setdefault(info.decoder, name)
    return dict(sorted(first.items()))


def placement(model_name: str, folder: Path) -> dict:
    import onnx
    import torch

    from edgeseg.export import ExportConfig, export_onnx
    from edgeseg.models import create_model
    from edgeseg.quant.qdq_trt import quantize_for_tensorrt
    from edgeseg.quant.ranges import Ranges, TensorRange
    from edgeseg.spec import InputSpec

    torch.manual_seed(0)
    model = create_model(model_name, num_classes=NUM_CLASSES).eval()
    config = ExportConfig(model=model_name, num_classes=NUM_CLASSES, input_spec=InputSpec(*SIZE),
                          num_reference_samples=1)
    float_model = onnx.load(str(export_onnx(model, config, folder).onnx_path))
    names = [i.name for i in float_model.graph.input] + [o for n in float_model.graph.node for o in n.output]
    ranges = Ranges("minmax", {name: TensorRange(-1.0, 1.0, 1.0) for name in names})
    quantized = quantize_for_tensorrt(float_model, ranges, trt_version=TRT_VERSION)
    initializers = {i.name for i in quantized.graph.initializer}
    quantize_of = {n.output[0]: n for n in quantized.graph.node if n.op_type == "QuantizeLinear"}
    # each activation DequantizeLinear output -> (the float tensor quantized, whether it is a per-edge pair)
    source = {n.output[0]: (quantize_of[n.input[0]].input[0], n.input[0] != quantize_of[n.input[0]].input[0]
                            + "_quantized")
              for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in quantize_of}
    readers: dict[str, list[str]] = {q.input[0]: [] for q in quantize_of.values()}
    edges: list[str] = []
    for node in quantized.graph.node:
        for tensor in node.input:
            if tensor in source:
                base, edge = source[tensor]
                readers[base].append(node.op_type)
                if edge:  # a Q/DQ of its own on this one edge (Concat inputs at the scale after the Concat)
                    edges.append(f"{base} -> {node.op_type} {node.name}")
    activations = {t: sorted(ops) for t, ops in sorted(readers.items())}
    weights = sum(1 for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers)
    return {"model": model_name, "input_size": list(SIZE), "trt_version": TRT_VERSION, "activations": activations,
            "edges": sorted(edges), "num_activations": len(activations), "num_weights": weights}


def main() -> None:
    OUTPUT_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for decoder, model_name in family_models().items():
            data = placement(model_name, Path(tmp) / decoder)
            path = OUTPUT_DIR / f"{decoder}.json"
            path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            print(f"{path}: {data['num_activations']} activations, {data['num_weights']} weights", file=sys.stderr)


if __name__ == "__main__":
    main()
