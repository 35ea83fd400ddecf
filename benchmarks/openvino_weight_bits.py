"""Issue #26: is OpenVINO's accuracy loss on our Q/DQ file the 8-bit weights (int16 saturation of u8 x s8 pair sums
on an x86 CPU without VNNI/AMX)? One build folder's float model and ranges.json, written three ways with the same
Q/DQ placement and activation scales (``qdq_trt.quantize_for_tensorrt``, float regions in float32): 8-bit weights,
7-bit weights re-quantized from float (``weight_bits=7``, what model.int8.ov.onnx uses), and the 8-bit integers
halved (q' = clip(round(q/2), -64, 63), scale' = 2 scale); each validated against the folder's reference.npz on
OpenVINO and on ONNX Runtime (agreement with PyTorch, ground-truth mIoU drop).

    python benchmarks/openvino_weight_bits.py BUILD_DIR WORK_DIR    # BUILD_DIR: e.g. an `edgeseg build` of the demo

Results: printed and WORK_DIR/openvino_weight_bits.json (the figures are quoted in results/openvino_peers.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgeseg.pipeline.validate import ValidationConfig, validate_candidate
from edgeseg.quant.qdq_trt import quantize_for_tensorrt
from edgeseg.quant.ranges import load_ranges


def halved(model: onnx.ModelProto) -> onnx.ModelProto:
    """The 8-bit weight integers halved into 7 bits (scale doubled)."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name: i for i in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0].endswith("_quantized") and node.input[0] in inits:
            q = numpy_helper.to_array(inits[node.input[0]])
            scale = numpy_helper.to_array(inits[node.input[1]])
            inits[node.input[0]].CopyFrom(numpy_helper.from_array(
                np.clip(np.round(q / 2), -64, 63).astype(np.int8), node.input[0]))
            inits[node.input[1]].CopyFrom(numpy_helper.from_array((scale * 2).astype(np.float32), node.input[1]))
    return out


def main() -> None:
    build, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(build / "model.onnx"))
    ranges = load_ranges(build / "ranges.json")
    eight = quantize_for_tensorrt(model, ranges)
    variants = {"w8_from_float": eight, "w7_from_float": quantize_for_tensorrt(model, ranges, weight_bits=7),
                "w7_halved": halved(eight)}
    config = ValidationConfig(min_agreement=0.99, max_miou_drop=0.5, threads=2)
    rows = {}
    for name, variant in variants.items():
        path = work / f"{name}.onnx"
        onnx.save(variant, str(path))
        for backend in ("openvino", "onnxruntime"):
            result = validate_candidate(path, build / "reference.npz", config=config, write=False,
                                        raise_on_failure=False, backend=backend)
            rows[f"{name} {backend}"] = {"agreement_pct": round(100 * float(result.parity["agreement"]), 2),
                                         "miou_drop_points": (result.ground_truth or {}).get("miou_drop_points")}
            print(name, backend, rows[f"{name} {backend}"], flush=True)
    (work / "openvino_weight_bits.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
