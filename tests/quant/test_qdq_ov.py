"""model.int8.ov.onnx (issue #26): TensorRT's Q/DQ placement and activation scales with 7-bit weights on a CPU
without VNNI/AMX, and the CPU check that picks the weight width (fake /proc/cpuinfo files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.tiny_models import build_tiny_net
from helpers.tiny_onnx import write_images

from edgeseg.errors import ConfigError
from edgeseg.onnx_model import input_spec_of, metadata_of
from edgeseg.quant.calib_data import CalibrationFeed
from edgeseg.quant.qdq_ov import (
    OV_INT8_NAME,
    cpu_flags,
    has_int8_dot_product,
    openvino_weight_bits,
    write_ov_int8,
)
from edgeseg.quant.qdq_trt import QDQ_METADATA_KEY, quantize_for_tensorrt
from edgeseg.quant.ranges import Ranges, compute_ranges

AVX2_ONLY = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c"


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    text = "".join(f"processor\t: {i}\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\n" for i in range(2))
    (tmp_path / "cpuinfo").write_text(text)
    return tmp_path / "cpuinfo"


@pytest.mark.parametrize(("extra", "bits"), [("", 7), ("avx512f avx512_vnni", 8), ("avx_vnni", 8),
                                              ("amx_tile amx_bf16 amx_int8", 8), ("avx512f avx512_bf16", 7)])
def test_weight_bits_follow_the_cpu_flags(tmp_path: Path, extra: str, bits: int) -> None:
    flags = cpu_flags(_cpuinfo(tmp_path, f"{AVX2_ONLY} {extra}".strip()))
    assert "avx2" in flags and has_int8_dot_product(flags) == (bits == 8)
    assert openvino_weight_bits(flags) == bits


def test_unreadable_cpuinfo_means_no_dot_product(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "missing") == set()
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    assert cpu_flags(tmp_path / "arm") == set()
    assert openvino_weight_bits(set()) == 7


@pytest.fixture(scope="module")
def float_and_ranges(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, Ranges]:
    path = build_tiny_net(tmp_path_factory.mktemp("qdq_ov") / "model.onnx")
    images = write_images(tmp_path_factory.mktemp("qdq_ov_images"), 4)[0].parent
    feed = CalibrationFeed(images, input_spec_of(onnx.load(str(path))), count=4)
    return onnx.load(str(path)), Ranges("minmax", compute_ranges(path, feed, method="minmax"))


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


def _weight_dq(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("_quantized")
            and n.input[0] in _inits(model)]


def test_seven_bit_file_keeps_tensorrts_placement_and_activation_scales(
        float_and_ranges: tuple[onnx.ModelProto, Ranges], tmp_path: Path) -> None:
    model, ranges = float_and_ranges
    trt = quantize_for_tensorrt(model, ranges)
    ov = onnx.load(str(write_ov_int8(model, ranges, tmp_path, weight_bits=7)))
    assert (tmp_path / OV_INT8_NAME).is_file()
    onnx.checker.check_model(ov, full_check=True)
    # the same nodes in the same order: the placement is TensorRT's
    assert [(n.op_type, n.name) for n in ov.graph.node] == [(n.op_type, n.name) for n in trt.graph.node]
    trt_inits, ov_inits = _inits(trt), _inits(ov)
    activation_q = [n for n in trt.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_q
    for node in activation_q:  # every activation scale and zero point is TensorRT's, bit for bit
        assert ov_inits[node.input[1]].tobytes() == trt_inits[node.input[1]].tobytes(), node.name
        assert ov_inits[node.input[2]].tobytes() == trt_inits[node.input[2]].tobytes(), node.name
    weights = _weight_dq(ov)
    assert len(weights) == 9  # 6 Conv, Gemm, MatMul, ConvTranspose
    for node in weights:
        q, trt_q = ov_inits[node.input[0]], trt_inits[node.input[0]]
        assert q.dtype == np.int8 and int(np.abs(q).max()) <= 63 < int(np.abs(trt_q).max())
        assert int(np.abs(q).max()) == 63  # re-quantized from float: the largest weight of a channel is +-63
        # a 7-bit scale is the 8-bit one x 127/63 (same per-channel amax)
        scale, trt_scale = ov_inits[node.input[1]], trt_inits[node.input[1]]
        np.testing.assert_allclose(scale * 63.0, trt_scale * 127.0, rtol=1e-6)
    info = json.loads(metadata_of(ov)[QDQ_METADATA_KEY])
    assert info["weight_bits"] == 7 and "weight_bits" not in json.loads(metadata_of(trt)[QDQ_METADATA_KEY])


def test_eight_bit_file_is_tensorrts(float_and_ranges: tuple[onnx.ModelProto, Ranges], tmp_path: Path) -> None:
    model, ranges = float_and_ranges  # a CPU with VNNI/AMX: the weights need not lose a bit
    ov = onnx.load(str(write_ov_int8(model, ranges, tmp_path, weight_bits=8)))
    assert ov.SerializeToString() == quantize_for_tensorrt(model, ranges).SerializeToString()


def test_other_weight_widths_are_refused(float_and_ranges: tuple[onnx.ModelProto, Ranges]) -> None:
    model, ranges = float_and_ranges
    with pytest.raises(ConfigError, match="weight bit width"):
        quantize_for_tensorrt(model, ranges, weight_bits=4)


def test_the_quantize_step_writes_the_file_and_its_key_holds_the_weight_width(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.tiny_onnx import save_conv_onnx
    from helpers.validated_build import SPEC

    from edgeseg.pipeline import int8_steps
    from edgeseg.pipeline.options import BuildOptions
    from edgeseg.pipeline.step_cache import StepRunner

    onnx_path = save_conv_onnx(tmp_path / "build" / "model.onnx", spec=SPEC)
    out = onnx_path.parent
    write_images(tmp_path / "frames", 3)
    options = BuildOptions(calib_method="minmax", calib_images=2)

    def quantize(bits: int) -> tuple[bool, int]:
        monkeypatch.setattr(int8_steps, "openvino_weight_bits", lambda: bits)  # this CPU, faked
        done: dict[str, bool] = {}
        runner = StepRunner(out, log=lambda _: None)
        int8_steps.run_calibration_step(runner, onnx_path, tmp_path / "frames", options, out, done, None)
        int8_steps.run_quantize_step(runner, onnx_path, options, out, done, [])
        written = onnx.load(str(out / OV_INT8_NAME))
        return done["quantize"], max(int(np.abs(q).max()) for name, q in _inits(written).items()
                                     if name.endswith("_quantized"))

    assert quantize(7) == (False, 63)  # no VNNI/AMX: 7-bit weights
    assert quantize(7) == (True, 63)  # same CPU: cached
    assert quantize(8) == (False, 127)  # VNNI/AMX: the key changed, the file is rewritten with 8 bits
    assert (out / "model.int8.onnx").is_file() and (out / "model.int8.ort.onnx").is_file()
