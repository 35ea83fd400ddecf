"""``model.int8.ov.onnx``: the Q/DQ file OpenVINO's INT8 candidate runs (layer 2; issue #26).

The same Q/DQ placement and activation scales as model.int8.onnx (TensorRT's file, written from the same
ranges by ``qdq_trt.quantize_for_tensorrt``), with the weights re-quantized from float in 7 bits ([-63, 63])
on a CPU without an int8 dot-product instruction (VNNI / AMX). Why: there OpenVINO's int8 convolutions
multiply u8 activations by s8 weights with AVX2's vpmaddubsw, which adds each pair of products in int16 and
saturates (255 x 127 x 2 > 32767); with 7-bit weights a pair stays within int16. Measured on the demo
(AVX2-only AMD EPYC, benchmarks/results/openvino_peers.md): agreement with PyTorch 99.25 % (8-bit weights)
vs 99.62 % (7-bit) on OpenVINO; ONNX Runtime on the same two files 99.65 / 99.62 % (it is exact with 8 bits:
its CPU INT8 file uses 7 bits for its own fused kernels, ``qdq_ort.OrtInt8Options.reduce_range``). With
AVX-512 VNNI, AVX-VNNI or AMX-INT8 the products are summed in int32 (vpdpbusd / tdpbusd), nothing
saturates, and 8-bit weights keep their extra precision: the file is then written with 8 bits.
TensorRT's file is never changed. Float regions stay float32 here (OpenVINO on a CPU runs them in f32).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..fileio import atomic_write_bytes
from .qdq_trt import quantize_for_tensorrt
from .ranges import Ranges

OV_INT8_NAME = "model.int8.ov.onnx"
# /proc/cpuinfo flags of an x86 int8 dot product that sums in int32 (no int16 saturation)
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo: str | os.PathLike[str] = CPUINFO) -> set[str]:
    """The ``flags`` of the first processor in ``cpuinfo`` (empty when it cannot be read: not Linux/x86)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split())
    return set()


def has_int8_dot_product(flags: Iterable[str]) -> bool:
    """Whether the CPU sums u8 x s8 products in int32 (AVX-512 VNNI, AVX-VNNI or AMX-INT8)."""
    return bool(set(flags) & set(INT8_DOT_FLAGS))


def openvino_weight_bits(flags: Iterable[str] | None = None) -> int:
    """7 on a CPU without VNNI/AMX (int16 saturation of 8-bit weights, see the module's doc), else 8;
    ``flags``: /proc/cpuinfo's of this machine when not given."""
    return 8 if has_int8_dot_product(cpu_flags() if flags is None else flags) else 7


def write_ov_int8(model, ranges: Ranges, out_dir: str | os.PathLike[str], *,  # type: ignore[no-untyped-def]
                  keep_fp_layers: Sequence[str] = (), concat_scales: str = "separate",
                  trt_version: str | None = None, weight_bits: int | None = None) -> Path:
    """model.int8.ov.onnx from the float ``model`` (an onnx.ModelProto) and ``ranges``: TensorRT's placement and
    activation scales (same ``keep_fp_layers``, ``concat_scales``, ``trt_version``), weights in ``weight_bits``
    (default: ``openvino_weight_bits()`` of this CPU; recorded in the file's edgeseg_quantization metadata)."""
    bits = openvino_weight_bits() if weight_bits is None else weight_bits
    quantized = quantize_for_tensorrt(model, ranges, keep_fp_layers=keep_fp_layers, concat_scales=concat_scales,
                                      trt_version=trt_version, weight_bits=bits)
    return atomic_write_bytes(Path(out_dir) / OV_INT8_NAME, quantized.SerializeToString())
